"""Mapping WebMercatorQuad output pixels to source pixels, without GDAL's per-request warper.

The exact CRS transform is evaluated on a coarse grid of nodes (every 16 output pixels) and
interpolated bilinearly to every pixel centre; where the interpolation error exceeds 1/8 of an
output pixel (strong curvature at low zoom) every pixel is transformed exactly. Transformers
are built once per CRS pair and cached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import morecantile
import numpy as np
import numpy.typing as npt

from annot.coords import GeoReference, get_transformer
from tileserver.errors import TileOutOfBounds

WEB_MERCATOR = "EPSG:3857"
TMS = morecantile.tms.get("WebMercatorQuad")
NODE_STEP = 16
MAX_ERROR_PX = 0.125

FloatArray = npt.NDArray[np.floating[Any]]
PixelMap = Callable[[FloatArray, FloatArray], tuple[FloatArray, FloatArray]]


@dataclass(frozen=True)
class MercatorGrid:
    """Output pixel grid of one WebMercatorQuad tile (EPSG:3857 metres)."""

    left: float
    top: float
    res: float
    size: int

    @classmethod
    def for_tile(cls, z: int, x: int, y: int, size: int) -> MercatorGrid:
        if not 0 <= z <= 30:
            raise TileOutOfBounds(f"WebMercatorQuad zoom {z} is outside 0..30")
        n = 2**z
        if not (0 <= x < n and 0 <= y < n):
            raise TileOutOfBounds(f"WebMercatorQuad tile {z}/{x}/{y} does not exist")
        b = TMS.xy_bounds(morecantile.Tile(x, y, z))
        return cls(b.left, b.top, (b.right - b.left) / size, size)

    def pixel_range(
        self, bbox: tuple[float, float, float, float]
    ) -> tuple[int, int, int, int] | None:
        """Output pixels ``(u0, v0, u1, v1)`` whose centres may fall in a 3857 bbox."""
        minx, miny, maxx, maxy = bbox
        u0 = max(0, int(np.floor((minx - self.left) / self.res)))
        u1 = min(self.size, int(np.ceil((maxx - self.left) / self.res)))
        v0 = max(0, int(np.floor((self.top - maxy) / self.res)))
        v1 = min(self.size, int(np.ceil((self.top - miny) / self.res)))
        if u0 >= u1 or v0 >= v1:
            return None
        return u0, v0, u1, v1


def _interp_weights(nodes: FloatArray, centres: FloatArray) -> FloatArray:
    """Dense linear-interpolation matrix from node values to values at ``centres``."""
    k = np.clip(np.searchsorted(nodes, centres, side="right") - 1, 0, len(nodes) - 2)
    t = (centres - nodes[k]) / (nodes[k + 1] - nodes[k])
    w = np.zeros((len(centres), len(nodes)))
    rows = np.arange(len(centres))
    w[rows, k] = 1.0 - t
    w[rows, k + 1] = t
    return w


@dataclass
class SourceGrid:
    """Source pixel coordinates (full resolution) of the output pixel centres of one tile.

    Only the output pixels ``window = (u0, v0, u1, v1)`` can see the image. Coordinates are
    kept as coarse nodes plus interpolation weights (the common case) or as exact arrays.
    """

    window: tuple[int, int, int, int]
    scale: float  # source pixels per output pixel (the finest direction)
    nodes: tuple[FloatArray, FloatArray] | None  # node cols, rows (nv, nu)
    weights: tuple[FloatArray, FloatArray] | None  # wv (rows, nv), wu (cols, nu)
    exact: tuple[FloatArray, FloatArray] | None  # cols, rows over the window

    @classmethod
    def map(
        cls,
        grid: MercatorGrid,
        georef: GeoReference,
        width: int,
        height: int,
        bbox_3857: tuple[float, float, float, float],
    ) -> SourceGrid | None:
        rng = grid.pixel_range(bbox_3857)
        if rng is None:
            return None
        u0, v0, u1, v1 = rng
        to_src = get_transformer(WEB_MERCATOR, georef.crs)

        def source_pixels(us: FloatArray, vs: FloatArray) -> tuple[FloatArray, FloatArray]:
            x, y = to_src.transform(
                grid.left + us * grid.res, grid.top - vs * grid.res, errcheck=False
            )
            return georef.crs_to_pixel(x, y)

        nu = max(2, int(np.ceil((u1 - u0) / NODE_STEP)) + 1)
        nv = max(2, int(np.ceil((v1 - v0) / NODE_STEP)) + 1)
        node_u = np.linspace(u0, u1, nu)
        node_v = np.linspace(v0, v1, nv)
        node_c, node_r = source_pixels(*np.meshgrid(node_u, node_v))
        scale = _finest_scale(node_c, node_r, node_u, node_v)
        centre_u = np.arange(u0, u1) + 0.5
        centre_v = np.arange(v0, v1) + 0.5
        if _interpolation_ok(source_pixels, node_c, node_r, node_u, node_v, scale):
            weights = (
                _interp_weights(node_v, centre_v).astype(np.float32),
                _interp_weights(node_u, centre_u).astype(np.float32),
            )
            out = cls((u0, v0, u1, v1), scale, (node_c, node_r), weights, None)
        else:
            out = cls(
                (u0, v0, u1, v1), scale, None, None, _exact(source_pixels, centre_u, centre_v)
            )
        # Reject tiles whose pixels all miss the image (cheap check on the nodes' hull).
        c, r = (node_c, node_r) if out.exact is None else out.exact
        if c.max() < 0 or r.max() < 0 or c.min() >= width or r.min() >= height:
            return None
        return out

    def level_indices(
        self, sx: float, sy: float, level_width: int, level_height: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Nearest-sample pixel indices in a level ``sx`` x ``sy`` coarser than full resolution.

        Returns (cols, rows, inside) over ``window``; indices outside the image are clipped
        and flagged False in ``inside``.
        """
        if self.nodes is not None and self.weights is not None:
            wv, wu = self.weights
            # The map is linear in the node values: scale the nodes, not every pixel. The
            # interpolation runs in float32 (10x faster here) on non-negative offsets from an
            # integer origin, which keeps it accurate to ~1e-4 pixel.
            nc, nr = self.nodes[0] / sx, self.nodes[1] / sy
            oc, orow = int(np.floor(nc.min())), int(np.floor(nr.min()))
            c: FloatArray = wv @ (nc - oc).astype(np.float32) @ wu.T
            r: FloatArray = wv @ (nr - orow).astype(np.float32) @ wu.T
        else:
            assert self.exact is not None
            c, r = self.exact[0] / sx, self.exact[1] / sy
            oc, orow = int(np.floor(c.min())), int(np.floor(r.min()))
            c, r = c - oc, r - orow
        inside = (c >= -oc) & (c < level_width - oc) & (r >= -orow) & (r < level_height - orow)
        ci = c.astype(np.intp)  # truncation is floor: offsets are >= 0
        ri = r.astype(np.intp)
        ci += oc
        ri += orow
        if not inside.all():
            np.clip(ci, 0, level_width - 1, out=ci)
            np.clip(ri, 0, level_height - 1, out=ri)
        return ci, ri, inside


