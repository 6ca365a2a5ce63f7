"""The annotation library: GeoJSON conversion, frames, validation, masks, plane cuts, taxonomy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from annot.errors import BadRequest, InvalidGeometry, UnknownLabel
from annot.features import content_from_feature, dumps, feature, features_json, view_features
from annot.frames import AffineVolume, GeoFrame, PatientVolume, PixelFrame, VolumeFrame
from annot.geometry import plane_intersection
from annot.model import Annotation, Content, Kind, Mask, Plane
from annot.taxonomy import Label, Project, effective_role
from annot.users import Role, User
from annot.validation import check_shape, is_valid, suggest_repair, validity_reason

GEO_FILES = [
    "RGB.byte.tif",  # EPSG:32618, 300 m
    "cog.tif",  # EPSG:32621
    "cogeo.tif",  # EPSG:3857
    "dem.tif",  # EPSG:4326
    "201404_13SED190110_201404_0x1500m_CL_1_mask.tif",  # EPSG:26913, 15 cm
    "sample_geotiff.tif",  # EPSG:32616
]


def geo_frame(path: Path) -> GeoFrame:
    with rasterio.open(path) as ds:
        t = ds.transform
        extra = {
            "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "crs": {"wkt": ds.crs.to_wkt(), "epsg": ds.crs.to_epsg()},
        }
        return GeoFrame.from_metadata(ds.width, ds.height, extra)


def stored(content: Content, aid: int = 1, image: str = "img") -> Annotation:
    return Annotation(aid, image, "default", content, "ann", "t0", "ann", "t0", 1)


def polygon_feature(coords, label="building", **props) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": coords},
        "properties": {"label": label, **props},
    }


def ring_coords(geom: dict) -> np.ndarray:
    return np.asarray(geom["coordinates"][0], dtype=np.float64)


def same_ring(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Equal rings up to orientation and start vertex."""
    a, b = a[:-1], b[:-1]
    if len(a) != len(b):
        return False
    for candidate in (b, b[::-1]):
        for shift in range(len(a)):
            if np.allclose(np.roll(candidate, shift, axis=0), a, atol=tol, rtol=0):
                return True
    return False


@pytest.mark.parametrize("name", GEO_FILES)
def test_pixel_world_pixel_round_trip_on_real_geotiffs(geo_dir: Path, name: str) -> None:
    frame = geo_frame(geo_dir / name)
    w, h = frame.width, frame.height
    rng = np.random.default_rng(len(name))
    for _ in range(20):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        r = rng.uniform(0.01, 0.15) * min(w, h)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
        ring = np.column_stack([cx + r * np.cos(angles), cy + r * np.sin(angles)])
        ring = np.vstack([ring, ring[:1]]).tolist()
        content = content_from_feature(polygon_feature([ring]), frame, "pixel")
        back = feature(stored(content), frame, "pixel")
        assert same_ring(ring_coords(back["geometry"]), np.asarray(ring), 1e-6)
        # the same shape written in WGS84 comes back in WGS84 to 1e-9 degree
        lonlat = feature(stored(content), frame, "world")
        again = content_from_feature(
            polygon_feature(lonlat["geometry"]["coordinates"]), frame, "world"
        )
        back2 = feature(stored(again), frame, "world")
        assert same_ring(ring_coords(back2["geometry"]), ring_coords(lonlat["geometry"]), 1e-9)
        assert same_ring(
            ring_coords(feature(stored(again), frame, "pixel")["geometry"]),
            np.asarray(ring),
            1e-4,
        )
        # and in Web Mercator on request
        merc = feature(stored(content), frame, "EPSG:3857")
        assert np.all(np.isfinite(ring_coords(merc["geometry"])))


def test_output_rings_are_counter_clockwise(geo_dir: Path) -> None:
    frame = geo_frame(geo_dir / "RGB.byte.tif")
    cw_in_pixels = [[[10, 10], [10, 50], [50, 50], [50, 10], [10, 10]]]
    content = content_from_feature(polygon_feature(cw_in_pixels), frame, "pixel")
    for crs in ("pixel", "world", "EPSG:32618"):
        geom = shapely.geometry.shape(feature(stored(content), frame, crs)["geometry"])
        assert geom.exterior.is_ccw


