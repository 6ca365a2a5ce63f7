"""Annotations as Mapbox Vector Tiles on an image's native pixel pyramid.

A tile ``z/x/y`` is the same square of the image as the raster tile ``z/x/y``: level ``z`` is
downsampled by ``2 ** (max_z - z)``, so the tile covers ``tile_size * factor`` full-resolution
pixels a side, starting at the top-left corner of the image (pixel coordinates: (0, 0) is the
top-left corner of the top-left pixel, x to the right, y down). Inside the tile, coordinates
are MVT units: ``EXTENT`` units a side, y down, so one screen pixel of the tile is
``EXTENT / tile_size`` units.

Shapes are clipped to the tile (with a small buffer, so strokes meet across tile edges) and
simplified to half a screen pixel. Shapes smaller than ``TINY_SCREEN_PX`` on screen are kept
as points (the centre of their bounds), and tiny shapes whose points fall in the same cell of
``CELL_SCREEN_PX`` screen pixels are aggregated into one feature with a ``count``: the cell's
square (inset by one screen pixel), a polygon so that map clients can draw it into the tile's
image once instead of as a symbol every frame. Nothing disappears at low zoom. A tiny shape
belongs to the one tile its point falls in, so summing ``count`` (1 for a plain feature) over
the tiles of a level counts every tiny shape once.

Pure: no web code. ``encode_tile`` is the whole pipeline from pixel-space shapes to bytes;
``tile_shapes`` reads them from a store for one tile.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import shapely
from shapely.geometry.base import BaseGeometry

from annot.errors import BadRequest
from annot.frames import ImageFrame, VolumeFrame
from annot.geometry import lies_on_plane, map_coords, map_many, plane_intersection
from annot.model import Plane
from annot.mvt import MvtFeature, encode_layer
from annot.storage.base import MAX_PAGE, Region, Store

EXTENT = 4096
LAYER = "annotations"
BUFFER_SCREEN_PX = 4.0  # clip this far past the tile's edges
SIMPLIFY_SCREEN_PX = 0.5  # simplification tolerance
TINY_SCREEN_PX = 4.0  # a shape whose bounds fit in this many screen pixels becomes a point
CELL_SCREEN_PX = 8  # tiny shapes sharing one such cell become one point with a count
PROPERTY_KEYS = ("label", "status", "author")
LABEL_PREFIX = '{"label":'
_STRING = json.JSONDecoder()


@dataclass(frozen=True)
class TileAddress:
    """One tile of a native pyramid (``max_z`` and ``tile_size`` as the raster tiles')."""

    z: int
    x: int
    y: int
    max_z: int
    tile_size: int

    @property
    def factor(self) -> int:
        """Full-resolution pixels per pixel of level ``z``."""
        return int(2 ** (self.max_z - self.z))

    @property
    def span(self) -> float:
        """Full-resolution pixels a side."""
        return float(self.tile_size * self.factor)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(col0, row0, col1, row1)`` in full-resolution pixels."""
        s = self.span
        return self.x * s, self.y * s, (self.x + 1) * s, (self.y + 1) * s

    @property
    def units_per_screen_px(self) -> float:
        return EXTENT / self.tile_size

    @property
    def tolerance_px(self) -> float:
        """The simplification tolerance in full-resolution pixels."""
        return SIMPLIFY_SCREEN_PX * self.factor

    def to_units(self, pixel: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Full-resolution pixel coordinates (n, 2) -> tile units (n, 2)."""
        col0, row0, _, _ = self.bounds
        return (np.asarray(pixel, dtype=np.float64) - [col0, row0]) * (EXTENT / self.span)

    def to_pixels(self, units: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Tile units (n, 2) -> full-resolution pixel coordinates (n, 2)."""
        col0, row0, _, _ = self.bounds
        return np.asarray(units, dtype=np.float64) * (self.span / EXTENT) + [col0, row0]


def pyramid_max_z(width: int, height: int, tile_size: int) -> int:
    """The full-resolution level of a native pyramid (as ``tileserver``'s ``Pyramid``)."""
    longest = max(width, height)
    return max(0, math.ceil(math.log2(longest / tile_size))) if longest > 0 else 0


def tile_address(z: int, x: int, y: int, width: int, height: int, tile_size: int) -> TileAddress:
    """Check ``z/x/y`` against the pyramid of a ``width`` x ``height`` image (BadRequest)."""
    max_z = pyramid_max_z(width, height, tile_size)
    if not 0 <= z <= max_z:
        raise BadRequest(f"z must be 0..{max_z} for this image, not {z}")
    factor = 2 ** (max_z - z)
    nx = math.ceil(math.ceil(width / factor) / tile_size)
    ny = math.ceil(math.ceil(height / factor) / tile_size)
    if not (0 <= x < nx and 0 <= y < ny):
        raise BadRequest(f"tile {z}/{x}/{y} is outside the image ({nx}x{ny} tiles at z={z})")
    return TileAddress(z, x, y, max_z, tile_size)


@dataclass(frozen=True)
class TileShapes:
    """Annotations meeting a tile: ids, geometries in full-resolution pixel coordinates (2D),
    and the properties of each (with ``label``, ``status``, ``author``), as a dict or as the
    JSON text a store keeps (``annot.features.properties_text``: parsed only when needed)."""

    ids: list[int]
    geometries: npt.NDArray[np.object_]
    properties: Sequence[dict[str, Any] | str]

    def props(self, i: int) -> dict[str, Any]:
        p = self.properties[i]
        parsed: dict[str, Any] = orjson.loads(p) if isinstance(p, str) else p
        return parsed

    def label(self, i: int) -> str:
        """Only the label: it opens the stored text (``{"label":"...",``), so the label alone
        is decoded for the thousands of shapes that an aggregate counts."""
        p = self.properties[i]
        if isinstance(p, str) and p.startswith(LABEL_PREFIX):
            try:
                value, _ = _STRING.raw_decode(p, len(LABEL_PREFIX))
                return str(value)
            except ValueError:
                pass
        return str(self.props(i).get("label", ""))


def encode_tile(tile: TileAddress, shapes: TileShapes) -> bytes:
    """The MVT bytes of one tile (layer ``annotations``; see the module docstring)."""
    features: list[MvtFeature] = []
    if len(shapes.ids):
        geoms = shapely.transform(shapes.geometries, tile.to_units)
        lo = np.asarray(shapely.bounds(geoms))
        size = np.maximum(lo[:, 2] - lo[:, 0], lo[:, 3] - lo[:, 1])
        tiny = size < TINY_SCREEN_PX * tile.units_per_screen_px
        big = np.flatnonzero(~tiny)
        features.extend(_clipped(tile, shapes, geoms[big], big))
        small = np.flatnonzero(tiny)
        centres = np.column_stack(
            [(lo[small, 0] + lo[small, 2]) / 2, (lo[small, 1] + lo[small, 3]) / 2]
        )
        features.extend(_points(tile, shapes, centres, small))
    return encode_layer(LAYER, features, EXTENT)


def _props(shapes: TileShapes, i: int) -> dict[str, str | int]:
    p = shapes.props(i)
    return {"id": shapes.ids[i], **{k: str(p.get(k, "")) for k in PROPERTY_KEYS}}


def _clipped(
    tile: TileAddress, shapes: TileShapes, geoms: npt.NDArray[np.object_], idx: npt.NDArray[Any]
) -> list[MvtFeature]:
    """Shapes big enough to see: clipped to the buffered tile and simplified."""
    if len(idx) == 0:
        return []
    b = BUFFER_SCREEN_PX * tile.units_per_screen_px
    tolerance = SIMPLIFY_SCREEN_PX * tile.units_per_screen_px
    clipped = shapely.clip_by_rect(geoms, -b, -b, EXTENT + b, EXTENT + b)
    simple = shapely.simplify(clipped, tolerance, preserve_topology=True)
    out = []
    for g, i in zip(simple, idx.tolist(), strict=True):
        if g is None or g.is_empty:
            continue  # its bounds met the tile, the shape itself does not
        for part in _plain_parts(g):
            out.append(MvtFeature(part, _props(shapes, i), shapes.ids[i]))
    return out


def _plain_parts(g: BaseGeometry) -> list[BaseGeometry]:
    """MVT has no collections: a clip that made one is split into its polygonal, linear and
    point parts (each kept as one multi-geometry)."""
    if not isinstance(g, shapely.GeometryCollection) or isinstance(
        g, shapely.MultiPolygon | shapely.MultiLineString | shapely.MultiPoint
    ):
        return [g]
    parts: list[BaseGeometry] = []
    for kind in (shapely.Polygon, shapely.LineString, shapely.Point):
        same = [p for p in g.geoms if isinstance(p, kind)]
        if same:
            parts.append(shapely.union_all(same) if len(same) > 1 else same[0])
    return parts


def _points(
    tile: TileAddress, shapes: TileShapes, centres: npt.NDArray[np.float64], idx: npt.NDArray[Any]
) -> list[MvtFeature]:
    """Tiny shapes as points, those sharing a cell as the cell's square with a ``count``; only
    the points inside this tile (each tiny shape is counted by exactly one tile)."""
    if len(idx) == 0:
        return []
    inside = np.all((centres >= 0) & (centres < EXTENT), axis=1)
    centres, idx = centres[inside], idx[inside]
    cell = CELL_SCREEN_PX * tile.units_per_screen_px
    cells = np.floor(centres / cell).astype(np.int64)
    key = cells[:, 0] * (EXTENT + 1) + cells[:, 1]
    order = np.argsort(key, kind="stable")
    key, centres, idx, cells = key[order], centres[order], idx[order], cells[order]
    inset = tile.units_per_screen_px
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    out = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if e - s == 1:
            i = int(idx[s])
            point = shapely.Point(centres[s])
            out.append(MvtFeature(point, _props(shapes, i), shapes.ids[i]))
            continue
        members = idx[s:e].tolist()
        labels = Counter(shapes.label(i) for i in members)
        label = labels.most_common(1)[0][0]
        x0, y0 = cells[s] * cell
        square = shapely.box(x0 + inset, y0 + inset, x0 + cell - inset, y0 + cell - inset)
        out.append(MvtFeature(square, {"count": e - s, "label": label}))
    return out


# --- reading a tile's shapes from a store ------------------------------------------------------


def tile_shapes(
    store: Store,
    image_id: str,
    frame: ImageFrame,
    tile: TileAddress,
    slice_plane: tuple[int, Plane] | None = None,
) -> TileShapes:
    """The annotations meeting the (buffered) tile, in full-resolution pixel coordinates;
    for volumes those seen on slice ``slice_plane`` (drawn on it, or cut by it)."""
    col0, row0, col1, row1 = tile.bounds
    pad = BUFFER_SCREEN_PX * tile.factor
    box = (col0 - pad, row0 - pad, col1 + pad, row1 + pad)
    if isinstance(frame, VolumeFrame):
        if slice_plane is None:
            raise BadRequest("volume tiles need slice (and plane)")
        return _volume_shapes(store, image_id, frame, box, *slice_plane)
    # Bounds only: a shape that does not reach the tile clips to nothing, and a tiny one's
    # point falls outside it; either way it is left out.
    minx, miny, maxx, maxy = map_coords(shapely.box(*box), frame.pixel_to_world, 2).bounds
    page = store.query_bounds(image_id, Region((minx, miny, maxx, maxy, 0.0, 0.0)))
    return TileShapes(page.ids, map_many(page.geometries, frame.world_to_pixel, 2), page.properties)


def _volume_shapes(
    store: Store,
    image_id: str,
    frame: VolumeFrame,
    box: tuple[float, float, float, float],
    slice_: int,
    plane: Plane,
    tol: float = 1e-3,
) -> TileShapes:
    _, _, n = frame.size(plane)
    if not 0 <= slice_ < n:
        raise BadRequest(f"slice must be 0..{n - 1} in the {plane.value} plane")
    c0, r0, c1, r1 = box
    corners = np.array([[c0, r0, slice_], [c1, r0, slice_], [c0, r1, slice_], [c1, r1, slice_]])
    world = frame.pixel_to_world(corners, plane)
    lo, hi = world.min(axis=0) - tol, world.max(axis=0) + tol
    region = Region((lo[0], lo[1], hi[0], hi[1], lo[2], hi[2]))
    point, normal = frame.slice_plane(slice_, plane)

    def to_plane(coords: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return frame.world_to_pixel(coords, plane)[:, :2]

    ids: list[int] = []
    seen: list[BaseGeometry] = []
    props: list[dict[str, Any]] = []
    after = 0
    while True:
        found = store.query(image_id, region, after, MAX_PAGE)
        for a in found:
            g = a.content.geometry
            if g is None:
                continue
            p = a.content.placement
            on_slice = p is not None and p.plane is plane and p.slice == slice_
            cut: BaseGeometry | None = g
            if not (on_slice or lies_on_plane(g, point, normal, tol)):
                cut = plane_intersection(g, point, normal, tol)
            if cut is None:
                continue
            ids.append(a.id)
            seen.append(map_coords(cut, to_plane, 2))
            props.append({"label": a.label, "status": a.content.status.value, "author": a.author})
        if len(found) < MAX_PAGE:
            break
        after = found[-1].id
    geoms = np.empty(len(seen), dtype=object)
    geoms[:] = seen
    return TileShapes(ids, geoms, props)
