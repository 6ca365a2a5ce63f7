"""Training chips export throughput against the read-and-encode ceiling of the same chips.

    .venv/bin/python bench/chips_bench.py [--size 8192] [--polygons 5000] [--chip 512]
        [--chip-format geotiff|png] [--level N] [--repeat 3] [--profile]

Data: the 8192x8192 3-band uint8 COG of the tile benchmark (``tileserver.demo.write_cog``,
cached as ``bench/out/cog/synthetic_{size}.tif``) and ``--polygons`` random star-shaped
polygons (5-12 vertices, 8-60 px across, six labels, a hierarchy among them) in the image's CRS,
as Tessera stores them.

Measured in one process, one thread, alternating (ceiling, export) ``--repeat`` times; the best
run of each counts:

- **export**: ``format=chips`` as ``tessera export`` runs it (``ExportJob`` -> the format's
  write function -> a real file): windows read, chips and masks encoded, shapes rasterised,
  COCO and manifest built, everything zipped;
- **ceiling**: the same chip windows read with plain rasterio (a fresh handle, same resampling
  and output shape) and encoded as the same chip files (the export's own encoder:
  ``GeoTiffWriter`` or ``encode_png``), no masks, no ZIP, nothing written.

Both open a fresh dataset, so GDAL's block cache starts empty for each (the OS page cache is warm
for both). Prints chips/s of each and the ratio (target >= 50%), by wall time and by the
process's CPU time (one thread: the same thing on an idle machine; CPU time is what to trust on
a busy one); writes ``bench/out/chips_bench.json``. ``--profile`` prints the export's top
functions (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.windows import Window

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from annot.frames import frame_from_metadata  # noqa: E402
from annot.model import Annotation, Content, Kind  # noqa: E402
from annot.taxonomy import Label, Project, auto_color  # noqa: E402
from tileserver.chips import GeoTiffWriter, encode_png  # noqa: E402
from tileserver.demo import write_cog  # noqa: E402
from tileserver.formats import EXPORTS, ExportJob  # noqa: E402
from tileserver.readers.geotiff import GeoTIFFSource  # noqa: E402

OUT = REPO / "bench" / "out"
LABELS = ("building", "building/house", "car", "road", "vegetation/tree", "water")
WEIGHTS = (0.25, 0.3, 0.2, 0.1, 0.1, 0.05)
TARGET = 0.5
NAMES = ("export_chips_per_s", "ceiling_chips_per_s", "ratio")


def cog_path(size: int) -> Path:
    path = OUT / "cog" / f"synthetic_{size}.tif"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} ...", flush=True)
        write_cog(path, size=size)
    return path


def polygons(n: int, width: int, height: int, seed: int = 1) -> list[tuple[str, Any]]:
    """Random star-shaped (so valid) polygons in pixel coordinates, with labels."""
    rng = np.random.default_rng(seed)
    out = []
    labels = rng.choice(len(LABELS), n, p=WEIGHTS)
    for i in range(n):
        k = int(rng.integers(5, 13))
        radius = rng.uniform(4, 30)
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        angles = (np.arange(k) + rng.uniform(0, 0.8, k)) * (2 * np.pi / k)  # gaps < pi: simple
        r = radius * rng.uniform(0.6, 1.0, k)
        ring = np.column_stack([cx + r * np.cos(angles), cy + r * np.sin(angles)])
        out.append((LABELS[labels[i]], shapely.Polygon(ring)))
    return out


def make_job(cog: Path, n: int, options: dict[str, str]) -> ExportJob:
    source = GeoTIFFSource("bench", cog, cog.name)
    frame = frame_from_metadata(source.info.width, source.info.height, source.info.extra)
    anns = []
    for aid, (label, shape) in enumerate(polygons(n, source.width, source.height), start=1):
        world = shapely.transform(shape, lambda c: frame.pixel_to_world(c))
        content = Content(Kind.polygon, label, world)
        anns.append(Annotation(aid, "bench", "default", content, "bench", "t", "bench", "t", 1))
    project = Project("default", labels={x: Label(x, auto_color(x)) for x in
                                         {*LABELS, "vegetation"}})  # fmt: skip
    return ExportJob("bench", cog.name, frame, source, project, anns, options)


Timing = tuple[float, float]  # (wall seconds, CPU seconds of this process)


def _clock() -> Timing:
    return time.perf_counter(), time.process_time()


def _since(start: Timing) -> Timing:
    return time.perf_counter() - start[0], time.process_time() - start[1]


def run_export(job: ExportJob, folder: Path) -> tuple[Timing, dict[str, Any]]:
    """Time of the whole export into a real file; and its manifest."""
    path = folder / "chips.zip"
    start = _clock()
    with path.open("wb") as out:
        EXPORTS["chips"].write(job, out)
    elapsed = _since(start)
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    path.unlink()
    return elapsed, manifest


def run_ceiling(cog: Path, chips: list[dict[str, Any]], size: int, chip_format: str) -> Timing:
    """Time to read the same windows and encode the same chip files with plain rasterio."""
    start = _clock()
    with rasterio.open(cog) as ds:
        writer = GeoTiffWriter(ds.crs, ds.nodata)
        for chip in chips:
            col, row, w, h = chip["window"]
            sx = w / size
            resampling = Resampling.nearest if sx == 1 else Resampling.average
            data = ds.read(window=Window(col, row, w, h), out_shape=(ds.count, size, size),
                           resampling=resampling)  # fmt: skip
            if chip_format == "png":
                encode_png(data)
            else:
                writer.encode(data, rasterio.Affine(*chip["transform"]), is_mask=False)
    return _since(start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8192, help="COG side in pixels")
    parser.add_argument("--polygons", type=int, default=5000)
    parser.add_argument("--chip", type=int, default=512, help="chip side in pixels")
    parser.add_argument("--chip-format", choices=["geotiff", "png"], default="geotiff")
    parser.add_argument("--level", type=int, default=None, help="chips of pyramid level N")
    parser.add_argument("--mode", choices=["annotated", "grid"], default="annotated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one export")
    args = parser.parse_args()

    cog = cog_path(args.size)
    options = {"size": str(args.chip), "chip_format": args.chip_format, "mode": args.mode}
    if args.level is not None:
        options["level"] = str(args.level)
    job = make_job(cog, args.polygons, options)
    exports: list[Timing] = []
    ceilings: list[Timing] = []
    manifest: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            if manifest:
                ceilings.append(run_ceiling(cog, manifest["chips"], args.chip, args.chip_format))
            seconds, manifest = run_export(job, Path(tmp))
            exports.append(seconds)
        ceilings.append(run_ceiling(cog, manifest["chips"], args.chip, args.chip_format))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            run_export(job, Path(tmp))
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
            print(text.getvalue())
    n = len(manifest["chips"])
    rates = {}
    for k, clock in ((0, "wall"), (1, "cpu")):
        export_rate = n / min(t[k] for t in exports)
        ceiling_rate = n / min(t[k] for t in ceilings)
        rates[clock] = (export_rate, ceiling_rate, export_rate / ceiling_rate)
    totals = manifest["totals"]
    result = {
        "cog": str(cog),
        "options": options,
        "polygons": args.polygons,
        "chips": n,
        "instances": sum(c["instances"] for c in totals["classes"].values()),
        "export_s": [[round(w, 3), round(c, 3)] for w, c in exports],
        "ceiling_s": [[round(w, 3), round(c, 3)] for w, c in ceilings],
        **{
            f"{clock}_{name}": round(value, 3)
            for clock, values in rates.items()
            for name, value in zip(NAMES, values, strict=True)
        },
        "target": TARGET,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "chips_bench.json").write_text(json.dumps(result, indent=1))
    print(f"{n} chips of {args.chip} px ({args.chip_format}), {result['instances']} instances "
          f"from {args.polygons} polygons")  # fmt: skip
    print(f"runs (wall s, cpu s): export {result['export_s']}, ceiling {result['ceiling_s']}")
    print("          export chips/s   ceiling chips/s   ratio")
    for clock, (export_rate, ceiling_rate, ratio) in rates.items():
        verdict = "ok" if ratio >= TARGET else "UNDER TARGET"
        print(f"{clock:>5}  {export_rate:14.1f}  {ceiling_rate:16.1f}  {ratio:6.1%}  ({verdict})")
    print(f"target: ratio >= {TARGET:.0%} (cpu: CPU time of this process, which a busy machine "
          "disturbs far less than wall time)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