finite = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    pts=st.lists(st.tuples(finite, finite), min_size=3, max_size=30),
    a=st.floats(0.01, 100),
    rot=st.floats(-0.5, 0.5),
)
def test_transforms_round_trip_property(pts, a, rot) -> None:
    """Any affine georeference: pixel -> storage -> pixel to 1e-6 pixel."""
    hull = shapely.MultiPoint(pts).convex_hull
    assume(isinstance(hull, shapely.Polygon) and hull.area > 1.0)
    transform = [a * math.cos(rot), a * math.sin(rot), 500000.0, a * math.sin(rot), -a, 4e6]
    extra = {"transform": transform, "crs": {"epsg": 32633, "wkt": ""}}
    frame = GeoFrame.from_metadata(1000, 1000, extra)
    f = {"type": "Feature", "geometry": json.loads(shapely.to_geojson(hull))}
    f["properties"] = {"label": "x"}
    content = content_from_feature(f, frame, "pixel")
    back = ring_coords(feature(stored(content), frame, "pixel")["geometry"])
    assert same_ring(back, np.asarray(hull.exterior.coords), 1e-6)


@settings(max_examples=80, deadline=None)
@given(pts=st.lists(st.tuples(finite, finite), min_size=4, max_size=12))
def test_validation_property(pts) -> None:
    """A polygon is accepted iff GEOS says it is valid, has area and lies in the image; a
    rejected one comes with a repair that is itself accepted (when one exists)."""
    ring = [*pts, pts[0]]
    geom = shapely.Polygon(ring)
    reason = validity_reason(Kind.polygon, geom, 1000, 1000)
    geos_ok = shapely.is_valid(geom) and geom.area > 0
    distinct = len({(round(x, 9), round(y, 9)) for x, y in pts}) >= 3
    assert (reason is None) == (geos_ok and distinct)
    if reason is not None:
        repair = suggest_repair(Kind.polygon, geom, 1000, 1000)
        if repair is not None:
            kind = Kind.multipolygon if repair.geom_type == "MultiPolygon" else Kind.polygon
            assert is_valid(kind, repair, 1000, 1000)


@pytest.mark.parametrize(
    ("geometry", "reason"),
    [
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]},
            "Self-intersection",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [0, 0], [0, 0]]]},
            "at least 3 distinct",
        ),
        ({"type": "LineString", "coordinates": [[1, 1], [1, 1]]}, "at least 2 distinct"),
        ({"type": "Point", "coordinates": [float("nan"), 1]}, "finite"),
        ({"type": "LineString", "coordinates": [[0, 0], [float("-inf"), 1]]}, "finite"),
        ({"type": "Point", "coordinates": [10**30, 1]}, "64-bit"),
        ({"type": "Polygon", "coordinates": []}, "needs a geometry"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [2000, 0], [0, 10], [0, 0]]]},
            "outside the image",
        ),
    ],
)
def test_invalid_shapes_are_explained(geometry, reason) -> None:
    frame = PixelFrame(1000, 1000)
    f = {"type": "Feature", "geometry": geometry, "properties": {"label": "x"}}
    with pytest.raises(InvalidGeometry) as info:
        content_from_feature(f, frame, "pixel")
    assert reason in str(info.value)


def test_bowtie_repair_is_a_valid_multipolygon() -> None:
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])
    with pytest.raises(InvalidGeometry) as info:
        check_shape(Kind.polygon, bowtie, 100, 100)
    repair = info.value.repair
    assert repair.geom_type == "MultiPolygon" and repair.is_valid
    assert repair.area == pytest.approx(50.0)


def test_other_malformed_features() -> None:
    frame = PixelFrame(100, 100)
    with pytest.raises(BadRequest):
        content_from_feature(
            {"type": "Feature", "geometry": None, "properties": {}}, frame, "pixel"
        )
    with pytest.raises(BadRequest):
        content_from_feature([1, 2], frame, "pixel")
    box = polygon_feature([[[0, 0], [5, 0], [5, 5], [2, 7], [0, 5], [0, 0]]], kind="box")
    with pytest.raises(InvalidGeometry, match="4 distinct corners"):
        content_from_feature(box, frame, "pixel")
    kp = {
        "type": "Feature",
        "geometry": {"type": "MultiPoint", "coordinates": [[1, 1], [2, 2]]},
        "properties": {"label": "face", "keypoints": ["left eye"]},
    }
    with pytest.raises(InvalidGeometry, match="keypoint names"):
        content_from_feature(kp, frame, "pixel")


