"""Tessera vs TiTiler: the same COG served by both, loaded with wrk, compared as ratios.

    .venv/bin/python bench/tiles_vs_titiler.py [--quick] [--duration S] [--skip-real]

See bench/README.md. Both servers run as 2 processes, each with its own SO_REUSEPORT socket on
one port, with the same GDAL settings (GDAL_ENV below, TiTiler's recommended set). Results go
to stdout and bench/out/tiles_vs_titiler.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from _mixes import (
    Probe,
    Tile,
    native_tiles,
    probe_all,
    shuffled,
    tessera_path,
    titiler_path,
    wmq_tiles,
    write_paths,
)
from _procs import Server, free_port, system_busy_seconds
from _wrk import WrkResult, run_wrk

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
TESSERA_BIN = ROOT / ".venv" / "bin" / "tessera"
TITILER_VENV = BENCH / ".venv-titiler"
TITILER_PYTHON = TITILER_VENV / "bin" / "python"
# uvicorn[standard] brings uvloop and httptools: TiTiler at its best.
TITILER_PINS = ["titiler.core==2.4.0", "uvicorn[standard]==0.54.0"]
REAL_DATA = Path("/work/shared/data/geo")
COG_NAME = "synthetic_8192.tif"
TOKEN = "bench-token"
WORKERS = 2
CACHED_MB = 256
WMQ_ZOOMS = (15, 16, 17)
NATIVE_TOP_LEVELS = 3
REAL_MAX_TILES = 200

# TiTiler's recommended GDAL configuration for dynamic COG tiling (its "performance tuning"
# page), given to both servers alike. Only GDAL_CACHEMAX (block cache per process, MB),
# GDAL_DISABLE_READDIR_ON_OPEN (no directory listing on open), GDAL_INGESTED_BYTES_AT_OPEN and
# VSI_CACHE(_SIZE) (a per-handle read cache) act on local files; the HTTP ones are inert here.
GDAL_ENV = {
    "GDAL_CACHEMAX": "200",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": "5000000",
    "PYTHONWARNINGS": "ignore",
}

TITILER, TESSERA, TESSERA_CACHED = "titiler", "tessera", "tessera+cache"
NOISY_CORES = 0.25  # CPU used by other programs during a run above which it is flagged


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- settings -------------------------------------------------------------------------------


@dataclass
class Settings:
    duration: float
    warmup: float
    real_duration: float
    fill: float
    concurrency: list[int]
    repeat: int
    skip_real: bool
    skip_cached: bool
    quick: bool
    ceiling_limit: int
    tessera_env: dict[str, str]
    quiet_wait: float
    json_out: Path


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--duration", type=float, default=15.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up before each")
    p.add_argument("--quick", action="store_true", help="short runs, for smoke testing")
    p.add_argument("--skip-real", action="store_true", help="skip the files in " + str(REAL_DATA))
    p.add_argument("--skip-cached", action="store_true", help="skip the --tile-cache runs")
    p.add_argument("--concurrency", default="8,32", help="comma-separated wrk connection counts")
    p.add_argument(
        "--repeat", type=int, default=1, help="runs per measurement; the median (req/s) is kept"
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        metavar="S",
        help="before each run, wait up to S seconds for other programs to leave the CPUs idle",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=OUT / "tiles_vs_titiler.json",
        help="where to write the results (default: bench/out/tiles_vs_titiler.json)",
    )
    p.add_argument(
        "--tessera-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for Tessera only (an experiment, e.g. OPENBLAS_NUM_THREADS=1)",
    )
    a = p.parse_args(argv)
    duration, warmup = (3.0, 1.0) if a.quick else (a.duration, a.warmup)
    return Settings(
        duration=duration,
        warmup=warmup,
        real_duration=max(2.0, round(duration / 3)),
        fill=max(2.0, 2 * warmup),
        concurrency=[int(c) for c in a.concurrency.split(",") if c.strip()],
        repeat=max(1, a.repeat),
        skip_real=a.skip_real,
        skip_cached=a.skip_cached,
        quick=a.quick,
        ceiling_limit=200 if a.quick else 0,
        tessera_env=dict(kv.split("=", 1) for kv in a.tessera_env),
        quiet_wait=min(a.quiet_wait, 5.0) if a.quick else a.quiet_wait,
        json_out=a.json,
    )


# -- set-up ---------------------------------------------------------------------------------


def ensure_titiler_venv() -> dict[str, str]:
    """Create bench/.venv-titiler if missing; return the versions that matter."""
    check = "import titiler.core, uvicorn, uvloop, httptools"
    ok = (
        TITILER_PYTHON.exists()
        and subprocess.run([str(TITILER_PYTHON), "-c", check], capture_output=True).returncode == 0
    )
    if not ok:
        log(f"creating {TITILER_VENV} ({', '.join(TITILER_PINS)})")
        subprocess.run(["python3", "-m", "venv", "--clear", str(TITILER_VENV)], check=True)
        subprocess.run(
            [str(TITILER_PYTHON), "-m", "pip", "install", "-q", *TITILER_PINS], check=True
        )
    code = (
        "import json, importlib.metadata as m, rasterio; "
        "print(json.dumps({n: m.version(n) for n in "
        "['titiler.core', 'rio-tiler', 'rasterio', 'uvicorn', 'fastapi', 'uvloop', 'httptools']}"
        " | {'gdal': rasterio.__gdal_version__}))"
    )
    out = subprocess.run(
        [str(TITILER_PYTHON), "-c", code], capture_output=True, text=True, check=True
    )
    versions: dict[str, str] = json.loads(out.stdout)
    return versions


def tessera_versions() -> dict[str, str]:
    import importlib.metadata as md

    import rasterio

    names = ["tornado", "rasterio", "numpy", "simplejpeg", "imagecodecs", "morecantile"]
    return {n: md.version(n) for n in names} | {"gdal": rasterio.__gdal_version__}


def ensure_cog() -> Path:
    path = OUT / "cog" / COG_NAME
    if not path.exists():
        log(f"writing {path} (8192x8192, 3-band uint8, 512 blocks, DEFLATE, overviews)")
        from tileserver.demo import write_cog

        tmp = path.with_suffix(".tmp.tif")
        write_cog(tmp, size=8192, resolution=0.5, block=512)
        tmp.rename(path)
    return path


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | GDAL_ENV
    return env | (extra or {})


def start_titiler(logs: Path) -> Server:
    port = free_port()
    server = Server(
        TITILER,
        [
            str(TITILER_PYTHON),
            str(BENCH / "titiler_app.py"),
            "--port",
            str(port),
            "--processes",
            str(WORKERS),
        ],
        server_env(),
        port,
        logs / "titiler.log",
        cwd=BENCH,
    )
    server.wait_ready(listeners=WORKERS, timeout_s=120)
    return server


def start_tessera(
    name: str, data: Sequence[Path], cache_mb: int, logs: Path, extra_env: dict[str, str]
) -> Server:
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="tessera-bench-state-"))
    cmd = [str(TESSERA_BIN), "serve"]
    for d in data:
        cmd += ["--data", str(d)]
    cmd += ["--port", str(port), "--workers", str(WORKERS), "--tile-cache", str(cache_mb)]
    env = server_env({"TESSERA_ADMIN_TOKEN": TOKEN, "TESSERA_STATE_DIR": str(state)} | extra_env)
    server = Server(name, cmd, env, port, logs / f"{name.replace('+', '_')}.log", cwd=ROOT)
    server.wait_ready(listeners=WORKERS, timeout_s=120)
    return server


def get_json(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return json.load(r)


def run_ceiling(cog: Path, native: Sequence[Tile], wmq: Sequence[Tile], limit: int) -> Any:
    spec = OUT / "ceiling_tiles.json"
    spec.write_text(json.dumps({"native_mix": native, "wmq": wmq}))
    cmd = [str(PROJECT_PYTHON), str(BENCH / "ceiling.py"), str(cog), str(spec)]
    if limit:
        cmd += ["--limit", str(limit)]
    # One thread for real: OpenBLAS would otherwise add a second core to the small matmuls.
    env = server_env({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    t0, busy0 = time.monotonic(), system_busy_seconds()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = max(time.monotonic() - t0, 1e-6)
    if out.returncode != 0:
        raise RuntimeError(f"ceiling.py failed:\n{out.stderr}")
    result = json.loads(out.stdout)
    own = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    result["cpu"] = {
        "own_cores": round(own / wall, 3),
        "other_cores": round(max(0.0, system_busy_seconds() - busy0 - own) / wall, 3),
    }
    return result


# -- mixes ----------------------------------------------------------------------------------


@dataclass
class Mix:
    key: str
    label: str
    tiles: list[Tile]
    tessera: list[str]
    titiler: list[str] | None  # None: TiTiler has no equivalent route
    notes: list[str] = field(default_factory=list)
    sizes: dict[str, float] = field(default_factory=dict)  # mean body bytes per server
    files: dict[str, Path] = field(default_factory=dict)  # wrk path file per server

    def summary(self) -> dict[str, Any]:
        zooms = sorted({t[0] for t in self.tiles})
        return {
            "label": self.label,
            "distinct_tiles": len(self.tiles),
            "zooms": zooms,
            "mean_bytes": {k: round(v) for k, v in self.sizes.items()},
            "notes": self.notes,
            "example_paths": {
                TESSERA: self.tessera[0] if self.tessera else None,
                TITILER: self.titiler[0] if self.titiler else None,
            },
        }


def check_mix(mix: Mix, tessera: Server, titiler: Server | None) -> None:
    """Fetch every tile once from each server; keep the tiles that both serve with 200."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    probes: dict[str, list[Probe]] = {TESSERA: probe_all(tessera.base_url, mix.tessera, auth)}
    if mix.titiler is not None and titiler is not None:
        probes[TITILER] = probe_all(titiler.base_url, mix.titiler, {})
    keep = [i for i in range(len(mix.tiles)) if all(p[i].status == 200 for p in probes.values())]
    for server, plist in probes.items():
        bad: dict[int, int] = {}
        for p in plist:
            if p.status != 200:
                bad[p.status] = bad.get(p.status, 0) + 1
        if bad:
            mix.notes.append(f"{server} answered non-200 in the pre-check: {bad} (dropped)")
        ok = [plist[i] for i in keep]
        mix.sizes[server] = statistics.mean(p.size for p in ok) if ok else 0.0
        odd = sorted({p.content_type for p in ok if not p.content_type.startswith("image/")})
        if odd:
            mix.notes.append(f"{server} content-type {', '.join(odd)}")
    if len(keep) < len(mix.tiles):
        mix.notes.append(f"{len(mix.tiles) - len(keep)} of {len(mix.tiles)} tiles dropped")
    mix.tiles = [mix.tiles[i] for i in keep]
    mix.tessera = [mix.tessera[i] for i in keep]
    if mix.titiler is not None:
        mix.titiler = [mix.titiler[i] for i in keep]
    pdir = OUT / "paths"
    mix.files[TESSERA] = write_paths(pdir / f"{mix.key}.tessera.txt", mix.tessera)
    if mix.titiler is not None:
        mix.files[TITILER] = write_paths(pdir / f"{mix.key}.titiler.txt", mix.titiler)


