"""Helpers shared by the HTTP services: hashed credentials and rate limiting."""
