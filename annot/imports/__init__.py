"""Imports of annotation files (GeoJSON, ...) onto an image, validated before anything is stored."""
