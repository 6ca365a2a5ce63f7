"""Running wrk with bench/cycle_paths.lua and parsing what it prints."""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).resolve().parent / "cycle_paths.lua"
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int  # wrk's "Non-2xx or 3xx responses"
    socket_errors: int  # connect + read + write + timeout
    statuses: dict[int, int] = field(default_factory=dict)
    raw: str = ""

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = self.errors
        out["statuses"] = {str(k): v for k, v in self.statuses.items()}
        del out["raw"]
        return out


def _ms(value: str, unit: str) -> float:
    return float(value) * UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Parse ``wrk --latency`` output (plus the "status CODE N" lines of cycle_paths.lua)."""

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m is None:
            raise ValueError(f"no {pct}% latency in wrk output:\n{text}")
        return _ms(m.group(1), m.group(2))

    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"no request count in wrk output:\n{text}")
    requests, seconds = int(m.group(1)), _ms(m.group(2), m.group(3)) / 1000.0
    rps_m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    rps = float(rps_m.group(1)) if rps_m else requests / max(seconds, 1e-9)
    max_m = re.search(r"^\s*Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)", text, re.M)
    non2xx_m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock_m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    statuses = {int(c): int(n) for c, n in re.findall(r"^status (\d+) (\d+)$", text, re.M)}
    return WrkResult(
        requests=requests,
        seconds=seconds,
        rps=rps,
        p50_ms=latency("50"),
        p90_ms=latency("90"),
        p99_ms=latency("99"),
        max_ms=_ms(max_m.group(1), max_m.group(2)) if max_m else float("nan"),
        non_2xx=int(non2xx_m.group(1)) if non2xx_m else 0,
        socket_errors=sum(int(g) for g in sock_m.groups()) if sock_m else 0,
        statuses=dict(sorted(statuses.items())),
        raw=text,
    )


def run_wrk(
    base_url: str,
    paths_file: Path,
    connections: int,
    seconds: float,
    token: str | None = None,
    threads: int = 1,
    timeout_s: float = 10.0,
) -> WrkResult:
    """One closed-loop wrk run of ``connections`` connections cycling over ``paths_file``."""
    threads = max(1, min(threads, connections))
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        base_url,
        "--",
        str(paths_file),
    ]
    if token:
        cmd.append(token)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
    return parse_wrk(proc.stdout)
