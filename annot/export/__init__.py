"""Exports of an image's annotations to files other tools read (GeoJSON, ...)."""