def test_every_kind_converts_both_ways() -> None:
    frame = PixelFrame(100, 100)
    features = [
        {"type": "Point", "coordinates": [1.5, 2.5]},
        {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
        {"type": "LineString", "coordinates": [[1, 2], [3, 4], [5, 1]]},
        {
            "type": "Polygon",
            "coordinates": [
                [[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]],
                [[10, 10], [20, 10], [20, 20], [10, 10]],
            ],
        },
        {
            "type": "MultiPolygon",
            "coordinates": [
                [[[0, 0], [5, 0], [5, 5], [0, 0]]],
                [[[10, 10], [15, 10], [15, 15], [10, 10]]],
            ],
        },
    ]
    for geometry in features:
        f = {
            "type": "Feature",
            "geometry": geometry,
            "properties": {"label": "x", "attributes": {"a": 1}},
        }
        if geometry["type"] == "MultiPoint":
            f["properties"]["keypoints"] = ["a", "b"]
        content = content_from_feature(f, frame, "pixel")
        out = feature(stored(content), frame, "pixel")
        g1 = shapely.geometry.shape(out["geometry"])
        assert shapely.equals(g1, shapely.geometry.shape(geometry))
        assert out["properties"]["attributes"] == {"a": 1} and out["id"] == 1
    tag = {"type": "Feature", "geometry": None, "properties": {"label": "cloudy"}}
    content = content_from_feature(tag, frame, "pixel")
    assert content.kind is Kind.tag and feature(stored(content), frame, "world")["geometry"] is None
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, 2:5] = True
    m = Mask.from_array(mask, 10, 20)
    mf = {"type": "Feature", "geometry": None, "properties": {"label": "m", "mask": m.to_json()}}
    content = content_from_feature(mf, frame, "pixel")
    out = feature(stored(content), frame, "pixel")
    assert out["properties"]["kind"] == "mask"
    assert np.array_equal(Mask.from_json(out["properties"]["mask"]).to_array(), mask)
    assert shapely.geometry.shape(out["geometry"]).bounds == (10, 20, 16, 24)


@settings(max_examples=50, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
    seed=st.integers(0, 2**31),
)
def test_mask_rle_is_exact(rows, cols, seed) -> None:
    a = np.random.default_rng(seed).random((rows, cols)) > 0.5
    m = Mask.from_array(a, 3, 4)
    assert np.array_equal(m.to_array(), a)
    assert Mask.from_json(m.to_json()) == m and m.area == int(a.sum())


def test_plane_intersection_of_a_square_with_a_hole() -> None:
    # a 10 x 10 square at z = 5 with a 2 x 2 hole in the middle, cut by the plane y = 5
    outer = [(0, 0, 5), (10, 0, 5), (10, 10, 5), (0, 10, 5)]
    hole = [(4, 4, 5), (6, 4, 5), (6, 6, 5), (4, 6, 5)]
    square = shapely.Polygon(outer, [hole])
    cut = plane_intersection(square, np.array([0, 5.0, 0]), np.array([0, 1.0, 0]))
    assert cut is not None and cut.geom_type == "MultiLineString"
    segments = sorted(tuple(sorted(s.coords)) for s in cut.geoms)
    assert segments == [((0, 5, 5), (4, 5, 5)), ((6, 5, 5), (10, 5, 5))]
    assert plane_intersection(square, np.array([0, 20.0, 0]), np.array([0, 1.0, 0])) is None
    line = shapely.LineString([(0, 0, 0), (0, 10, 10)])
    pts = plane_intersection(line, np.array([0, 0, 5.0]), np.array([0, 0, 1.0]))
    assert pts is not None and list(pts.geoms[0].coords) == [(0, 5, 5)]


def synthetic_volume() -> VolumeFrame:
    """An oblique-free CT-like volume: 64 x 48 pixels of 0.7 x 0.8 mm, 30 slices of 2.5 mm."""
    return VolumeFrame(
        AffineVolume(
            origin=(-20.0, -15.0, -40.0),
            spacing=(0.7, 0.8, 2.5),
            direction=((1, 0, 0), (0, 1, 0), (0, 0, 1)),
            dims=(64, 48, 30),
            frame_of_reference_uid="1.2.3",
            sop_instance_uids=tuple(f"1.2.3.{k}" for k in range(30)),
        )
    )


def real_volume() -> VolumeFrame:
    extra = {
        "origin": [-20.0, -15.0, -40.0],
        "spacing": [0.7, 0.8, 2.5],
        "direction": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        "slices": 30,
        "frame_of_reference_uid": "1.2.3",
    }
    return VolumeFrame(
        PatientVolume.from_metadata(64, 48, extra, [f"1.2.3.{k}" for k in range(30)])
    )


