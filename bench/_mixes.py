"""Request mixes: which tiles, as URL paths for each server, checked once before a run."""

from __future__ import annotations

import math
import random
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import morecantile

Tile = tuple[int, int, int]  # z, x, y

WMQ = morecantile.tms.get("WebMercatorQuad")


def wmq_tiles(bounds_wgs84: Sequence[float], zooms: Iterable[int]) -> list[Tile]:
    """Every WebMercatorQuad tile of ``zooms`` that intersects a lon/lat bbox."""
    w, s, e, n = bounds_wgs84
    return [(t.z, t.x, t.y) for t in WMQ.tiles(w, s, e, n, zooms=list(zooms))]


def native_tiles(width: int, height: int, tile_size: int, levels: int, top: int) -> list[Tile]:
    """Every tile of the ``top`` finest native pyramid levels (z = levels - top .. levels - 1)."""
    max_z = levels - 1
    out: list[Tile] = []
    for z in range(max(0, max_z - top + 1), max_z + 1):
        factor = 2 ** (max_z - z)
        nx = math.ceil(math.ceil(width / factor) / tile_size)
        ny = math.ceil(math.ceil(height / factor) / tile_size)
        out.extend((z, x, y) for y in range(ny) for x in range(nx))
    return out


def shuffled(tiles: Sequence[Tile], seed: int = 1) -> list[Tile]:
    """A fixed random order: no server gets the spatial locality of row-by-row requests."""
    out = list(tiles)
    random.Random(seed).shuffle(out)
    return out


def tessera_path(image_id: str, tile: Tile, ext: str, grid: str | None) -> str:
    z, x, y = tile
    tiles = "tiles" if grid is None else f"tiles/{grid}"
    return f"/api/v1/images/{quote(image_id, safe='')}/{tiles}/{z}/{x}/{y}.{ext}"


def titiler_path(file: Path, tile: Tile, ext: str, params: Sequence[tuple[str, str]] = ()) -> str:
    z, x, y = tile
    query = urlencode([("url", str(file)), *params], safe="/,")
    return f"/cog/tiles/WebMercatorQuad/{z}/{x}/{y}.{ext}?{query}"


@dataclass
class Probe:
    status: int
    size: int
    content_type: str


def probe(base_url: str, path: str, headers: Mapping[str, str]) -> Probe:
    req = urllib.request.Request(base_url + path, headers=dict(headers))
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            return Probe(r.status, len(body), r.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as exc:
        return Probe(exc.code, len(exc.read()), exc.headers.get("Content-Type", ""))
    except (urllib.error.URLError, OSError) as exc:
        return Probe(0, 0, f"error: {exc}")


def probe_all(
    base_url: str, paths: Sequence[str], headers: Mapping[str, str], threads: int = 4
) -> list[Probe]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda p: probe(base_url, p, headers), paths))


def write_paths(path: Path, paths: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(p + "\n" for p in paths))
    return path
