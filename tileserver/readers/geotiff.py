"""GeoTIFF / COG source (rasterio): native pyramid tiles and WebMercatorQuad tiles.

Datasets stay open, one handle per thread and pyramid level (GDAL handles are not
thread-safe). Every read goes to the overview whose resolution is the finest one not finer than
the output needs, so a coarse tile never reads the full-resolution image when the file has
overviews.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from annot.coords import GeoReference
from tileserver.errors import BadParameter, ImageReadError, TileOutOfBounds, UnsupportedFile
from tileserver.readers.base import (
    DEFAULT_TILE_SIZE,
    ImageInfo,
    Pixels,
    TileOptions,
    rescale_ranges,
    select_bands,
)
from tileserver.readers.mercator import WEB_MERCATOR, MercatorGrid, SourceGrid, bbox_to_3857
from tileserver.readers.tiffcheck import check_tiff_file

log = logging.getLogger(__name__)

WORLD_3857_WIDTH = 40_075_016.685578488  # metres spanned by WebMercatorQuad zoom 0

# Only the TIFF drivers: a VRT (or any format that can point at other files) is never opened.
ALLOWED_DRIVERS = ["GTiff"]


@dataclass(frozen=True)
class Level:
    """One stored resolution: the full image (overview None) or an internal overview."""

    overview: int | None
    width: int
    height: int

    def scale(self, full_width: int, full_height: int) -> tuple[float, float]:
        """Full-resolution pixels per pixel of this level, along x and y."""
        return full_width / self.width, full_height / self.height


def open_dataset(path: Path, overview: int | None = None) -> Any:
    kwargs: dict[str, Any] = {"driver": "GTiff"}
    if overview is not None:
        kwargs["overview_level"] = overview
    return rasterio.open(path, **kwargs)


class GeoTIFFSource:
    """A georeferenced (or plain) TIFF read through GDAL."""

    supported_options = frozenset({"bands", "rescale"})

    def __init__(self, image_id: str, path: Path, name: str) -> None:
        check_tiff_file(path)
        try:
            with open_dataset(path) as ds:
                self._describe(ds, image_id, path, name)
        except RasterioError as exc:
            raise UnsupportedFile(f"{path.name}: GDAL cannot read it as a GeoTIFF ({exc})") from exc
        self._local = threading.local()
        self._handles: list[Any] = []
        self._lock = threading.Lock()

    # -- metadata ---------------------------------------------------------------------------

    def _describe(self, ds: Any, image_id: str, path: Path, name: str) -> None:
        if ds.driver not in ALLOWED_DRIVERS:
            raise UnsupportedFile(f"{path.name}: driver {ds.driver} is not allowed")
        if ds.count < 1 or ds.width < 1 or ds.height < 1:
            raise UnsupportedFile(f"{path.name}: no pixels")
        dtypes = set(ds.dtypes)
        if len(dtypes) != 1:
            raise UnsupportedFile(f"{path.name}: bands of mixed types {sorted(dtypes)}")
        self.width, self.height, self.count = ds.width, ds.height, ds.count
        self.dtype = np.dtype(ds.dtypes[0])
        self.nodata: float | None = ds.nodata
        flags = ds.mask_flag_enums[0]
        self.mask_kind = (
            "nodata"
            if MaskFlags.nodata in flags
            else "mask"
            if (MaskFlags.per_dataset in flags or MaskFlags.alpha in flags)
            else "none"
        )
        self.scales = np.asarray(ds.scales, dtype=np.float64)
        self.offsets = np.asarray(ds.offsets, dtype=np.float64)
        self.unscale = bool(np.any(self.scales != 1.0) or np.any(self.offsets != 0.0))
        factors = ds.overviews(1)
        self.levels = [Level(None, ds.width, ds.height)]
        for i, _ in enumerate(factors):
            with open_dataset(path, i) as ov:
                self.levels.append(Level(i, ov.width, ov.height))
        self.georef: GeoReference | None = None
        extra: dict[str, Any] = {
            "nodata": self.nodata,
            "overviews": [int(f) for f in factors],
            "tiled": bool(ds.block_shapes[0][0] < ds.height and ds.block_shapes[0][1] < ds.width),
            "crs": None,
            "transform": None,
            "bounds_wgs84": None,
        }
        if ds.crs is not None and not ds.transform.is_identity:
            t = ds.transform
            self.georef = GeoReference((t.a, t.b, t.c, t.d, t.e, t.f), ds.crs.to_wkt())
            extra["crs"] = {"wkt": ds.crs.to_wkt(), "epsg": ds.crs.to_epsg()}
            extra["transform"] = [t.a, t.b, t.c, t.d, t.e, t.f]
            extra["bounds_wgs84"] = self._bounds_wgs84()
            self.bbox_3857 = bbox_to_3857(extra["bounds_wgs84"])
            extra["webmercator_maxzoom"] = self._mercator_max_zoom()
        if self.unscale:
            extra["scales"] = self.scales.tolist()
            extra["offsets"] = self.offsets.tolist()
        self.info = ImageInfo(
            id=image_id,
            name=name,
            kind="geotiff" if self.georef else "tiff",
            path=path,
            width=ds.width,
            height=ds.height,
            dtype=str(self.dtype),
            bands=ds.count,
            band_names=[d or f"b{i + 1}" for i, d in enumerate(ds.descriptions)],
            extra=extra,
        )
        if self.dtype != np.uint8 or self.unscale:
            self.info.default_rescale = self._default_rescale(ds)

    def _bounds_wgs84(self) -> list[float]:
        assert self.georef is not None
        # Sample the whole outline, not only the corners: a UTM edge bows in lon/lat.
        t = np.linspace(0.0, 1.0, 21)
        cols = np.concatenate(
            [t * self.width, np.full_like(t, self.width), t * self.width, np.zeros_like(t)]
        )
        rows = np.concatenate(
            [np.zeros_like(t), t * self.height, np.full_like(t, self.height), t * self.height]
        )
        lon, lat = self.georef.pixel_to_wgs84(cols, rows)
        return [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]

    def _mercator_max_zoom(self) -> int:
        """The WebMercatorQuad zoom whose resolution first matches the image's, at its centre."""
        assert self.georef is not None
        cols = np.array([self.width / 2, self.width / 2 + 1])
        rows = np.array([self.height / 2, self.height / 2])
        x, y = self.georef.pixel_to(WEB_MERCATOR, cols, rows)
        res = float(np.hypot(x[1] - x[0], y[1] - y[0]))
        z = int(np.ceil(np.log2(WORLD_3857_WIDTH / DEFAULT_TILE_SIZE / max(res, 1e-6))))
        return max(0, min(24, z))

    def _default_rescale(self, ds: Any) -> list[tuple[float, float]]:
        """Per-band 2nd-98th percentile of valid pixels, from the coarsest level (cheap)."""
        level = self.levels[-1]
        shrink = max(1, max(level.width, level.height) // 1024)
        with open_dataset(self.info.path, level.overview) as src:
            out_shape = (self.count, max(1, level.height // shrink), max(1, level.width // shrink))
            data = src.read(out_shape=out_shape, resampling=Resampling.nearest)
            valid = self._valid_from_data(data)
            if self.mask_kind == "mask":
                valid &= src.read_masks(1, out_shape=out_shape[1:]) > 0
        values = self._unscaled(data, tuple(range(1, self.count + 1)))
        ranges: list[tuple[float, float]] = []
        for band in values:
            v = band[valid & np.isfinite(band)]
            if v.size == 0:
                ranges.append((0.0, 1.0))
                continue
            lo, hi = np.percentile(v, [2.0, 98.0])
            ranges.append((float(lo), float(hi if hi > lo else lo + 1)))
        return ranges

    # -- handles ----------------------------------------------------------------------------

    def _dataset(self, overview: int | None) -> Any:
        cache: dict[int | None, Any] | None = getattr(self._local, "handles", None)
        if cache is None:
            cache = self._local.handles = {}
        ds = cache.get(overview)
        if ds is None:
            try:
                ds = open_dataset(self.info.path, overview)
            except RasterioError as exc:
                raise ImageReadError(f"{self.info.name} cannot be opened: {exc}") from exc
            cache[overview] = ds
            with self._lock:
                self._handles.append(ds)
        return ds

    def close(self) -> None:
        with self._lock:
            for ds in self._handles:
                ds.close()
            self._handles.clear()
        self._local = threading.local()

    # -- pixels -----------------------------------------------------------------------------

    def _bands(self, options: TileOptions) -> tuple[int, ...]:
        return select_bands(self.count, options)

    def display_ranges(self, options: TileOptions) -> list[tuple[float, float]] | None:
        return rescale_ranges(options, self._bands(options), self.info.default_rescale)

    def _level_for(self, scale: float) -> Level:
        """The coarsest level whose resolution is still at least as fine as ``scale``."""
        best = self.levels[0]
        for level in self.levels[1:]:
            if level.scale(self.width, self.height)[0] <= scale * 1.01:
                best = level
        return best

    def _valid_from_data(self, data: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        valid = np.ones(data.shape[1:], dtype=bool)
        if self.nodata is not None:
            if np.isnan(self.nodata):
                valid &= ~np.all(np.isnan(data), axis=0)
            else:
                valid &= ~np.all(data == self.nodata, axis=0)
        if data.dtype.kind == "f":
            valid &= ~np.any(np.isnan(data), axis=0)
        return valid

    def _unscaled(self, data: npt.NDArray[Any], bands: tuple[int, ...]) -> npt.NDArray[Any]:
        if not self.unscale:
            return data
        idx = np.asarray(bands) - 1
        scale = self.scales[idx].astype(np.float32)[:, None, None]
        offset = self.offsets[idx].astype(np.float32)[:, None, None]
        unscaled: npt.NDArray[Any] = data.astype(np.float32) * scale + offset
        return unscaled

    def _read(
        self,
        level: Level,
        window: Window,
        bands: tuple[int, ...],
        out_shape: tuple[int, int],
        with_mask: bool,
    ) -> Pixels:
        ds = self._dataset(level.overview)
        try:
            data = ds.read(
                list(bands),
                window=window,
                out_shape=(len(bands), *out_shape),
                resampling=Resampling.nearest,
            )
            valid = (
                self._valid_from_data(data)
                if self.mask_kind != "none" or data.dtype.kind == "f"
                else None
            )
            if with_mask and self.mask_kind == "mask":
                m = ds.read_masks(bands[0], window=window, out_shape=out_shape) > 0
                valid = m if valid is None else valid & m
        except RasterioError as exc:
            raise ImageReadError(f"{self.info.name}: pixel data cannot be read ({exc})") from exc
        return Pixels(self._unscaled(data, bands), valid)

    def read_tile(
        self, z: int, x: int, y: int, options: TileOptions, with_mask: bool = True
    ) -> Pixels:
        pyramid = self.info.pyramid
        col0, row0, span, _ = pyramid.tile_window(z, x, y)
        factor = pyramid.factor(z)
        level = self._level_for(factor)
        sx, sy = level.scale(self.width, self.height)
        bands = self._bands(options)
        ts = pyramid.tile_size
        # Part of the tile inside the image, in output pixels and in level pixels.
        out_w = min(ts, -(-(self.width - col0) // factor))
        out_h = min(ts, -(-(self.height - row0) // factor))
        win = Window(
            col0 / sx,
            row0 / sy,
            min(span, self.width - col0) / sx,
            min(span, self.height - row0) / sy,
        )
        px = self._read(level, win, bands, (out_h, out_w), with_mask)
        if out_w == ts and out_h == ts:
            return px
        # Edge tile: pad to the full tile size, padding invalid.
        data = np.zeros((len(bands), ts, ts), dtype=px.data.dtype)
        data[:, :out_h, :out_w] = px.data
        valid = np.zeros((ts, ts), dtype=bool)
        valid[:out_h, :out_w] = True if px.valid is None else px.valid
        return Pixels(data, valid)

    def value_at(
        self, col: float, row: float, slice_: int | None, plane: str | None
    ) -> dict[str, Any]:
        """Every band's value (after scale/offset) of the pixel containing ``(col, row)``."""
        if slice_ is not None or plane is not None:
            raise BadParameter("slice and plane do not apply to a 2D image")
        if not (0 <= col < self.width and 0 <= row < self.height):
            raise TileOutOfBounds(
                f"pixel ({col}, {row}) is outside the {self.width}x{self.height} image"
            )
        c, r = int(col), int(row)
        bands = tuple(range(1, self.count + 1))
        px = self._read(self.levels[0], Window(c, r, 1, 1), bands, (1, 1), with_mask=True)
        out: dict[str, Any] = {
            "col": col,
            "row": row,
            # JSON has no NaN: a NaN value is null.
            "value": [float(v) if np.isfinite(v) else None for v in px.data[:, 0, 0]],
            "valid": bool(px.valid is None or px.valid[0, 0]),
        }
        if self.georef is not None:
            x, y = self.georef.pixel_to_crs(c + 0.5, r + 0.5)
            lon, lat = self.georef.crs_to_wgs84(x, y)
            out["crs"] = [float(x), float(y)]
            out["lonlat"] = [float(lon), float(lat)]
        return out

    def read_mercator_tile(
        self, z: int, x: int, y: int, options: TileOptions, with_mask: bool = True
    ) -> Pixels:
        if self.georef is None:
            raise BadParameter("this image has no georeference: use the native pyramid tiles")
        grid = MercatorGrid.for_tile(z, x, y, self.info.tile_size)
        src = SourceGrid.map(grid, self.georef, self.width, self.height, self.bbox_3857)
        if src is None:
            raise TileOutOfBounds(f"WebMercatorQuad tile {z}/{x}/{y} does not overlap the image")
        level = self._level_for(src.scale)
        sx, sy = level.scale(self.width, self.height)
        cols, rows, inside = src.level_indices(sx, sy, level.width, level.height)
        c0, c1 = int(cols.min()), int(cols.max()) + 1
        r0, r1 = int(rows.min()), int(rows.max()) + 1
        bands = self._bands(options)
        px = self._read(
            level, Window(c0, r0, c1 - c0, r1 - r0), bands, (r1 - r0, c1 - c0), with_mask
        )
        flat = (rows - r0) * (c1 - c0) + (cols - c0)
        sub = px.data.reshape(len(bands), -1).take(flat, axis=1)
        all_inside = bool(inside.all())
        sub_valid = inside if all_inside is False else None
        if px.valid is not None:
            v = px.valid.reshape(-1).take(flat)
            sub_valid = v if sub_valid is None else sub_valid & v
        size = self.info.tile_size
        u0, v0, u1, v1 = src.window
        if (u0, v0, u1, v1) == (0, 0, size, size):
            return Pixels(sub, sub_valid)
        data = np.zeros((len(bands), size, size), dtype=sub.dtype)
        data[:, v0:v1, u0:u1] = sub
        valid = np.zeros((size, size), dtype=bool)
        valid[v0:v1, u0:u1] = True if sub_valid is None else sub_valid
        return Pixels(data, valid)
