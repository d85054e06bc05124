"""Small pieces the HTTP services share: hashed credentials, Basic authentication, rate limits, HTTP bodies."""