@pytest.mark.parametrize("make", [synthetic_volume, real_volume])
def test_volume_polygon_round_trip_and_cross_section(make) -> None:
    frame = make()
    ring = [[10.25, 10.5], [40.5, 12.0], [35.0, 30.75], [12.0, 28.0], [10.25, 10.5]]
    f = polygon_feature([ring], label="liver", slice=7)
    content = content_from_feature(f, frame, "pixel")
    assert content.placement is not None and content.placement.slice == 7
    assert content.placement.sop_instance_uid == "1.2.3.7"
    world = np.asarray(shapely.get_coordinates(content.geometry, include_z=True))
    assert np.allclose(world[:, 2], -40.0 + 7 * 2.5)  # a planar 3D polygon on slice 7
    back = feature(stored(content), frame, "pixel")
    assert same_ring(ring_coords(back["geometry"]), np.asarray(ring), 1e-6)
    assert back["properties"]["slice"] == 7 and back["properties"]["plane"] == "axial"
    # world coordinates in, the slice is found
    wf = feature(stored(content), frame, "world")
    again = content_from_feature(
        polygon_feature(wf["geometry"]["coordinates"], label="liver"), frame, "world"
    )
    assert again.placement.slice == 7 and again.placement.plane is Plane.axial
    # seen on a coronal slice through the polygon: a line segment on slice 7's height
    y_mid = -15.0 + (20.0 - 0.5) * 0.8  # world y of pixel row 20
    coronal = [
        k
        for k in range(frame.size(Plane.coronal)[2])
        if abs(frame.slice_plane(k, Plane.coronal)[0][1] - y_mid) < 0.41
    ]
    assert coronal
    out = [
        json.loads(dumps(t))
        for t in view_features([stored(content)], frame, "world", coronal[0], Plane.coronal)
    ]
    assert len(out) == 1 and out[0]["properties"]["intersection"] is True
    seg = np.asarray(out[0]["geometry"]["coordinates"][0])
    assert np.allclose(seg[:, 2], -22.5) and seg.shape == (2, 3)
    px = [
        json.loads(dumps(t))
        for t in view_features([stored(content)], frame, "pixel", coronal[0], Plane.coronal)
    ]
    assert px[0]["geometry"]["type"] == "MultiLineString"
    # a far-away coronal slice does not reach it
    assert view_features([stored(content)], frame, "world", 0, Plane.coronal) == []
    # and on its own axial slice it comes back whole
    same = [json.loads(dumps(t)) for t in view_features([stored(content)], frame, "pixel", 7, Plane.axial)]
    assert same[0]["geometry"]["type"] == "Polygon"


def test_volume_slice_out_of_range_and_off_slice_world_shapes() -> None:
    frame = synthetic_volume()
    f = polygon_feature([[[1, 1], [5, 1], [5, 5], [1, 1]]], slice=30)
    with pytest.raises(InvalidGeometry, match="outside the volume"):
        content_from_feature(f, frame, "pixel")
    tilted = polygon_feature([[[0, 0, -40], [5, 0, -30], [5, 5, -35], [0, 0, -40]]])
    with pytest.raises(InvalidGeometry, match="one slice"):
        content_from_feature(tilted, frame, "world")
    with pytest.raises(BadRequest):
        content_from_feature(polygon_feature([[[1, 1], [5, 1], [5, 5], [1, 1]]]), frame, "pixel")


def test_features_json_is_valid_json_for_many() -> None:
    frame = PixelFrame(100, 100)
    items = [
        stored(Content(Kind.polygon, "b", shapely.box(i, i, i + 1, i + 1)), aid=i)
        for i in range(1, 50)
    ]
    texts = features_json(items, frame, "pixel")
    assert [json.loads(t)["id"] for t in texts] == list(range(1, 50))


def test_taxonomy_rules() -> None:
    open_p = Project("default")
    added = open_p.resolve("vehicle/car/sedan", Kind.polygon)
    assert [lab.name for lab in added] == ["vehicle", "vehicle/car", "vehicle/car/sedan"]
    locked = Project(
        "p", locked=True, labels={"car": Label("car", "#ff0000", kinds=frozenset({Kind.box}))}
    )
    with pytest.raises(UnknownLabel):
        locked.resolve("boat", Kind.polygon)
    with pytest.raises(UnknownLabel, match="cannot be a polygon"):
        locked.resolve("car", Kind.polygon)
    assert locked.resolve("car", Kind.box) == []
    with pytest.raises(UnknownLabel):
        open_p.resolve("a//b", Kind.point)
    ann = User(2, "ann", Role.annotator)
    assert effective_role(ann, "default", None) is Role.annotator
    assert effective_role(ann, "other", None) is None
    assert effective_role(ann, "other", Role.reviewer) is Role.reviewer
    assert effective_role(User(1, "root", Role.admin), "other", None) is Role.admin


