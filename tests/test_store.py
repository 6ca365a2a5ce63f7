"""One suite for both annotation stores (SQLite and PostGIS): the same behaviour, checked alike."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import shapely

from annot.errors import Conflict, NotFound, UnknownLabel, VersionConflict
from annot.model import Action, Content, Kind, Mask, Placement, Plane, Status
from annot.storage import Filter, Region, Store, open_store
from annot.taxonomy import Label
from annot.users import Role
from tests import pg
from tests.pg import pg_database  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("pg_database")
    pg.truncate(url)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def poly(x: float, y: float, size: float = 10.0, label: str = "building") -> Content:
    return Content(Kind.polygon, label, shapely.box(x, y, x + size, y + size))


def test_users(store: Store) -> None:
    user, token = store.add_user("ann", Role.annotator)
    assert store.user_for_token(token) == user
    assert store.user_for_token("nope") is None
    assert store.user_by_name("ann") == user
    assert store.count_users() == 1 and store.count_users(Role.admin) == 0
    again, token2 = store.add_user("ann", Role.reviewer)
    assert again.id == user.id and store.user_for_token(token) is None
    assert store.user_for_token(token2) == again


def test_geometry_round_trips_bit_for_bit(store: Store) -> None:
    ring = [(500000.123456789, 2800000.987654321), (500010.5, 2800000.1), (500003.3, 2800020.7)]
    hole = [(500003.0, 2800005.0), (500004.0, 2800005.0), (500003.5, 2800006.0)]
    planar3d = shapely.Polygon([(1.5, 2.25, -30.125), (11.0, 2.0, -30.125), (5.0, 9.0, -30.125)])
    contents = [
        Content(Kind.polygon, "a", shapely.Polygon(ring, [hole]), attributes={"n": [1, 2]}),
        Content(Kind.point, "b", shapely.Point(1 / 3, 2 / 3)),
        Content(
            Kind.multipoint, "face", shapely.MultiPoint([(1, 2), (3, 4)]), keypoints=("l", "r")
        ),
        Content(Kind.polyline, "road", shapely.LineString([(0, 0), (1, 1), (2, 0)])),
        Content(
            Kind.polygon,
            "liver",
            planar3d,
            placement=Placement(4, Plane.axial, "1.2.3", "1.2.3.4"),
            status=Status.submitted,
        ),
        Content(
            Kind.mask,
            "brush",
            shapely.box(2, 3, 5, 5),
            mask=Mask.from_array([[0, 1, 1], [1, 0, 0]], 2, 3),
        ),
        Content(Kind.tag, "cloudy", None),
    ]
    stored = store.add("img", "default", contents, "ann")
    for s, c in zip(stored, contents, strict=True):
        got = store.get(s.id)
        assert got == s
        assert got.content.geometry is None or shapely.equals_identical(
            got.content.geometry, c.geometry
        )
        assert got.content.attributes == c.attributes and got.version == 1
    assert store.get(stored[5].id).content.mask == contents[5].mask
    assert store.count("img") == len(contents)


def test_query_region_exact_and_paginated(store: Store) -> None:
    grid = [poly(x * 20, y * 20) for x in range(10) for y in range(10)]
    tag = Content(Kind.tag, "cloudy", None)
    store.add("img", "default", [*grid, tag], "ann")
    store.add("other", "default", [poly(0, 0)], "ann")
    everything = store.query("img")
    assert len(everything) == 101
    # x 0..50, y 0..50 touches polygons with x, y in {0, 20, 40}
    found = store.query("img", Region((0, 0, 50, 50, 0, 0)))
    assert len(found) == 9
    # an exact triangle inside that box leaves out the far corner
    tri = shapely.Polygon([(0, 0), (50, 0), (0, 50)])
    exact = store.query("img", Region((0, 0, 50, 50, 0, 0), tri))
    assert len(exact) == 6
    page = store.query_page("img", Region((0, 0, 50, 50, 0, 0), tri))
    assert page.ids == [a.id for a in exact]
    assert all(shapely.equals(g, a.content.geometry) for g, a in zip(page.geometries, exact, strict=True))
    assert json.loads(page.properties[0])["label"] == "building"
    assert json.loads(page.properties[0])["version"] == 1
    pages: list[int] = []
    after = 0
    while True:
        page = store.query("img", Region((0, 0, 200, 200, 0, 0)), after=after, limit=7)
        if not page:
            break
        pages.extend(a.id for a in page)
        after = page[-1].id
    assert pages == sorted(a.id for a in grid_ids(store)) and len(pages) == 100
    assert store.query("nothing", Region((0, 0, 1, 1, 0, 0))) == []


def grid_ids(store: Store) -> list:
    return [a for a in store.query("img", limit=1000) if a.content.geometry is not None]


def test_query_z_range(store: Store) -> None:
    shapes = [
        Content(Kind.polygon, "a", shapely.Polygon([(0, 0, z), (5, 0, z), (0, 5, z)]))
        for z in (0.0, 2.5, 5.0)
    ]
    store.add("vol", "default", shapes, "ann")
    hits = store.query("vol", Region((-1, -1, 6, 6, 2.0, 3.0)))
    assert [bounds_z(a) for a in hits] == [2.5]


def bounds_z(a) -> float:
    return float(shapely.get_coordinates(a.content.geometry, include_z=True)[0, 2])


def test_update_delete_history_undo(store: Store) -> None:
    (a,) = store.add("img", "default", [poly(0, 0)], "ann")
    b = store.update(a.id, poly(5, 5, label="house"), 1, "rev")
    assert b.version == 2 and b.updated_by == "rev" and b.author == "ann"
    with pytest.raises(VersionConflict):
        store.update(a.id, poly(1, 1), 1, "ann")
    store.delete(a.id, 2, "rev")
    with pytest.raises(NotFound):
        store.get(a.id)
    history = store.history(a.id)
    assert [c.action for c in history] == [Action.create, Action.update, Action.delete]
    assert history[0].before is None and history[1].before.label == "building"
    assert history[2].before.label == "house" and history[2].version == 0
    with pytest.raises(Conflict):
        store.undo(history[1].id, "rev")  # not the latest change
    restored = store.undo(history[2].id, "rev")
    assert restored is not None and restored.id == a.id and restored.label == "house"
    assert store.get(a.id).version == 3
    changes = store.history(a.id)
    assert changes[-1].action is Action.undo and changes[-1].undoes == history[2].id
    # undo the undo: deleted again
    assert store.undo(changes[-1].id, "rev") is None
    with pytest.raises(NotFound):
        store.get(a.id)


def test_undo_update_and_create(store: Store) -> None:
    (a,) = store.add("img", "default", [poly(0, 0)], "ann")
    store.update(a.id, poly(50, 50, label="house"), None, "ann")
    last = store.history(a.id)[-1]
    back = store.undo(last.id, "ann")
    assert back is not None and back.label == "building" and back.version == 3
    assert store.query("img", Region((0, 0, 11, 11, 0, 0)))[0].id == a.id
    assert store.query("img", Region((55, 55, 56, 56, 0, 0))) == []
    (c,) = store.add("img", "default", [poly(0, 0)], "ann")
    assert store.undo(store.history(c.id)[0].id, "ann") is None
    with pytest.raises(NotFound):
        store.get(c.id)


def test_concurrent_edits_exactly_one_wins(store_url: str) -> None:
    setup = open_store(store_url)
    (a,) = setup.add("img", "default", [poly(0, 0)], "ann")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def edit(n: int) -> None:
        s = open_store(store_url)
        try:
            barrier.wait()
            s.update(a.id, poly(n, n), 1, f"user{n}")
            results.append("ok")
        except VersionConflict:
            results.append("conflict")
        finally:
            s.close()

    threads = [threading.Thread(target=edit, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 7 + ["ok"]
    assert setup.get(a.id).version == 2
    setup.close()


def test_open_taxonomy_grows_locked_one_refuses(store: Store) -> None:
    store.add("img", "default", [poly(0, 0, label="vehicle/car/sedan")], "ann")
    project = store.get_project("default")
    assert {"vehicle", "vehicle/car", "vehicle/car/sedan"} <= set(project.labels)
    assert project.labels["vehicle/car/sedan"].parent == "vehicle/car"
    store.update_project("default", locked=True, instructions="# Draw cars")
    with pytest.raises(UnknownLabel):
        store.add("img", "default", [poly(0, 0), poly(1, 1, label="boat")], "ann")
    assert store.count("img") == 1  # nothing of the failed batch
    store.put_label("default", Label("boat", "#123456", kinds=frozenset({Kind.point})))
    with pytest.raises(UnknownLabel):
        store.add("img", "default", [poly(0, 0, label="boat")], "ann")
    store.add("img", "default", [Content(Kind.point, "boat", shapely.Point(1, 1))], "ann")
    assert store.get_project("default").instructions == "# Draw cars"
    with pytest.raises(Conflict):
        store.delete_label("default", "vehicle")  # in use below
    store.put_label("default", Label("unused/x", "#000000"))
    assert "unused" not in store.delete_label("default", "unused").labels


def test_projects_and_members(store: Store) -> None:
    store.add_user("ann", Role.annotator)
    store.create_project("roads", "Trace roads")
    with pytest.raises(Conflict):
        store.create_project("roads")
    with pytest.raises(NotFound):
        store.get_project("nope")
    assert [p.name for p in store.list_projects()] == ["default", "roads"]
    user = store.user_by_name("ann")
    assert user is not None and store.membership("roads", user.id) is None
    store.set_member("roads", "ann", Role.reviewer)
    assert store.membership("roads", user.id) is Role.reviewer
    assert store.members("roads") == [(user, Role.reviewer)]
    store.set_member("roads", "ann", None)
    assert store.members("roads") == []
    with pytest.raises(NotFound):
        store.set_member("roads", "ghost", Role.admin)


def test_snapshots_are_immutable(store: Store) -> None:
    made = store.add("img", "default", [poly(0, 0), poly(20, 20)], "ann")
    snap = store.create_snapshot("default", "v1", "rev", "first cut")
    assert snap.count == 2
    store.update(made[0].id, poly(100, 100, label="house"), None, "ann")
    store.delete(made[1].id, None, "ann")
    store.add("img", "default", [poly(40, 40)], "ann")
    frozen = store.snapshot_annotations("default", "v1")
    assert [a.label for a in frozen] == ["building", "building"]
    assert shapely.equals(frozen[0].content.geometry, made[0].content.geometry)
    with pytest.raises(Conflict):
        store.create_snapshot("default", "v1", "rev")
    assert [s.name for s in store.list_snapshots("default")] == ["v1"]
    with pytest.raises(NotFound):
        store.snapshot_annotations("default", "v2")


KILL_SCRIPT = """
import sys, shapely
from annot.model import Content, Kind
from annot.storage import open_store
store = open_store(sys.argv[1])
contents = [Content(Kind.polygon, "bulk", shapely.box(i % 1000, i // 1000, i % 1000 + 1, i // 1000 + 1)) for i in range(int(sys.argv[2]))]
print("start", flush=True)
store.add("img", "default", contents, "bulk")
print("done", flush=True)
"""


def wait_until_writing(url: str) -> None:
    """Until rows of the batch are being written (the WAL grows / a COPY runs)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if url.startswith("sqlite:///"):
            wal = Path(url[len("sqlite:///") :] + "-wal")
            if wal.exists() and wal.stat().st_size > 4_000_000:
                return
        else:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY annotations%' "
                    "AND state = 'active'"
                ).fetchone()
            if row and row[0]:
                time.sleep(0.2)
                return
        time.sleep(0.02)
    raise AssertionError("the batch never started writing")


def test_killed_bulk_insert_leaves_no_partial_batch(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    store.add("img", "default", [poly(0, 0)], "ann")
    script = tmp_path / "bulk.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    proc = subprocess.Popen(
        [sys.executable, str(script), store_url, "200000"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start"
    wait_until_writing(store_url)
    assert proc.poll() is None, "the batch finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    reopened = open_store(store_url)
    assert reopened.count("img") == 1
    assert [a.label for a in reopened.query("img", Region((-1e9, -1e9, 1e9, 1e9, 0, 0)))] == [
        "building"
    ]
    reopened.add("img", "default", [poly(5, 5)], "ann")  # still writable
    assert reopened.count("img") == 2
    reopened.close()
    store.close()


def test_query_page_small_and_large_regions_agree(store: Store) -> None:
    """Paging through 1,200 hits: the one-join path (a few pages of candidates) and the
    ids-first path (many pages) answer the same ids, in order, exactly once each."""
    shapes = [poly((i % 40) * 3.0, (i // 40) * 3.0, 2.0) for i in range(1200)]
    shapes.append(Content(Kind.polygon, "l", shapely.Polygon([(0, 0), (200, 0), (0, 200)])))
    store.add("img", "default", shapes, "ann")
    tri = shapely.Polygon([(0, 0), (130, 0), (0, 130)])
    region = Region((0, 0, 130, 130, 0, 0), tri)
    expected = [a.id for a in store.query("img", region, 0, 10_000)]
    assert 500 < len(expected) < 1201
    for limit in (10, 500):  # 10: more than 4 pages of candidates; 500: one join
        got: list[int] = []
        after = 0
        while True:
            page = store.query_page("img", region, after, limit)
            got.extend(page.ids)
            assert len(page.geometries) == len(page.ids) == len(page.properties)
            if len(page.ids) < limit:
                break
            after = page.ids[-1]
        assert got == expected, limit


def test_filters_by_label_tree_status_author_and_kind(store: Store) -> None:
    """A label keeps its sub-labels and nothing else that merely starts alike; every path of
    both stores (no region, one join, ids first, objects and columns) pages the same ids."""
    labels = ["vehicle", "vehicle/car", "vehicle/car/sedan", "vehicles", "Vehicle", "veh%", "tree"]
    contents = []
    for i in range(140):
        label = labels[i % len(labels)]
        status = [Status.draft, Status.submitted, Status.accepted][i % 3]
        shape = poly((i % 14) * 3.0, (i // 14) * 3.0, 2.0, label)
        contents.append(Content(shape.kind, label, shape.geometry, status=status))
    contents.append(Content(Kind.point, "vehicle/car", shapely.Point(1, 1)))
    a = store.add("img", "default", contents[:70], "ann")
    b = store.add("img", "default", contents[70:], "bob")
    every = a + b

    def expected(keep) -> list[int]:  # type: ignore[no-untyped-def]
        return [x.id for x in every if keep(x)]

    cases = [
        (Filter(labels=("vehicle",)), lambda x: x.content.label.split("/")[0] == "vehicle"),
        (Filter(labels=("vehicle/car",)), lambda x: x.content.label.startswith("vehicle/car")),
        (Filter(labels=("veh%",)), lambda x: x.content.label == "veh%"),
        (Filter(labels=("tree", "Vehicle")), lambda x: x.content.label in ("tree", "Vehicle")),
        (
            Filter(statuses=(Status.submitted, Status.accepted), authors=("bob",)),
            lambda x: x.content.status != Status.draft and x.author == "bob",
        ),
        (Filter(kinds=(Kind.point,)), lambda x: x.content.kind == Kind.point),
        (Filter(labels=("vehicle",), statuses=(Status.rejected,)), lambda x: False),
    ]
    everywhere = Region((-1, -1, 100, 100, 0, 0), shapely.box(-1, -1, 100, 100))
    for where, keep in cases:
        want = expected(keep)
        assert [x.id for x in store.query("img", None, 0, 1000, where)] == want, where
        assert [x.id for x in store.query("img", everywhere, 0, 1000, where)] == want, where
        for limit in (3, 1000):  # 3: many pages of candidates (SQLite reads ids first)
            got: list[int] = []
            after = 0
            while True:
                page = store.query_page("img", everywhere, after, limit, None, where)
                got.extend(page.ids)
                if len(page.ids) < limit:
                    break
                after = page.ids[-1]
            assert got == want, (where, limit)
    assert len(expected(lambda x: x.content.label.split("/")[0] == "vehicle")) == 61


def test_kept_geometry_texts_are_the_computed_bytes(store: Store) -> None:
    """The geometry text kept at write time (world and pixel of a GeoTIFF frame) is byte for
    byte what a listing computes, also after an update; a store that keeps none, or a text of
    another frame, falls back to computing it."""
    from annot.coords import GeoReference
    from annot.features import geometry_texts, page_collection, page_geometry_texts, text_key
    from annot.frames import GeoFrame

    frame = GeoFrame(GeoReference((0.5, 0.0, 500_000.0, 0.0, -0.5, 4_200_000.0), "EPSG:32633"), 4000, 4000)
    other = GeoFrame(GeoReference((0.5, 0.0, 500_000.0, 0.0, -0.5, 4_200_001.0), "EPSG:32633"), 4000, 4000)
    store.geometry_texts = lambda image_id, geoms: geometry_texts(frame, geoms)

    def w(x: float, y: float) -> tuple[float, float]:  # pixel -> stored (UTM) coordinates
        return 500_000.0 + x * 0.5 + 1 / 3, 4_200_000.0 - y * 0.5 - 1 / 7

    cw = shapely.Polygon([w(10, 10), w(10, 40), w(40, 40), w(40, 10)])  # clockwise in UTM
    holed = shapely.Polygon(
        [w(100, 100), w(160, 100), w(160, 160), w(100, 160)],
        [[w(120, 120), w(130, 120), w(130, 130), w(120, 130)]],
    )
    multi = shapely.MultiPolygon([shapely.box(*w(200, 210), *w(210, 200)), cw.buffer(-1)])
    contents = [
        Content(Kind.polygon, "building", cw),
        Content(Kind.polygon, "building", holed),
        Content(Kind.multipolygon, "building", multi),
        Content(Kind.polyline, "road", shapely.LineString([w(1, 1), w(300, 2.5)])),
        Content(Kind.point, "tree", shapely.Point(w(33.3, 44.4))),
    ]
    stored = store.add("img", "default", contents, "ann")
    everything = Region((*shapely.box(*w(0, 400), *w(400, 0)).bounds, 0.0, 0.0))
    key = text_key(frame)
    assert key is not None

    def check(expect_kept: bool) -> None:
        for crs in ("world", "pixel"):
            kept = store.query_page("img", everything, cached=(key, crs))
            computed = store.query_page("img", everything)
            assert computed.texts is None and kept.ids == computed.ids
            assert kept.texts is not None
            assert all((t is not None) == expect_kept for t in kept.texts)
            assert page_geometry_texts(kept, frame, crs) == page_geometry_texts(computed, frame, crs)
            assert page_collection(kept, frame, crs, None) == page_collection(computed, frame, crs, None)
            stale = store.query_page("img", everything, cached=(text_key(other) or "", crs))
            assert stale.texts == [None] * len(stale.ids)
        # EPSG:n is never kept: computed, and the same with or without kept texts
        page = store.query_page("img", everything)
        assert page_geometry_texts(page, frame, "EPSG:3857")[0].startswith(b'{"type":"Polygon"')

    check(True)
    moved = shapely.affinity.translate(cw, 0.1, -0.2)
    store.update(stored[0].id, Content(Kind.polygon, "building", moved), 1, "ann")
    check(True)
    pixel = json.loads(
        page_geometry_texts(store.query_page("img", everything, cached=(key, "pixel")), frame, "pixel")[0]
    )
    assert pixel["coordinates"][0][0] == frame.world_to_pixel(
        shapely.get_coordinates(shapely.orient_polygons(moved, exterior_cw=False))[:1]
    )[0].tolist()
    # a writer that keeps no texts clears them: the listing computes (the same bytes)
    store.geometry_texts = None
    store.update(stored[1].id, Content(Kind.polygon, "building", holed.buffer(0.5)), 1, "ann")
    page = store.query_page("img", everything, cached=(key, "pixel"))
    assert page.texts is not None and page.texts[1] is None and page.texts[0] is not None
    computed = store.query_page("img", everything)
    assert page_collection(page, frame, "pixel", None) == page_collection(computed, frame, "pixel", None)
