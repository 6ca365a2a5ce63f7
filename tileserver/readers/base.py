"""The small interface every image source implements, and the types it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tileserver.errors import BadParameter, TileOutOfBounds

DEFAULT_TILE_SIZE = 256


@dataclass(frozen=True)
class Pyramid:
    """A native pixel pyramid: z=0 is the coarsest level, where the image fits in one tile.

    The highest z is full resolution; level z is downsampled by ``2 ** (max_z - z)``.
    """

    width: int
    height: int
    tile_size: int = DEFAULT_TILE_SIZE

    @property
    def max_z(self) -> int:
        longest = max(self.width, self.height)
        return max(0, math.ceil(math.log2(longest / self.tile_size))) if longest > 0 else 0

    @property
    def levels(self) -> int:
        return self.max_z + 1

    def factor(self, z: int) -> int:
        return int(2 ** (self.max_z - z))

    def level_size(self, z: int) -> tuple[int, int]:
        f = self.factor(z)
        return math.ceil(self.width / f), math.ceil(self.height / f)

    def tile_counts(self, z: int) -> tuple[int, int]:
        w, h = self.level_size(z)
        return math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)

    def check(self, z: int, x: int, y: int) -> None:
        if not 0 <= z <= self.max_z:
            raise TileOutOfBounds(f"zoom {z} is outside 0..{self.max_z}")
        nx, ny = self.tile_counts(z)
        if not (0 <= x < nx and 0 <= y < ny):
            raise TileOutOfBounds(
                f"tile {z}/{x}/{y} is outside the image ({nx}x{ny} tiles at z={z})"
            )

    def tile_window(self, z: int, x: int, y: int) -> tuple[float, float, float, float]:
        """Full-resolution pixel window ``(col_off, row_off, width, height)`` of a tile.

        The window may extend past the image's right and bottom edges (edge tiles are padded).
        """
        self.check(z, x, y)
        span = self.tile_size * self.factor(z)
        return x * span, y * span, span, span


@dataclass
class Pixels:
    """Pixel values of one tile: ``data`` is (bands, rows, cols); ``valid`` is (rows, cols) bool."""

    data: npt.NDArray[Any]
    valid: npt.NDArray[np.bool_] | None = None

    @property
    def all_valid(self) -> bool:
        return self.valid is None or bool(self.valid.all())


@dataclass(frozen=True)
class TileOptions:
    """Rendering options parsed from a tile request's query string."""

    bands: tuple[int, ...] | None = None  # 1-based band indexes, 1 or 3 of them
    rescale: tuple[tuple[float, float], ...] | None = None  # one (min, max) per output band
    slice: int | None = None
    plane: str | None = None
    window: float | None = None
    level: float | None = None
    preset: str | None = None

    def given(self) -> set[str]:
        return {name for name, value in self.__dict__.items() if value is not None}


@dataclass
class ImageInfo:
    """Metadata served at /api/v1/images/{id}; ``extra`` holds format-specific fields."""

    id: str
    name: str
    kind: str
    path: Path
    width: int
    height: int
    dtype: str
    bands: int
    tile_size: int = DEFAULT_TILE_SIZE
    band_names: list[str] = field(default_factory=list)
    default_rescale: list[tuple[float, float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    version: str = ""  # changes when the file changes; part of every tile ETag

    @property
    def pyramid(self) -> Pyramid:
        return Pyramid(self.width, self.height, self.tile_size)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "width": self.width,
            "height": self.height,
            "levels": self.pyramid.levels,
            "tile_size": self.tile_size,
            "dtype": self.dtype,
            "bands": self.bands,
            "band_names": self.band_names,
        }
        if self.default_rescale is not None:
            out["default_rescale"] = [list(r) for r in self.default_rescale]
        out.update(self.extra)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def select_bands(count: int, options: TileOptions) -> tuple[int, ...]:
    """1-based bands to show: the requested ones, else RGB for 3+ bands, else the first band."""
    if options.bands is not None:
        bad = [b for b in options.bands if not 1 <= b <= count]
        if bad:
            raise BadParameter(f"bands {bad} do not exist; the image has bands 1..{count}")
        return options.bands
    return (1, 2, 3) if count >= 3 else (1,)


def rescale_ranges(
    options: TileOptions,
    bands: tuple[int, ...],
    default_rescale: list[tuple[float, float]] | None,
) -> list[tuple[float, float]] | None:
    """The value ranges shown for ``bands``: the request's ``rescale``, else the image's default.

    None means the data is shown as is (uint8).
    """
    if options.rescale is not None:
        if len(options.rescale) not in (1, len(bands)):
            raise BadParameter(
                f"give one rescale range, or one per band ({len(bands)} bands shown)"
            )
        return list(options.rescale)
    if default_rescale is None:
        return None
    return [default_rescale[b - 1] for b in bands]


class ImageSource(Protocol):
    """One registered image. Implementations are thread-safe and open files lazily.

    ``supported_options`` names the TileOptions fields that apply to the image; any other
    given option answers 400.
    """

    info: ImageInfo
    supported_options: frozenset[str]

    def read_tile(
        self, z: int, x: int, y: int, options: TileOptions, with_mask: bool = True
    ) -> Pixels:
        """Pixel values of a native pyramid tile (``with_mask`` False: skip reading a mask)."""
        ...

    def display_ranges(self, options: TileOptions) -> list[tuple[float, float]] | None:
        """Value range mapped onto 0..255 per shown band; None when data is shown as is."""
        ...

    def close(self) -> None: ...


class GeoImageSource(ImageSource, Protocol):
    """A georeferenced image, which also serves WebMercatorQuad tiles."""

    def read_mercator_tile(
        self, z: int, x: int, y: int, options: TileOptions, with_mask: bool = True
    ) -> Pixels: ...