@pytest.mark.parametrize("crs", ["pixel", "world", "EPSG:3857"])
def test_page_collection_matches_feature_by_feature_output(geo_dir: Path, crs: str) -> None:
    """The fast listing path (columns, one coordinate array per type) writes what the
    feature-by-feature path writes, rings oriented counter-clockwise, holes clockwise."""
    from annot.features import page_collection, properties_text
    from annot.storage.base import FeaturePage

    frame = geo_frame(geo_dir / "RGB.byte.tif")
    shapes = [
        {"type": "Polygon", "coordinates": [[[10, 10], [10, 50], [50, 50], [50, 10], [10, 10]], [[20, 20], [30, 20], [30, 30], [20, 20]]]},
        {"type": "MultiPolygon", "coordinates": [[[[60, 60], [70, 60], [70, 70], [60, 60]]], [[[80, 80], [80, 90], [90, 90], [80, 80]]]]},
        {"type": "Point", "coordinates": [5.5, 6.5]},
        {"type": "LineString", "coordinates": [[1, 1], [2, 3], [4, 1]]},
        {"type": "MultiPoint", "coordinates": [[1, 1], [2, 3]]},
    ]
    items = []
    for n, g in enumerate(shapes, start=1):
        content = content_from_feature({"type": "Feature", "geometry": g, "properties": {"label": "x"}}, frame, "pixel")
        items.append(stored(content, aid=n))
    items.append(stored(Content(Kind.tag, "cloudy", None), aid=len(items) + 1))
    page = FeaturePage(
        [a.id for a in items],
        np.array([a.content.geometry for a in items], dtype=object),
        [properties_text(a) for a in items],
    )
    fast = json.loads(page_collection(page, frame, crs, "7"))
    slow = [json.loads(t) for t in features_json(items, frame, crs)]
    assert fast["next_cursor"] == "7"
    for f, s in zip(fast["features"], slow, strict=True):
        assert f["id"] == s["id"] and f["properties"] == s["properties"]
        if s["geometry"] is None:
            assert f["geometry"] is None
            continue
        assert f["geometry"]["type"] == s["geometry"]["type"]
        a, b = shapely.geometry.shape(f["geometry"]), shapely.geometry.shape(s["geometry"])
        assert shapely.equals_exact(a, b, 1e-9 if crs != "pixel" else 1e-6)
        polys = list(getattr(a, "geoms", [a])) if "Polygon" in a.geom_type else []
        for p in polys:
            assert p.exterior.is_ccw and all(not r.is_ccw for r in p.interiors)


unit = st.floats(-1.0, 1.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    q=st.tuples(unit, unit, unit, unit),
    spacing=st.tuples(st.floats(0.2, 3.0), st.floats(0.2, 3.0), st.floats(0.5, 5.0)),
    origin=st.tuples(st.floats(-300, 300), st.floats(-300, 300), st.floats(-300, 300)),
    k=st.integers(0, 19),
    seed=st.integers(0, 2**31),
)
def test_volume_transforms_round_trip_property(q, spacing, origin, k, seed) -> None:
    """Any (oblique) volume geometry: pixel -> LPS -> pixel to 1e-6 pixel, on one plane."""
    qv = np.asarray(q)
    assume(np.linalg.norm(qv) > 0.1)
    w, x, y, z = qv / np.linalg.norm(qv)
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    extra = {
        "origin": list(origin),
        "spacing": list(spacing),
        "direction": rot.tolist(),
        "slices": 20,
        "frame_of_reference_uid": "1.2",
    }
    frame = VolumeFrame(PatientVolume.from_metadata(40, 30, extra))
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 8))
    ring = np.column_stack([20 + 9 * np.cos(angles), 15 + 9 * np.sin(angles)])
    ring = np.vstack([ring, ring[:1]]).tolist()
    content = content_from_feature(polygon_feature([ring], slice=k), frame, "pixel")
    world = shapely.get_coordinates(content.geometry, include_z=True)
    normal = rot[2]
    assert np.ptp(world @ normal) < 1e-6  # planar, on the slice's plane
    back = feature(stored(content), frame, "pixel")
    assert back["properties"]["slice"] == k
    assert same_ring(ring_coords(back["geometry"]), np.asarray(ring), 1e-6)
