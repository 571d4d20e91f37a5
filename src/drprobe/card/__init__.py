"""Truncation cards: how far an embedding model's vectors can be cut on one's own data."""
