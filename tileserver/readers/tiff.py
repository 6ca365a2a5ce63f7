"""TIFF through tifffile: OME-TIFF, pyramidal TIFF (SubIFDs or reduced-resolution pages, as
written by tifffile, vips, Aperio SVS, ...) and BigTIFF; and the rule that picks GDAL or
tifffile for a TIFF.

Routing (``open_tiff``, the catalog's factory for every TIFF): every TIFF first passes the
structural checks of ``tiffcheck`` (magic bytes, pixel data inside the file). Then

1. a georeferenced TIFF (GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation,
   GeoKeyDirectory, or RPCs) goes to GDAL (``GeoTIFFSource``), as does one in GDAL's own idiom
   (GDAL_METADATA / GDAL_NODATA tags, or an internal mask), whose nodata, scale/offset and
   masks only GDAL honours;
2. an OME-TIFF, a BigTIFF, a TIFF with SubIFDs, more than one pyramid level, more than one page
   in its first series (OME channels or z planes as pages) or a compression GDAL cannot decode
   (Aperio JPEG 2000, JPEG XR) goes to tifffile (``TiffSource``);
3. any other (plain, single-image) TIFF stays on GDAL, as before.

If the chosen reader refuses the file, the other one is tried (its image then carries a
warning saying why); the file is skipped only if both refuse it.

``TiffSource`` serves the first series of the file with its own pyramid levels (tifffile's
``series.levels``) through tifffile's zarr store, so a tile decodes only the strips/tiles under
it, from the level that matches its zoom. Each thread has its own file handle.
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from tileserver.errors import UnsupportedFile
from tileserver.readers.base import ImageInfo, ImageSource
from tileserver.readers.geotiff import GeoTIFFSource
from tileserver.readers.tiffcheck import check_tiff_file
from tileserver.readers.zarr_source import MultiscaleSource

# ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, RPCCoefficient
GEO_TAGS = frozenset({33550, 33922, 34264, 34735, 50844})
GDAL_TAGS = frozenset({42112, 42113})  # GDAL_METADATA, GDAL_NODATA
# Aperio JPEG 2000 (YCbCr, RGB), JPEG XR: imagecodecs decodes them, GDAL does not.
GDAL_UNREADABLE_COMPRESSION = frozenset({33003, 33004, 33005, 22610})
MASK_SUBFILETYPE = 4
PAGES_CHECKED_FOR_MASKS = 64

GDAL, TIFFFILE = "gdal", "tifffile"


# What tifffile logs (and otherwise tolerates) for a file cut short or damaged.
DAMAGE_MESSAGES = ("invalid value offset", "missing data offset")


class _DamageLog(logging.Handler):
    """Collects tifffile's reports of damage made in this thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            msg = record.getMessage()
            if any(m in msg for m in DAMAGE_MESSAGES):
                self.messages.append(msg)


def inspect_tiff(path: Path) -> str:
    """Check a TIFF that passed ``check_tiff_file`` more deeply (tag values and every pyramid
    level's pixel data inside the file), and route it: ``"gdal"`` or ``"tifffile"`` (module
    doc)."""
    damage = _DamageLog()
    tiff_log = logging.getLogger("tifffile")
    tiff_log.addHandler(damage)
    try:
        with tifffile.TiffFile(path) as tif:
            route = _route(tif)
            if tif.series:
                check_level_extents(tif, path.stat().st_size, path.name)
    except UnsupportedFile:
        raise
    except Exception as exc:  # tifffile raises many types on malformed input
        raise UnsupportedFile(f"{path.name}: malformed TIFF ({exc})") from exc
    finally:
        tiff_log.removeHandler(damage)
    if damage.messages:
        raise UnsupportedFile(
            f"{path.name}: truncated or damaged ({damage.messages[0]}); re-copy the file"
        )
    return route


def _route(tif: tifffile.TiffFile) -> str:
    page = tif.pages.first
    codes = {tag.code for tag in page.tags}
    if codes & GEO_TAGS:
        return GDAL
    if tif.is_ome:
        return TIFFFILE
    pages = [tif.pages[i] for i in range(min(len(tif.pages), PAGES_CHECKED_FOR_MASKS))]
    masked = any(int(getattr(p, "subfiletype", 0) or 0) & MASK_SUBFILETYPE for p in pages)
    if codes & GDAL_TAGS or masked:
        return GDAL
    series = tif.series[0] if tif.series else None
    if (
        tif.is_bigtiff
        or page.subifds
        or int(page.compression) in GDAL_UNREADABLE_COMPRESSION
        or (series is not None and (len(series.levels) > 1 or len(series.pages) > 1))
    ):
        return TIFFFILE
    return GDAL


