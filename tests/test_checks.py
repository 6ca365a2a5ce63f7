"""Quality checks: GET /api/v1/projects/{project}/checks on both stores, and annot.checks.

Each check fires on a constructed case with the exact annotation id, code and pixel bbox, and
not on a clean neighbour. Shapes the API refuses (invalid, outside the image, no geometry) and
a label deleted after use are written around the API: through the store, or in SQL.
"""

# ruff: noqa: F811
# (fixtures imported by name; test arguments shadow them.)
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import shapely

from annot.checks import CODES, CheckOptions, check_image
from annot.frames import WORLD, ImageFrame, PixelFrame, VolumeFrame, frame_from_metadata
from annot.geometry import map_coords, with_z
from annot.model import Annotation, Content, Kind, Mask, Placement, Plane, Status
from annot.storage import open_store
from annot.taxonomy import Label, Project
from tests.pg import pg_database  # noqa: F401  (a fixture)
from tests.test_annot_api import Client, api, pg_server  # noqa: F401


@pytest.fixture
def env(api, request: pytest.FixtureRequest, tmp_path: Path):
    """``api`` plus the URL of the server's database (to write around the API)."""
    srv, c = api
    if request.node.callspec.params["api"] == "sqlite":
        url = f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    return srv, c, url


def box(x0: float, y0: float, x1: float, y1: float, label: str = "building", **props: Any) -> dict:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"label": label, **props},
    }


def point(x: float, y: float, label: str = "tree") -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [x, y]},
        "properties": {"label": label},
    }


def post(c: Client, image: str, feature: dict) -> int:
    r = c("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def image_frame(srv: Any, image: str) -> ImageFrame:
    info = srv.catalog.images[image].info
    return frame_from_metadata(info.width, info.height, info.extra)


def store_pixel_shape(url: str, srv: Any, image: str, kind: Kind, pixel: Any, label: str) -> int:
    """Write a shape given in pixels straight through the store (no validation)."""
    frame = image_frame(srv, image)
    world = None if pixel is None else map_coords(pixel, frame.pixel_to_world, 2)
    store = open_store(url)
    try:
        (a,) = store.add(image, "default", [Content(kind, label, world)], "ann")
    finally:
        store.close()
    return a.id


def drop_label(url: str, project: str, name: str) -> None:
    """Delete a label in use (the store refuses to): as an old import or a migration would."""
    sql = "DELETE FROM labels WHERE project = {0} AND name = {0}"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            conn.execute(sql.format("?"), (project, name))
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.format("%s"), (project, name))


