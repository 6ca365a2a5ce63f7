"""The tessera command as a user runs it: serve, workers, user add, demo."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

TESSERA = [sys.executable, "-m", "tileserver.cli"]


class Running:
    def __init__(self, proc: subprocess.Popen[str], lines: list[str]) -> None:
        self.proc, self.lines = proc, lines

    @property
    def url(self) -> str:
        for line in self.lines:
            if m := re.search(r"Tessera listening on (http://\S+?)/?$", line):
                return m.group(1)
        raise AssertionError("no listening line in:\n" + "".join(self.lines))

    def signin_token(self) -> str | None:
        for line in self.lines:
            if m := re.search(r"Sign in: \S+\?token=(\S+)$", line):
                return m.group(1)
        return None


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen[str]] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        wait_for: str = "Sign in:",
        timeout: float = 120,
    ) -> Running:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        full_env.update(env or {})
        proc = subprocess.Popen(
            [*TESSERA, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            start_new_session=True,
        )
        procs.append(proc)
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if wait_for in line:
                return Running(proc, lines)
        raise AssertionError("server did not start:\n" + "".join(lines))

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_first_start_creates_an_admin_and_user_add_gives_working_tokens(
    run_cli, make_raster, tmp_path: Path
) -> None:
    data = make_raster(np.full((1, 100, 100), 9, np.uint8)).parent
    srv = run_cli("serve", "--data", str(data), "--port", "0")
    token = srv.signin_token()
    assert token and "Created the admin user" in "".join(srv.lines)
    assert (data / ".tessera" / "tessera.db").is_file()  # writable folder: state inside it
    h = {"Authorization": f"Bearer {token}"}
    assert requests.get(srv.url + "/api/v1/images", headers=h, timeout=10).status_code == 200
    out = subprocess.run(
        [*TESSERA, "user", "add", "ann", "--role", "annotator", "--data", str(data)],
        capture_output=True,
        text=True,
        check=True,
    )
    ann_token = out.stdout.strip()
    me = requests.get(
        srv.url + "/api/v1/session", timeout=10, headers={"Authorization": f"Bearer {ann_token}"}
    ).json()
    assert me == {"name": "ann", "role": "annotator"}
    bad = subprocess.run(
        [*TESSERA, "user", "add", "bad name!", "--data", str(data)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid user name" in bad.stderr


def test_second_start_prints_no_token_and_env_token_rules(run_cli, make_raster) -> None:
    data = make_raster(np.full((1, 100, 100), 9, np.uint8)).parent
    first = run_cli("serve", "--data", str(data), "--port", "0")
    os.killpg(first.proc.pid, signal.SIGTERM)
    first.proc.wait(10)
    second = run_cli("serve", "--data", str(data), "--port", "0")
    assert second.signin_token() is None and "Created the admin" not in "".join(second.lines)
    os.killpg(second.proc.pid, signal.SIGTERM)
    second.proc.wait(10)
    third = run_cli(
        "serve", "--data", str(data), "--port", "0", env={"TESSERA_ADMIN_TOKEN": "env-token"}
    )
    assert third.signin_token() == "env-token"
    r = requests.get(
        third.url + "/api/v1/images", timeout=10, headers={"Authorization": "Bearer env-token"}
    )
    assert r.status_code == 200


def test_workers_each_serve_on_their_own_reuseport_socket(
    run_cli, make_raster, tmp_path: Path
) -> None:
    data = make_raster(np.full((3, 600, 600), 50, np.uint8)).parent
    port = free_port()
    srv = run_cli(
        "serve",
        "--data",
        str(data),
        "--port",
        str(port),
        "--workers",
        "2",
        "--tile-cache",
        "0",
        env={"TESSERA_ADMIN_TOKEN": "t", "TESSERA_STATE_DIR": str(tmp_path / "st")},
    )
    h = {"Authorization": "Bearer t"}
    time.sleep(1.0)  # the second worker binds after its fork
    out = subprocess.run(["ss", "-ltnp", f"sport = :{port}"], capture_output=True, text=True)
    pids = set(re.findall(r"pid=(\d+)", out.stdout))
    assert len(pids) == 2, out.stdout  # two listening sockets, one per worker process
    for i in range(20):
        r = requests.get(
            f"{srv.url}/api/v1/images/synthetic/tiles/{i % 3}/0/0.jpg", headers=h, timeout=10
        )
        assert r.status_code == 200


def test_serving_a_missing_folder_fails_with_a_clear_message(tmp_path: Path) -> None:
    out = subprocess.run(
        [*TESSERA, "serve", "--data", str(tmp_path / "nope"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_demo_generates_data_and_serves_it(run_cli, tmp_path: Path) -> None:
    srv = run_cli(
        "demo",
        "--dir",
        str(tmp_path / "demo"),
        "--port",
        "0",
        "--no-browser",
        env={"TESSERA_STATE_DIR": str(tmp_path / "st")},
        timeout=300,
    )
    token = srv.signin_token()
    assert token
    h = {"Authorization": f"Bearer {token}"}
    images = requests.get(srv.url + "/api/v1/images", headers=h, timeout=10).json()["images"]
    scene = next(i for i in images if i["name"].endswith("synthetic_scene.tif"))
    meta = requests.get(f"{srv.url}/api/v1/images/{scene['id']}", headers=h, timeout=10).json()
    assert meta["width"] == 4096 and meta["overviews"] == [2, 4, 8]
    assert meta["crs"]["epsg"] == 32618
    r = requests.get(
        f"{srv.url}/api/v1/images/{scene['id']}/tiles/0/0/0.png", headers=h, timeout=10
    )
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
