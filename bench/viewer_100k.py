"""The viewer with 100,000 polygons on one image: time to first render and frame times while
panning and zooming, with the annotation vector tiles (the overview layer) and without them.

Generates an 8192 x 8192 COG (``tileserver.demo.write_cog``, cached in ``bench/out/cog``) and
100,000 small polygons on it (the bulk API, in batches), serves it with ``tessera serve``,
opens the viewer in headless Chromium (Playwright, ``/usr/bin/chromium``) and, for each mode:

* **first render**: from navigation to the map's first ``ready`` state with no tile loading
  and the annotations drawn (the overview's tiles, or the editor's GeoJSON layer);
* **frames**: ``requestAnimationFrame`` deltas during a scripted session of drags and wheel
  zooms (p50 / p95 / max in ms) and the long tasks (over 50 ms) that the page reported.

``overview`` is the viewer as built; ``baseline`` opens it with ``#overview=off``: no vector
tiles, the editor's GeoJSON layer alone (which loads one page of 1,000 of the visible
annotations per move, as the viewer did before the overview). Prints a table and the ratios,
and writes ``bench/out/viewer_100k.json``.

    .venv/bin/python bench/viewer_100k.py [--polygons 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procs import Server, free_port

from tileserver.demo import write_cog

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
TOKEN = "bench-viewer-token-0123456789"
SIZE = 8192
BATCH = 20_000
CHROMIUM = os.environ.get("TESSERA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}

# Collects rAF deltas and long tasks from the moment it is installed until read.
PROBE = """
() => {
  window.__frames = [];
  window.__longTasks = [];
  let last = performance.now();
  const tick = (now) => {
    window.__frames.push(now - last);
    last = now;
    if (window.__probing) requestAnimationFrame(tick);
  };
  window.__probing = true;
  requestAnimationFrame((now) => { last = now; requestAnimationFrame(tick); });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longTasks.push(e.duration);
  }).observe({ type: 'longtask', buffered: false });
}
"""


def polygons(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """``n`` hexagons of 4-24 px radius, uniformly over the image, in pixel coordinates."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(30, SIZE - 30, size=(n, 2))
    radii = rng.uniform(4, 24, size=n)
    angles = np.linspace(0, 2 * math.pi, 7)[:-1]
    labels = ["cell", "nucleus", "vessel"]
    out = []
    for i, ((cx, cy), r) in enumerate(zip(centres.tolist(), radii.tolist(), strict=True)):
        ring = [[round(cx + r * math.cos(a), 2), round(cy + r * math.sin(a), 2)] for a in angles]
        ring.append(ring[0])
        out.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"label": labels[i % 3]},
            }
        )
    return out


def load_polygons(base: str, image: str, n: int) -> float:
    features = polygons(n)
    started = time.perf_counter()
    for i in range(0, n, BATCH):
        body = {"type": "FeatureCollection", "features": features[i : i + BATCH]}
        r = requests.post(
            f"{base}/api/v1/images/{image}/annotations/bulk?crs=pixel",
            data=json.dumps(body),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=600,
        )
        r.raise_for_status()
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def session(page: Page) -> None:
    """Drags and wheel zooms over the map's middle, as a user browsing the slide would."""
    box = page.locator("#map").bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for step in range(6):  # pan around at the fitted zoom
        dx = 220 if step % 2 == 0 else -220
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + dx, cy + 60, steps=12)
        page.mouse.up()
    for _ in range(4):  # zoom in, panning at each level
        page.mouse.move(cx, cy)
        page.mouse.wheel(0, -300)
        page.wait_for_timeout(350)
        page.mouse.down()
        page.mouse.move(cx - 180, cy - 40, steps=12)
        page.mouse.up()
    for _ in range(4):  # and back out
        page.mouse.move(cx, cy)
        page.mouse.wheel(0, 300)
        page.wait_for_timeout(350)
    page.wait_for_timeout(500)