def cog_mixes(cog: Path, image_id: str, meta: dict[str, Any]) -> list[Mix]:
    wmq = shuffled(wmq_tiles(meta["bounds_wgs84"], WMQ_ZOOMS))
    native = shuffled(
        native_tiles(
            meta["width"], meta["height"], meta["tile_size"], meta["levels"], NATIVE_TOP_LEVELS
        )
    )
    mixes = []
    for ext, name in (("jpg", "JPEG"), ("png", "PNG")):
        mixes.append(
            Mix(
                key=f"cog_wmq_{ext}",
                label=f"COG 8192 WMQ {name}",
                tiles=list(wmq),
                tessera=[tessera_path(image_id, t, ext, "WebMercatorQuad") for t in wmq],
                titiler=[titiler_path(cog, t, ext) for t in wmq],
                notes=[f"WebMercatorQuad z{WMQ_ZOOMS[0]}-{WMQ_ZOOMS[-1]} over the image bounds"],
            )
        )
    mixes.append(
        Mix(
            key="cog_native_jpg",
            label="COG 8192 native JPEG",
            tiles=list(native),
            tessera=[tessera_path(image_id, t, "jpg", None) for t in native],
            titiler=None,
            notes=[
                f"levels z{min(t[0] for t in native)}-{max(t[0] for t in native)} of "
                f"{meta['levels']} (the {NATIVE_TOP_LEVELS} finest); TiTiler has no native "
                "pixel pyramid: compared against its WMQ JPEG rate",
            ],
        )
    )
    return mixes


