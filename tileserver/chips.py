"""Pixel glue of the training chips export (``format=chips``; the logic is
``annot.export.chips``): windowed reads of a GeoTIFF or plain TIFF with rasterio, and the chip
files.

Each chip reads exactly its window from the file (GDAL picks an overview when the chip is
coarser than full resolution), through one dataset handle opened for the export. Resampling is
``average`` when downsampling, ``bilinear`` when upsampling, none at full resolution. Values are
the stored ones (no scale/offset applied); a GeoTIFF chip keeps the source's CRS, nodata and
data type, with the chip's own transform; a PNG chip (8 or 16-bit, 1 to 4 bands) gets a world
file and its transform in the manifest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

import imagecodecs
import numpy as np
import numpy.typing as npt
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from rasterio.windows import Window

from annot.errors import BadRequest
from annot.export.chips import (
    CHIP_OPTIONS,
    ChipOptions,
    ChipWindow,
    export_chips,
    image_transform,
    parse_chip_options,
)
from tileserver.errors import ImageReadError
from tileserver.readers.geotiff import GeoTIFFSource, open_dataset

if TYPE_CHECKING:
    from tileserver.formats import ExportJob

__all__ = ["CHIP_OPTIONS", "RasterioChips", "write_chips"]

PNG_DTYPES = ("uint8", "uint16")
# GeoTIFF chips: DEFLATE at a fast level (chips are written once and read many times by a
# training loader; level 1 keeps the export close to the read-and-encode ceiling).
GEOTIFF_CREATION = {"compress": "deflate", "zlevel": 1}


class RasterioChips:
    """Reads chip windows of one GDAL-read TIFF and encodes chip files (``ChipPixels``)."""

    def __init__(self, source: GeoTIFFSource, options: ChipOptions) -> None:
        bands = options.bands or tuple(range(1, source.count + 1))
        bad = [b for b in bands if b > source.count]
        if bad:
            raise BadRequest(f"bands {bad} do not exist; the image has bands 1..{source.count}")
        dtype = str(source.dtype)
        if options.chip_format == "png":
            if dtype not in PNG_DTYPES:
                raise BadRequest(f"PNG chips hold 8 or 16-bit pixels, not {dtype}: "
                                 "use chip_format=geotiff")  # fmt: skip
            if len(bands) > 4:
                raise BadRequest(f"PNG chips hold 1 to 4 bands, not {len(bands)}: give bands= "
                                 "or use chip_format=geotiff")  # fmt: skip
        self.bands = list(bands)
        self.chip_format = options.chip_format
        self.name = source.info.name
        try:
            self._ds = open_dataset(source.info.path)
        except RasterioError as exc:
            raise ImageReadError(f"{self.name} cannot be opened: {exc}") from exc
        self.crs = self._ds.crs
        self.nodata = self._ds.nodata
        self.levels = [(level.width, level.height) for level in source.levels]

    def __enter__(self) -> RasterioChips:
        return self

    def __exit__(self, *exc: object) -> None:
        self._ds.close()

    def level_size(self, level: int) -> tuple[int, int] | None:
        return self.levels[level] if level < len(self.levels) else None

    def read(self, window: ChipWindow) -> npt.NDArray[Any]:
        col, row, width, height = window.source
        sx, sy = window.scale
        if sx == sy == 1.0:
            resampling = Resampling.nearest
        else:  # (a stored pyramid level matches exactly: GDAL copies its pixels)
            resampling = Resampling.average if sx > 1 else Resampling.bilinear
        try:
            data: npt.NDArray[Any] = self._ds.read(
                self.bands,
                window=Window(col, row, width, height),
                out_shape=(len(self.bands), window.height, window.width),
                resampling=resampling,
            )
        except RasterioError as exc:
            raise ImageReadError(f"{self.name}: pixel data cannot be read ({exc})") from exc
        return data

    def encode(self, pixels: npt.NDArray[Any], transform: Affine, is_mask: bool) -> bytes:
        if self.chip_format == "png":
            image = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
            return bytes(imagecodecs.png_encode(np.ascontiguousarray(image), level=1))
        count, height, width = pixels.shape
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": count,
            "dtype": pixels.dtype.name,
            "crs": self.crs,
            "transform": transform,
            "nodata": None if is_mask else self.nodata,
            **GEOTIFF_CREATION,
        }
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(pixels)
            return bytes(mem.read())


def write_chips(job: ExportJob, out: BinaryIO) -> None:
    """``format=chips``: checks everything before the first byte is written."""
    options = parse_chip_options(job.options)
    image_transform(job.frame)  # volumes and other non-2D frames answer 400 here
    if not isinstance(job.source, GeoTIFFSource):
        raise BadRequest(
            f"format=chips reads GeoTIFFs and plain TIFFs; {job.image_name} is "
            f"a {job.source.info.kind} image"
        )
    with RasterioChips(job.source, options) as pixels:
        export_chips(
            job.annotations, job.frame, job.project, job.image_id, options, pixels, out,
            job.progress,
        )  # fmt: skip