def checks(c: Client, query: str = "", project: str = "default") -> dict:
    r = c("GET", f"/api/v1/projects/{project}/checks{query}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def by_key(body: dict) -> dict[tuple[int | None, str], dict]:
    out: dict[tuple[int | None, str], dict] = {}
    for f in body["findings"]:
        key = (f["annotation"], f["code"])
        assert key not in out, f"{key} reported twice"
        out[key] = f
    return out


def assert_bbox(finding: dict, bbox: tuple[float, float, float, float]) -> None:
    got = finding["location"]["pixel_bbox"]
    assert np.allclose(got, bbox, atol=1e-6, rtol=0), (finding["code"], got, bbox)


def test_each_check_fires_on_its_case_and_not_on_clean_neighbours(env) -> None:
    srv, c, url = env
    image = srv.image_id("cog.tif")
    clean = post(c["ann"], image, box(1000, 1000, 1040, 1040))
    original = post(c["ann"], image, box(100, 100, 140, 140))
    duplicate = post(c["ann2"], image, box(100, 100, 140, 140.2))  # IoU 0.995, other author
    other_label = post(c["ann"], image, box(100, 100, 140, 140, label="road"))  # not a duplicate
    first = post(c["ann"], image, box(300, 300, 340, 340))
    overlapping = post(c["ann"], image, box(300, 300, 340, 360))  # IoU 1600/2400 = 0.667
    touching = post(c["ann"], image, box(340, 300, 380, 340))  # shares an edge only: clean
    tiny = post(c["ann"], image, box(500, 500, 501, 501.5))  # 1.5 px²
    big_enough = post(c["ann"], image, box(510, 500, 512, 502))  # 4 px²: not tiny
    sliver = post(c["ann"], image, box(600, 100, 800, 100.5))  # 0.5 px wide
    narrow_ok = post(c["ann"], image, box(600, 110, 800, 112))  # 2 px wide: not a sliver
    tree = post(c["ann"], image, point(50.25, 60.5))
    same_tree = post(c["ann2"], image, point(50.25, 60.5))
    near_tree = post(c["ann2"], image, point(52.0, 60.5))  # 1.75 px away: another tree
    bowtie = store_pixel_shape(
        url, srv, image, Kind.polygon, shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)]), "building"
    )
    w = 2658  # cog.tif is 2658 x 2667
    partly = store_pixel_shape(url, srv, image, Kind.polygon, shapely.box(w - 10, 20, w + 30, 60), "building")
    outside = store_pixel_shape(url, srv, image, Kind.polygon, shapely.box(w + 100, 20, w + 140, 60), "building")
    no_geometry = store_pixel_shape(url, srv, image, Kind.polygon, None, "building")
    # a label used and then deleted from the taxonomy; a label restricted to boxes after use
    gone = post(c["ann"], image, box(1200, 1200, 1240, 1240, label="temporary"))
    drop_label(url, "default", "temporary")
    restricted = post(c["ann"], image, box(1300, 1300, 1340, 1340, label="parking"))
    r = c["admin"]("PUT", "/api/v1/projects/default/labels/parking", {"kinds": ["box"]})
    assert r.status_code == 200, r.text
    # rejected and left alone vs rejected and revised since
    stale = post(c["ann"], image, box(1400, 1400, 1440, 1440, status="submitted"))
    revised = post(c["ann"], image, box(1500, 1500, 1540, 1540, status="submitted"))
    for aid in (stale, revised):
        r = c["rev"]("POST", f"/api/v1/annotations/{aid}/review", {"decision": "reject", "comment": "too loose"})
        assert r.status_code == 200, r.text
    r = c["ann"]("PUT", f"/api/v1/annotations/{revised}?crs=pixel", box(1500, 1500, 1539, 1539), headers={"If-Match": "2"})
    assert r.status_code == 200, r.text

    body = checks(c["rev"], f"?image={image}")
    found = by_key(body)
    expected = {
        (duplicate, "duplicate"): (100, 100, 140, 140.2),
        (overlapping, "overlap"): (300, 300, 340, 360),
        (tiny, "tiny"): (500, 500, 501, 501.5),
        (sliver, "sliver"): (600, 100, 800, 100.5),
        (same_tree, "duplicate"): (50.25, 60.5, 50.25, 60.5),
        (bowtie, "invalid_geometry"): (0, 0, 10, 10),
        (partly, "partly_outside_image"): (w - 10, 20, w + 30, 60),
        (outside, "outside_image"): (w + 100, 20, w + 140, 60),
        (no_geometry, "empty_geometry"): None,
        (gone, "unknown_label"): (1200, 1200, 1240, 1240),
        (restricted, "kind_not_allowed"): (1300, 1300, 1340, 1340),
        (stale, "rejected_not_revised"): (1400, 1400, 1440, 1440),
    }
    assert set(found) == set(expected), sorted(set(found) ^ set(expected))
    for key, bbox in expected.items():
        f = found[key]
        assert f["image"] == image and f["severity"] == CODES[key[1]][0].value
        assert f["message"] and f["author"] in ("ann", "ann2")
        if bbox is None:
            assert f["location"] is None
        else:
            assert_bbox(f, bbox)
    for aid in (clean, original, other_label, first, touching, big_enough, narrow_ok, tree, near_tree, revised):
        assert not [k for k in found if k[0] == aid], aid
    # details say what was measured
    d = found[(duplicate, "duplicate")]
    assert d["details"]["duplicate_of"] == original and d["details"]["iou"] == pytest.approx(1600 / 1608, abs=1e-6)
    assert d["author"] == "ann2" and d["label"] == "building" and d["kind"] == "polygon"
    assert found[(same_tree, "duplicate")]["details"] == {"duplicate_of": tree, "also_duplicates": [], "distance_px": 0.0}
    o = found[(overlapping, "overlap")]["details"]
    assert o["other"] == first and o["iou"] == pytest.approx(2 / 3, abs=1e-6)
    assert found[(tiny, "tiny")]["details"] == {"area_px": 1.5, "min_area_px": 4.0}
    assert found[(sliver, "sliver")]["details"]["width_px"] == pytest.approx(0.5, abs=2e-3)
    assert found[(sliver, "sliver")]["details"]["mean_width_px"] == pytest.approx(2 * 100 / 401, abs=1e-6)
    assert "Self-intersection" in found[(bowtie, "invalid_geometry")]["details"]["reason"]
    assert found[(partly, "partly_outside_image")]["details"]["inside_fraction"] == pytest.approx(0.25)
    assert found[(restricted, "kind_not_allowed")]["details"]["allowed_kinds"] == ["box"]
    assert found[(stale, "rejected_not_revised")]["details"]["reviewer"] == "rev"
    assert "temporary" in found[(gone, "unknown_label")]["message"]
    # the world centroid: WGS84 of the pixel centroid
    frame = image_frame(srv, image)
    loc = found[(tiny, "tiny")]["location"]
    assert loc["pixel_centroid"] == pytest.approx([500.5, 500.75], abs=1e-9)
    lonlat = frame.world_to_crs(WORLD, frame.pixel_to_world(np.array([[500.5, 500.75]])))[0]
    assert loc["world_crs"] == "EPSG:4326"
    assert loc["world_centroid"] == pytest.approx(list(lonlat), abs=1e-9)
    # counts, severities and totals; the order is stable
    assert body["counts"] == {code: sum(1 for k in expected if k[1] == code) for code in sorted({k[1] for k in expected})}
    assert body["total"] == len(expected) and body["next_cursor"] is None
    assert body["severities"] == {
        "error": sum(1 for k in expected if CODES[k[1]][0].value == "error"),
        "warning": sum(1 for k in expected if CODES[k[1]][0].value == "warning"),
    }
    assert body["checked"] == 22 and body["images"] == 1
    order = [(f["annotation"], f["code"]) for f in body["findings"]]
    assert order == sorted(order)
    # filters: code (commas and repeats), severity, label, author, min_area_px
    only = checks(c["rev"], f"?image={image}&code=tiny,sliver&code=duplicate")
    assert {(f["annotation"], f["code"]) for f in only["findings"]} == {
        (tiny, "tiny"), (sliver, "sliver"), (duplicate, "duplicate"), (same_tree, "duplicate")
    }
    assert only["counts"] == {"duplicate": 2, "sliver": 1, "tiny": 1}
    warnings = checks(c["rev"], f"?image={image}&severity=warning")
    assert {f["severity"] for f in warnings["findings"]} == {"warning"}
    assert {f["annotation"] for f in checks(c["rev"], f"?image={image}&author=ann2")["findings"]} == {duplicate, same_tree}
    assert {f["annotation"] for f in checks(c["rev"], f"?image={image}&label=tree")["findings"]} == {same_tree}
    bigger = checks(c["rev"], f"?image={image}&code=tiny&min_area_px=5")
    assert {f["annotation"] for f in bigger["findings"]} == {tiny, big_enough}
    assert bigger["options"]["min_area_px"] == 5.0
    # without image=: every image of the project (the same findings here)
    assert checks(c["admin"])["findings"] == body["findings"]


