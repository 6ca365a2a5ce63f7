"""Multiscale array sources: OME-NGFF zarr folders, and the shared tile logic TIFFs use too.

``MultiscaleSource`` serves any image stored as a list of resolution levels, each an N-d array
(zarr arrays: an OME-NGFF dataset, or a TIFF level through tifffile's zarr store) with named
axes. A tile reads only the level whose resolution is the coarsest one not coarser than the tile
needs, and only the window of that level under the tile (zarr decodes just the chunks it
touches); pixels are picked by nearest neighbour, so at zooms that match a stored level the tile
is that level's pixels exactly. Axes: ``Y`` and ``X`` are the image, ``C`` (channels) or ``S``
(samples, e.g. RGB) the bands, ``Z`` the ``slice`` option (default the middle one), any other
axis (time, ...) is taken at index 0.

``NGFFSource`` reads an OME-NGFF image folder: v0.4 (zarr v2, ``.zattrs``) and v0.5 (zarr v3,
``zarr.json`` with the ``ome`` attribute). Its datasets are the levels; their scale factors
come from the ``scale`` coordinate transformations (falling back to the array shapes).
"""

from __future__ import annotations

import json
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from tileserver.errors import BadParameter, ImageReadError, TileOutOfBounds, UnsupportedFile
from tileserver.readers.base import ImageInfo, Pixels, TileOptions, rescale_ranges, select_bands

SUPPORTED_KINDS = "biuf"  # bool excluded below; complex and structured types are not images
SAMPLE_TILE = 256


@dataclass(frozen=True)
class ArrayLevel:
    """One stored resolution: its size and full-resolution pixels per level pixel (x, y)."""

    width: int
    height: int
    sx: float
    sy: float


def band_axis_of(axes: str, shape: tuple[int, ...]) -> str | None:
    """The axis holding the bands: ``C`` or ``S``; None for single-band images."""
    sizes = dict(zip(axes, shape, strict=True))
    c, s = sizes.get("C", 1), sizes.get("S", 1)
    if c > 1 and s > 1:
        raise UnsupportedFile(f"both channels ({c}) and samples ({s}) per pixel")
    if s > 1:
        return "S"
    if "C" in sizes:
        return "C"
    return "S" if "S" in sizes else None


