"""In-process ceiling: Tessera's own tile code on one thread, no HTTP (project venv).

    .venv/bin/python bench/ceiling.py COG TILES_JSON

TILES_JSON holds {"native_mix": [[z, x, y], ...], "wmq": [[z, x, y], ...]}, the tiles and order
of the wrk mixes. Prints a JSON object of timings (ms per tile, tiles/s on one core). Each
measurement opens a fresh source (so the GDAL block cache starts empty for it) and walks its
tiles in passes: pass 1 decodes blocks, later passes show the steady state of a server that
cycles through the same list (what wrk does), given GDAL_CACHEMAX.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from tileserver.readers.base import TileOptions
from tileserver.readers.geotiff import GeoTIFFSource
from tileserver.render import TileFormat, encode
from tileserver.tiles import NATIVE, WEB_MERCATOR_QUAD, TileRequest, render_tile

Tile = tuple[int, int, int]


def _passes(fn: Callable[[Tile], object], tiles: Sequence[Tile], passes: int) -> list[float]:
    """Mean ms per tile of each pass over ``tiles``."""
    out: list[float] = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for tile in tiles:
            fn(tile)
        out.append((time.perf_counter() - t0) * 1000.0 / max(1, len(tiles)))
    return out


def _summary(name: str, ms_per_pass: list[float], n_tiles: int, note: str) -> dict[str, Any]:
    steady = ms_per_pass[1:] or ms_per_pass
    steady_ms = statistics.mean(steady)
    return {
        "name": name,
        "tiles": n_tiles,
        "ms_per_tile_by_pass": [round(v, 4) for v in ms_per_pass],
        "first_pass_ms": round(ms_per_pass[0], 4),
        "steady_ms": round(steady_ms, 4),
        "tiles_per_s_core": round(1000.0 / steady_ms, 1),
        "first_pass_tiles_per_s_core": round(1000.0 / ms_per_pass[0], 1),
        "note": note,
    }


def tile_timing(
    cog: Path, grid: str, fmt: TileFormat, tiles: Sequence[Tile], passes: int
) -> list[float]:
    source = GeoTIFFSource("bench", cog, cog.name)
    try:

        def one(tile: Tile) -> object:
            z, x, y = tile
            return render_tile(source, TileRequest("bench", grid, z, x, y, fmt, TileOptions()))

        return _passes(one, tiles, passes)
    finally:
        source.close()


def block_timing(cog: Path, blocks: int, seed: int = 3) -> dict[str, Any]:
    """One 512 internal block: decode (first read, warm handle), cache hit, 512 JPEG encode."""
    import rasterio

    with rasterio.open(cog) as ds:
        bh, bw = ds.block_shapes[0]
        ids = [(bx, by) for by in range(ds.height // bh) for bx in range(ds.width // bw)]
        random.Random(seed).shuffle(ids)
        ids = ids[:blocks]
        windows = [Window(bx * bw, by * bh, bw, bh) for bx, by in ids]
        ds.read(window=Window(0, 0, 1, 1))  # warm the handle (IFD, first strip of state)
        t0 = time.perf_counter()
        arrays = [ds.read(window=w) for w in windows]
        decode_ms = (time.perf_counter() - t0) * 1000.0 / len(windows)
        t0 = time.perf_counter()
        for w in windows:
            ds.read(window=w)
        hit_ms = (time.perf_counter() - t0) * 1000.0 / len(windows)
    t0 = time.perf_counter()
    for a in arrays:
        encode(np.asarray(a), None, TileFormat.jpg)
    encode_ms = (time.perf_counter() - t0) * 1000.0 / len(arrays)
    return {
        "name": f"{bw}x{bh} internal block",
        "blocks": len(windows),
        "decode_read_ms": round(decode_ms, 4),
        "cache_hit_read_ms": round(hit_ms, 4),
        "jpeg_encode_ms": round(encode_ms, 4),
        "read_plus_encode_tiles_per_s_core": round(1000.0 / (decode_ms + encode_ms), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cog", type=Path)
    parser.add_argument("tiles_json", type=Path)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="use at most N tiles of each list")
    args = parser.parse_args(argv)
    spec = json.loads(args.tiles_json.read_text())
    lim = args.limit or None
    native_mix: list[Tile] = [(z, x, y) for z, x, y in spec["native_mix"]][:lim]
    wmq: list[Tile] = [(z, x, y) for z, x, y in spec["wmq"]][:lim]
    max_z = max(t[0] for t in native_mix)
    fullres = [t for t in native_mix if t[0] == max_z]

    results: dict[str, Any] = {
        "block": block_timing(args.cog, blocks=min(64, lim or 64)),
        "native_fullres_jpeg": _summary(
            "native JPEG, full-resolution level only (read_tile + render)",
            tile_timing(args.cog, NATIVE, TileFormat.jpg, fullres, args.passes),
            len(fullres),
            f"z={max_z}, 256 px tiles cut from 512 px internal blocks",
        ),
        "native_mix_jpeg": _summary(
            "native JPEG, the wrk mix (same tiles, same order)",
            tile_timing(args.cog, NATIVE, TileFormat.jpg, native_mix, args.passes),
            len(native_mix),
            "levels " + ",".join(str(z) for z in sorted({t[0] for t in native_mix})),
        ),
        "wmq_jpeg": _summary(
            "WebMercatorQuad JPEG, the wrk mix (read_mercator_tile + render)",
            tile_timing(args.cog, WEB_MERCATOR_QUAD, TileFormat.jpg, wmq, max(2, args.passes - 1)),
            len(wmq),
            "",
        ),
        "wmq_png": _summary(
            "WebMercatorQuad PNG, the wrk mix (read_mercator_tile + render)",
            tile_timing(args.cog, WEB_MERCATOR_QUAD, TileFormat.png, wmq, 2),
            len(wmq),
            "",
        ),
    }
    json.dump(results, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