def _interpolation_ok(
    source_pixels: PixelMap,
    node_c: FloatArray,
    node_r: FloatArray,
    node_u: FloatArray,
    node_v: FloatArray,
    scale: float,
) -> bool:
    """Whether bilinear interpolation between nodes stays within MAX_ERROR_PX output pixels."""
    if not (np.all(np.isfinite(node_c)) and np.all(np.isfinite(node_r))):
        return False
    mid_u = (node_u[:-1] + node_u[1:]) / 2
    mid_v = (node_v[:-1] + node_v[1:]) / 2
    exact_c, exact_r = source_pixels(*np.meshgrid(mid_u, mid_v))
    interp_c = (node_c[:-1, :-1] + node_c[1:, :-1] + node_c[:-1, 1:] + node_c[1:, 1:]) / 4
    interp_r = (node_r[:-1, :-1] + node_r[1:, :-1] + node_r[:-1, 1:] + node_r[1:, 1:]) / 4
    err = np.hypot(interp_c - exact_c, interp_r - exact_r)
    return bool(np.all(np.isfinite(err)) and err.max() <= MAX_ERROR_PX * scale)


def _exact(
    source_pixels: PixelMap, us: FloatArray, vs: FloatArray
) -> tuple[FloatArray, FloatArray]:
    gu, gv = np.meshgrid(us, vs)
    c, r = source_pixels(gu, gv)
    return np.nan_to_num(c, nan=-1.0, posinf=-1.0, neginf=-1.0), np.nan_to_num(
        r, nan=-1.0, posinf=-1.0, neginf=-1.0
    )


def _finest_scale(c: FloatArray, r: FloatArray, nu: FloatArray, nv: FloatArray) -> float:
    du = np.hypot(np.diff(c, axis=1), np.diff(r, axis=1)) / np.diff(nu)[None, :]
    dv = np.hypot(np.diff(c, axis=0), np.diff(r, axis=0)) / np.diff(nv)[:, None]
    finite = np.concatenate([du[np.isfinite(du)].ravel(), dv[np.isfinite(dv)].ravel()])
    return float(finite.min()) if finite.size else 1.0


def bbox_to_3857(lon_lat_bounds: list[float]) -> tuple[float, float, float, float]:
    """WebMercator bbox of a lon/lat bbox (latitudes clamped to the WebMercator range)."""
    lon0, lat0, lon1, lat1 = lon_lat_bounds
    lat0, lat1 = max(lat0, -85.06), min(lat1, 85.06)
    t = get_transformer("EPSG:4326", WEB_MERCATOR)
    x0, y0 = t.transform(lon0, lat0)
    x1, y1 = t.transform(lon1, lat1)
    return float(x0), float(y0), float(x1), float(y1)
