"""Coordinate transforms between image pixels and world coordinates.

Pixel coordinates are ``(col, row)`` in the full-resolution image with (0, 0) at the top-left
corner of the top-left pixel, x to the right and y down: the centre of the first pixel is
(0.5, 0.5). For a GeoTIFF that is where the geotransform puts it. Functions are named by
direction (``pixel_to_crs``) and accept scalars or NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from pyproj import CRS, Transformer

from annot.errors import CoordinateError

Array = npt.NDArray[np.float64]
WGS84 = "EPSG:4326"


@lru_cache(maxsize=256)
def get_transformer(src: str, dst: str) -> Transformer:
    """A cached pyproj Transformer (x/easting/longitude first, as GeoJSON)."""
    # always_xy: x/easting/longitude first whatever the CRS's axis order says (as GeoJSON does).
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def transform_points(
    src: str, dst: str, xs: npt.ArrayLike, ys: npt.ArrayLike
) -> tuple[Array, Array]:
    """Transform points between two CRSs given as WKT, ``EPSG:n`` or PROJ strings."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if src == dst:
        return x.copy(), y.copy()
    ox, oy = get_transformer(src, dst).transform(x, y, errcheck=False)
    ox = np.asarray(ox, dtype=np.float64)
    oy = np.asarray(oy, dtype=np.float64)
    if not (np.all(np.isfinite(ox)) and np.all(np.isfinite(oy))):
        raise CoordinateError(f"some points cannot be transformed from {src[:40]} to {dst[:40]}")
    return ox, oy


@dataclass(frozen=True)
class GeoReference:
    """The georeference of a raster: an affine geotransform and a CRS.

    ``transform`` is ``(a, b, c, d, e, f)`` with ``x = a*col + b*row + c`` and
    ``y = d*col + e*row + f`` (rasterio's Affine order).
    """

    transform: tuple[float, float, float, float, float, float]
    crs: str  # WKT or "EPSG:n"

    def __post_init__(self) -> None:
        a, b, _, d, e, _ = self.transform
        if abs(a * e - b * d) < 1e-300:
            raise CoordinateError("the geotransform is singular (zero pixel size)")

    def pixel_to_crs(self, cols: npt.ArrayLike, rows: npt.ArrayLike) -> tuple[Array, Array]:
        a, b, c, d, e, f = self.transform
        col = np.asarray(cols, dtype=np.float64)
        row = np.asarray(rows, dtype=np.float64)
        return a * col + b * row + c, d * col + e * row + f

    def crs_to_pixel(self, xs: npt.ArrayLike, ys: npt.ArrayLike) -> tuple[Array, Array]:
        a, b, c, d, e, f = self.transform
        det = a * e - b * d
        x = np.asarray(xs, dtype=np.float64) - c
        y = np.asarray(ys, dtype=np.float64) - f
        return (e * x - b * y) / det, (-d * x + a * y) / det

    def crs_to_wgs84(self, xs: npt.ArrayLike, ys: npt.ArrayLike) -> tuple[Array, Array]:
        return transform_points(self.crs, WGS84, xs, ys)

    def wgs84_to_crs(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> tuple[Array, Array]:
        return transform_points(WGS84, self.crs, lons, lats)

    def pixel_to_wgs84(self, cols: npt.ArrayLike, rows: npt.ArrayLike) -> tuple[Array, Array]:
        return self.crs_to_wgs84(*self.pixel_to_crs(cols, rows))

    def wgs84_to_pixel(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> tuple[Array, Array]:
        return self.crs_to_pixel(*self.wgs84_to_crs(lons, lats))

    def pixel_to(self, crs: str, cols: npt.ArrayLike, rows: npt.ArrayLike) -> tuple[Array, Array]:
        """Pixel to any CRS (``EPSG:n``, WKT)."""
        return transform_points(self.crs, crs, *self.pixel_to_crs(cols, rows))

    def pixel_from(self, crs: str, xs: npt.ArrayLike, ys: npt.ArrayLike) -> tuple[Array, Array]:
        """Any CRS to pixel."""
        return self.crs_to_pixel(*transform_points(crs, self.crs, xs, ys))
