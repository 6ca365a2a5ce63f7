"""Quality of ``POST /images/{id}/segment`` on real aerial imagery: 43 OSM building footprints.

For every footprint of ``vector/geotiff_labels.geojson`` (EPSG:32616, over
``geo/sample_geotiff.tif``), builds the prompts a user would give: a box (the footprint's
pixel bounds with a 10 % margin on each side), sent as is ("box": the method the route
picks) and with ``method: random_walker`` ("box walker", the box answer before the
rectangle fit), and a click (the footprint's pole of inaccessibility, the point farthest
from its edge). Each prompt runs through the route's own
code path in-process (``parse_request`` then ``propose`` on the catalog's source and frame,
crs=pixel), and the answer's IoU with the footprint is reported per method, next to the
trivial baseline "the box itself" (the prompt box as the answer) and an oracle one, "bbox
(oracle)": the footprint's own axis-aligned bounds (the box without its margin, which a
method cannot know). A 422 (nothing found) counts as IoU 0.

    .venv/bin/python bench/segment_buildings.py [--data DIR] [--json OUT] [--no-click]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.ops import polylabel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annot.errors import ValidationError  # noqa: E402
from annot.frames import PIXEL, frame_from_metadata  # noqa: E402
from tileserver.catalog import scan  # noqa: E402
from tileserver.web.segment import parse_request, propose  # noqa: E402

IMAGE = "geo/sample_geotiff.tif"
LABELS = "vector/geotiff_labels.geojson"
BOX_MARGIN = 0.10  # of the footprint's bbox size, on each side


def footprints(data: Path, transform: list[float]) -> list[shapely.Polygon]:
    """The footprints in pixel coordinates (x right, y down) of the image."""
    a, b, c, d, e, f = transform
    inv = np.linalg.inv(np.array([[a, b], [d, e]]))
    out = []
    for feat in json.loads((data / LABELS).read_text())["features"]:
        geom = shapely.geometry.shape(feat["geometry"])
        geom = shapely.transform(geom, lambda xy: (xy - np.array([c, f])) @ inv.T)
        out.append(geom)
    return out


def prompts(poly: shapely.Geometry, width: int, height: int) -> dict[str, dict[str, Any]]:
    x0, y0, x1, y1 = poly.bounds
    mx, my = BOX_MARGIN * (x1 - x0), BOX_MARGIN * (y1 - y0)
    box = [max(x0 - mx, 0.0), max(y0 - my, 0.0), min(x1 + mx, width), min(y1 + my, height)]
    tol = max(0.1, 0.01 * min(x1 - x0, y1 - y0))
    pole = (
        polylabel(poly, tolerance=tol)
        if poly.geom_type == "Polygon"
        else (poly.representative_point())
    )
    return {
        "box": {"box": box},  # auto, as the viewer sends it
        "box walker": {"box": box, "method": "random_walker"},  # the former box answer
        "click": {"points": [[pole.x, pole.y, 1]]},
    }


def stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {
        "n": len(v),
        "median": float(med),
        "mean": float(v.mean()),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(v.min()),
        "ge50": float(np.mean(v >= 0.5)),
        "ge70": float(np.mean(v >= 0.7)),
    }


KINDS = ("box", "box walker", "click")


def run(data: Path, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """The figures; ``kinds`` are the prompts run through the route (of ``KINDS``)."""
    catalog = scan([data / "geo"])
    source = next(s for s in catalog.images.values() if s.info.name == Path(IMAGE).name)
    info = source.info
    frame = frame_from_metadata(info.width, info.height, info.extra)
    truth = footprints(data, info.extra["transform"])
    ious: dict[str, list[float]] = {"box itself": [], "bbox (oracle)": []}
    ious.update({k: [] for k in kinds})
    times: dict[str, list[float]] = {k: [] for k in kinds}
    methods: dict[str, dict[str, int]] = {k: {} for k in kinds}
    rows = []
    for n, poly in enumerate(truth):
        p = prompts(poly, info.width, info.height)
        ious["box itself"].append(
            poly.intersection(shapely.box(*p["box"]["box"])).area
            / poly.union(shapely.box(*p["box"]["box"])).area
        )
        bbox = shapely.box(*poly.bounds)
        ious["bbox (oracle)"].append(poly.area / bbox.area)
        row: dict[str, Any] = {"n": n, "area_px": round(poly.area, 1)}
        for kind in kinds:
            body = p[kind]
            req = parse_request(body, source, frame)
            t = time.perf_counter()
            try:
                feat = propose(source, frame, PIXEL, req)
                got = shapely.geometry.shape(feat["geometry"])
                value = float(got.intersection(poly).area / got.union(poly).area)
                method = str(feat["properties"]["method"])
            except ValidationError:
                value, method = 0.0, "422"
            times[kind].append(time.perf_counter() - t)
            ious[kind].append(value)
            methods[kind][method] = methods[kind].get(method, 0) + 1
            row[kind] = round(value, 3)
        row["box itself"] = round(ious["box itself"][-1], 3)
        rows.append(row)
    catalog.close()
    return {
        "image": info.id,
        "buildings": len(truth),
        "iou": {k: stats(v) for k, v in ious.items()},
        "ms_per_proposal": {k: 1000 * float(np.median(v)) for k, v in times.items()},
        "methods": methods,
        "per_building": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--per-building", action="store_true", help="print every building's IoU")
    ap.add_argument("--no-click", action="store_true", help="box prompts only (fast)")
    args = ap.parse_args()
    out = run(args.data, KINDS[:2] if args.no_click else KINDS)
    print(f"{out['buildings']} buildings of {out['image']}: IoU with the OSM footprint")
    head = f"{'prompt':<14}{'median':>8}{'mean':>7}{'q1':>7}{'q3':>7}{'min':>7}{'>=0.5':>7}"
    print(head + f"{'>=0.7':>7}{'ms':>7}  methods")
    for kind, s in out["iou"].items():
        ms = out["ms_per_proposal"].get(kind)
        used = ", ".join(f"{m} {c}" for m, c in sorted(out["methods"].get(kind, {}).items()))
        print(
            f"{kind:<14}{s['median']:>8.3f}{s['mean']:>7.3f}{s['q1']:>7.3f}{s['q3']:>7.3f}"
            f"{s['min']:>7.3f}{s['ge50']:>7.0%}{s['ge70']:>7.0%}"
            f"{'' if ms is None else f'{ms:.0f}':>7}  {used}"
        )
    if args.per_building:
        for row in out["per_building"]:
            print(row)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
