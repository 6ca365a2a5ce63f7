"""Tessera tile server: pyramidal tiles of GeoTIFF/COG, DICOM, TIFF and zarr images."""

__version__ = "0.1.0"
