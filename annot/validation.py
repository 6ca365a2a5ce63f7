"""Validation of annotation shapes, in the pixel coordinates of the image they are drawn on.

Name family as shapely's: ``validity_reason`` (None when valid), ``is_valid``, ``check_shape``
(raises ``InvalidGeometry`` with the reason and a suggested repair), ``suggest_repair``.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from annot.errors import InvalidGeometry, TooLarge
from annot.model import GEOJSON_TYPE, Kind

MAX_VERTICES = 1_000_000  # per shape
EDGE_TOLERANCE = 1e-6  # pixels: world round trips may land a hair outside the image


def _distinct(coords: np.ndarray) -> int:
    return len(np.unique(np.round(coords, 9), axis=0))


def _has_distinct(coords: np.ndarray, n: int) -> bool:
    """Whether ``coords`` holds at least ``n`` distinct points (to 1e-9), stopping as soon as
    it does: a ring's first points nearly always settle it (``np.unique`` sorts them all)."""
    seen: set[tuple[float, ...]] = set()
    for row in np.round(coords, 9).tolist():
        seen.add(tuple(row))
        if len(seen) >= n:
            return True
    return False


def validity_reason(
    kind: Kind,
    shape: BaseGeometry | None,
    width: float | None = None,
    height: float | None = None,
    keypoints: tuple[str, ...] = (),
) -> str | None:
    """Why a 2D pixel-coordinate shape cannot be stored as ``kind``; None when it can.

    ``width``/``height`` bound the image (coordinates must lie in ``[0, width] x [0, height]``).
    """
    if kind is Kind.tag:
        return None if shape is None else "a tag has no geometry (send geometry: null)"
    if shape is None or shape.is_empty:
        return f"a {kind.value} needs a geometry"
    expected = GEOJSON_TYPE[kind]
    if shape.geom_type != expected:
        return f"a {kind.value} must be a {expected}, not a {shape.geom_type}"
    coords = shapely.get_coordinates(shape)
    if len(coords) > MAX_VERTICES:
        raise TooLarge(f"a shape may have at most {MAX_VERTICES} vertices, not {len(coords)}")
    if not np.all(np.isfinite(coords)):
        return "coordinates must be finite numbers (no NaN or infinity)"
    if kind is Kind.polyline and not _has_distinct(coords, 2):
        return "a polyline needs at least 2 distinct points"
    if kind is Kind.multipoint and keypoints and len(keypoints) != len(coords):
        return f"{len(keypoints)} keypoint names for {len(coords)} points"
    if kind in (Kind.polygon, Kind.box, Kind.mask, Kind.multipolygon):
        polys = list(shape.geoms) if isinstance(shape, shapely.MultiPolygon) else [shape]
        for poly in polys:
            for ring in [poly.exterior, *poly.interiors]:
                if not _has_distinct(np.asarray(ring.coords)[:-1], 3):
                    return "a polygon ring needs at least 3 distinct points"
        if kind is Kind.box and (
            len(shape.interiors) or _distinct(np.asarray(shape.exterior.coords)[:-1]) != 4
        ):
            return "a box is a polygon with 4 distinct corners and no holes"
        reason = shapely.is_valid_reason(shape)
        if reason != "Valid Geometry":
            return f"invalid geometry: {reason}"
        if shape.area <= 0:
            return "the polygon has no area"
    if width is not None and height is not None:
        lo = coords.min(axis=0)
        hi = coords.max(axis=0)
        tol = EDGE_TOLERANCE
        if lo[0] < -tol or lo[1] < -tol or hi[0] > width + tol or hi[1] > height + tol:
            return (
                f"coordinates outside the image: pixel bounds {lo[0]:.6g}, {lo[1]:.6g}, "
                f"{hi[0]:.6g}, {hi[1]:.6g} are not within 0, 0, {width}, {height}"
            )
    return None


def is_valid(
    kind: Kind,
    shape: BaseGeometry | None,
    width: float | None = None,
    height: float | None = None,
) -> bool:
    return validity_reason(kind, shape, width, height) is None


def _polygons(geometry: BaseGeometry) -> list[shapely.Polygon]:
    if isinstance(geometry, shapely.Polygon):
        return [geometry]
    if isinstance(geometry, shapely.MultiPolygon | shapely.GeometryCollection):
        return [p for part in geometry.geoms for p in _polygons(part)]
    return []


def suggest_repair(
    kind: Kind, shape: BaseGeometry | None, width: float | None, height: float | None
) -> BaseGeometry | None:
    """A valid shape close to ``shape`` (shapely ``make_valid``, clipped to the image), if any."""
    if shape is None or shape.is_empty:
        return None
    coords = shapely.get_coordinates(shape)
    if not np.all(np.isfinite(coords)):
        return None
    repaired = shapely.make_valid(shape)
    if width is not None and height is not None:
        repaired = shapely.intersection(repaired, shapely.box(0, 0, width, height))
    if kind in (Kind.polygon, Kind.box, Kind.multipolygon, Kind.mask):
        polys = [p for p in _polygons(repaired) if validity_reason(Kind.polygon, p) is None]
        if not polys:
            return None
        if kind is Kind.multipolygon or len(polys) > 1:
            return shapely.MultiPolygon(polys)
        return polys[0]
    if repaired.is_empty or not shapely.is_valid(repaired):
        return None
    return repaired


def check_shape(
    kind: Kind,
    shape: BaseGeometry | None,
    width: float | None = None,
    height: float | None = None,
    keypoints: tuple[str, ...] = (),
) -> None:
    """Raise ``InvalidGeometry`` (with ``repair``, a pixel shape or None) if not storable."""
    reason = validity_reason(kind, shape, width, height, keypoints)
    if reason is None:
        return
    raise InvalidGeometry(
        reason, {"reason": reason}, repair=suggest_repair(kind, shape, width, height)
    )
