"""Live collaboration over real WebSockets to a real server: what user A stores, user B's
socket receives within a second (in-process server on SQLite and PostGIS, and a
``tessera serve --workers 2`` subprocess where the sockets land on both workers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tornado.httpclient
import tornado.websocket

from annot.storage import open_store
from annot.users import Role
from tests import pg
from tests.pg import pg_database  # noqa: F401  (a fixture)
from tests.test_annot_api import pg_server  # noqa: F401  (a fixture)
from tests.test_viewer import tessera_command

WITHIN_SECONDS = 1.0
RING = [[10.5, 20.25], [120.0, 22.0], [110.0, 90.75], [12.0, 80.0], [10.5, 20.25]]
LISTENING = re.compile(r"Tessera listening on (http://127\.0\.0\.1:\d+/)")


def feature(ring: list[list[float]] = RING) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"label": "cell"}}


class Writer:
    """User A over plain HTTP."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base.rstrip("/"), token

    def __call__(self, method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(
            method,
            self.base + path,
            data=json.dumps(body) if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )


async def connect(base: str, image: str, token: str | None, how: str = "header") -> tornado.websocket.WebSocketClientConnection:
    url = base.rstrip("/").replace("http://", "ws://") + f"/api/v1/images/{image}/live"
    headers = {}
    if token is not None and how == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif token is not None:
        url += f"?token={token}"
    return await tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(url, headers=headers))


async def receive(ws: tornado.websocket.WebSocketClientConnection, timeout: float) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.read_message(), timeout)
    assert message is not None, "the server closed the socket"
    data: dict[str, Any] = json.loads(message)
    return data


async def next_event(ws: tornado.websocket.WebSocketClientConnection, started: float) -> dict[str, Any]:
    """The next change event, which must arrive within WITHIN_SECONDS of ``started``."""
    while True:
        left = started + WITHIN_SECONDS - time.monotonic()
        assert left > 0, "no change arrived within a second"
        message = await receive(ws, left)
        if message["type"] == "changes":
            events: list[dict[str, Any]] = message["events"]
            assert len(events) == 1, events
            return events[0]
        assert message["type"] != "reload", message


