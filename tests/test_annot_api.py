"""The annotation HTTP API end to end: CRS round trips, ETags, validation, bulk, history, undo,
projects, snapshots, and the permission matrix of every role and route."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tornado.httpserver
import tornado.netutil

from annot.storage import open_store
from annot.users import Role
from tests import pg
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.pg import pg_database  # noqa: F401  (a fixture)
from tileserver.catalog import scan
from tileserver.server import build_context, prepare_admin
from tileserver.web.app import make_app

RING = [[100.25, 100.5], [300.75, 110.0], [280.0, 250.125], [120.0, 240.0], [100.25, 100.5]]


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token

    def __call__(self, method: str, path: str, body: Any = None, **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = kw.pop("data", None)
        if body is not None:
            data = json.dumps(body)
        return requests.request(
            method, self.url + path, data=data, headers=headers, timeout=60, **kw
        )


@pytest.fixture
def pg_server(monkeypatch: pytest.MonkeyPatch):
    """Like ``serve_dirs``, on a PostGIS database."""
    started = []
    monkeypatch.setenv("TESSERA_ADMIN_TOKEN", ADMIN_TOKEN)

    def start(folder: Path, db_url: str) -> LiveServer:
        catalog = scan([folder])
        prepare_admin(db_url, demo_token=False)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        port = sockets[0].getsockname()[1]
        ready = threading.Event()
        holder: dict[str, Any] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            ctx = build_context(catalog, db_url, 0)
            server = tornado.httpserver.HTTPServer(make_app(ctx, "test-secret"))
            server.add_sockets(sockets)
            holder.update(loop=loop, server=server, ctx=ctx)
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        ready.wait(10)
        started.append((holder, thread))
        return LiveServer(f"http://127.0.0.1:{port}", ADMIN_TOKEN, catalog)

    yield start
    for holder, thread in started:
        holder["loop"].call_soon_threadsafe(holder["server"].stop)
        holder["loop"].call_soon_threadsafe(holder["loop"].stop)
        thread.join(5)
        holder["ctx"].store.close()


@pytest.fixture(params=["sqlite", "postgis"])
def api(request: pytest.FixtureRequest, geo_dir: Path, serve_dirs, tmp_path: Path):
    """A live server on each store, with users admin, rev, ann and ann2."""
    if request.param == "sqlite":
        srv = serve_dirs(geo_dir)
        db_url = f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}"
    else:
        db_url = request.getfixturevalue("pg_database")
        pg.truncate(db_url)
        srv = request.getfixturevalue("pg_server")(geo_dir, db_url)
    store = open_store(db_url)
    clients = {"admin": Client(srv.url, srv.token), "anon": Client(srv.url, None)}
    for name, role in [("rev", Role.reviewer), ("ann", Role.annotator), ("ann2", Role.annotator)]:
        _, token = store.add_user(name, role)
        clients[name] = Client(srv.url, token)
    store.close()
    return srv, clients


def feature(ring=RING, label="building", **props) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"label": label, **props},
    }


def same_ring(a, b, tol) -> bool:
    a, b = np.asarray(a, dtype=float)[:-1], np.asarray(b, dtype=float)[:-1]
    for cand in (b, b[::-1]):
        for s in range(len(a)):
            if len(cand) == len(a) and np.allclose(np.roll(cand, s, axis=0), a, atol=tol, rtol=0):
                return True
    return False


def test_create_read_in_every_crs_and_query(api) -> None:
    srv, c = api
    image = srv.image_id("RGB.byte.tif")
    r = c["ann"]("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature())
    assert r.status_code == 201, r.text
    created = r.json()
    aid = created["id"]
    assert created["properties"]["version"] == 1 and r.headers["ETag"] == '"1"'
    assert r.headers["Location"] == f"/api/v1/annotations/{aid}"
    assert same_ring(created["geometry"]["coordinates"][0], RING, 1e-6)
    px = c["ann"]("GET", f"/api/v1/annotations/{aid}?crs=pixel").json()
    assert same_ring(px["geometry"]["coordinates"][0], RING, 1e-6)
    world = c["ann"]("GET", f"/api/v1/annotations/{aid}").json()  # crs defaults to world
    lon, lat = np.asarray(world["geometry"]["coordinates"][0]).mean(axis=0)
    assert -79 < lon < -76.5 and 23.5 < lat < 25.6
    utm = c["ann"]("GET", f"/api/v1/annotations/{aid}?crs=EPSG:32618").json()
    assert 100_000 < utm["geometry"]["coordinates"][0][0][0] < 400_000
    # written in WGS84, read back in WGS84 to 1e-9 degree
    r2 = c["ann"]("POST", f"/api/v1/images/{image}/annotations", world)
    assert r2.status_code == 201
    assert same_ring(
        r2.json()["geometry"]["coordinates"][0], world["geometry"]["coordinates"][0], 1e-9
    )
    # queries: a pixel bbox, a WGS84 bbox, pagination
    hits = c["ann"]("GET", f"/api/v1/images/{image}/annotations?crs=pixel&bbox=0,0,150,150").json()
    assert {f["id"] for f in hits["features"]} == {aid, r2.json()["id"]}
    none = c["ann"]("GET", f"/api/v1/images/{image}/annotations?crs=pixel&bbox=500,500,600,600")
    assert none.json()["features"] == []
    bbox = f"{lon - 0.01},{lat - 0.01},{lon + 0.01},{lat + 0.01}"
    assert len(c["ann"]("GET", f"/api/v1/images/{image}/annotations?bbox={bbox}").json()["features"]) == 2
    page1 = c["ann"]("GET", f"/api/v1/images/{image}/annotations?limit=1").json()
    assert len(page1["features"]) == 1 and page1["next_cursor"] == str(aid)
    page2 = c["ann"]("GET", f"/api/v1/images/{image}/annotations?limit=1&cursor={aid}").json()
    assert [f["id"] for f in page2["features"]] == [r2.json()["id"]]
    assert c["ann"]("GET", f"/api/v1/images/{image}/annotations?bbox=1,2,3").status_code == 400
    assert c["ann"]("GET", f"/api/v1/images/{image}/annotations?crs=EPSG:x").status_code == 400
    assert c["ann"]("GET", f"/api/v1/images/{image}/annotations?slice=3").status_code == 400
    assert c["ann"]("GET", "/api/v1/images/nope/annotations").status_code == 404


def test_if_match_and_concurrent_editors(api) -> None:
    srv, c = api
    image = srv.image_id("cog.tif")
    aid = c["ann"]("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature()).json()["id"]
    path = f"/api/v1/annotations/{aid}?crs=pixel"
    got = c["ann"]("GET", path)
    assert got.headers["ETag"] == '"1"'
    assert c["ann"]("GET", path, headers={"If-None-Match": '"1"'}).status_code == 304
    moved = feature([[x + 5, y + 5] for x, y in RING])
    r = c["ann"]("PUT", path, moved, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'
    assert r.json()["properties"]["version"] == 2
    stale = c["ann"]("PUT", path, feature(), headers={"If-Match": "1"})
    assert stale.status_code == 412 and stale.json()["error"] == "precondition_failed"
    # two reviewers edit version 2 at once: exactly one wins
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def edit(who: str, dx: float) -> None:
        body = feature([[x + dx, y] for x, y in RING])
        barrier.wait()
        statuses.append(c[who]("PUT", path, body, headers={"If-Match": '"2"'}).status_code)

    threads = [threading.Thread(target=edit, args=(w, d)) for w, d in (("rev", 1), ("admin", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 412]
    assert c["ann"]("GET", path).json()["properties"]["version"] == 3
    assert c["rev"]("DELETE", path, headers={"If-Match": '"2"'}).status_code == 412
    assert c["rev"]("DELETE", path, headers={"If-Match": '"3"'}).status_code == 204
    assert c["rev"]("GET", path).status_code == 404


def test_invalid_shapes_labels_and_sizes_store_nothing(api) -> None:
    srv, c = api
    image = srv.image_id("RGB.byte.tif")
    base = f"/api/v1/images/{image}/annotations"
    bowtie = feature([[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]])
    r = c["ann"]("POST", base + "?crs=pixel", bowtie)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_geometry" and "Self-intersection" in body["reason"]
    assert body["repair"]["type"] == "MultiPolygon"
    # the repair is offered in the request's crs and is accepted as it is
    r = c["ann"]("POST", base + "?crs=pixel", {**bowtie, "geometry": body["repair"]})
    assert r.status_code == 201, r.text
    world_bowtie = c["ann"]("POST", base, feature([[-78, 24], [-77, 25], [-77, 24], [-78, 25], [-78, 24]]))
    assert world_bowtie.status_code == 422 and world_bowtie.json()["repair"]["type"] == "MultiPolygon"
    outside = c["ann"]("POST", base + "?crs=pixel", feature([[0, 0], [5000, 0], [0, 10], [0, 0]]))
    assert outside.status_code == 422 and "outside the image" in outside.json()["message"]
    assert outside.json()["repair"] is not None
    few = c["ann"]("POST", base + "?crs=pixel", feature([[0, 0], [1, 1], [0, 0]]))
    assert few.status_code == 422
    nan = c["ann"]("POST", base + "?crs=pixel", data='{"type": "Feature", "geometry": {"type": "Point", "coordinates": [NaN, 1]}, "properties": {"label": "x"}}')
    assert nan.status_code == 422
    assert c["ann"]("POST", base, {"type": "Feature", "geometry": None, "properties": {}}).status_code == 400
    assert c["ann"]("POST", base, data="{not json").status_code == 400
    huge = feature(attributes={"pad": "x" * 17_000_000})
    r = c["ann"]("POST", base + "?crs=pixel", huge)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert len(c["ann"]("GET", base).json()["features"]) == 1
    # lock the taxonomy: unknown labels answer 422
    assert c["admin"]("PATCH", "/api/v1/projects/default", {"locked": True}).status_code == 200
    r = c["ann"]("POST", base + "?crs=pixel", feature(label="spaceship"))
    assert r.status_code == 422 and r.json()["error"] == "unknown_label"
    assert c["ann"]("POST", base + "?crs=pixel", feature(label="building")).status_code == 201


def test_bulk_is_all_or_nothing(api) -> None:
    srv, c = api
    image = srv.image_id("cog.tif")
    path = f"/api/v1/images/{image}/annotations/bulk?crs=pixel"
    good = [feature([[x + i, y] for x, y in RING]) for i in range(50)]
    bad = [*good, feature([[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]])]
    r = c["ann"]("POST", path, {"type": "FeatureCollection", "features": bad})
    assert r.status_code == 422 and r.json()["index"] == 50
    assert c["ann"]("GET", f"/api/v1/images/{image}/annotations").json()["features"] == []
    r = c["ann"]("POST", path, {"type": "FeatureCollection", "features": good})
    assert r.status_code == 201 and r.json()["created"] == 50
    assert len(c["ann"]("GET", f"/api/v1/images/{image}/annotations").json()["features"]) == 50


def test_history_and_undo(api) -> None:
    srv, c = api
    image = srv.image_id("cog.tif")
    aid = c["ann"]("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature()).json()["id"]
    path = f"/api/v1/annotations/{aid}"
    c["rev"]("PUT", path + "?crs=pixel", feature(label="house"), headers={"If-Match": "1"})
    history = c["ann"]("GET", path + "/history?crs=pixel").json()["changes"]
    assert [(h["action"], h["user"]) for h in history] == [("create", "ann"), ("update", "rev")]
    assert history[1]["before"]["properties"]["label"] == "building"
    assert same_ring(history[1]["before"]["geometry"]["coordinates"][0], RING, 1e-6)
    # an annotator may not undo someone else's change; a reviewer may
    assert c["ann"]("POST", f"{path}/history/{history[1]['id']}/undo").status_code == 403
    r = c["rev"]("POST", f"{path}/history/{history[1]['id']}/undo?crs=pixel")
    assert r.status_code == 200 and r.json()["properties"]["label"] == "building"
    assert r.json()["properties"]["version"] == 3
    assert c["rev"]("POST", f"{path}/history/{history[0]['id']}/undo").status_code == 409
    c["ann"]("DELETE", path)
    last = c["ann"]("GET", path + "/history").json()["changes"][-1]
    assert last["action"] == "delete"
    assert c["ann"]("POST", f"{path}/history/{last['id']}/undo").status_code == 200
    assert c["ann"]("GET", path).status_code == 200
    assert c["ann"]("POST", f"/api/v1/annotations/999/history/{last['id']}/undo").status_code == 404


def test_projects_taxonomy_snapshots(api) -> None:
    srv, c = api
    image = srv.image_id("cog.tif")
    r = c["admin"](
        "POST",
        "/api/v1/projects",
        {
            "name": "roads",
            "instructions": "# Roads\nTrace centre lines.",
            "labels": [
                {"name": "road/paved", "color": "#ff0000", "kinds": ["polyline"], "code": {"scheme": "SCT", "value": "123", "meaning": "Road"}}
            ],
            "locked": True,
        },
    )
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["locked"] and {lab["name"] for lab in p["labels"]} == {"road", "road/paved"}
    paved = next(lab for lab in p["labels"] if lab["name"] == "road/paved")
    assert paved["parent"] == "road" and paved["kinds"] == ["polyline"] and paved["code"]["value"] == "123"
    assert c["admin"]("POST", "/api/v1/projects", {"name": "roads"}).status_code == 409
    assert c["ann"]("GET", "/api/v1/projects/roads").status_code == 403
    assert [x["name"] for x in c["ann"]("GET", "/api/v1/projects").json()["projects"]] == ["default"]
    assert c["admin"]("PUT", "/api/v1/projects/roads/members/ann", {"role": "annotator"}).status_code == 200
    assert c["ann"]("GET", "/api/v1/projects/roads").json()["role"] == "annotator"
    names = [x["name"] for x in c["ann"]("GET", "/api/v1/projects").json()["projects"]]
    assert names == ["default", "roads"]
    members = c["admin"]("GET", "/api/v1/projects/roads/members").json()["members"]
    assert members == [{"user": "ann", "role": "annotator"}]
    assert c["admin"]("PUT", "/api/v1/projects/roads/labels/road/dirt", {"color": "#00ff00"}).status_code == 200
    labels = c["ann"]("GET", "/api/v1/projects/roads/labels").json()["labels"]
    assert {lab["name"] for lab in labels} == {"road", "road/paved", "road/dirt"}
    assert c["admin"]("DELETE", "/api/v1/projects/roads/labels/road/dirt").status_code == 204
    assert c["admin"]("PUT", "/api/v1/projects/roads/labels/x", {"color": "red"}).status_code == 400
    # snapshots of the default project
    base = f"/api/v1/images/{image}/annotations?crs=pixel"
    aid = c["ann"]("POST", base, feature()).json()["id"]
    snap = c["rev"]("POST", "/api/v1/projects/default/snapshots", {"name": "v1", "description": "first"})
    assert snap.status_code == 201 and snap.json()["count"] == 1
    c["ann"]("PUT", f"/api/v1/annotations/{aid}?crs=pixel", feature(label="house"))
    assert c["rev"]("POST", "/api/v1/projects/default/snapshots", {"name": "v1"}).status_code == 409
    frozen = c["ann"]("GET", "/api/v1/projects/default/snapshots/v1?crs=pixel").json()
    assert [f["properties"]["label"] for f in frozen["features"]] == ["building"]
    assert same_ring(frozen["features"][0]["geometry"]["coordinates"][0], RING, 1e-6)
    listed = c["ann"]("GET", "/api/v1/projects/default/snapshots").json()["snapshots"]
    assert [s["name"] for s in listed] == ["v1"]
    assert c["ann"]("GET", "/api/v1/projects/default/snapshots/v9").status_code == 404


def test_permission_matrix(api) -> None:
    """Every role against every route: the expected status, or a list of what differed."""
    srv, c = api
    image = srv.image_id("cog.tif")
    c["admin"]("POST", "/api/v1/projects", {"name": "secret"})
    own: dict[str, int] = {}

    def fresh(author: str = "ann") -> int:
        r = c[author]("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature())
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def last_change(aid: int) -> int:
        return int(c["admin"]("GET", f"/api/v1/annotations/{aid}/history").json()["changes"][-1]["id"])

    A, R, N, N2 = "admin", "rev", "ann", "ann2"
    every = {A, R, N, N2}
    cases: list[tuple[str, Any, set[str], int]] = [
        # (name, request maker(role) -> response, roles allowed, success status)
        ("list annotations", lambda who: c[who]("GET", f"/api/v1/images/{image}/annotations"), every, 200),
        ("create", lambda who: c[who]("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature()), every, 201),
        ("create accepted", lambda who: c[who]("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature(status="accepted")), {A, R}, 201),
        ("bulk", lambda who: c[who]("POST", f"/api/v1/images/{image}/annotations/bulk?crs=pixel", {"type": "FeatureCollection", "features": [feature()]}), every, 201),
        ("get", lambda who: c[who]("GET", f"/api/v1/annotations/{own.setdefault('g', fresh())}"), every, 200),
        ("put ann's", lambda who: c[who]("PUT", f"/api/v1/annotations/{fresh()}?crs=pixel", feature()), {A, R, N}, 200),
        ("annotator accepts", lambda who: c[who]("PUT", f"/api/v1/annotations/{fresh()}?crs=pixel", feature(status="accepted")), {A, R}, 200),
        ("delete ann's", lambda who: c[who]("DELETE", f"/api/v1/annotations/{fresh()}"), {A, R, N}, 204),
        ("history", lambda who: c[who]("GET", f"/api/v1/annotations/{own.setdefault('h', fresh())}/history"), every, 200),
        ("undo ann's change", lambda who: c[who]("POST", f"/api/v1/annotations/{(a := fresh())}/history/{last_change(a)}/undo"), {A, R, N}, 204),
        ("list projects", lambda who: c[who]("GET", "/api/v1/projects"), every, 200),
        ("create project", lambda who: c[who]("POST", "/api/v1/projects", {"name": f"p-{who}"}), {A}, 201),
        ("get default", lambda who: c[who]("GET", "/api/v1/projects/default"), every, 200),
        ("get secret", lambda who: c[who]("GET", "/api/v1/projects/secret"), {A}, 200),
        ("patch default", lambda who: c[who]("PATCH", "/api/v1/projects/default", {"instructions": "x"}), {A}, 200),
        ("labels", lambda who: c[who]("GET", "/api/v1/projects/default/labels"), every, 200),
        ("add label", lambda who: c[who]("POST", "/api/v1/projects/default/labels", {"name": f"l-{who}"}), {A}, 201),
        ("put label", lambda who: c[who]("PUT", "/api/v1/projects/default/labels/tree", {"color": "#00aa00"}), {A}, 200),
        ("delete label", lambda who: c[who]("DELETE", f"/api/v1/projects/default/labels/{_label(c, who)}"), {A}, 204),
        ("members", lambda who: c[who]("GET", "/api/v1/projects/default/members"), {A, R}, 200),
        ("set member", lambda who: c[who]("PUT", "/api/v1/projects/secret/members/ann2", {"role": "reviewer"}), {A}, 200),
        ("remove member", lambda who: c[who]("DELETE", "/api/v1/projects/secret/members/ann2"), {A}, 204),
        ("snapshots", lambda who: c[who]("GET", "/api/v1/projects/default/snapshots"), every, 200),
        ("take snapshot", lambda who: c[who]("POST", "/api/v1/projects/default/snapshots", {"name": f"s-{who}"}), {A, R}, 201),
        ("secret snapshots", lambda who: c[who]("GET", "/api/v1/projects/secret/snapshots"), {A}, 200),
        ("read snapshot", lambda who: c[who]("GET", "/api/v1/projects/default/snapshots/s-admin"), every, 200),
        ("read secret snapshot", lambda who: c[who]("GET", "/api/v1/projects/secret/snapshots/x"), {A}, 404),
    ]
    wrong = []
    for name, make, allowed, ok in cases:
        for who in (A, R, N, N2):
            status = make(who).status_code
            expected = ok if who in allowed else 403
            if status != expected:
                wrong.append(f"{name} as {who}: {status}, expected {expected}")
        anon = make("anon").status_code if name not in ("put ann's", "delete ann's", "undo ann's change", "annotator accepts") else 401
        if anon != 401:
            wrong.append(f"{name} without a token: {anon}")
    assert wrong == []


def _label(c, who: str) -> str:
    name = f"del-{who}"
    c["admin"]("POST", "/api/v1/projects/default/labels", {"name": name})
    return name


def test_listing_filters(api) -> None:
    """label (with its sub-labels), status, author and kind narrow every listing; pages stay
    full; a bad value is a 400 naming the allowed ones."""
    srv, c = api
    image = srv.image_id("RGB.byte.tif")
    base = f"/api/v1/images/{image}/annotations"
    made: dict[int, tuple[str, str, str]] = {}
    for i, label in enumerate(["vehicle", "vehicle/car", "vehicles", "tree", "vehicle/car/suv"]):
        for user in ("ann", "ann2"):
            ring = [[x + 20 * i, y] for x, y in RING]
            status = "submitted" if i % 2 else "draft"
            r = c[user]("POST", base + "?crs=pixel", feature(ring, label, status=status))
            assert r.status_code == 201, r.text
            made[r.json()["id"]] = (label, user, r.json()["properties"]["status"])

    def ids(query: str) -> list[int]:
        r = c["rev"]("GET", f"{base}?{query}")
        assert r.status_code == 200, r.text
        return [f["id"] for f in r.json()["features"]]

    vehicles = [a for a, (lab, _, _) in made.items() if lab.split("/")[0] == "vehicle"]
    assert len(vehicles) == 6
    assert ids("label=vehicle") == vehicles
    assert ids("label=vehicle&crs=pixel&bbox=0,0,800,600") == vehicles
    cars_of_ann2 = [a for a, (lab, u, _) in made.items() if "car" in lab and u == "ann2"]
    assert ids("label=vehicle/car&author=ann2") == cars_of_ann2
    submitted = [a for a, (_, _, st) in made.items() if st == "submitted"]
    assert len(submitted) == 4 and ids("status=submitted") == submitted
    both = [a for a, (lab, _, _) in made.items() if lab in ("tree", "vehicles")]
    assert ids("label=tree&label=vehicles") == both
    assert ids("status=draft,accepted&label=vehicles") == [
        a for a, (lab, _, st) in made.items() if lab == "vehicles" and st == "draft"
    ]
    assert ids("kind=point") == [] and len(ids("kind=polygon")) == 10
    page = c["rev"]("GET", f"{base}?label=vehicle&limit=4").json()
    assert [f["id"] for f in page["features"]] == vehicles[:4]
    rest = ids(f"label=vehicle&limit=4&cursor={page['next_cursor']}")
    assert rest == vehicles[4:]
    bad = c["rev"]("GET", f"{base}?status=done")
    assert bad.status_code == 400 and "submitted" in bad.json()["message"]
    assert c["rev"]("GET", f"{base}?kind=circle").status_code == 400


def test_hostile_input_is_a_4xx_on_both_stores(api) -> None:
    """Inputs found by probing every route with garbage: each was a 500 before (recursion in
    the JSON parser, ids past 64 bits, NUL that PostgreSQL's text cannot hold)."""
    srv, c = api
    image = srv.image_id("RGB.byte.tif")
    base = f"/api/v1/images/{image}/annotations?crs=pixel"
    nested = b'{"type": "Feature", "properties": {"label": "a", "attributes": {"x": '
    nested += b"[" * 5000 + b"]" * 5000 + b"}}}"
    for path in (base, f"/api/v1/images/{image}/annotations/bulk?crs=pixel"):
        r = c["ann"]("POST", path, data=nested)
        assert r.status_code == 400 and "nests too deeply" in r.json()["message"], r.text
    r = c["ann"]("POST", f"/api/v1/images/{image}/import?format=geojson", data=nested)
    assert r.status_code == 400, r.text

    def deep(levels: int) -> dict:
        value: Any = "leaf"
        for _ in range(levels - 1):
            value = {"k": value}
        return feature(attributes={"k": value})

    assert c["ann"]("POST", base, deep(32)).status_code == 201
    r = c["ann"]("POST", base, deep(33))
    assert r.status_code == 400 and "deeper than 32" in r.json()["message"]
    huge = "99999999999999999999999"
    for method, path in [
        ("GET", f"/api/v1/annotations/{huge}"),
        ("PUT", f"/api/v1/annotations/{huge}"),
        ("DELETE", f"/api/v1/annotations/{huge}"),
        ("GET", f"/api/v1/annotations/{huge}/history"),
        ("POST", f"/api/v1/annotations/1/history/{huge}/undo"),
        ("POST", f"/api/v1/annotations/{huge}/review"),
    ]:
        r = c["admin"](method, path, {"decision": "accept"} if "review" in path else feature())
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    for path in ("/api/v1/projects/default/snapshots/%00", "/api/v1/projects/a%01b"):
        r = c["admin"]("GET", path)
        assert r.status_code == 400 and "control characters" in r.json()["message"]
    nul = c["admin"]("PATCH", "/api/v1/projects/default", {"instructions": "a\u0000b"})
    assert nul.status_code == 400 and "NUL" in nul.json()["message"]
    r = c["admin"]("POST", "/api/v1/projects/default/snapshots", {"name": "s", "description": "\x00"})
    assert r.status_code == 400
    # nothing was half-stored: the project's instructions and snapshots are as before
    assert c["admin"]("GET", "/api/v1/projects/default").json()["instructions"] == ""
    assert c["admin"]("GET", "/api/v1/projects/default/snapshots").json()["snapshots"] == []


def test_volume_annotations_in_patient_coordinates(shared_data: Path, serve_dirs) -> None:
    """A polygon drawn on an axial slice of a real CT series: stored in LPS mm as a planar 3D
    polygon with its frame of reference and SOP instance, read back exactly, and listed on a
    coronal slice as the segment where the two planes meet."""
    srv = serve_dirs(shared_data / "dicom" / "ct_dcmqi_23x38x3")
    c = Client(srv.url, srv.token)
    (image,) = list(srv.catalog.images)
    extra = srv.catalog.images[image].info.extra
    base = f"/api/v1/images/{image}/annotations"
    ring = [[2.25, 5.5], [20.0, 5.0], [20.5, 30.0], [2.0, 30.25], [2.25, 5.5]]
    r = c("POST", base + "?crs=pixel", feature(ring, label="liver", slice=1))
    assert r.status_code == 201, r.text
    made = r.json()
    props = made["properties"]
    assert props["slice"] == 1 and props["plane"] == "axial"
    assert props["frame_of_reference_uid"] == extra["frame_of_reference_uid"]
    assert props["sop_instance_uid"] == extra["sop_instance_uids"][1]
    assert same_ring(made["geometry"]["coordinates"][0], ring, 1e-6)
    world = c("GET", f"/api/v1/annotations/{made['id']}").json()
    xyz = np.asarray(world["geometry"]["coordinates"][0])
    assert xyz.shape[1] == 3
    z = extra["slice_positions"][1][2]
    assert np.allclose(xyz[:, 2], z, atol=1e-6)
    # the same polygon written in LPS lands on slice 1 again
    again = c("POST", base, world)
    assert again.status_code == 201 and again.json()["properties"]["slice"] == 1
    assert same_ring(again.json()["geometry"]["coordinates"][0], xyz.tolist(), 1e-6)
    # listing: by slice (whole), on a coronal slice (the cut), by a 6-number world bbox
    on_slice = c("GET", base + "?crs=pixel&slice=1").json()["features"]
    assert [f["geometry"]["type"] for f in on_slice] == ["Polygon", "Polygon"]
    assert c("GET", base + "?crs=pixel&slice=0").json()["features"] == []
    assert len(c("GET", base + "?crs=pixel&slice=1&label=liver").json()["features"]) == 2
    assert c("GET", base + "?crs=pixel&slice=1&label=live").json()["features"] == []
    cut = c("GET", base + "?crs=world&slice=20&plane=coronal").json()["features"]
    assert len(cut) == 2 and all(f["properties"]["intersection"] for f in cut)
    seg = np.asarray(cut[0]["geometry"]["coordinates"][0])
    assert seg.shape == (2, 3) and np.allclose(seg[:, 2], z, atol=1e-6)
    px = c("GET", base + "?crs=pixel&slice=20&plane=coronal").json()["features"]
    assert px[0]["geometry"]["type"] == "MultiLineString"
    assert c("GET", base + "?crs=pixel&slice=36&plane=coronal").json()["features"] == []
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    box = ",".join(str(v) for v in [*(lo - 1), *(hi + 1)])
    assert len(c("GET", base + f"?bbox={box}").json()["features"]) == 2
    far = ",".join(str(v) for v in [*(hi + 10), *(hi + 20)])
    assert c("GET", base + f"?bbox={far}").json()["features"] == []
    # errors
    assert c("POST", base + "?crs=pixel", feature(ring)).status_code == 400  # no slice
    assert c("POST", base + "?crs=pixel", feature(ring, slice=3)).status_code == 422
    assert c("GET", base + "?bbox=1,2,3,4").status_code == 400  # 6 numbers for volumes
    assert c("GET", base + "?crs=EPSG:4326").status_code == 400


def test_openapi_paths_cover_every_annotation_route() -> None:
    import re

    from tileserver.web.annotations import openapi_paths
    from tileserver.web.app import annotation_routes
    from tileserver.web.openapi import openapi_document

    samples = {"id": "img", "aid": "12", "cid": "3", "project": "default", "label": "a/b"}
    samples.update(user="ann", snapshot="v1")

    def concrete(paths) -> list[str]:  # type: ignore[no-untyped-def]
        return [re.sub(r"\{(\w+)\}", lambda m: samples.get(m.group(1), "0"), p) for p in paths]

    patterns = [spec.regex for spec in annotation_routes({"ctx": None})]
    for path in concrete(openapi_paths()):
        assert sum(bool(p.fullmatch(path)) for p in patterns) >= 1, path
    documented = concrete(openapi_document()["paths"])  # review, checks, agreement: their own
    for p in patterns:
        assert any(p.fullmatch(path) for path in documented), p.pattern


def test_listing_kept_texts_equal_computed_features(api, tmp_path: Path) -> None:
    """Listings use the geometry text kept at write time (world, pixel); it has the very
    coordinates of a single read (computed), also after an update, and EPSG:n (computed)."""
    srv, c = api
    image = srv.image_id("RGB.byte.tif")
    base = f"/api/v1/images/{image}/annotations"
    ring = [[100.1, 100.3], [300.7, 110.9], [280.2, 250.1], [120.3, 240.7], [100.1, 100.3]]
    aid = c["ann"]("POST", f"{base}?crs=pixel", feature(ring)).json()["id"]
    db = tmp_path / "state0" / "tessera.db"
    if db.exists():  # the SQLite store: the server keeps the texts
        import sqlite3

        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT gkey, gpixel FROM annotations WHERE id = ?", (aid,)).fetchone()
        assert row[0] is not None and row[1].startswith(b'{"type":"Polygon"')

    def check() -> None:
        for crs in ("world", "pixel", "EPSG:3857"):
            one = c["ann"]("GET", f"/api/v1/annotations/{aid}?crs={crs}").json()["geometry"]
            xy = np.asarray(one["coordinates"][0])
            lo, hi = xy.min(axis=0), xy.max(axis=0)
            bbox = ",".join(map(str, [*lo, *hi]))
            r = c["ann"]("GET", f"{base}?crs={crs}&bbox={bbox}")
            assert r.status_code == 200, r.text
            (listed,) = [f for f in r.json()["features"] if f["id"] == aid]
            assert listed["geometry"] == one, crs

    check()
    moved = [[x + 3.3, y - 1.1] for x, y in ring]
    r = c["ann"]("PUT", f"/api/v1/annotations/{aid}?crs=pixel", feature(moved))
    assert r.status_code == 200, r.text
    check()
    pixel = c["ann"]("GET", f"{base}?crs=pixel&bbox=0,0,400,400").json()["features"]
    (mine,) = [f for f in pixel if f["id"] == aid]
    assert same_ring(mine["geometry"]["coordinates"][0], moved, 1e-6)


def test_oversized_body_is_a_json_413(api) -> None:
    """A Content-Length over the server's limit is answered with a JSON 413 before the body
    is read (also past tornado's own limit, which would answer a bare 400)."""
    import socket
    from urllib.parse import urlsplit

    from tileserver.web.handlers import MAX_BODY_BYTES

    srv, c = api
    image = srv.image_id("RGB.byte.tif")
    url = urlsplit(srv.url)

    def send(length: int, token: str | None) -> tuple[int, dict[str, Any]]:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = (
            f"POST /api/v1/images/{image}/annotations/bulk HTTP/1.1\r\nHost: x\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
        with socket.create_connection((url.hostname, url.port), timeout=30) as s:
            s.sendall(head.encode() + b'{"type": "FeatureCollection", "features": [')
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        body = rest.partition(b"\r\n\r\n")[2]
        return int(status_line.split()[1]), json.loads(body)

    for length in (MAX_BODY_BYTES + 1, 200 * 1024 * 1024):
        status, body = send(length, c["ann"].token)
        assert status == 413 and body["error"] == "too_large", body
        assert str(MAX_BODY_BYTES) in body["message"]
    status, body = send(MAX_BODY_BYTES + 1, None)
    assert status == 401 and body["error"] == "unauthorized"
    # bodies within the limit still arrive whole
    ok = c["ann"]("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature())
    assert ok.status_code == 201, ok.text


def test_chunked_body_over_the_limit_is_a_json_413(api) -> None:
    """A chunked body has no length up front: past the limit it is read, dropped and answered
    with a JSON 413 (tornado alone would answer a bare 400 and cut the connection)."""
    from tileserver.web.handlers import MAX_BODY_BYTES

    srv, c = api
    image = srv.image_id("RGB.byte.tif")
    piece = b" " * (1024 * 1024)

    def body():  # a generator makes requests send Transfer-Encoding: chunked
        yield b'{"type": "FeatureCollection", "features": ['
        for _ in range(MAX_BODY_BYTES // len(piece) + 2):
            yield piece
        yield b"]}"

    path = f"/api/v1/images/{image}/annotations/bulk?crs=pixel"
    r = c["ann"]("POST", path, data=body())
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
    small = {"type": "FeatureCollection", "features": [feature()]}
    r = c["ann"]("POST", path, data=iter([json.dumps(small).encode()]))
    assert r.status_code == 201, r.text


def test_images_in_projects(api) -> None:
    """An image moved to a project is seen (list, metadata, tiles, annotations) only by that
    project's members; its annotations and their labels move with it; a locked target that
    lacks a label refuses the move and changes nothing."""
    srv, c = api
    image = srv.image_id("cog.tif")
    made = c["ann"]("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature(label="tree/oak"))
    assert made.status_code == 201, made.text
    aid = made.json()["id"]
    for name in ("forest", "locked"):
        assert c["admin"]("POST", "/api/v1/projects", {"name": name}).status_code == 201
    assert c["admin"]("PATCH", "/api/v1/projects/locked", {"locked": True}).status_code == 200

    def move(who: str, project: str) -> Any:
        return c[who]("PUT", f"/api/v1/images/{image}/project", {"project": project})

    assert move("ann", "forest").status_code == 403
    refused = move("admin", "locked")
    assert refused.status_code == 409 and "tree/oak" in refused.json()["message"], refused.text
    assert move("admin", "nowhere").status_code == 404
    assert move("admin", "").status_code == 400
    moved = move("admin", "forest")
    assert moved.status_code == 200 and moved.json()["moved_annotations"] == 1, moved.text
    assert "tree/oak" in c["admin"]("GET", "/api/v1/projects/forest/labels").text

    def sees(who: str) -> dict[str, int]:
        listed = image in {i["id"] for i in c[who]("GET", "/api/v1/images").json()["images"]}
        return {
            "listed": int(listed),
            "meta": c[who]("GET", f"/api/v1/images/{image}").status_code,
            "tile": c[who]("GET", f"/api/v1/images/{image}/tiles/0/0/0.png").status_code,
            "annotations": c[who]("GET", f"/api/v1/images/{image}/annotations").status_code,
            "annotation": c[who]("GET", f"/api/v1/annotations/{aid}").status_code,
        }

    allowed = {"listed": 1, "meta": 200, "tile": 200, "annotations": 200, "annotation": 200}
    denied = {"listed": 0, "meta": 403, "tile": 403, "annotations": 403, "annotation": 403}
    assert sees("admin") == allowed
    assert sees("ann2") == denied
    forest = [i for i in c["admin"]("GET", "/api/v1/images").json()["images"] if i["id"] == image]
    assert forest[0]["project"] == "forest"
    assert c["admin"]("PUT", "/api/v1/projects/forest/members/ann2", {"role": "annotator"}).status_code == 200
    assert sees("ann2") == allowed
    # back to default: everyone sees it again
    assert move("admin", "default").status_code == 200
    assert sees("ann") == allowed