def open_tiff(image_id: str, path: Path, name: str) -> ImageSource:
    """The catalog's factory for TIFFs: structural checks, then GDAL or tifffile."""
    check_tiff_file(path)
    route = inspect_tiff(path)

    def by_tifffile() -> ImageSource:
        return TiffSource(image_id, path, name, checked=True)

    def by_gdal() -> ImageSource:
        return GeoTIFFSource(image_id, path, name)

    first, second = (by_tifffile, by_gdal) if route == TIFFFILE else (by_gdal, by_tifffile)
    try:
        return first()
    except UnsupportedFile as exc:
        try:
            source = second()
        except UnsupportedFile:
            raise exc from None
        other = "GDAL" if route == TIFFFILE else "tifffile"
        source.info.warnings.append(f"served by {other}: {exc}")
        return source


def check_level_extents(tif: tifffile.TiffFile, size: int, name: str) -> None:
    """Every strip/tile of every level of the first series lies inside the file (SubIFD
    levels are not among the top-level pages that ``check_tiff_file`` looks at)."""
    for level in tif.series[0].levels:
        for page in level.pages:
            if page is None:
                continue
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
            if ends and max(ends) > size:
                raise UnsupportedFile(
                    f"{name}: truncated ({size} bytes, pixel data of a {level.shape} level "
                    f"declared up to {max(ends)}); re-copy the file"
                )


def ome_channel_names(tif: tifffile.TiffFile) -> list[str]:
    """Channel names of the first OME image ("" where unnamed)."""
    xml = tif.ome_metadata
    if not xml:
        return []
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return []
    for image in root:
        if image.tag.endswith("}Image") or image.tag == "Image":
            for pixels in image:
                if pixels.tag.endswith("Pixels"):
                    return [c.get("Name", "") for c in pixels if c.tag.endswith("}Channel")]
    return []


class TiffSource(MultiscaleSource):
    """A TIFF (OME-TIFF, pyramidal TIFF, BigTIFF) read with tifffile, first series only."""

    def __init__(self, image_id: str, path: Path, name: str, *, checked: bool = False) -> None:
        if not checked:
            check_tiff_file(path)
        self.path = path
        self._files: list[tifffile.TiffFile] = []
        self._files_lock = threading.Lock()
        try:
            with tifffile.TiffFile(path) as tif:
                self._describe(tif, image_id, path, name)
            self._check_readable()
            if self.dtype != np.uint8:
                self.info.default_rescale = self._percentile_rescale()
        except UnsupportedFile as exc:
            raise UnsupportedFile(
                str(exc) if str(exc).startswith(name) else f"{name}: {exc}"
            ) from exc
        except Exception as exc:  # tifffile raises many types on malformed input
            raise UnsupportedFile(f"{name}: tifffile cannot read it ({exc})") from exc
        finally:
            self.close()  # handles are opened per thread on first use

    def _describe(self, tif: tifffile.TiffFile, image_id: str, path: Path, name: str) -> None:
        if not tif.series:
            raise UnsupportedFile("no image series")
        series = tif.series[0]
        check_level_extents(tif, path.stat().st_size, name)
        axes = series.axes.upper()
        for level in series.levels:
            if level.axes.upper() != axes:
                raise UnsupportedFile(f"level axes {level.axes} differ from {series.axes}")
        shapes = [tuple(int(n) for n in level.shape) for level in series.levels]
        self._setup(axes, shapes, np.dtype(series.dtype))
        page = series.keyframe
        warnings: list[str] = []
        if len(tif.series) > 1 and tif.is_ome:
            warnings.append(f"the file holds {len(tif.series)} images; the first is served")
        if page.photometric == tifffile.PHOTOMETRIC.PALETTE:
            warnings.append("palette image: colour map indexes are shown as grey values")
        names = ome_channel_names(tif) if tif.is_ome else []
        self.info = ImageInfo(
            id=image_id,
            name=name,
            kind="ome-tiff" if tif.is_ome else "tiff",
            path=path,
            width=self.width,
            height=self.height,
            dtype=str(self.dtype),
            bands=self.count,
            band_names=[
                names[i] if i < len(names) and names[i] else f"b{i + 1}" for i in range(self.count)
            ],
            extra={
                **self._extra(),
                "bigtiff": bool(tif.is_bigtiff),
                "tiff_series": series.kind,
                "compression": str(getattr(page.compression, "name", page.compression)),
            },
            warnings=warnings,
        )

    def _open_level(self, index: int) -> Any:
        tif: tifffile.TiffFile | None = getattr(self._local, "tif", None)
        if tif is None:
            tif = tifffile.TiffFile(self.path)
            self._local.tif = tif
            with self._files_lock:
                self._files.append(tif)
        store = tif.series[0].aszarr(level=index)
        return zarr.open_array(store=store, mode="r")

    def close(self) -> None:
        with self._files_lock:
            for tif in self._files:
                tif.close()
            self._files.clear()
        super().close()