def titiler_params(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """TiTiler query parameters that render what Tessera renders by default."""
    bands = [1, 2, 3] if meta["bands"] >= 3 else [1]
    params: list[tuple[str, str]] = []
    if len(bands) != meta["bands"]:
        params += [("bidx", str(b)) for b in bands]
    if "scales" in meta:
        params.append(("unscale", "true"))
    rescale = meta.get("default_rescale")
    if rescale:
        params += [("rescale", f"{rescale[b - 1][0]:.6g},{rescale[b - 1][1]:.6g}") for b in bands]
    return params


def short_name(name: str, width: int = 20) -> str:
    return name if len(name) <= width else name[: width - 11] + ".." + name[-9:]


def real_mixes(images: dict[str, str], token: str, base_url: str) -> tuple[list[Mix], list[str]]:
    mixes: list[Mix] = []
    notes: list[str] = []
    for path in sorted(REAL_DATA.iterdir()):
        if path.name not in images:
            notes.append(f"{path.name}: not in Tessera's catalog (skipped by its scan)")
            continue
        image_id = images[path.name]
        meta = get_json(f"{base_url}/api/v1/images/{image_id}", token)
        if not meta.get("bounds_wgs84"):
            notes.append(f"{path.name}: not georeferenced, no WMQ tiles")
            continue
        top = int(meta["webmercator_maxzoom"])
        zooms = range(max(0, top - 2), top + 1)
        tiles = shuffled(wmq_tiles(meta["bounds_wgs84"], zooms))[:REAL_MAX_TILES]
        params = titiler_params(meta)
        mixes.append(
            Mix(
                key="real_" + path.stem.lower().replace(".", "_"),
                label=f"{short_name(path.name)} WMQ JPEG",
                tiles=tiles,
                tessera=[tessera_path(image_id, t, "jpg", "WebMercatorQuad") for t in tiles],
                titiler=[titiler_path(path, t, "jpg", params) for t in tiles],
                notes=[
                    f"{path.name}: {meta['width']}x{meta['height']} "
                    f"{meta['bands']}x{meta['dtype']}, "
                    f"z{zooms.start}-{zooms.stop - 1}"
                    + (f", TiTiler params {params}" if params else "")
                ],
            )
        )
    return mixes, notes


# -- runs -----------------------------------------------------------------------------------


@dataclass
class Cpu:
    """CPU use during one wrk run, in cores (CPU seconds per second of wall time)."""

    server_cores: float
    wrk_cores: float
    other_cores: float  # everything else on the machine: noise
    server_ms_per_request: float  # server CPU time per request, robust to noise

    @property
    def noisy(self) -> bool:
        return self.other_cores > NOISY_CORES


@dataclass
class Run:
    mix: str
    label: str
    server: str
    concurrency: int
    result: WrkResult
    cpu: Cpu
    repeats: list[float] = field(default_factory=list)  # req/s of every repeat

    def to_json(self) -> dict[str, Any]:
        return {
            "mix": self.mix,
            "scenario": self.label,
            "server": self.server,
            "concurrency": self.concurrency,
            **self.result.to_json(),
            "cpu": {k: round(v, 3) for k, v in self.cpu.__dict__.items()},
            "noisy": self.cpu.noisy,
            "rps_repeats": self.repeats,
        }


def wait_for_quiet(max_wait_s: float, idle_cores: float = NOISY_CORES) -> float:
    """Wait until the machine (servers idle between runs) uses < ``idle_cores`` for 1 s.

    Returns the CPU use (cores) last seen: the machine is shared, and other programs' load
    perturbs every figure.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        b0 = system_busy_seconds()
        time.sleep(1.0)
        busy = system_busy_seconds() - b0
        if busy < idle_cores or time.monotonic() >= deadline:
            return busy


def timed_wrk(
    server: Server, paths: Path, conc: int, seconds: float, token: str | None
) -> tuple[WrkResult, Cpu]:
    """A wrk run, with the CPU used meanwhile by the server, by wrk and by everything else."""
    t0, busy0, srv0 = time.monotonic(), system_busy_seconds(), server.cpu_seconds()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = run_wrk(server.base_url, paths, conc, seconds, token)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t1, busy1, srv1 = time.monotonic(), system_busy_seconds(), server.cpu_seconds()
    wall = max(t1 - t0, 1e-6)
    srv = max(0.0, srv1 - srv0)
    wrk_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    cpu = Cpu(
        server_cores=srv / wall,
        wrk_cores=wrk_cpu / wall,
        other_cores=max(0.0, (busy1 - busy0 - srv - wrk_cpu) / wall),
        server_ms_per_request=1000.0 * srv / max(1, res.requests),
    )
    return res, cpu


def measure(
    runs: list[Run],
    mix: Mix,
    server: Server,
    who: str,
    conc: int,
    seconds: float,
    settings: Settings,
) -> None:
    kind = TITILER if who == TITILER else TESSERA
    paths = mix.files[kind]
    token = None if who == TITILER else TOKEN
    results = []
    for _ in range(settings.repeat):
        wait_for_quiet(settings.quiet_wait)
        if settings.warmup > 0:
            run_wrk(server.base_url, paths, conc, settings.warmup, token)
        results.append(timed_wrk(server, paths, conc, seconds, token))
    results.sort(key=lambda rc: rc[0].rps)
    res, cpu = results[len(results) // 2]
    run = Run(mix.key, mix.label, who, conc, res, cpu, [round(r.rps, 1) for r, _ in results])
    runs.append(run)
    flag = f"  !! {res.errors} errors {res.statuses}" if res.errors else ""
    log(
        f"{mix.label:<30} {who:<14} c={conc:<3} {res.rps:8.1f} req/s  "
        f"p50 {res.p50_ms:7.1f} ms  p99 {res.p99_ms:7.1f} ms  server {cpu.server_cores:.2f} "
        f"cores, {cpu.server_ms_per_request:.1f} CPU ms/req, other {cpu.other_cores:.2f} cores"
        f"{flag}"
    )


def find(runs: Sequence[Run], mix: str, server: str, conc: int) -> Run | None:
    for r in runs:
        if r.mix == mix and r.server == server and r.concurrency == conc:
            return r
    return None


# -- report ---------------------------------------------------------------------------------


def fmt_errors(r: WrkResult) -> str:
    if not r.errors:
        return "0"
    detail = ",".join(f"{k}:{v}" for k, v in r.statuses.items() if not 200 <= k < 400)
    sock = f",sock:{r.socket_errors}" if r.socket_errors else ""
    return f"{r.errors} !! ({detail}{sock})"


def results_table(runs: Sequence[Run], mixes: dict[str, Mix]) -> list[str]:
    head = (
        f"{'scenario':<30} {'server':<13} {'conc':>4} {'req/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'KB':>5} {'cpu ms/req':>10} {'srv cores':>9} {'other':>5}  errors"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        kind = TITILER if r.server == TITILER else TESSERA
        kb = mixes[r.mix].sizes.get(kind, 0.0) / 1024
        noisy = " ~" if r.cpu.noisy else "  "
        lines.append(
            f"{r.label:<30} {r.server:<13} {r.concurrency:>4} {r.result.rps:>8.1f} "
            f"{r.result.p50_ms:>7.1f} {r.result.p99_ms:>7.1f} {kb:>5.1f} "
            f"{r.cpu.server_ms_per_request:>10.2f} {r.cpu.server_cores:>9.2f} "
            f"{r.cpu.other_cores:>5.2f}{noisy}{fmt_errors(r.result)}"
        )
    return lines


@dataclass
class Ratio:
    scenario: str
    concurrency: int
    titiler_rps: float
    tessera_rps: float | None
    cached_rps: float | None
    rps_ratio: float | None
    p99_ratio: float | None
    cached_rps_ratio: float | None
    cached_p99_ratio: float | None
    cpu_ratio: float | None  # TiTiler CPU ms per request / Tessera's: noise-robust
    target: str
    verdict: str
    reference: str


def ratios(runs: Sequence[Run], mixes: Sequence[Mix], concs: Sequence[int]) -> list[Ratio]:
    out: list[Ratio] = []
    targets = {"cog_wmq_jpg": (3.0, True), "cog_native_jpg": (10.0, False)}
    for mix in mixes:
        ref_mix = "cog_wmq_jpg" if mix.key == "cog_native_jpg" else mix.key
        for c in concs:
            base = find(runs, ref_mix, TITILER, c)
            if base is None:
                continue
            tess = find(runs, mix.key, TESSERA, c)
            cached = find(runs, mix.key, TESSERA_CACHED, c)

            def div(a: float | None, b: float) -> float | None:
                return None if a is None or b <= 0 else a / b

            rps = div(tess.result.rps if tess else None, base.result.rps)
            p99 = div(tess.result.p99_ms if tess else None, base.result.p99_ms)
            need_rps, need_p99 = targets.get(mix.key, (0.0, False))
            target = ""
            verdict = ""
            if need_rps:
                target = f">={need_rps:g}x" + (", p99 <= TiTiler" if need_p99 else "")
                good = rps is not None and rps >= need_rps
                if need_p99:
                    good = good and p99 is not None and p99 <= 1.0
                verdict = "MET" if good else "NOT MET"
            if any(r.result.errors for r in (base, tess, cached) if r is not None):
                verdict = (verdict + " (errors!)").strip()
            out.append(
                Ratio(
                    scenario=mix.label,
                    concurrency=c,
                    titiler_rps=base.result.rps,
                    tessera_rps=tess.result.rps if tess else None,
                    cached_rps=cached.result.rps if cached else None,
                    rps_ratio=rps,
                    p99_ratio=p99,
                    cached_rps_ratio=div(cached.result.rps if cached else None, base.result.rps),
                    cached_p99_ratio=div(
                        cached.result.p99_ms if cached else None, base.result.p99_ms
                    ),
                    cpu_ratio=div(
                        base.cpu.server_ms_per_request,
                        tess.cpu.server_ms_per_request if tess else 0.0,
                    ),
                    target=target,
                    verdict=verdict,
                    reference="TiTiler WMQ JPEG" if ref_mix != mix.key else "TiTiler same mix",
                )
            )
    return out


def ratio_table(rows: Sequence[Ratio]) -> list[str]:
    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    head = (
        f"{'scenario':<30} {'conc':>4} {'req/s ratio':>11} {'p99 ratio':>9} "
        f"{'cached req/s':>12} {'cached p99':>10} {'CPU/req':>7}  target / verdict"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ref = "" if r.reference == "TiTiler same mix" else f" [vs {r.reference}]"
        lines.append(
            f"{r.scenario:<30} {r.concurrency:>4} {x(r.rps_ratio):>11} {x(r.p99_ratio):>9} "
            f"{x(r.cached_rps_ratio):>12} {x(r.cached_p99_ratio):>10} {x(r.cpu_ratio):>7}  "
            f"{r.target} {r.verdict}{ref}".rstrip()
        )
    return lines


def ceiling_lines(ceiling: dict[str, Any], runs: Sequence[Run], concs: Sequence[int]) -> list[str]:
    b = ceiling["block"]
    cpu = ceiling["cpu"]
    lines = [
        f"(measured in {cpu['own_cores']:.2f} cores; other programs used "
        f"{cpu['other_cores']:.2f} cores meanwhile)",
        f"512 internal block, one core: decode-read {b['decode_read_ms']:.2f} ms, "
        f"block-cache hit {b['cache_hit_read_ms']:.3f} ms, 512x512 JPEG encode "
        f"{b['jpeg_encode_ms']:.2f} ms -> "
        f"{b['read_plus_encode_tiles_per_s_core']:.0f} blocks/s/core",
    ]
    for key in ("native_fullres_jpeg", "native_mix_jpeg", "wmq_jpeg", "wmq_png"):
        c = ceiling[key]
        lines.append(
            f"{c['name']}: {c['tiles']} tiles, ms/tile by pass {c['ms_per_tile_by_pass']} -> "
            f"{c['tiles_per_s_core']:.0f} tiles/s/core steady (x{WORKERS} cores = "
            f"{WORKERS * c['tiles_per_s_core']:.0f}/s)"
        )
    pairs = (
        ("native_fullres_jpeg", "cog_native_jpg"),
        ("native_mix_jpeg", "cog_native_jpg"),
        ("wmq_jpeg", "cog_wmq_jpg"),
        ("wmq_png", "cog_wmq_png"),
    )
    for key, mix in pairs:
        cap = WORKERS * ceiling[key]["tiles_per_s_core"]
        for c in concs:
            r = find(runs, mix, TESSERA, c)
            if r is not None:
                lines.append(
                    f"  Tessera (cache off) {r.label:<22} c={c:<3} {r.result.rps:7.1f} req/s = "
                    f"{r.result.rps / cap:6.1%} of the {key} ceiling ({cap:.0f}/s)"
                )
    return lines


# -- main -----------------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    logs = OUT / "logs"
    started = time.time()
    versions = {TITILER: ensure_titiler_venv(), TESSERA: tessera_versions()}
    cog = ensure_cog()
    data = [cog.parent] + ([] if settings.skip_real else [REAL_DATA])
    concs = settings.concurrency
    runs: list[Run] = []
    servers: list[Server] = []
    mixes: list[Mix] = []
    real: list[Mix] = []
    real_notes: list[str] = []
    ceiling: dict[str, Any] = {}

    with sigterm_as_exit():
        try:
            log("starting TiTiler and Tessera (cache off), 2 processes each")
            titiler = start_titiler(logs)
            servers.append(titiler)
            tessera = start_tessera(TESSERA, data, 0, logs, settings.tessera_env)
            servers.append(tessera)
            listing = get_json(f"{tessera.base_url}/api/v1/images", TOKEN)["images"]
            images = {img["name"]: img["id"] for img in listing}
            cog_id = images[COG_NAME]
            meta = get_json(f"{tessera.base_url}/api/v1/images/{cog_id}", TOKEN)
            mixes = cog_mixes(cog, cog_id, meta)
            if not settings.skip_real:
                real, real_notes = real_mixes(images, TOKEN, tessera.base_url)
            log("pre-checking every tile path once on each server")
            for mix in mixes + real:
                check_mix(mix, tessera, titiler)
                log(f"  {mix.label}: {len(mix.tiles)} tiles; {'; '.join(mix.notes)}")

            # The in-process ceiling, while both servers sit idle.
            log("in-process ceiling (one thread)")
            wait_for_quiet(settings.quiet_wait)
            native = next(m for m in mixes if m.key == "cog_native_jpg").tiles
            wmq = next(m for m in mixes if m.key == "cog_wmq_jpg").tiles
            ceiling = run_ceiling(cog, native, wmq, settings.ceiling_limit)

            for mix in mixes:
                for c in concs:
                    if mix.titiler is not None:
                        measure(runs, mix, titiler, TITILER, c, settings.duration, settings)
                    measure(runs, mix, tessera, TESSERA, c, settings.duration, settings)
            for mix in real:
                for who, srv in ((TITILER, titiler), (TESSERA, tessera)):
                    measure(runs, mix, srv, who, concs[0], settings.real_duration, settings)
            for srv in (tessera, titiler):
                srv.stop()
                servers.remove(srv)

            if not settings.skip_cached:
                log(f"starting Tessera with --tile-cache {CACHED_MB}")
                cached = start_tessera(TESSERA_CACHED, data, CACHED_MB, logs, settings.tessera_env)
                servers.append(cached)
                for mix in mixes:
                    # Fill both workers' caches: many connections land on both processes.
                    run_wrk(cached.base_url, mix.files[TESSERA], 32, settings.fill, TOKEN)
                    for c in concs:
                        measure(runs, mix, cached, TESSERA_CACHED, c, settings.duration, settings)
        finally:
            for srv in reversed(servers):
                log(f"stopping {srv.name}")
                srv.stop()

    all_mixes = {m.key: m for m in mixes + real}
    rows = ratios(runs, mixes + real, concs)
    report = [
        "",
        f"Tessera vs TiTiler, {WORKERS} processes each (own SO_REUSEPORT sockets), wrk closed "
        f"loop, {settings.duration:g} s per run after {settings.warmup:g} s warm-up "
        f"(real files: {settings.real_duration:g} s, c={concs[0]}); GDAL_CACHEMAX="
        f"{GDAL_ENV['GDAL_CACHEMAX']} MB per process; host {platform.node()}, "
        f"{os.cpu_count()} CPUs, load generator on the same CPUs.",
        *(
            [f"Tessera started with extra environment {settings.tessera_env} (an experiment)."]
            if settings.tessera_env
            else []
        ),
        "Columns: KB = mean tile size; cpu ms/req = server CPU time per request; srv cores = "
        "server CPU use; other = CPU used by other programs meanwhile (~ marks a noisy run, "
        f"other > {NOISY_CORES} cores).",
        "",
        *results_table(runs, all_mixes),
        "",
        "Ratios Tessera / TiTiler (req/s: higher is better; p99: lower is better). "
        "'cached' = Tessera --tile-cache 256.",
        "TiTiler has no native pixel pyramid: the native JPEG rows compare with TiTiler's "
        "WMQ JPEG rate.",
        "",
        *ratio_table(rows),
        "",
        "In-process ceiling (Tessera's tile code, one thread, no HTTP; GDAL_CACHEMAX as the "
        "servers):",
        *ceiling_lines(ceiling, runs, concs),
    ]
    notes = [f"{m.label}: {'; '.join(m.notes)}" for m in mixes + real if m.notes] + real_notes
    if notes:
        report += ["", "Notes:", *[f"  {n}" for n in notes]]
    flagged = [r for r in runs if r.result.errors]
    if flagged:
        report += [
            "",
            "!! RUNS WITH ERRORS (non-2xx or socket errors): "
            + "; ".join(f"{r.label} {r.server} c={r.concurrency}" for r in flagged),
        ]
    print("\n".join(report), flush=True)

    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.time() - started, 1),
        "settings": settings.__dict__ | {"json_out": str(settings.json_out)},
        "workers": WORKERS,
        "gdal_env": GDAL_ENV,
        "versions": versions,
        "cpus": os.cpu_count(),
        "mixes": {m.key: m.summary() for m in mixes + real},
        "real_data_notes": real_notes,
        "runs": [r.to_json() for r in runs],
        "ratios": [r.__dict__ for r in rows],
        "ceiling": ceiling,
        "errors": [f"{r.label} {r.server} c={r.concurrency}" for r in flagged],
    }
    out = settings.json_out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out}")
    return 3 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
