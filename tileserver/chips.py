"""Pixel glue of the training chips export (``format=chips``; the logic is
``annot.export.chips``): windowed reads of a GeoTIFF or plain TIFF with rasterio, and the chip
files.

Each chip reads exactly its window from the file (GDAL picks an overview when the chip is
coarser than full resolution), through one dataset handle opened for the export. Resampling is
``average`` when downsampling, ``bilinear`` when upsampling, none at full resolution. Values are
the stored ones (no scale/offset applied); a GeoTIFF chip keeps the source's CRS, nodata and
data type, with the chip's own transform; a PNG chip (8 or 16-bit, 1 to 4 bands) gets a world
file and its transform in the manifest.

GeoTIFF chips are written by tifffile (band-separate, one DEFLATE strip per band; masks
PackBits) with the GeoTIFF keys that GDAL writes once for the source's CRS: encoding the CRS
per file through GDAL cost more than compressing the pixels.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, BinaryIO

import imagecodecs
import numpy as np
import numpy.typing as npt
import tifffile
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

__all__ = ["CHIP_OPTIONS", "GeoTiffWriter", "RasterioChips", "encode_png", "write_chips"]

PNG_DTYPES = ("uint8", "uint16")
GEO_KEY_TAGS = (34735, 34736, 34737)  # GeoKeyDirectory, GeoDoubleParams, GeoAsciiParams
GDAL_NODATA_TAG = 42113
DEFLATE_LEVEL = 1  # chips are written once and read many times: fast and still compact
ExtraTag = tuple[int, str, int, Any, bool]


class GeoTiffWriter:
    """Encodes (bands, rows, cols) arrays as GeoTIFFs in one CRS (tifffile + GDAL's GeoKeys)."""

    def __init__(self, crs: Any, nodata: float | None) -> None:
        self.nodata = nodata
        self.geokeys: list[ExtraTag] = []
        if crs is None:
            return
        profile = {"driver": "GTiff", "width": 1, "height": 1, "count": 1, "dtype": "uint8"}
        with MemoryFile() as mem:
            with mem.open(**profile, crs=crs, transform=Affine(1, 0, 0, 0, -1, 1)) as dst:
                dst.write(np.zeros((1, 1, 1), dtype=np.uint8))
            template = bytes(mem.read())
        with tifffile.TiffFile(io.BytesIO(template)) as tif:
            for tag in tif.pages.first.tags:
                if tag.code in GEO_KEY_TAGS:
                    kind = {3: "H", 12: "d", 2: "s"}[int(tag.dtype)]
                    self.geokeys.append((tag.code, kind, tag.count, tag.value, True))

    @staticmethod
    def transform_tags(t: Affine) -> list[ExtraTag]:
        if t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0:  # north up: scale and tie point
            return [
                (33550, "d", 3, (t.a, -t.e, 0.0), True),
                (33922, "d", 6, (0.0, 0.0, 0.0, t.c, t.f, 0.0), True),
            ]
        matrix = (t.a, t.b, 0.0, t.c, t.d, t.e, 0.0, t.f, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        return [(34264, "d", 16, matrix, True)]  # ModelTransformation

    def encode(self, pixels: npt.NDArray[Any], transform: Affine, is_mask: bool) -> bytes:
        tags = [*self.transform_tags(transform), *self.geokeys]
        if self.nodata is not None and not is_mask:
            tags.append((GDAL_NODATA_TAG, "s", 0, f"{self.nodata:.17g}", True))
        out = io.BytesIO()
        tifffile.imwrite(
            out,
            pixels[0] if pixels.shape[0] == 1 else pixels,
            photometric="minisblack",
            planarconfig=None if pixels.shape[0] == 1 else "separate",
            rowsperstrip=pixels.shape[1],
            compression="packbits" if is_mask else "zlib",
            compressionargs=None if is_mask else {"level": DEFLATE_LEVEL},
            extratags=tags,
            metadata=None,
        )
        return out.getvalue()


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
        self.geotiff = GeoTiffWriter(self._ds.crs, self._ds.nodata)
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
            return encode_png(pixels)
        return self.geotiff.encode(pixels, transform, is_mask)


def encode_png(pixels: npt.NDArray[Any]) -> bytes:
    """(bands, rows, cols) as a PNG: grey, grey + alpha, RGB or RGBA (the tiles' fast settings)."""
    image = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    return bytes(
        imagecodecs.png_encode(np.ascontiguousarray(image), level=1, strategy=3, filter=16)
    )


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