def test_pages_return_every_finding_exactly_once(env) -> None:
    srv, c, _ = env
    images = [srv.image_id("cog.tif"), srv.image_id("RGB.byte.tif")]
    for n, image in enumerate(images):
        feats = [box(10 + 10 * i, 10, 11 + 10 * i, 11) for i in range(9 + n)]  # tiny
        feats += [box(10 + 5 * i, 100, 30 + 5 * i, 120) for i in range(3)]  # IoU 0.6, 0.6, 0.33
        feats += [box(400, 400, 440, 440)] * 3  # one original, two duplicates
        r = c["ann"]("POST", f"/api/v1/images/{image}/annotations/bulk?crs=pixel", {"type": "FeatureCollection", "features": feats})
        assert r.status_code == 201, r.text
    everything = checks(c["rev"], "?limit=10000")
    total = everything["total"]
    assert total == len(everything["findings"]) == 2 * (9 + 2 + 2) + 1  # tiny, 2 overlaps, 2 duplicates
    keys = [(f["image"], f["annotation"], f["code"], f["details"].get("other")) for f in everything["findings"]]
    assert len(set(keys)) == total and keys == sorted(keys, key=lambda k: (k[0], k[1], k[2], k[3] or -1))
    dups = [f for f in everything["findings"] if f["code"] == "duplicate"]
    assert [len(f["details"]["also_duplicates"]) for f in dups] == [0, 1, 0, 1]  # the third names both
    for limit in (1, 4, 7):
        seen, cursor, pages = [], None, 0
        while True:
            query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            page = checks(c["rev"], query)
            assert page["total"] == total and page["counts"] == everything["counts"]
            assert len(page["findings"]) <= limit
            seen += page["findings"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == everything["findings"], limit
        assert pages == -(-total // limit)


def test_permissions_and_bad_parameters(env) -> None:
    srv, c, _ = env
    image = srv.image_id("cog.tif")
    path = "/api/v1/projects/default/checks"
    for who in ("ann", "ann2"):
        r = c[who]("GET", path)
        assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    assert c["anon"]("GET", path).status_code == 401
    assert c["rev"]("GET", path).status_code == 200
    assert c["rev"]("GET", "/api/v1/projects/nope/checks").status_code == 404
    assert c["rev"]("GET", path + "?image=nope").status_code == 404
    # another project: its reviewers only; an image of default is not in it
    assert c["admin"]("POST", "/api/v1/projects", {"name": "other"}).status_code == 201
    assert c["rev"]("GET", "/api/v1/projects/other/checks").status_code == 403
    r = c["admin"]("GET", f"/api/v1/projects/other/checks?image={image}")
    assert r.status_code == 404 and "not in project" in r.json()["message"]
    empty = checks(c["admin"], project="other")
    assert empty["findings"] == [] and empty["checked"] == 0 and empty["images"] == 0
    for query in (
        "limit=0", "limit=x", "limit=10001", "limit=1&limit=2", "min_area_px=-1", "min_area_px=nan",
        "min_area_px=inf", "min_area_px=big", "code=bogus", "code=tiny,bogus", "severity=fatal",
        "cursor=!!!", "cursor=bm90IGpzb24", "cursor=WzEsMiwzXQ", "colour=red",
    ):
        r = c["rev"]("GET", f"{path}?{query}")
        assert r.status_code == 400, (query, r.text)
        assert r.json()["error"] == "bad_request" and r.json()["message"], query


def test_volume_findings_name_slice_and_plane(shared_data: Path, serve_dirs, tmp_path: Path) -> None:
    """A real CT series (23 x 38 pixels, 3 axial slices): duplicates only on the same slice, a
    tiny shape, and shapes whose recorded slice, SOP instance or slice no longer match."""
    srv = serve_dirs(shared_data / "dicom" / "ct_dcmqi_23x38x3")
    c = Client(srv.url, srv.token)
    image = srv.image_id("Image 23x38x3")
    frame = image_frame(srv, image)
    assert isinstance(frame, VolumeFrame)

    def on_slice(x0: float, y0: float, x1: float, y1: float, k: int, plane: str = "axial") -> int:
        return post(c, image, box(x0, y0, x1, y1, label="liver", slice=k, plane=plane))

    first = on_slice(2, 3, 12, 13, 1)
    duplicate = on_slice(2, 3, 12, 13, 1)
    other_slice = on_slice(2, 3, 12, 13, 0)  # the same outline a slice lower: clean
    tiny = on_slice(15, 20, 16, 21, 2)
    coronal = on_slice(2, 0.5, 12, 2, 10, "coronal")  # clean, another plane

    store = open_store(f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}")
    uids = srv.catalog.images[image].info.extra["sop_instance_uids"]
    for_uid = srv.catalog.images[image].info.extra["frame_of_reference_uid"]

    def raw(shape: Any, drawn_on: int, placement: Placement) -> int:
        world = map_coords(with_z(shape, drawn_on), lambda p: frame.pixel_to_world(p, Plane.axial), 3)
        (a,) = store.add(image, "default", [Content(Kind.polygon, "liver", world, placement=placement)], "ann")
        return a.id

    try:
        moved = raw(shapely.box(4, 4, 8, 8), 2, Placement(1, Plane.axial, for_uid, uids[1]))
        stale_sop = raw(shapely.box(4, 20, 8, 24), 0, Placement(0, Plane.axial, for_uid, "1.2.3.4"))
        gone = raw(shapely.box(4, 4, 8, 8), 5, Placement(5, Plane.axial, for_uid, None))
        other_for = raw(shapely.box(14, 4, 18, 8), 2, Placement(2, Plane.axial, "9.9.9", uids[2]))
    finally:
        store.close()
    body = checks(c, f"?image={image}")
    found = by_key(body)
    assert set(found) == {
        (duplicate, "duplicate"),
        (tiny, "tiny"),
        (moved, "slice_mismatch"),
        (stale_sop, "sop_instance_mismatch"),
        (gone, "slice_outside_volume"),
        (other_for, "frame_of_reference_mismatch"),
    }, sorted(found)
    for aid in (first, other_slice, coronal):
        assert not [k for k in found if k[0] == aid]
    d = found[(duplicate, "duplicate")]
    assert d["details"]["duplicate_of"] == first
    assert_bbox(d, (2, 3, 12, 13))
    assert (d["location"]["slice"], d["location"]["plane"]) == (1, "axial")
    lps = frame.pixel_to_world(np.array([[7.0, 8.0, 1.0]]), Plane.axial)[0]
    assert d["location"]["world_crs"] == "LPS"
    assert d["location"]["world_centroid"] == pytest.approx(list(lps), abs=1e-6)
    t = found[(tiny, "tiny")]
    assert_bbox(t, (15, 20, 16, 21))
    assert (t["location"]["slice"], t["details"]["area_px"]) == (2, 1.0)
    m = found[(moved, "slice_mismatch")]
    assert m["details"]["recorded_slice"] == 1
    assert m["details"]["measured_slice"] == pytest.approx([2, 2], abs=1e-6)
    assert_bbox(m, (4, 4, 8, 8))
    assert m["location"]["slice"] == 1
    assert found[(stale_sop, "sop_instance_mismatch")]["details"] == {"recorded": "1.2.3.4", "current": uids[0]}
    assert found[(gone, "slice_outside_volume")]["details"] == {"recorded_slice": 5, "slices": 3}
    f = found[(other_for, "frame_of_reference_mismatch")]
    assert f["details"] == {"recorded": "9.9.9", "current": for_uid}
    assert_bbox(f, (14, 4, 18, 8))


# --- the library alone -------------------------------------------------------------------


def _a(aid: int, content: Content) -> Annotation:
    return Annotation(aid, "img", "p", content, "u", "t0", "u", "t0", 1)


def test_masks_tags_and_a_cluster_of_duplicates() -> None:
    project = Project("p", labels={n: Label(n, "#000000") for n in ("cell", "blur", "nucleus")})
    frame = PixelFrame(100, 100)
    full = np.ones((4, 5), dtype=bool)
    holed = full.copy()
    holed[1, 1] = False  # IoU 19/20 = 0.95 with ``full``
    half = full.copy()
    half[:2] = False
    speck = np.zeros((3, 3), dtype=bool)
    speck[1, 1] = True

    def mask(aid: int, m: np.ndarray, col: int, row: int, label: str = "cell") -> Annotation:
        mk = Mask.from_array(m, col, row)
        return _a(aid, Content(Kind.mask, label, mk.footprint(), mask=mk))

    items = [
        mask(1, full, 10, 10),
        mask(2, holed, 10, 10),
        mask(3, half, 10, 10),  # IoU 10/20 = 0.5 with 1: overlap
        mask(4, speck, 50, 50),  # 1 px: tiny
        mask(5, np.zeros((2, 2), dtype=bool), 70, 70),  # no pixel set
        mask(6, full, 10, 10, label="nucleus"),  # another label: clean
        _a(7, Content(Kind.tag, "blur", None)),
        _a(8, Content(Kind.tag, "blur", None)),
        *(_a(i, Content(Kind.polygon, "cell", shapely.box(30, 30, 40, 40))) for i in (9, 10, 11)),
    ]
    found = {(f.annotation, f.code): f for f in check_image("img", items, project, frame)}
    assert set(found) == {
        (2, "duplicate"), (3, "overlap"), (4, "tiny"), (5, "empty_geometry"), (8, "duplicate"),
        (10, "duplicate"), (11, "duplicate"),
    }, sorted(found)
    assert found[(2, "duplicate")].details["iou"] == pytest.approx(0.95)
    overlaps = [f.details for f in check_image("img", items, project, frame) if f.code == "overlap"]
    assert overlaps == [{"other": 1, "iou": 0.5}, {"other": 2, "iou": pytest.approx(10 / 19, abs=1e-6)}]
    assert found[(8, "duplicate")].details["duplicate_of"] == 7
    assert found[(8, "duplicate")].location is None
    assert found[(11, "duplicate")].details["duplicate_of"] == 9
    assert found[(11, "duplicate")].details["also_duplicates"] == [10]
    assert found[(4, "tiny")].details["area_px"] == 1.0
    # raising min_area_px makes more masks tiny; the thresholds are checked
    more = check_image("img", items, project, frame, CheckOptions(min_area_px=15))
    assert {f.annotation for f in more if f.code == "tiny"} == {3, 4}
    with pytest.raises(Exception, match="min_area_px"):
        CheckOptions(min_area_px=-1)


def test_a_rejection_by_plain_update_is_stale_too() -> None:
    project = Project("p", labels={"cell": Label("cell", "#000000")})
    content = Content(Kind.polygon, "cell", shapely.box(1, 1, 9, 9), status=Status.rejected)
    (f,) = check_image("img", [_a(1, content)], project, PixelFrame(10, 10))
    assert f.code == "rejected_not_revised" and f.details["reviewer"] == "u"


def test_openapi_documents_every_code() -> None:
    from tileserver.web.openapi import openapi_document

    op = openapi_document()["paths"]["/api/v1/projects/{project}/checks"]["get"]
    for code in CODES:
        assert code in op["description"]
    names = {p["name"] for p in op["parameters"]}
    assert names == {"project", "image", "code", "severity", "label", "author", "min_area_px", "limit", "cursor"}
