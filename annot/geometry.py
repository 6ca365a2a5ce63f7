"""Geometry helpers: coordinate maps over shapely geometries and plane intersections in 3D.

Shapes are shapely geometries, 2D (GeoTIFFs, pixel coordinates) or 3D (patient LPS mm, where a
shape drawn on a slice is a planar 3D shape).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

Array = npt.NDArray[np.float64]
PointMap = Callable[[Array], Array]


def map_coords(geometry: BaseGeometry, fn: PointMap, dims: int) -> BaseGeometry:
    """Apply ``fn`` ((n, k) -> (n, dims)) to every vertex; the result has ``dims`` dimensions.

    ``k`` is 3 if the geometry has z, else 2.
    """
    has_z = bool(shapely.has_z(geometry))
    coords = shapely.get_coordinates(geometry, include_z=has_z)
    out = np.asarray(fn(coords), dtype=np.float64)
    if out.shape != (len(coords), dims):
        raise ValueError(f"point map returned shape {out.shape}, expected ({len(coords)}, {dims})")
    if dims == 3 and not has_z:
        geometry = shapely.force_3d(geometry)
    elif dims == 2 and has_z:
        geometry = shapely.force_2d(geometry)
    return shapely.set_coordinates(geometry, out)


def map_many(
    geometries: npt.NDArray[np.object_], fn: PointMap, dims: int
) -> npt.NDArray[np.object_]:
    """``map_coords`` over an array of geometries of one dimensionality, with one call of fn."""
    if len(geometries) == 0:
        return geometries
    has_z = bool(shapely.has_z(geometries).any())
    coords = shapely.get_coordinates(geometries, include_z=has_z)
    out = np.asarray(fn(coords), dtype=np.float64)
    if dims == 3 and not has_z:
        geometries = shapely.force_3d(geometries)
    elif dims == 2 and has_z:
        geometries = shapely.force_2d(geometries)
    result: npt.NDArray[np.object_] = shapely.set_coordinates(geometries.copy(), out)
    return result


def with_z(geometry: BaseGeometry, z: float) -> BaseGeometry:
    """A 2D geometry lifted to the constant ``z``."""
    return shapely.force_3d(shapely.force_2d(geometry), z)


def plane_normal(points: Array) -> Array | None:
    """The unit normal of a planar ring (Newell's method); None if the points are collinear."""
    p = np.asarray(points, dtype=np.float64)
    q = np.roll(p, -1, axis=0)
    n = np.array(
        [
            np.sum((p[:, 1] - q[:, 1]) * (p[:, 2] + q[:, 2])),
            np.sum((p[:, 2] - q[:, 2]) * (p[:, 0] + q[:, 0])),
            np.sum((p[:, 0] - q[:, 0]) * (p[:, 1] + q[:, 1])),
        ]
    )
    norm = float(np.linalg.norm(n))
    return None if norm < 1e-12 else n / norm


def lies_on_plane(geometry: BaseGeometry, point: Array, normal: Array, tol: float) -> bool:
    """Whether every vertex of a 3D geometry is within ``tol`` of the plane."""
    coords = shapely.get_coordinates(geometry, include_z=True)
    return bool(np.all(np.abs((coords - point) @ normal) <= tol))


def _rings(polygon: shapely.Polygon) -> list[Array]:
    rings = [polygon.exterior, *polygon.interiors]
    return [np.asarray(r.coords, dtype=np.float64) for r in rings]


def _polygon_plane_segments(
    polygon: shapely.Polygon, point: Array, normal: Array, tol: float
) -> list[tuple[Array, Array]]:
    rings = _rings(polygon)
    own = plane_normal(rings[0][:-1])
    if own is None:
        return []
    direction = np.cross(own, normal)
    if np.linalg.norm(direction) < 1e-9:
        return []  # parallel planes: no line of intersection
    crossings: list[Array] = []
    for ring in rings:
        d = (ring - point) @ normal
        d = np.where(np.abs(d) <= tol, 0.0, d)
        above = d >= 0.0  # half-open: vertices on the plane count as above
        for a in range(len(ring) - 1):
            if above[a] != above[a + 1]:
                t = d[a] / (d[a] - d[a + 1])
                crossings.append(ring[a] + t * (ring[a + 1] - ring[a]))
    if len(crossings) < 2:
        return []
    pts = np.asarray(crossings)
    order = np.argsort(pts @ direction, kind="stable")
    pts = pts[order]
    segments = []
    for a in range(0, len(pts) - 1, 2):
        if np.linalg.norm(pts[a + 1] - pts[a]) > tol:
            segments.append((pts[a], pts[a + 1]))
    return segments


def plane_intersection(
    geometry: BaseGeometry, point: Array, normal: Array, tol: float = 1e-6
) -> BaseGeometry | None:
    """Where a planar 3D shape crosses the plane through ``point`` with unit ``normal``.

    A polygon (with holes) drawn on one slice, cut by the plane of a slice of another view,
    gives the segments of the line where the planes meet that lie inside the polygon (a
    MultiLineString); a polyline gives the points where it crosses (a MultiPoint); a point on
    the plane gives itself. Returns None when nothing lies on the plane. Coplanar shapes are the
    caller's business (``lies_on_plane``).
    """
    point = np.asarray(point, dtype=np.float64)
    normal = np.asarray(normal, dtype=np.float64)
    if isinstance(geometry, shapely.Polygon | shapely.MultiPolygon):
        polys = geometry.geoms if isinstance(geometry, shapely.MultiPolygon) else [geometry]
        segments = [s for p in polys for s in _polygon_plane_segments(p, point, normal, tol)]
        if not segments:
            return None
        return shapely.MultiLineString([[tuple(a), tuple(b)] for a, b in segments])
    if isinstance(geometry, shapely.LineString):
        line = np.asarray(geometry.coords, dtype=np.float64)
        d = (line - point) @ normal
        d = np.where(np.abs(d) <= tol, 0.0, d)
        pts = []
        for a in range(len(line) - 1):
            if d[a] == 0.0:
                pts.append(line[a])
            elif d[a + 1] != 0.0 and (d[a] > 0) != (d[a + 1] > 0):
                t = d[a] / (d[a] - d[a + 1])
                pts.append(line[a] + t * (line[a + 1] - line[a]))
        if d[-1] == 0.0:
            pts.append(line[-1])
        return shapely.MultiPoint([tuple(p) for p in pts]) if pts else None
    if isinstance(geometry, shapely.Point | shapely.MultiPoint):
        coords = shapely.get_coordinates(geometry, include_z=True)
        on = coords[np.abs((coords - point) @ normal) <= tol]
        return shapely.MultiPoint([tuple(p) for p in on]) if len(on) else None
    return None
