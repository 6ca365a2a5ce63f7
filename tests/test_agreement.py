# ruff: noqa: F811
"""Inter-annotator agreement: ``annot.agreement`` on known answers, and
``GET /api/v1/projects/{project}/agreement`` end to end on both stores (a real CT series and a
geographic GeoTIFF too)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Geod

from annot.agreement import (
    Options,
    agreement,
    cohen_kappa,
    fleiss_kappa,
    hd95,
    mask_pixels,
    match_areas,
    match_points,
)
from annot.coords import GeoReference
from annot.errors import BadRequest
from annot.frames import GeoFrame, PixelFrame
from annot.model import Annotation, Content, Kind, Mask, Status
from annot.storage import open_store
from annot.users import Role
from tests.pg import pg_database  # noqa: F401  (a fixture)
from tests.test_annot_api import Client, api, pg_server  # noqa: F401  (fixtures)

# --- hand computations (the textbook formulas, written out) ------------------------------


def hand_cohen(a: list[int], b: list[int]) -> float:
    n = len(a)
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pe = sum((a.count(k) / n) * (b.count(k) / n) for k in set(a) | set(b))
    return (po - pe) / (1 - pe)


def hand_fleiss(table: list[list[int]]) -> float:
    """``table[i]`` = the categories the (same number of) raters gave item i."""
    m = len(table[0])
    cats = sorted({c for row in table for c in row})
    counts = [[row.count(c) for c in cats] for row in table]
    p_i = [(sum(n * n for n in row) - m) / (m * (m - 1)) for row in counts]
    p_j = [sum(row[j] for row in counts) / (len(table) * m) for j in range(len(cats))]
    pbar, pe = sum(p_i) / len(p_i), sum(p * p for p in p_j)
    return (pbar - pe) / (1 - pe)


def ann(aid: int, author: str, label: str, geom, image: str = "img", kind: Kind = Kind.polygon,
        mask: Mask | None = None, status: Status = Status.submitted) -> Annotation:
    content = Content(kind, label, geom, mask=mask, status=status)
    return Annotation(aid, image, "default", content, author, "t", author, "t", 1)


# --- unit tests of annot.agreement ---------------------------------------------------------


def test_cohen_kappa_against_the_hand_formula() -> None:
    a = [1, 1, 1, 0, 0, 1, 0, 1]
    b = [1, 0, 1, 0, 1, 1, 0, 0]
    k = cohen_kappa(a, b)
    assert k.kappa == pytest.approx(hand_cohen(a, b), abs=1e-12)
    assert k.observed == pytest.approx(5 / 8) and k.items == 8 and k.reason is None
    # three categories
    a3, b3 = ["x", "y", "z", "x", "y", "x"], ["x", "y", "y", "x", "z", "z"]
    assert cohen_kappa(a3, b3).kappa == pytest.approx(
        (3 / 6 - (3 * 2 + 2 * 2 + 1 * 2) / 36) / (1 - 12 / 36)
    )


def test_fleiss_kappa_on_three_raters_and_unequal_raters() -> None:
    table = [[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0], [1, 1, 1]]
    k = fleiss_kappa(table)
    assert k.kappa == pytest.approx(hand_fleiss(table), abs=1e-12)
    assert k.kappa == pytest.approx(0.32500, abs=1e-5) and k.items == 6
    # with two raters everywhere Fleiss' observed agreement is the pair's
    two = [[1, 1], [1, 0], [0, 0], [0, 0]]
    assert fleiss_kappa(two).observed == pytest.approx(3 / 4)
    # items with one rating are left out
    assert fleiss_kappa([[1], *two]).items == 4


def test_undefined_kappa_is_null_with_a_reason() -> None:
    same = cohen_kappa([True, True, True], [True, True, True])
    assert same.kappa is None and same.observed == 1.0 and "undefined" in (same.reason or "")
    assert "present" in (same.reason or "")
    empty = cohen_kappa([], [])
    assert empty.kappa is None and empty.items == 0 and empty.reason
    assert fleiss_kappa([[0, 0, 0], [0, 0]]).kappa is None
    assert fleiss_kappa([[1]]).reason == "no item was rated by two or more annotators"
    # a total disagreement is defined (and negative), not undefined
    assert cohen_kappa([1, 0], [0, 1]).kappa == pytest.approx(-1.0)


def test_offset_squares_iou_dice_and_hd95() -> None:
    a = shapely.box(0, 0, 10, 10)
    for d in (1.0, 2.5, 3.0):
        b = shapely.box(d, 0, 10 + d, 10)
        ((i, j, iou),) = match_areas([a], [b], 0.5)
        assert (i, j) == (0, 0)
        assert iou == pytest.approx((10 - d) / (10 + d), abs=1e-12)  # 10(10-d) / 10(10+d)
        assert hd95(a, b) == pytest.approx(d, abs=1e-9)
    # below the threshold: no match
    assert match_areas([a], [shapely.box(6, 0, 16, 10)], 0.5) == []
    assert len(match_areas([a], [shapely.box(6, 0, 16, 10)], 0.25)) == 1


def test_matching_is_one_to_one_and_takes_the_most_matches() -> None:
    # a1 overlaps b1 best (0.96), but a2 can only match b1 (0.13): with a1-b2 (0.11) two
    # matches beat the single best pair (a low threshold, where the two rules differ)
    a1, a2 = shapely.box(0, 0, 10, 10), shapely.box(-7.5, 0, 2.5, 10)
    b1, b2 = shapely.box(0.2, 0, 10.2, 10), shapely.box(8, 0, 18, 10)
    got = sorted((i, j) for i, j, _ in match_areas([a1, a2], [b1, b2], 0.1))
    assert got == [(0, 1), (1, 0)]
    assert [(i, j) for i, j, _ in match_areas([a1, a2], [b1, b2], 0.5)] == [(0, 0)]
    pts = match_points([shapely.Point(0, 0), shapely.Point(3, 0)], [shapely.Point(1, 0)], 5)
    assert [(i, j) for i, j, _ in pts] == [(0, 0)]


def test_masks_are_compared_by_their_pixels() -> None:
    grid = np.zeros((10, 10), dtype=bool)
    grid[2:6, 3:7] = True  # 4 x 4 pixels at col 3, row 2 (of a mask at 10, 20)
    m = Mask.from_array(grid, col=10, row=20)
    assert mask_pixels(m).equals(shapely.box(13, 22, 17, 26))
    frame = PixelFrame(100, 100)
    items = [
        ann(1, "a", "cell", m.footprint(), kind=Kind.mask, mask=m),
        ann(2, "b", "cell", shapely.box(13, 22, 17, 26)),
    ]
    (s,) = agreement(items, {"img": frame}).to_json()["shapes"]
    assert s["matched"] == 1 and s["iou"] == 1.0 and s["units"] == "px"


def test_counts_presence_and_points_on_a_plain_image() -> None:
    frame = PixelFrame(1000, 1000)
    items = [
        ann(1, "a", "building", shapely.box(0, 0, 10, 10)),
        ann(2, "a", "building", shapely.box(100, 100, 110, 110)),  # b misses it
        ann(3, "b", "building", shapely.box(2, 0, 12, 10)),
        ann(4, "b", "building", shapely.box(500, 500, 510, 510)),  # extra
        ann(5, "a", "tree", shapely.Point(50, 50), kind=Kind.point),
        ann(6, "b", "tree", shapely.Point(53, 54), kind=Kind.point),  # 5 px: within 10 px
        ann(7, "b", "road", shapely.LineString([(0, 0), (5, 5)]), kind=Kind.polyline),
    ]
    out = agreement(items, {"img": frame}).to_json()
    area, point = out["shapes"]
    assert (area["label"], area["geometry"], area["annotators"]) == ("building", "area", ["a", "b"])
    assert (area["matched"], area["missed"], area["extra"]) == (1, 1, 1)
    assert area["iou"] == pytest.approx(8 / 12, abs=1e-6)
    assert area["dice"] == pytest.approx(16 / 20, abs=1e-6)
    assert area["hd95"] == pytest.approx(2.0, abs=1e-6)
    assert area["area_dice"] == pytest.approx(2 * 80 / 400, abs=1e-6)
    assert area["f1"] == pytest.approx(0.5)
    assert (point["label"], point["matched"], point["mean_distance"]) == ("tree", 1, 5.0)
    assert out["not_compared"] == {"polyline": 1}
    # a tighter tolerance splits the points
    tight = agreement(items, {"img": frame}, Options(point_tolerance=4.0)).to_json()
    assert tight["shapes"][1]["matched"] == 0
    # presence: items (img, building), (img, road), (img, tree): a lacks road
    assert [lab["label"] for lab in out["presence"]["labels"]] == ["building", "road", "tree"]
    pair = out["presence"]["cohen_kappa"][0]
    assert pair["observed_agreement"] == pytest.approx(2 / 3) and pair["items"] == 3
    # an author filter leaves one rater: nothing to compare
    alone = agreement(items, {"img": frame}, Options(authors=("a",))).to_json()
    assert alone["shapes"] == [] and alone["presence"]["fleiss_kappa"]["kappa"] is None


def test_label_subtree_rolls_up_sub_labels() -> None:
    frame = PixelFrame(100, 100)
    items = [
        ann(1, "a", "vehicle/car", shapely.box(0, 0, 10, 10)),
        ann(2, "b", "vehicle/truck", shapely.box(0, 0, 10, 10)),
        ann(3, "b", "tree", shapely.box(50, 50, 60, 60)),
    ]
    out = agreement(items, {"img": frame}, Options(label="vehicle")).to_json()
    by = {(s["label"], s["sublabels"]): s for s in out["shapes"]}
    assert set(by) == {("vehicle/car", False), ("vehicle/truck", False), ("vehicle", True)}
    assert by[("vehicle/car", False)]["missed"] == 1 and by[("vehicle", True)]["matched"] == 1


def test_geographic_image_measures_in_metres() -> None:
    lat = 37.5
    frame = GeoFrame(GeoReference((0.001, 0, 126.0, 0, -0.001, 38.0), "EPSG:4326"), 1000, 1000)
    d = 0.0005  # degrees of longitude
    a = shapely.box(126.5, lat - 0.001, 126.502, lat + 0.001)
    b = shapely.box(126.5 + d, lat - 0.001, 126.502 + d, lat + 0.001)
    out = agreement([ann(1, "x", "field", a), ann(2, "y", "field", b)], {"img": frame}).to_json()
    (s,) = out["shapes"]
    metres = Geod(ellps="WGS84").inv(126.5, lat, 126.5 + d, lat)[2]
    assert out["units"] == s["units"] == "m"
    assert s["hd95"] == pytest.approx(metres, rel=5e-3)
    assert s["iou"] == pytest.approx(0.0015 / 0.0025, rel=5e-3)


def test_options_are_checked() -> None:
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(BadRequest):
            Options(iou_threshold=bad)
    with pytest.raises(BadRequest):
        Options(point_tolerance=-1)


def test_images_without_a_frame_are_skipped() -> None:
    items = [ann(1, "a", "x", shapely.box(0, 0, 1, 1), image="gone")]
    out = agreement(items, {}).to_json()
    assert out["skipped_images"] == ["gone"] and out["annotators"] == []


# --- the HTTP route ----------------------------------------------------------------------


def poly(x0: float, y0: float, x1: float, y1: float, label: str, **props) -> dict:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"label": label, **props},
    }


def point(x: float, y: float, label: str) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [x, y]},
        "properties": {"label": label},
    }


def tag(label: str) -> dict:
    return {"type": "Feature", "geometry": None, "properties": {"label": label}}


def post(c, who: str, image: str, *features: dict) -> None:
    body = {"type": "FeatureCollection", "features": list(features)}
    r = c[who]("POST", f"/api/v1/images/{image}/annotations/bulk?crs=pixel", body)
    assert r.status_code == 201, r.text


AGREEMENT = "/api/v1/projects/default/agreement"


def test_shapes_counts_iou_dice_hd95_over_http(api) -> None:
    srv, c = api
    image = srv.image_id("sample_geotiff.tif")  # EPSG:32616, 0.5 m pixels
    post(
        c, "ann", image,
        poly(100, 100, 120, 120, "building"),
        poly(200, 200, 220, 220, "building"),  # ann2 misses it
        point(300, 300, "tree"),
    )
    post(
        c, "ann2", image,
        poly(104, 100, 124, 120, "building"),  # 4 px = 2 m to the right: IoU 2/3
        poly(400, 400, 420, 420, "building"),  # extra
        point(303, 304, "tree"),  # 5 px = 2.5 m away (default tolerance: 10 px = 5 m)
    )
    r = c["rev"]("GET", f"{AGREEMENT}?image={image}")
    assert r.status_code == 200, r.text
    assert "NaN" not in r.text and "Infinity" not in r.text
    out = r.json()
    assert out["annotators"] == ["ann", "ann2"] and out["units"] == "m"
    assert out["images"] == 1 and out["images_compared"] == 1
    area, tree = out["shapes"]
    assert (area["label"], area["matched"], area["missed"], area["extra"]) == ("building", 1, 1, 1)
    assert area["iou"] == pytest.approx(2 / 3, abs=1e-6)
    assert area["dice"] == pytest.approx(0.8, abs=1e-6)
    assert area["hd95"] == pytest.approx(2.0, abs=1e-6)
    assert area["area_dice"] == pytest.approx(2 * 80 / 400, abs=1e-6)
    assert (tree["geometry"], tree["matched"]) == ("point", 1)
    assert tree["mean_distance"] == pytest.approx(2.5, abs=1e-6)
    # a stricter threshold leaves the squares apart; a tight tolerance the points
    strict = c["rev"]("GET", f"{AGREEMENT}?image={image}&iou_threshold=0.7&point_tolerance=2")
    area, tree = strict.json()["shapes"]
    assert (area["matched"], area["missed"], area["extra"], area["iou"]) == (0, 2, 2, None)
    assert tree["matched"] == 0
    assert strict.json()["parameters"]["iou_threshold"] == 0.7
    # label filter
    only = c["admin"]("GET", f"{AGREEMENT}?image={image}&label=tree").json()
    assert [s["label"] for s in only["shapes"]] == ["tree"]


def test_presence_cohen_and_fleiss_over_http(api) -> None:
    srv, c = api
    images = [srv.image_id(n) for n in ("sample_geotiff.tif", "cog.tif", "RGB.byte.tif")]
    b, r = (lambda: poly(10, 10, 20, 20, "building")), (lambda: poly(30, 30, 40, 40, "road"))
    drawn = {  # per image: who drew building / road
        "ann": [[b(), r()], [b()], [r()]],
        "ann2": [[b()], [b()], [r()]],
        "rev": [[b()], [r()], [r()]],
    }
    for who, per_image in drawn.items():
        for image, feats in zip(images, per_image, strict=True):
            post(c, who, image, *feats)
    out = c["rev"]("GET", AGREEMENT).json()
    assert out["annotators"] == ["ann", "ann2", "rev"] and out["images_compared"] == 3
    pres = out["presence"]
    assert [x["label"] for x in pres["labels"]] == ["building", "road"]

    def vector(who: str) -> list[int]:  # items (image, label) in image order, then label
        return [
            int(any(f["properties"]["label"] == lab for f in feats))
            for feats in drawn[who]
            for lab in ("building", "road")
        ]

    pairs = {tuple(p["annotators"]): p for p in pres["cohen_kappa"]}
    assert pairs[("ann", "ann2")]["kappa"] == pytest.approx(2 / 3, abs=1e-6)
    for (x, y), p in pairs.items():
        assert p["items"] == 6
        assert p["kappa"] == pytest.approx(hand_cohen(vector(x), vector(y)), abs=1e-6)
    table = [list(t) for t in zip(vector("ann"), vector("ann2"), vector("rev"), strict=True)]
    fleiss = pres["fleiss_kappa"]
    assert fleiss["kappa"] == pytest.approx(hand_fleiss(table), abs=1e-6)
    assert fleiss["kappa"] == pytest.approx(0.325, abs=1e-6) and fleiss["items"] == 6
    # per label: building over 3 images -- ann [1,1,0], ann2 [1,1,0], rev [1,0,0]
    per = {x["label"]: x for x in pres["per_label"]}
    bpairs = {tuple(p["annotators"]): p for p in per["building"]["cohen_kappa"]}
    assert bpairs[("ann", "ann2")]["kappa"] == pytest.approx(1.0)
    assert bpairs[("ann", "rev")]["kappa"] == pytest.approx(hand_cohen([1, 1, 0], [1, 0, 0]))
    # one image: its labels are the items
    one = c["rev"]("GET", f"{AGREEMENT}?image={images[0]}").json()["presence"]
    assert one["fleiss_kappa"]["items"] == 2
    # only some authors
    two = c["rev"]("GET", f"{AGREEMENT}?author=ann,ann2").json()
    assert two["annotators"] == ["ann", "ann2"] and len(two["presence"]["cohen_kappa"]) == 1


def test_tags_and_the_undefined_kappa_over_http(api) -> None:
    srv, c = api
    i1, i2 = srv.image_id("sample_geotiff.tif"), srv.image_id("cog.tif")
    post(c, "ann", i1, tag("cloudy"))
    post(c, "ann2", i1, tag("cloudy"))
    r = c["rev"]("GET", f"{AGREEMENT}?image={i1}")
    assert r.status_code == 200 and "NaN" not in r.text
    tags = r.json()["tags"]
    (pair,) = tags["cohen_kappa"]
    assert pair["kappa"] is None and pair["observed_agreement"] == 1.0
    assert "undefined" in pair["reason"]
    assert tags["fleiss_kappa"]["kappa"] is None and tags["fleiss_kappa"]["reason"]
    assert tags["classification"]["cohen_kappa"][0]["kappa"] is None
    # a second image where they disagree: classification over 2 images, categories sets
    post(c, "ann", i2, tag("cloudy"), tag("snow"))
    post(c, "ann2", i2, tag("clear"))
    tags = c["rev"]("GET", AGREEMENT).json()["tags"]
    cls = tags["classification"]["cohen_kappa"][0]
    # ann: (cloudy), (cloudy+snow); ann2: (cloudy), (clear) -> po 1/2, pe 1/4
    assert cls["observed_agreement"] == 0.5 and cls["kappa"] == pytest.approx(1 / 3)
    assert [x["label"] for x in tags["labels"]] == ["clear", "cloudy", "snow"]


def test_status_filter_and_snapshot_over_http(api) -> None:
    srv, c = api
    image = srv.image_id("sample_geotiff.tif")
    post(c, "ann", image, poly(10, 10, 20, 20, "building", status="submitted"))
    post(c, "ann2", image, poly(10, 10, 20, 20, "building", status="submitted"))
    assert c["rev"]("POST", "/api/v1/projects/default/snapshots", {"name": "v1"}).status_code == 201
    post(c, "ann2", image, poly(50, 50, 60, 60, "building"))  # a draft, after the snapshot
    live = c["rev"]("GET", f"{AGREEMENT}?image={image}").json()["shapes"][0]
    assert (live["matched"], live["extra"]) == (1, 1)
    submitted = c["rev"]("GET", f"{AGREEMENT}?image={image}&status=submitted,accepted").json()
    assert submitted["shapes"][0]["extra"] == 0
    assert submitted["parameters"]["status"] == ["submitted", "accepted"]
    snap = c["rev"]("GET", f"{AGREEMENT}?snapshot=v1").json()
    assert snap["parameters"]["snapshot"] == "v1" and snap["images"] == 1
    s = snap["shapes"][0]
    assert (s["matched"], s["extra"], s["iou"]) == (1, 0, 1.0)


def test_permissions_and_bad_parameters(api) -> None:
    srv, c = api
    image = srv.image_id("sample_geotiff.tif")
    assert c["ann"]("GET", AGREEMENT).status_code == 403
    assert c["anon"]("GET", AGREEMENT).status_code == 401
    assert c["rev"]("GET", AGREEMENT).status_code == 200
    assert c["admin"]("GET", AGREEMENT).status_code == 200
    for query in (
        "iou_threshold=0",
        "iou_threshold=1.5",
        "iou_threshold=abc",
        "iou_threshold=nan",
        "point_tolerance=-2",
        "point_tolerance=inf",
        "status=done",
        "label=nosuchlabel",
        "label=a&label=b",
    ):
        r = c["rev"]("GET", f"{AGREEMENT}?{query}")
        assert r.status_code == 400, (query, r.text)
        assert r.json()["message"]
    assert c["rev"]("GET", "/api/v1/projects/nope/agreement").status_code == 404
    assert c["rev"]("GET", f"{AGREEMENT}?image=nope").status_code == 404
    assert c["rev"]("GET", f"{AGREEMENT}?snapshot=nope").status_code == 404
    # an image of another project
    assert c["admin"]("POST", "/api/v1/projects", {"name": "other"}).status_code == 201
    moved = c["admin"]("PUT", f"/api/v1/images/{image}/project", {"project": "other"})
    assert moved.status_code == 200
    r = c["rev"]("GET", f"{AGREEMENT}?image={image}")
    assert r.status_code == 400 and "not in project" in r.json()["message"]
    # the reviewer of default is nobody in "other"
    assert c["rev"]("GET", f"/api/v1/projects/other/agreement?image={image}").status_code == 403
    ok = c["admin"]("GET", f"/api/v1/projects/other/agreement?image={image}")
    assert ok.status_code == 200 and ok.json()["images"] == 1
    doc = c["admin"]("GET", "/api/v1/openapi.json").json()
    assert "/api/v1/projects/{project}/agreement" in doc["paths"]


def test_geographic_image_distances_in_metres_over_http(api) -> None:
    srv, c = api
    image = srv.image_id("cog_scale_epsg4326.tif")  # EPSG:4326, ~0.0044 degree pixels
    post(c, "ann", image, poly(100, 100, 120, 120, "field"))
    post(c, "ann2", image, poly(102, 100, 122, 120, "field"))
    out = c["rev"]("GET", f"{AGREEMENT}?image={image}").json()
    (s,) = out["shapes"]
    assert out["units"] == s["units"] == "m"
    a, _, x0, _, e, y0 = srv.catalog.images[image].info.extra["transform"][:6]
    lon, lat = x0 + 100 * a, y0 + 110 * e
    expected = Geod(ellps="WGS84").inv(lon, lat, lon + 2 * a, lat)[2]  # 2 px east, in metres
    assert expected > 700  # metres, not degrees
    assert s["hd95"] == pytest.approx(expected, rel=0.01)
    assert s["iou"] == pytest.approx(18 / 22, rel=0.01)


def test_dicom_volume_matches_on_the_same_slice_only(shared_data: Path, serve_dirs, tmp_path: Path) -> None:
    srv = serve_dirs(shared_data / "dicom" / "ct_dcmqi_23x38x3")
    store = open_store(f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}")
    c = {"admin": Client(srv.url, srv.token)}
    for name, role in (("ann", Role.annotator), ("ann2", Role.annotator)):
        c[name] = Client(srv.url, store.add_user(name, role)[1])
    store.close()
    (image,) = list(srv.catalog.images)
    extra = srv.catalog.images[image].info.extra
    col_mm = float(extra["spacing"][0])
    post(c, "ann", image, poly(2, 5, 12, 25, "liver", slice=1))
    post(
        c, "ann2", image,
        poly(4, 5, 14, 25, "liver", slice=1),  # 2 px along a row: IoU 8/12
        poly(2, 5, 12, 25, "liver", slice=2),  # the same square, another slice: extra
    )
    r = c["admin"]("GET", f"{AGREEMENT}?image={image}")
    assert r.status_code == 200, r.text
    out = r.json()
    (s,) = out["shapes"]
    assert out["units"] == s["units"] == "mm"
    assert (s["matched"], s["missed"], s["extra"]) == (1, 0, 1)
    assert s["iou"] == pytest.approx(8 / 12, abs=1e-6)
    assert s["hd95"] == pytest.approx(2 * col_mm, abs=1e-6)
    assert Counter(x["label"] for x in out["presence"]["labels"]) == {"liver": 1}