def measure(page: Page, base: str, image: str, overview: bool) -> dict[str, Any]:
    hash_ = f"#image={image}" + ("" if overview else "&overview=off")
    page.goto(f"{base}/?token={TOKEN}")  # the sign-in address sets the session cookie
    page.wait_for_url("**/#image=*")
    page.goto("about:blank")  # so that the next address loads the page anew
    started = time.perf_counter()
    page.goto(f"{base}/{hash_}")
    page.wait_for_selector('#map[data-state="ready"]', timeout=120_000)
    page.wait_for_function(
        "!document.querySelector('#map').classList.contains('is-loading')", timeout=120_000
    )
    if not overview:  # the editor's layer has drawn its first page
        page.wait_for_function(
            "Number(document.querySelector('#annot-count')?.dataset.count ?? 0) > 0",
            timeout=120_000,
        )
    first_render = time.perf_counter() - started
    page.evaluate(PROBE)
    t0 = time.perf_counter()
    session(page)
    wall = time.perf_counter() - t0
    frames: list[float] = page.evaluate(
        "() => { window.__probing = false; return window.__frames; }"
    )
    long_tasks: list[float] = page.evaluate("() => window.__longTasks")
    return {
        "mode": "overview" if overview else "baseline",
        "first_render_s": round(first_render, 3),
        "frames": len(frames),
        "session_s": round(wall, 2),
        "frame_p50_ms": round(percentile(frames, 50), 1),
        "frame_p95_ms": round(percentile(frames, 95), 1),
        "frame_max_ms": round(max(frames) if frames else float("nan"), 1),
        "long_tasks": len(long_tasks),
        "long_task_ms": round(sum(long_tasks), 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--polygons", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="runs per mode (the median is kept)")
    args = parser.parse_args()
    if not Path(CHROMIUM).is_file():
        print(f"Chromium is not at {CHROMIUM}", file=sys.stderr)
        return 2
    cog_dir = OUT / "viewer_cog"
    cog = cog_dir / f"synthetic_{SIZE}.tif"
    if not cog.exists():
        cog_dir.mkdir(parents=True, exist_ok=True)
        write_cog(cog, size=SIZE)
    state = Path(tempfile.mkdtemp(prefix="tessera-viewer-bench-"))
    port = free_port()
    env = {**os.environ, "TESSERA_ADMIN_TOKEN": TOKEN, "TESSERA_STATE_DIR": str(state)}
    exe = REPO / ".venv" / "bin" / "tessera"
    cmd = [str(exe), "serve", "--data", str(cog_dir), "--port", str(port)]
    server = Server("tessera", cmd, env, port, OUT / "logs" / "viewer_100k.log")
    results: list[dict[str, Any]] = []
    try:
        server.wait_ready()
        base = server.base_url
        auth = {"Authorization": f"Bearer {TOKEN}"}
        images = requests.get(f"{base}/api/v1/images", headers=auth, timeout=30)
        image = images.json()["images"][0]["id"]
        seconds = load_polygons(base, image, args.polygons)
        print(f"{args.polygons} polygons stored in {seconds:.1f} s (bulk API, {BATCH} per request)")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            for overview in (True, False):
                runs = []
                for _ in range(args.rounds):
                    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
                    page = context.new_page()
                    runs.append(measure(page, base, image, overview))
                    context.close()
                runs.sort(key=lambda r: r["frame_p95_ms"])
                results.append(runs[len(runs) // 2])
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
    keys = ["mode", "first_render_s", "frame_p50_ms", "frame_p95_ms", "frame_max_ms"]
    keys += ["long_tasks", "long_task_ms", "frames"]
    print(" | ".join(f"{k:>14}" for k in keys))
    for r in results:
        print(" | ".join(f"{r[k]!s:>14}" for k in keys))
    over, base_ = results
    ratios = {
        k: round(base_[k] / over[k], 2) if over[k] else None
        for k in ("first_render_s", "frame_p95_ms", "frame_max_ms", "long_task_ms")
    }
    print("baseline / overview:", ratios)
    (OUT / "viewer_100k.json").write_text(
        json.dumps({"polygons": args.polygons, "results": results, "ratios": ratios}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