async def create_update_delete(base: str, image: str, writer: Writer, watchers: list[Any]) -> None:
    """A creates, updates and deletes; every watcher sees each within a second, with A's name."""
    loop = asyncio.get_running_loop()
    r = await loop.run_in_executor(None, lambda: writer("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature()))
    started = time.monotonic()
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    for ws in watchers:
        event = await next_event(ws, started)
        assert (event["action"], event["id"], event["version"], event["user"]) == ("created", aid, 1, "ann")
        ring = np.asarray(event["feature"]["geometry"]["coordinates"][0])
        assert np.allclose(np.sort(ring[:-1], axis=0), np.sort(np.asarray(RING[:-1]), axis=0), atol=1e-6)
        assert event["feature"]["properties"]["author"] == "ann"
    moved = [[x + 5.0, y] for x, y in RING]
    r = await loop.run_in_executor(None, lambda: writer("PUT", f"/api/v1/annotations/{aid}?crs=pixel", feature(moved)))
    started = time.monotonic()
    assert r.status_code == 200, r.text
    for ws in watchers:
        event = await next_event(ws, started)
        assert (event["action"], event["id"], event["version"], event["user"]) == ("updated", aid, 2, "ann")
        xs = np.asarray(event["feature"]["geometry"]["coordinates"][0])[:, 0]
        assert np.isclose(xs.min(), 15.5) and np.isclose(xs.max(), 125.0)
    r = await loop.run_in_executor(None, lambda: writer("DELETE", f"/api/v1/annotations/{aid}"))
    started = time.monotonic()
    assert r.status_code == 204, r.text
    for ws in watchers:
        event = await next_event(ws, started)
        assert (event["action"], event["id"], event["feature"], event["user"]) == ("deleted", aid, None, "ann")


def add_users(db_url: str) -> dict[str, str]:
    store = open_store(db_url)
    tokens = {name: store.add_user(name, Role.annotator)[1] for name in ("ann", "bob")}
    store.close()
    return tokens


@pytest.fixture(params=["sqlite", "postgis"])
def live_server(request: pytest.FixtureRequest, geo_dir: Path, serve_dirs, tmp_path: Path) -> tuple[str, str, dict[str, str]]:
    if request.param == "sqlite":
        srv = serve_dirs(geo_dir)
        db_url = f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}"
    else:
        db_url = request.getfixturevalue("pg_database")
        pg.truncate(db_url)
        srv = request.getfixturevalue("pg_server")(geo_dir, db_url)
    return srv.url, srv.image_id("cog.tif"), add_users(db_url)


def test_b_sees_a_create_update_delete_within_a_second(live_server) -> None:
    base, image, tokens = live_server

    async def run() -> None:
        by_header = await connect(base, image, tokens["bob"])
        by_query = await connect(base, image, tokens["bob"], how="query")
        for ws in (by_header, by_query):
            hello = await receive(ws, 5)
            assert hello["type"] == "hello" and hello["user"] == "bob"
        await create_update_delete(base, image, Writer(base, tokens["ann"]), [by_header, by_query])
        by_header.close()
        by_query.close()

    asyncio.run(run())


def test_refused_without_valid_credentials(live_server) -> None:
    base, image, tokens = live_server

    async def status_of(token: str | None, image_id: str = image, how: str = "header") -> int:
        try:
            ws = await connect(base, image_id, token, how)
        except tornado.httpclient.HTTPClientError as exc:
            return exc.code
        ws.close()
        return 101

    async def run() -> None:
        assert await status_of(None) == 401
        assert await status_of("not-a-token") == 401
        assert await status_of("not-a-token", how="query") == 401
        assert await status_of(tokens["bob"], "no-such-image") == 404
        assert await status_of(tokens["bob"]) == 101

    asyncio.run(run())
    # a cross-site page cannot use the session cookie: tornado refuses another Origin
    r = requests.get(
        f"{base}/api/v1/images/{image}/live",
        headers={
            "Authorization": f"Bearer {tokens['bob']}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "Origin": "http://evil.example",
        },
        timeout=10,
    )
    assert r.status_code == 403


# -- two worker processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_workers(data: Path, root: Path, workers: int) -> Iterator[str]:
    """``tessera serve --workers N`` on a fixed free port; stopped (every worker) on exit."""
    env = {**os.environ, "TESSERA_ADMIN_TOKEN": "live-admin-token", "TESSERA_STATE_DIR": str(root / "state")}
    log = root / "server.log"
    port = free_port()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*tessera_command(), "serve", "--data", str(data), "--port", str(port), "--workers", str(workers)],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=root,
            start_new_session=True,  # the workers are its children: stop the whole group
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"tessera serve did not start:\n{log.read_text()}", pytrace=False)
            if LISTENING.search(line):
                break
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):  # every worker is listening once /healthz answers a few times
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(base + "/healthz", timeout=5).status_code == 200:
                    break
            time.sleep(0.1)
        yield base
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_two_workers_deliver_across_processes(geo_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "workers"
    (root / "state").mkdir(parents=True)
    with serve_workers(geo_dir, root, 2) as base:
        tokens = add_users(f"sqlite:///{root / 'state' / 'tessera.db'}")
        images = requests.get(base + "/api/v1/images", headers={"Authorization": "Bearer live-admin-token"}, timeout=30)
        image = next(i["id"] for i in images.json()["images"] if i["name"].endswith("cog.tif"))

        async def run() -> None:
            # Open sockets until both workers hold some: then a write, whichever worker
            # takes it, must reach a socket held by the other process.
            sockets, processes = [], set()
            for _ in range(40):
                ws = await connect(base, image, tokens["bob"])
                hello = await receive(ws, 5)
                sockets.append(ws)
                processes.add(hello["process"])
                if len(processes) == 2 and len(sockets) >= 4:
                    break
            assert len(processes) == 2, "every socket landed on one worker"
            await create_update_delete(base, image, Writer(base, tokens["ann"]), sockets)
            for ws in sockets:
                ws.close()

        asyncio.run(run())


def test_a_bulk_import_sends_one_reload(live_server) -> None:
    """More changes in one poll than the feed sends one by one: a single reload message."""
    base, image, tokens = live_server
    writer = Writer(base, tokens["ann"])

    async def run() -> None:
        ws = await connect(base, image, tokens["bob"])
        hello = await receive(ws, 5)
        loop = asyncio.get_running_loop()
        many = {"type": "FeatureCollection", "features": [feature() for _ in range(250)]}
        r = await loop.run_in_executor(None, lambda: writer("POST", f"/api/v1/images/{image}/annotations/bulk?crs=pixel", many))
        assert r.status_code == 201, r.text
        message = await receive(ws, WITHIN_SECONDS)
        assert message["type"] == "reload" and message["cursor"] >= hello["cursor"] + 250
        ws.close()

    asyncio.run(run())
