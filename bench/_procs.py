"""Starting servers in their own process groups, waiting for them, and stopping them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on right now (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


CLK_TCK = os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float:
    """CPU seconds spent not idle by all CPUs since boot (from /proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads); 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def listening_sockets(port: int) -> int:
    """How many IPv4 sockets listen on ``port`` (from /proc/net/tcp; state 0A is LISTEN)."""
    count = 0
    with contextlib.suppress(OSError), open("/proc/net/tcp") as fh:
        next(fh, None)
        for line in fh:
            fields = line.split()
            if (
                len(fields) > 3
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                count += 1
    return count


class Server:
    """A server process started in a new session: stopping it signals its whole group."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        env: Mapping[str, str],
        port: int,
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = self.proc.pid  # session leader: its pid is the group id

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(
        self, health_path: str = "/healthz", listeners: int = 1, timeout_s: float = 60.0
    ) -> None:
        """Wait until ``health_path`` answers 200 and ``listeners`` sockets listen on the port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if listening_sockets(self.port) >= listeners:
                try:
                    with urllib.request.urlopen(self.base_url + health_path, timeout=2) as r:
                        if r.status == 200:
                            return
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.2)
        raise RuntimeError(
            f"{self.name} not ready after {timeout_s:.0f} s "
            f"({listening_sockets(self.port)} of {listeners} sockets listening):\n"
            f"{self.log_tail()}"
        )

    def pids(self) -> list[int]:
        """Pids of the processes in the server's group (the parent and its workers)."""
        out: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                # fields[0] is the state, fields[2] the process group (fields 3 and 5 of stat)
                if fields[0] != "Z" and int(fields[2]) == self.pgid:
                    out.append(int(entry.name))
        return sorted(out)

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the processes now in the server's group."""
        return sum(process_cpu_seconds(pid) for pid in self.pids())

    def stop(self, grace_s: float = 8.0) -> None:
        """SIGTERM to the group, then SIGKILL to whatever is left after ``grace_s``."""
        try:
            if self.proc.poll() is None or self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGTERM)
                deadline = time.monotonic() + grace_s
                while time.monotonic() < deadline and (self.proc.poll() is None or self.pids()):
                    time.sleep(0.1)
                if self.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        finally:
            self._log.close()
