"""DICOM images as tile sources: volumes (series and multi-frame), frame stacks and 2D images.

Values are modality values (RescaleSlope/Intercept applied: Hounsfield units for CT) as float32
(int16 when that is exact); tiles map them to 0..255 with DICOM's linear VOI function
(window/level). Pixel data is read lazily: a tile on the acquisition plane decodes one file (or
frame), kept in a small LRU; the other planes read a copy of the whole volume, built on first
use as a ``.npy`` file in the state folder and memory-mapped, so that no tile decodes every file.

Planes and pixel grids follow ``annot.patient``: the acquisition plane is the stored grid; the
other two planes are resampled along the slice axis to square pixels with linear interpolation
between the two nearest slices (nearest pixel in-plane; coarser zoom levels take every n-th
pixel). Missing slices (gaps wider than 1.5 spacings) are transparent there.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.pixels.utils import pixel_array
from tqdm import tqdm

from annot.patient import (
    PLANES,
    PlaneGrid,
    VolumeGeometry,
    acquisition_plane,
    geometry_from_dicom,
    plane_geometry,
    plane_grid,
    plane_to_patient,
)
from tileserver.errors import BadParameter, ImageReadError, TileOutOfBounds
from tileserver.readers.base import DEFAULT_TILE_SIZE, ImageInfo, Pixels, Pyramid, TileOptions
from tileserver.readers.dicom_index import (
    GAP_FACTOR,
    HeaderIndex,
    ImagePlan,
    is_dicom_candidate,
    plan_images,
)
from tileserver.render import voi_linear_range

log = logging.getLogger(__name__)

__all__ = ["CT_PRESETS", "DicomSource", "WindowPreset", "is_dicom_candidate", "scan_dicom"]

# Standard CT windows (name, centre/level, width) in HU.
CT_PRESETS: tuple[tuple[str, float, float], ...] = (
    ("brain", 40.0, 80.0),
    ("lung", -600.0, 1500.0),
    ("bone", 400.0, 1800.0),
    ("soft_tissue", 40.0, 400.0),
    ("liver", 60.0, 150.0),
)
SLICE_CACHE_BYTES = 256 * 1024 * 1024  # decoded slices kept per process, all images together
CACHE_FOLDER = "dicom-cache"
INTERPOLATION = "linear along the slice axis, nearest in-plane"


@dataclass(frozen=True)
class WindowPreset:
    name: str
    center: float
    width: float
    source: str  # "file" (WindowCenter/Width), "modality" (standard CT) or "data" (min/max)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "center": self.center,
            "width": self.width,
            "source": self.source,
        }


def _preset_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass
class VolumeInfo(ImageInfo):
    """ImageInfo of a DICOM image whose planes have pyramids of different sizes.

    ``pyramid`` covers the largest plane, so that a check against it admits every plane's tiles
    (each read checks the requested plane's own pyramid); ``levels`` in the JSON is the
    acquisition plane's, and ``planes`` lists each plane's.
    """

    max_width: int = 0
    max_height: int = 0

    @property
    def pyramid(self) -> Pyramid:
        return Pyramid(max(self.width, self.max_width), max(self.height, self.max_height))

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["levels"] = Pyramid(self.width, self.height, self.tile_size).levels
        return out


def _is_range(idx: npt.NDArray[np.intp]) -> bool:
    """Evenly spaced increasing indexes (a slice can take them as a view)."""
    if len(idx) < 2:
        return len(idx) == 1
    d = np.diff(idx)
    return bool(d[0] > 0 and np.all(d == d[0]))


class SliceCache:
    """A process-wide LRU of decoded slices, bounded in bytes, keyed by (image, slice)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[tuple[int, int], npt.NDArray[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> npt.NDArray[Any] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: tuple[int, int], values: npt.NDArray[Any]) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = values
            self.size += values.nbytes
            while self.size > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self.size -= old.nbytes

    def drop(self, owner: int) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == owner]:
                self.size -= self._items.pop(key).nbytes


SLICES = SliceCache(SLICE_CACHE_BYTES)


def _values_dtype(plan: ImagePlan) -> np.dtype[Any]:
    """int16 when slope 1 and an integral intercept keep every possible value in range."""
    rec = plan.header
    if rec["samples"] != 1:
        return np.dtype(np.uint8)
    bits = int(rec["bits_stored"])
    lo, hi = (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if rec["pixel_representation"]
        else (
            0,
            2**bits - 1,
        )
    )
    for f in plan.frames:
        slope, icpt = float(f.fields["slope"]), float(f.fields["intercept"])
        if slope != 1.0 or icpt != round(icpt):
            return np.dtype(np.float32)
        if lo + icpt < -32768 or hi + icpt > 32767:
            return np.dtype(np.float32)
    return np.dtype(np.int16)


class DicomSource:
    """One DICOM image: a volume, a stack of frames or a single 2D image."""

    info: ImageInfo
    supported_options: frozenset[str]

    def __init__(
        self, image_id: str, plan: ImagePlan, cache_dir: Path | None = None, version: str = ""
    ) -> None:
        rec = plan.header
        self.plan = plan
        self.frames = plan.frames
        self.rows, self.cols = int(rec["rows"]), int(rec["cols"])
        self.rgb = int(rec["samples"]) == 3
        if int(rec["samples"]) not in (1, 3):
            raise ImageReadError(f"{plan.name}: {rec['samples']} samples per pixel")
        self.monochrome1 = rec["photometric"] == "MONOCHROME1"
        self.modality = rec["modality"]
        self.dtype = _values_dtype(plan)
        self.cache_dir = cache_dir
        self._vol_lock = threading.Lock()
        self._vol: npt.NDArray[Any] | None = None
        first = self.frames[0].fields
        self.geometry: VolumeGeometry | None = None
        if (
            all(f.fields.get("ipp") and f.fields.get("iop") for f in self.frames)
            and first.get("pixel_spacing")
            and (plan.volume or len(self.frames) == 1)
        ):
            self.geometry = geometry_from_dicom(
                [f.fields["ipp"] for f in self.frames],
                first["iop"],
                first["pixel_spacing"],
                self.rows,
                self.cols,
                first.get("spacing_between_slices") or first.get("slice_thickness"),
            )
        self.n = len(self.frames)
        self.planes: dict[str, PlaneGrid] = {}
        self.acquisition = "axial"
        if self.geometry is not None and self.n > 1 and not self.rgb:
            self.acquisition = acquisition_plane(self.geometry)
            self.planes = {p: plane_grid(self.geometry, p) for p in PLANES}
        options = {"window", "level", "preset"} if not self.rgb else set()
        if self.n > 1:
            options.add("slice")
        if self.planes:
            options.add("plane")
        self.supported_options = frozenset(options)
        self.presets = self._presets()
        self.info = self._describe(image_id, version)

    # -- metadata ---------------------------------------------------------------------------

    def _presets(self) -> list[WindowPreset]:
        if self.rgb:
            return []
        presets: list[WindowPreset] = []
        seen: set[str] = set()
        mid = self.frames[len(self.frames) // 2].fields
        for i, (c, w, expl) in enumerate(mid.get("windows") or []):
            name = _preset_key(expl) or f"file_{i + 1}"
            if name in seen:
                name = f"file_{i + 1}"
            seen.add(name)
            presets.append(WindowPreset(name, float(c), float(w), "file"))
        if self.modality == "CT":
            for name, c, w in CT_PRESETS:
                if name not in seen:
                    seen.add(name)
                    presets.append(WindowPreset(name, c, w, "modality"))
        if not presets:
            values = self._stored_slice(len(self.frames) // 2)
            lo, hi = float(np.min(values)), float(np.max(values))
            presets.append(WindowPreset("minmax", (lo + hi) / 2, max(1.0, hi - lo + 1), "data"))
        return presets

    def _describe(self, image_id: str, version: str) -> VolumeInfo:
        rec = self.plan.header
        extra: dict[str, Any] = {
            "modality": self.modality,
            "sop_class": rec["sop_class_name"],
            "study_instance_uid": rec["study_uid"],
            "series_instance_uid": rec["series_uid"],
            "frame_of_reference_uid": rec["frame_of_reference_uid"] or None,
            "series_description": rec["series_description"],
            "photometric": rec["photometric"],
            "transfer_syntax": rec["transfer_syntax"],
            "units": "HU" if self.modality == "CT" and not self.rgb else None,
            "window_presets": [p.to_json() for p in self.presets],
            "default_window": self.presets[0].to_json() if self.presets else None,
            "files": len(self.plan.files),
        }
        if self.n > 1:
            extra["slices"] = self.n
            extra["default_slice"] = self.n // 2
        if self.geometry is not None:
            g = self.geometry
            extra.update(
                spacing=list(g.spacing),
                origin=list(g.origin),
                direction=[list(r) for r in g.direction],
                slice_positions=[list(f.fields["ipp"]) for f in self.frames],
            )
            if not self.plan.header["multiframe"]:
                extra["sop_instance_uids"] = [f.sop_instance for f in self.frames]
        max_w, max_h = self.cols, self.rows
        if self.planes:
            assert self.geometry is not None
            extra["acquisition_plane"] = self.acquisition
            extra["interpolation"] = INTERPOLATION
            planes: dict[str, Any] = {}
            for name, grid in self.planes.items():
                pg = plane_geometry(self.geometry, name)
                desc = grid.describe()
                desc.update(
                    levels=Pyramid(grid.shape[0], grid.shape[1]).levels,
                    default_slice=grid.shape[2] // 2,
                    origin=list(pg.origin),
                    spacing=list(pg.spacing),
                    direction=[list(r) for r in pg.direction],
                )
                planes[name] = desc
                max_w, max_h = max(max_w, grid.shape[0]), max(max_h, grid.shape[1])
            extra["planes"] = planes
        elif self.n > 1:
            extra["planes"] = {}
        bands = 3 if self.rgb else 1
        default = (
            None if self.rgb else [voi_linear_range(self.presets[0].center, self.presets[0].width)]
        )
        return VolumeInfo(
            id=image_id,
            name=self.plan.name,
            kind=self.plan.kind,
            path=self.plan.files[0].parent,
            width=self.cols,
            height=self.rows,
            dtype=str(self.dtype),
            bands=bands,
            tile_size=DEFAULT_TILE_SIZE,
            band_names=["R", "G", "B"] if self.rgb else [extra["units"] or "value"],
            default_rescale=default,
            extra=extra,
            warnings=list(self.plan.warnings),
            version=version,
            max_width=max_w,
            max_height=max_h,
        )

    # -- pixel values -----------------------------------------------------------------------

    def _decode(self, k: int) -> npt.NDArray[Any]:
        """Modality values of stored slice ``k``: (rows, cols), or (rows, cols, 3) uint8 RGB."""
        frame = self.frames[k]
        try:
            if frame.frame is None:
                raw = pixel_array(str(frame.path))
            else:
                raw = pixel_array(str(frame.path), index=frame.frame)
        except Exception as exc:  # pydicom raises many kinds for damaged pixel data
            raise ImageReadError(
                f"{self.plan.name}: pixel data of {frame.path.name} cannot be decoded ({exc})"
            ) from exc
        expected = (self.rows, self.cols, 3) if self.rgb else (self.rows, self.cols)
        if raw.shape != expected:
            raise ImageReadError(
                f"{self.plan.name}: {frame.path.name} decodes to {raw.shape}, not {expected}"
            )
        if self.rgb:
            return np.ascontiguousarray(raw, dtype=np.uint8)
        slope, icpt = float(frame.fields["slope"]), float(frame.fields["intercept"])
        if self.dtype == np.int16:
            return (raw.astype(np.int32) + int(icpt)).astype(np.int16)
        return raw.astype(np.float32) * np.float32(slope) + np.float32(icpt)

    def _stored_slice(self, k: int) -> npt.NDArray[Any]:
        """Slice ``k`` of the stored grid, from the volume copy if built, else decoded (LRU)."""
        if self._vol is not None:
            stored: npt.NDArray[Any] = self._vol[k]
            return stored
        hit = SLICES.get((id(self), k))
        if hit is not None:
            return hit
        values = self._decode(k)
        SLICES.put((id(self), k), values)
        return values

    def _cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = f"{self.info.id}|{self.info.version}|{self.dtype}|{self.n}x{self.rows}x{self.cols}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.cache_dir / f"{self.info.id[:60]}-{digest}.npy"

    def volume(self) -> npt.NDArray[Any]:
        """The whole volume (slices, rows, cols) of modality values, built once and mapped."""
        if self._vol is not None:
            return self._vol
        with self._vol_lock:
            if self._vol is not None:
                return self._vol
            shape = (
                (self.n, self.rows, self.cols, 3) if self.rgb else (self.n, self.rows, self.cols)
            )
            path = self._cache_path()
            if path is not None and path.is_file():
                try:
                    vol: npt.NDArray[Any] = np.load(path, mmap_mode="r")
                    if vol.shape == shape and vol.dtype == self.dtype:
                        self._vol = vol
                        return vol
                except (OSError, ValueError) as exc:
                    log.warning("volume cache %s unreadable (%s): rebuilding it", path, exc)
            self._vol = self._build_volume(path, shape)
            SLICES.drop(id(self))
            return self._vol

    def _build_volume(self, path: Path | None, shape: tuple[int, ...]) -> npt.NDArray[Any]:
        if path is not None:
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=shape)
                for k in range(self.n):
                    out[k] = self._decode(k)
                out.flush()
                del out
                os.replace(tmp, path)
                built: npt.NDArray[Any] = np.load(path, mmap_mode="r")
                return built
            except OSError as exc:
                log.warning("cannot write the volume cache %s (%s): kept in memory", path, exc)
                tmp.unlink(missing_ok=True)
        mem = np.empty(shape, dtype=self.dtype)
        for k in range(self.n):
            mem[k] = self._decode(k)
        return mem

    # -- options ----------------------------------------------------------------------------

    def plane_for(self, options: TileOptions) -> PlaneGrid | None:
        """The plane grid asked for (None: the stored grid of a stack or 2D image)."""
        if not self.planes:
            return None
        return self.planes[options.plane or self.acquisition]

    def _slice_for(self, options: TileOptions, grid: PlaneGrid | None) -> int:
        count = grid.shape[2] if grid is not None else self.n
        s = options.slice if options.slice is not None else count // 2
        if not 0 <= s < count:
            plane = f" of the {grid.plane} plane" if grid is not None else ""
            raise TileOutOfBounds(f"slice {s} is outside 0..{count - 1}{plane}")
        return s

    def window_for(self, options: TileOptions) -> tuple[float, float]:
        """(centre, width): a preset by name, window/level, or the default preset."""
        if self.rgb:
            raise BadParameter("window/level does not apply to colour images")
        if options.preset is not None:
            if options.window is not None or options.level is not None:
                raise BadParameter("give either preset or window/level, not both")
            key = _preset_key(options.preset)
            for p in self.presets:
                if p.name == key:
                    return p.center, p.width
            names = ", ".join(p.name for p in self.presets)
            raise BadParameter(f"unknown preset {options.preset!r}; this image has: {names}")
        default = self.presets[0]
        center = options.level if options.level is not None else default.center
        width = options.window if options.window is not None else default.width
        return center, width

    def display_ranges(self, options: TileOptions) -> list[tuple[float, float]] | None:
        if self.rgb:
            return None
        lo, hi = voi_linear_range(*self.window_for(options))
        if self.monochrome1:  # tiles carry negated values: the VOI output is inverted
            return [(-hi, -lo)]
        return [(lo, hi)]

    # -- reading ----------------------------------------------------------------------------

    def region(
        self, grid: PlaneGrid | None, s: int, rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]:
        """Values at plane pixels ``rows x cols`` of plane slice ``s``: (len(rows), len(cols)[, 3])
        and a validity mask (None when all valid)."""
        if grid is None or grid.is_stored:
            values = self._stored_slice(s)
            if _is_range(rows) and _is_range(cols):  # a view: no copy
                step_r = int(rows[1] - rows[0]) if len(rows) > 1 else 1
                step_c = int(cols[1] - cols[0]) if len(cols) > 1 else 1
                return values[
                    rows[0] : rows[-1] + 1 : step_r, cols[0] : cols[-1] + 1 : step_c
                ], None
            return values[np.ix_(rows, cols)], None
        vol = self.volume()
        assert self.geometry is not None
        vshape = (self.cols, self.rows, self.n)  # stored sizes along axes 0, 1, 2
        ax_c, ax_r, cut = grid.axes
        index: dict[int, Any] = {
            cut: (vshape[cut] - 1 - s) if grid.flips[2] else s,
        }
        weights: npt.NDArray[np.float32] | None = None
        valid: npt.NDArray[np.bool_] | None = None
        k1: Any = None
        for axis, flip, pos, n, shape in (
            (ax_c, grid.flips[0], cols, grid.shape[0], (1, -1)),
            (ax_r, grid.flips[1], rows, grid.shape[1], (-1, 1)),
        ):
            if axis != 2:
                idx = (vshape[axis] - 1 - pos) if flip else pos
                index[axis] = idx.reshape(shape)
                continue
            t = pos + 0.5
            if flip:
                t = n - t
            heights = np.asarray(grid.heights, dtype=np.float64)
            h = grid.start + t * (grid.span / n)
            k0 = np.clip(np.searchsorted(heights, h, side="right") - 1, 0, self.n - 1)
            kk = np.minimum(k0 + 1, self.n - 1)
            kk = np.where(h <= heights[0], 0, kk)  # the half slice below slice 0: slice 0
            gap = heights[kk] - heights[k0]
            w = np.where(gap > 0, (h - heights[k0]) / np.where(gap > 0, gap, 1.0), 0.0)
            weights = np.clip(w, 0.0, 1.0).astype(np.float32).reshape(shape)
            ok = gap <= GAP_FACTOR * grid.step + 1e-6
            if not ok.all():
                valid = np.broadcast_to(ok.reshape(shape), (len(rows), len(cols))).copy()
            index[2] = k0.reshape(shape)
            k1 = kk.reshape(shape)
        a = vol[index[2], index[1], index[0]]
        if weights is None:
            return a, valid
        b = vol[k1, index[1], index[0]]
        out = a.astype(np.float32)
        out += (b.astype(np.float32) - out) * weights
        return out, valid

    def read_tile(
        self, z: int, x: int, y: int, options: TileOptions, with_mask: bool = True
    ) -> Pixels:
        grid = self.plan_grid_or_stored(options)
        s = self._slice_for(options, grid)
        width, height = (
            (grid.shape[0], grid.shape[1]) if grid is not None else (self.cols, self.rows)
        )
        pyramid = Pyramid(width, height, self.info.tile_size)
        col0, row0, _, _ = pyramid.tile_window(z, x, y)
        f = pyramid.factor(z)
        ts = pyramid.tile_size
        out_w = min(ts, math.ceil((width - col0) / f))
        out_h = min(ts, math.ceil((height - row0) / f))
        cols = np.minimum(int(col0) + f * np.arange(out_w) + f // 2, width - 1).astype(np.intp)
        rows = np.minimum(int(row0) + f * np.arange(out_h) + f // 2, height - 1).astype(np.intp)
        values, valid = self.region(grid, s, rows, cols)
        if self.rgb:
            data = np.moveaxis(values, -1, 0)
        elif self.monochrome1:  # tiles carry negated values (see display_ranges)
            data = np.negative(values.astype(np.float32))[None]
        else:
            data = values[None]  # int16 or float32: to_uint8 maps either
        if out_w == ts and out_h == ts:
            return Pixels(np.ascontiguousarray(data), valid)
        padded = np.zeros((data.shape[0], ts, ts), dtype=data.dtype)
        padded[:, :out_h, :out_w] = data
        mask = np.zeros((ts, ts), dtype=bool)
        mask[:out_h, :out_w] = True if valid is None else valid
        return Pixels(padded, mask)

    def plan_grid_or_stored(self, options: TileOptions) -> PlaneGrid | None:
        if options.plane is not None and not self.planes:
            raise BadParameter("plane applies to volumes only")
        return self.plane_for(options)

    def value_at(
        self, col: float, row: float, slice_: int | None, plane: str | None
    ) -> dict[str, Any]:
        """The modality value of the pixel containing ``(col, row)`` on a plane slice."""
        grid = self.plan_grid_or_stored(TileOptions(plane=plane))
        s = self._slice_for(TileOptions(slice=slice_), grid)
        width, height = (
            (grid.shape[0], grid.shape[1]) if grid is not None else (self.cols, self.rows)
        )
        if not (0 <= col < width and 0 <= row < height):
            raise TileOutOfBounds(f"pixel ({col}, {row}) is outside the {width}x{height} image")
        c, r = math.floor(col), math.floor(row)
        values, valid = self.region(grid, s, np.array([r], np.intp), np.array([c], np.intp))
        out: dict[str, Any] = {
            "col": col,
            "row": row,
            "slice": s,
            "plane": grid.plane if grid is not None else None,
            "unit": self.info.extra.get("units"),
            "valid": bool(valid is None or valid[0, 0]),
        }
        out["value"] = [int(v) for v in values[0, 0]] if self.rgb else float(values[0, 0])
        if self.geometry is not None:
            xyz = plane_to_patient(
                self.geometry, c + 0.5, r + 0.5, s, grid.plane if grid is not None else None
            )
            out["patient"] = [float(v) for v in xyz]
        return out

    def close(self) -> None:
        SLICES.drop(id(self))
        with self._vol_lock:
            self._vol = None


# -- scanning -------------------------------------------------------------------------------------


def series_version(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_mtime_ns}|{st.st_size}\n".encode())
    return h.hexdigest()[:16]


def scan_dicom(
    files: list[tuple[Path, str]],
    state: Path | None,
    make_id: Callable[[str], str],
    progress: bool = False,
) -> tuple[list[DicomSource], list[tuple[str, str]]]:
    """Open the DICOM images among ``(path, name)`` files; also returns ``(name, reason)`` of
    every file skipped. ``state`` holds the header index and the volume cache (None: neither)."""
    index = HeaderIndex(state)
    skipped: list[tuple[str, str]] = []
    records = []
    try:
        for path, name in tqdm(files, desc="DICOM headers", unit="file", disable=not progress):
            try:
                rec = index.get(path)
            except OSError as exc:
                rec = {"error": f"cannot be read ({exc})"}
            if "error" in rec:
                skipped.append((name, rec["error"]))
                log.warning("skipped %s: %s", name, rec["error"])
                continue
            records.append((path, name, rec))
    finally:
        index.close()
    cache_dir = state / CACHE_FOLDER if state is not None else None
    sources: list[DicomSource] = []
    for plan in plan_images(records):
        try:
            sources.append(
                DicomSource(make_id(plan.name), plan, cache_dir, series_version(plan.files))
            )
        except Exception as exc:  # one bad series must not stop the scan
            skipped.append((plan.name, f"cannot be served: {exc}"))
            log.warning("skipped %s: cannot be served: %s", plan.name, exc)
    return sources, skipped
