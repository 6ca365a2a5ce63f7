"""Tile requests end to end, without tornado: cache keys, ETags, read + render."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import cast

from tileserver.errors import BadParameter
from tileserver.readers.base import GeoImageSource, ImageSource, TileOptions
from tileserver.render import TileFormat, render

NATIVE = "native"
WEB_MERCATOR_QUAD = "WebMercatorQuad"


@dataclass(frozen=True)
class TileRequest:
    image_id: str
    grid: str  # NATIVE or WEB_MERCATOR_QUAD
    z: int
    x: int
    y: int
    fmt: TileFormat
    options: TileOptions

    def key(self, image_version: str) -> str:
        opts = sorted((k, repr(v)) for k, v in self.options.__dict__.items() if v is not None)
        return (
            f"{self.image_id}|{image_version}|{self.grid}|{self.z}/{self.x}/{self.y}|"
            f"{self.fmt.value}|{opts}"
        )

    def etag(self, image_version: str) -> str:
        return '"' + hashlib.sha1(self.key(image_version).encode()).hexdigest()[:24] + '"'


def render_tile(source: ImageSource, req: TileRequest) -> bytes:
    """Read and encode one tile; runs in a worker thread and touches no tornado objects."""
    with_mask = req.fmt.has_alpha
    if req.grid == WEB_MERCATOR_QUAD:
        if not hasattr(source, "read_mercator_tile"):
            raise BadParameter("this image is not georeferenced: use the native pyramid tiles")
        geo = cast(GeoImageSource, source)
        pixels = geo.read_mercator_tile(req.z, req.x, req.y, req.options, with_mask)
    else:
        pixels = source.read_tile(req.z, req.x, req.y, req.options, with_mask)
    return render(pixels, source.display_ranges(req.options), req.fmt)


class TileCache:
    """LRU cache of encoded tiles bounded in bytes; used from the event loop thread only."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        body = self._items.get(key)
        if body is not None:
            self._items.move_to_end(key)
        return body

    def put(self, key: str, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self._items[key] = body
        self.size += len(body)
        while self.size > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)