class MultiscaleSource(ABC):
    """Tiles, pixel values and display ranges of a multiscale array image.

    Subclasses set ``info``, ``axes``, ``shapes`` (level 0 first) and ``levels`` via
    ``_setup`` and implement ``_open_level``, which returns an array for the calling thread.
    """

    info: ImageInfo
    supported_options: frozenset[str] = frozenset({"bands", "rescale"})

    def _setup(
        self,
        axes: str,
        shapes: list[tuple[int, ...]],
        dtype: np.dtype[Any],
        scales: list[tuple[float, float]] | None = None,
    ) -> None:
        if "Y" not in axes or "X" not in axes or len(set(axes)) != len(axes):
            raise UnsupportedFile(f"axes {axes!r}: need one Y and one X axis")
        if any(len(s) != len(axes) for s in shapes):
            raise UnsupportedFile("levels do not all have the image's axes")
        if dtype.kind not in SUPPORTED_KINDS or dtype.kind == "b":
            raise UnsupportedFile(f"pixel type {dtype} is not supported")
        self.axes = axes
        self.dtype = dtype
        iy, ix = axes.index("Y"), axes.index("X")
        full = shapes[0]
        self.width, self.height = int(full[ix]), int(full[iy])
        if self.width < 1 or self.height < 1:
            raise UnsupportedFile("no pixels")
        self.band_axis = band_axis_of(axes, full)
        self.count = int(full[axes.index(self.band_axis)]) if self.band_axis else 1
        self.slices = int(full[axes.index("Z")]) if "Z" in axes else 1
        self.levels: list[ArrayLevel] = []
        for i, shape in enumerate(shapes):
            if any(int(shape[k]) != int(full[k]) for k, a in enumerate(axes) if a not in "YX"):
                raise UnsupportedFile(f"level {i} has shape {shape}, unlike level 0 {full}")
            w, h = int(shape[ix]), int(shape[iy])
            if w < 1 or h < 1:
                raise UnsupportedFile(f"level {i} has no pixels")
            sx, sy = scales[i] if scales else (self.width / w, self.height / h)
            self.levels.append(ArrayLevel(w, h, sx, sy))
        if self.slices > 1:
            self.supported_options = frozenset({"bands", "rescale", "slice"})
        self._local = threading.local()
        self._lock = threading.Lock()

    def _extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pyramid_levels": [
                {"width": lv.width, "height": lv.height, "downsample": [lv.sx, lv.sy]}
                for lv in self.levels
            ],
            "axes": self.axes.lower(),
        }
        if self.slices > 1:
            out["slices"] = self.slices
        return out

    # -- arrays ------------------------------------------------------------------------------

    @abstractmethod
    def _open_level(self, index: int) -> Any:
        """The array of level ``index`` for the calling thread."""

    def _array(self, index: int) -> Any:
        cache: dict[int, Any] | None = getattr(self._local, "arrays", None)
        if cache is None:
            cache = self._local.arrays = {}
        arr = cache.get(index)
        if arr is None:
            arr = cache[index] = self._open_level(index)
        return arr

    def close(self) -> None:
        self._local = threading.local()

    # -- reading -----------------------------------------------------------------------------

    def _bands(self, options: TileOptions) -> tuple[int, ...]:
        return select_bands(self.count, options)

    def _slice(self, slice_: int | None) -> int:
        if slice_ is None:
            return self.slices // 2
        if not 0 <= slice_ < self.slices:
            raise TileOutOfBounds(f"slice {slice_} is outside 0..{self.slices - 1}")
        return slice_

    def _read_level(
        self,
        index: int,
        rows: tuple[int, int],
        cols: tuple[int, int],
        bands: tuple[int, ...],
        z: int,
    ) -> npt.NDArray[Any]:
        """Level pixels ``[rows) x [cols)`` of 1-based ``bands``, as (bands, rows, cols)."""
        arr = self._array(index)
        wanted = sorted(set(bands))
        b0, b1 = wanted[0] - 1, wanted[-1]
        # One read of the band range when it is dense; else one read per band.
        groups = [(b0, b1)] if b1 - b0 <= len(wanted) + 1 else [(b - 1, b) for b in wanted]
        parts: list[npt.NDArray[Any]] = []
        try:
            for g0, g1 in groups:
                key: list[int | slice] = []
                for axis in self.axes:
                    if axis == "Y":
                        key.append(slice(*rows))
                    elif axis == "X":
                        key.append(slice(*cols))
                    elif axis == self.band_axis:
                        key.append(slice(g0, g1))
                    elif axis == "Z":
                        key.append(z)
                    else:
                        key.append(0)
                part = np.asarray(arr[tuple(key)])
                kept = [a for a in self.axes if a in "YX" or a == self.band_axis]
                order = [kept.index(a) for a in (self.band_axis, "Y", "X") if a in kept]
                part = part.transpose(order)
                parts.append(part if self.band_axis else part[None])
        except Exception as exc:  # zarr / codecs raise many types on damaged data
            raise ImageReadError(f"{self.info.name}: pixel data cannot be read ({exc})") from exc
        stack = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        dense = len(groups) == 1
        take = [b - 1 - b0 if dense else wanted.index(b) for b in bands]
        if take == list(range(stack.shape[0])):
            return stack
        picked: npt.NDArray[Any] = stack[take]
        return picked

    def _level_for(self, factor: float) -> int:
        """The coarsest level whose resolution is still at least as fine as ``factor``."""
        best = 0
        for i, level in enumerate(self.levels):
            if max(level.sx, level.sy) <= factor * 1.01:
                best = i
        return best

    def _valid(self, data: npt.NDArray[Any]) -> npt.NDArray[np.bool_] | None:
        if data.dtype.kind != "f":
            return None
        valid: npt.NDArray[np.bool_] = ~np.any(np.isnan(data), axis=0)
        return valid

    def read_tile(
        self, z: int, x: int, y: int, options: TileOptions, with_mask: bool = True
    ) -> Pixels:
        pyramid = self.info.pyramid
        col0, row0, _, _ = pyramid.tile_window(z, x, y)
        factor = pyramid.factor(z)
        bands = self._bands(options)
        zi = self._slice(options.slice)
        li = self._level_for(factor)
        level = self.levels[li]
        ts = pyramid.tile_size
        out_w = min(ts, -(-(self.width - col0) // factor))
        out_h = min(ts, -(-(self.height - row0) // factor))
        # Nearest level pixel under each output pixel's centre.
        centres_x = col0 + (np.arange(out_w) + 0.5) * factor
        centres_y = row0 + (np.arange(out_h) + 0.5) * factor
        cols = np.clip(np.floor(centres_x / level.sx).astype(np.int64), 0, level.width - 1)
        rows = np.clip(np.floor(centres_y / level.sy).astype(np.int64), 0, level.height - 1)
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        data = self._read_level(li, (r0, r1), (c0, c1), bands, zi)
        if c1 - c0 != out_w or r1 - r0 != out_h:
            data = data[:, rows - r0][:, :, cols - c0]
        valid = self._valid(data)
        if out_w == ts and out_h == ts:
            return Pixels(data, valid)
        # Edge tile: pad to the full tile size, padding invalid.
        padded = np.zeros((len(bands), ts, ts), dtype=data.dtype)
        padded[:, :out_h, :out_w] = data
        mask = np.zeros((ts, ts), dtype=bool)
        mask[:out_h, :out_w] = True if valid is None else valid
        return Pixels(padded, mask)

    def value_at(
        self, col: float, row: float, slice_: int | None, plane: str | None
    ) -> dict[str, Any]:
        """Every band's value of the pixel containing ``(col, row)`` at full resolution."""
        if plane is not None:
            raise BadParameter("plane does not apply to this image")
        if slice_ is not None and "slice" not in self.supported_options:
            raise BadParameter("slice does not apply to a 2D image")
        if not (0 <= col < self.width and 0 <= row < self.height):
            raise TileOutOfBounds(
                f"pixel ({col}, {row}) is outside the {self.width}x{self.height} image"
            )
        c, r = int(col), int(row)
        zi = self._slice(slice_)
        data = self._read_level(0, (r, r + 1), (c, c + 1), tuple(range(1, self.count + 1)), zi)
        values = data[:, 0, 0]
        out: dict[str, Any] = {
            "col": col,
            "row": row,
            "value": [None if math.isnan(v) else v for v in map(float, values)],
            "valid": not bool(np.any(np.isnan(values))) if values.dtype.kind == "f" else True,
        }
        if self.slices > 1:
            out["slice"] = zi
        return out

    def display_ranges(self, options: TileOptions) -> list[tuple[float, float]] | None:
        return rescale_ranges(options, self._bands(options), self.info.default_rescale)

    def _sample_coarsest(self) -> npt.NDArray[Any]:
        """Pixels of the coarsest level (a 4x4 grid of windows when it is large)."""
        li = len(self.levels) - 1
        level = self.levels[li]
        bands = tuple(range(1, self.count + 1))
        zi = self._slice(None)
        if max(level.width, level.height) <= 2048:
            return self._read_level(li, (0, level.height), (0, level.width), bands, zi)
        parts = []
        for fy in np.linspace(0, 1, 4):
            for fx in np.linspace(0, 1, 4):
                r0 = int(fy * max(0, level.height - SAMPLE_TILE))
                c0 = int(fx * max(0, level.width - SAMPLE_TILE))
                win = self._read_level(
                    li,
                    (r0, min(level.height, r0 + SAMPLE_TILE)),
                    (c0, min(level.width, c0 + SAMPLE_TILE)),
                    bands,
                    zi,
                )
                parts.append(win.reshape(self.count, -1))
        return np.concatenate(parts, axis=1)[:, None, :]

    def _check_readable(self) -> None:
        """Decode one small window of the coarsest level: damaged chunks fail at scan."""
        li = len(self.levels) - 1
        level = self.levels[li]
        try:
            self._read_level(
                li,
                (0, min(level.height, SAMPLE_TILE)),
                (0, min(level.width, SAMPLE_TILE)),
                (1,),
                self._slice(None),
            )
        except ImageReadError as exc:
            raise UnsupportedFile(str(exc)) from exc

    def _percentile_rescale(self) -> list[tuple[float, float]]:
        """Per-band 2nd-98th percentile of the coarsest level's valid pixels."""
        try:
            data = self._sample_coarsest()
        except ImageReadError as exc:
            raise UnsupportedFile(str(exc)) from exc
        ranges: list[tuple[float, float]] = []
        for band in data:
            v = band[np.isfinite(band)] if band.dtype.kind == "f" else band.ravel()
            if v.size == 0:
                ranges.append((0.0, 1.0))
                continue
            lo, hi = np.percentile(v, [2.0, 98.0])
            ranges.append((float(lo), float(hi if hi > lo else lo + 1)))
        return ranges


# -- OME-NGFF ---------------------------------------------------------------------------------

ZARR_IMAGE, ZARR_OTHER = "image", "other"


def _load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def zarr_folder_kind(folder: Path) -> str | None:
    """``"image"`` for an OME-NGFF multiscales folder (also a broken one, so that it is
    reported), ``"other"`` for any other zarr array or group, None for a plain folder."""
    zattrs, zjson = folder / ".zattrs", folder / "zarr.json"
    if (folder / ".zarray").is_file():
        return ZARR_OTHER
    for meta in (zattrs, zjson):
        if not meta.is_file():
            continue
        try:
            doc = _load_json(meta)
        except (OSError, ValueError):
            return ZARR_IMAGE  # unreadable metadata: served as broken, with its reason
        if not isinstance(doc, dict):
            return ZARR_IMAGE
        if meta is zjson:
            if doc.get("node_type") == "array":
                return ZARR_OTHER
            attrs = doc.get("attributes") or {}
            doc = attrs.get("ome", attrs) if isinstance(attrs, dict) else {}
        return ZARR_IMAGE if isinstance(doc, dict) and "multiscales" in doc else ZARR_OTHER
    return None


def zarr_metadata_files(folder: Path) -> list[Path]:
    return [p for p in (folder / ".zattrs", folder / "zarr.json") if p.is_file()]


AXIS_LETTERS = {"time": "T", "channel": "C"}


def _axis_letter(axis: Any) -> str:
    if isinstance(axis, str):
        name, kind = axis, ""
    elif isinstance(axis, dict):
        name, kind = str(axis.get("name", "")), str(axis.get("type", ""))
    else:
        raise UnsupportedFile(f"axis {axis!r} is malformed")
    if name.lower() in ("x", "y", "z"):
        return name.upper()
    if kind in AXIS_LETTERS:
        return AXIS_LETTERS[kind]
    return {"c": "C", "t": "T"}.get(name.lower(), "Q")


def _scale_of(dataset: dict[str, Any]) -> list[float] | None:
    for t in dataset.get("coordinateTransformations") or []:
        if isinstance(t, dict) and t.get("type") == "scale" and isinstance(t.get("scale"), list):
            return [float(v) for v in t["scale"]]
    return None


class NGFFSource(MultiscaleSource):
    """An OME-NGFF (zarr) multiscale image folder."""

    def __init__(self, image_id: str, path: Path, name: str) -> None:
        self.path = path
        try:
            self._describe(image_id, path, name)
        except UnsupportedFile as exc:
            msg = str(exc)
            raise UnsupportedFile(msg if msg.startswith(name) else f"{name}: {msg}") from exc
        except Exception as exc:  # zarr raises many types on malformed folders
            raise UnsupportedFile(f"{name}: not a readable OME-NGFF zarr ({exc})") from exc

    def _describe(self, image_id: str, path: Path, name: str) -> None:
        attrs, zarr_format = self._attributes(path)
        multiscales = attrs.get("multiscales")
        if not isinstance(multiscales, list) or not multiscales:
            raise UnsupportedFile("no multiscales in the zarr attributes")
        ms = multiscales[0]
        axes = "".join(_axis_letter(a) for a in ms.get("axes") or ["t", "c", "z", "y", "x"])
        datasets = ms.get("datasets")
        if not isinstance(datasets, list) or not datasets:
            raise UnsupportedFile("multiscales has no datasets")
        self._paths: list[str] = []
        for ds in datasets:
            rel = str(ds.get("path", ""))
            parts = Path(rel).parts
            if not rel or Path(rel).is_absolute() or ".." in parts:
                raise UnsupportedFile(f"dataset path {rel!r} leaves the image folder")
            self._paths.append(rel)
        arrays = [self._open_level(i) for i in range(len(self._paths))]
        shapes = [tuple(int(n) for n in a.shape) for a in arrays]
        dtypes = {np.dtype(a.dtype) for a in arrays}
        if len(dtypes) != 1:
            raise UnsupportedFile(f"levels of mixed types {sorted(map(str, dtypes))}")
        scales = self._scales(datasets, axes, shapes)
        self._setup(axes, shapes, dtypes.pop(), scales)
        self.info = ImageInfo(
            id=image_id,
            name=name,
            kind="zarr",
            path=path,
            width=self.width,
            height=self.height,
            dtype=str(self.dtype),
            bands=self.count,
            extra={
                **self._extra(),
                "ngff_version": str(ms.get("version") or attrs.get("version") or ""),
                "zarr_format": zarr_format,
            },
        )
        omero = attrs.get("omero") if isinstance(attrs.get("omero"), dict) else None
        channels = (omero or {}).get("channels") or []
        labels = [c.get("label") for c in channels if isinstance(c, dict)]
        self.info.band_names = [
            str(labels[i]) if i < len(labels) and labels[i] else f"c{i + 1}"
            for i in range(self.count)
        ]
        self._check_readable()
        if self.dtype != np.uint8:
            self.info.default_rescale = self._omero_windows(channels) or self._percentile_rescale()

    @staticmethod
    def _attributes(path: Path) -> tuple[dict[str, Any], int]:
        zjson = path / "zarr.json"
        if zjson.is_file():
            doc = _load_json(zjson)
            attrs = doc.get("attributes") or {}
            return (attrs.get("ome", attrs) if isinstance(attrs, dict) else {}), 3
        doc = _load_json(path / ".zattrs")
        if not isinstance(doc, dict):
            raise UnsupportedFile(".zattrs is not a JSON object")
        return doc, 2

    def _scales(
        self, datasets: list[Any], axes: str, shapes: list[tuple[int, ...]]
    ) -> list[tuple[float, float]] | None:
        """Full-resolution pixels per level pixel from the ``scale`` transformations."""
        scales = [_scale_of(ds) for ds in datasets]
        ix, iy = axes.index("X"), axes.index("Y")
        base = scales[0]
        if base is None or any(s is None or len(s) != len(axes) for s in scales):
            return None
        out: list[tuple[float, float]] = []
        for s, shape in zip(scales, shapes, strict=True):
            assert s is not None
            if s[ix] <= 0 or s[iy] <= 0 or base[ix] <= 0 or base[iy] <= 0:
                return None
            sx, sy = s[ix] / base[ix], s[iy] / base[iy]
            # A scale that disagrees with the shapes by more than a pixel is not trusted.
            if (
                abs(shape[ix] * sx - shapes[0][ix]) > sx + 1
                or abs(shape[iy] * sy - shapes[0][iy]) > sy + 1
            ):
                return None
            out.append((sx, sy))
        return out

    def _omero_windows(self, channels: list[Any]) -> list[tuple[float, float]] | None:
        ranges: list[tuple[float, float]] = []
        for i in range(self.count):
            window = channels[i].get("window") if i < len(channels) else None
            if not isinstance(window, dict):
                return None
            try:
                lo, hi = float(window["start"]), float(window["end"])
            except (KeyError, TypeError, ValueError):
                return None
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                return None
            ranges.append((lo, hi))
        return ranges

    def _open_level(self, index: int) -> Any:
        store = zarr.storage.LocalStore(self.path / self._paths[index], read_only=True)
        return zarr.open_array(store=store, mode="r")
