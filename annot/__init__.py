"""Tessera annotations: a pure library (no web imports) for world-coordinate annotations."""
