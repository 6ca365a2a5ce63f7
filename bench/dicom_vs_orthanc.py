"""Tessera vs Orthanc on the same generated CT series (512x512x300), rendered as PNG.

    .venv/bin/python bench/dicom_vs_orthanc.py [--duration S] [--concurrency 8]

Needs Debian's ``orthanc`` package (``apt-get install orthanc``; the script runs the binary with
its own configuration, not the system service). Measures, on 127.0.0.1 only:

1. time to first tile of a cold start: page cache dropped, then ``tessera serve`` started and a
   full-resolution axial tile requested until it answers (scan + header index + first decode);
2. throughput at concurrency 8 for ``duration`` seconds: Tessera's full-resolution axial PNG
   tiles (256x256, tile cache off) vs Orthanc's ``/instances/{id}/rendered`` (the whole
   512x512 slice as PNG); reported as requests/s and megapixels/s, and their ratios;
3. p50 latency, one request at a time, of coronal tiles vs axial tiles once the volume cache
   exists.

Results go to stdout and ``bench/out/dicom_vs_orthanc.json``. Everything started is stopped at
the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from _procs import Server, free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tileserver.phantom import BENCH_PHANTOM, write_ct_phantom  # noqa: E402

OUT = ROOT / "bench" / "out"
DATA = OUT / "ct_phantom_512x512x300"
TESSERA_BIN = ROOT / ".venv" / "bin" / "tessera"
TOKEN = "bench-token"


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(base + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def load(
    port: int, paths: list[str], headers: dict[str, str], concurrency: int, duration: float
) -> dict[str, Any]:
    """Requests from ``concurrency`` threads with keep-alive connections for ``duration``."""
    stop = time.monotonic() + duration
    counts = [0] * concurrency
    errors = [0] * concurrency
    latencies: list[list[float]] = [[] for _ in range(concurrency)]

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        n = i
        while time.monotonic() < stop:
            path = paths[n % len(paths)]
            n += concurrency
            t = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                ok = False
            latencies[i].append(time.perf_counter() - t)
            if ok:
                counts[i] += 1
            else:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    lat = sorted(x for xs in latencies for x in xs)
    return {
        "requests": sum(counts),
        "errors": sum(errors),
        "req_per_s": sum(counts) / elapsed,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "p95_ms": 1000 * lat[int(len(lat) * 0.95)] if lat else None,
    }


def p50_sequential(port: int, paths: list[str], headers: dict[str, str]) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for path in paths:
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, (path, r.status)
        times.append(time.perf_counter() - t)
    conn.close()
    return 1000 * statistics.median(times)


def start_orthanc(work: Path) -> Server:
    binary = shutil.which("Orthanc")
    if binary is None:
        raise SystemExit("Orthanc is not installed: apt-get install orthanc")
    port = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "orthanc-db"),
        "IndexDirectory": str(work / "orthanc-db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpThreadsCount": 50,
        "Plugins": [],
        "StorageCompression": False,
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    server = Server(
        "orthanc",
        [binary, str(work / "orthanc.json")],
        os.environ,
        port,
        OUT / "logs" / "orthanc.log",
    )
    server.wait_ready("/system", timeout_s=60)
    return server


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if not (DATA / f"CT{BENCH_PHANTOM.slices:04d}.dcm").exists():
        print("generating the 512x512x300 CT phantom ...", flush=True)
        write_ct_phantom(DATA, BENCH_PHANTOM)
    files = sorted(DATA.glob("*.dcm"))
    results: dict[str, Any] = {"series": f"{BENCH_PHANTOM.cols}x{BENCH_PHANTOM.rows}x{len(files)}"}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, TESSERA_ADMIN_TOKEN=TOKEN, TESSERA_STATE_DIR=str(work / "state"))
        servers: list[Server] = []
        try:
            # 1. Cold time to first tile.
            results["page_cache_dropped"] = drop_page_cache()
            port = free_port()
            t0 = time.monotonic()
            tessera = Server(
                "tessera",
                [
                    str(TESSERA_BIN),
                    "serve",
                    "--data",
                    str(DATA.parent),
                    "--port",
                    str(port),
                    "--workers",
                    "2",
                    "--tile-cache",
                    "0",
                ],
                env,
                port,
                OUT / "logs" / "tessera-dicom.log",
            )
            servers.append(tessera)
            tessera.wait_ready(listeners=2, timeout_s=300)
            _, body = get(tessera.base_url, "/api/v1/images", headers)
            image = next(i["id"] for i in json.loads(body)["images"] if i["kind"] == "dicom-volume")
            status, _ = get(
                tessera.base_url, f"/api/v1/images/{image}/tiles/1/0/0.png?slice=150", headers
            )
            results["tessera_cold_first_tile_s"] = time.monotonic() - t0
            assert status == 200
            print(
                f"cold start to first axial tile: {results['tessera_cold_first_tile_s']:.2f} s",
                flush=True,
            )

            # 2. Throughput, concurrency 8.
            axial = [
                f"/api/v1/images/{image}/tiles/1/{x}/{y}.png?slice={k}"
                for k in range(len(files))
                for x in (0, 1)
                for y in (0, 1)
            ]
            load(port, axial, headers, args.concurrency, 3.0)  # warm-up
            tess = load(port, axial, headers, args.concurrency, args.duration)
            orthanc = start_orthanc(work)
            servers.append(orthanc)
            ids = []
            for f in files:
                req = urllib.request.Request(
                    orthanc.base_url + "/instances", data=f.read_bytes(), method="POST"
                )
                with urllib.request.urlopen(req, timeout=60) as r:
                    ids.append(json.loads(r.read())["ID"])
            rendered = [f"/instances/{i}/rendered" for i in ids]
            load(orthanc.port, rendered, {"Accept": "image/png"}, args.concurrency, 3.0)
            orth = load(
                orthanc.port, rendered, {"Accept": "image/png"}, args.concurrency, args.duration
            )
            tess["mpix_per_s"] = tess["req_per_s"] * 256 * 256 / 1e6
            orth["mpix_per_s"] = orth["req_per_s"] * 512 * 512 / 1e6
            results["tessera_axial_tiles"] = tess
            results["orthanc_rendered"] = orth
            results["ratio_req_per_s"] = tess["req_per_s"] / orth["req_per_s"]
            results["ratio_mpix_per_s"] = tess["mpix_per_s"] / orth["mpix_per_s"]
            print(
                f"tessera axial 256px PNG tiles: {tess['req_per_s']:.1f} req/s, "
                f"{tess['mpix_per_s']:.1f} Mpx/s "
                f"(p50 {tess['p50_ms']:.1f} ms, errors {tess['errors']})"
            )
            print(
                f"orthanc 512px /rendered PNG:   {orth['req_per_s']:.1f} req/s, "
                f"{orth['mpix_per_s']:.1f} Mpx/s "
                f"(p50 {orth['p50_ms']:.1f} ms, errors {orth['errors']})"
            )
            print(
                f"ratio: {results['ratio_req_per_s']:.2f}x requests/s, "
                f"{results['ratio_mpix_per_s']:.2f}x pixels/s (target 2x)",
                flush=True,
            )

            # 3. Coronal vs axial latency once the volume cache exists (built by the first one).
            t = time.monotonic()
            status, _ = get(
                tessera.base_url, f"/api/v1/images/{image}/tiles/1/0/0.png?plane=coronal", headers
            )
            results["first_coronal_tile_s"] = time.monotonic() - t
            tile = f"/api/v1/images/{image}/tiles/1"
            cor = [
                f"{tile}/{k % 2}/{(k // 2) % 2}.png?plane=coronal&slice={k * 5 % 512}"
                for k in range(100)
            ]
            ax = [f"{tile}/{k % 2}/{(k // 2) % 2}.png?slice={k * 3 % 300}" for k in range(100)]
            p50_sequential(port, cor[:10], headers)  # both workers build/open their cache
            results["p50_coronal_ms"] = p50_sequential(port, cor, headers)
            results["p50_axial_ms"] = p50_sequential(port, ax, headers)
            print(
                "first coronal tile (builds the volume cache): "
                f"{results['first_coronal_tile_s']:.2f} s; p50 coronal "
                f"{results['p50_coronal_ms']:.2f} ms vs axial {results['p50_axial_ms']:.2f} ms"
            )
        finally:
            for s in reversed(servers):
                s.stop()
    (OUT / "dicom_vs_orthanc.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
