"""Small pieces the HTTP services share: Basic authentication against hashed credentials, rate limits."""
