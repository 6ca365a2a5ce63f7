"""Annotation vector tiles: decoded with the same library that encodes them
(``mapbox_vector_tile``), compared with the stored pixel coordinates.

The image is a synthetic 2000 x 1500 GeoTIFF (256 px tiles, so z = 0..3; z = 0 covers 2048
pixels a side in one tile). Tile units: 4096 a side, y down.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mapbox_vector_tile
import numpy as np
import pytest
import requests
import shapely

from annot.storage import open_store
from annot.users import Role
from annot.vector_tiles import CELL_SCREEN_PX
from tests import pg
from tests.conftest import LiveServer
from tests.pg import pg_database  # noqa: F401  (a fixture)
from tests.test_annot_api import pg_server  # noqa: F401  (a fixture)

WIDTH, HEIGHT, TILE = 2000, 1500, 256
MAX_Z = 3
EXTENT = 4096


@pytest.fixture
def server(make_raster, serve_dirs, tmp_path: Path) -> tuple[LiveServer, str]:
    make_raster(np.zeros((1, HEIGHT, WIDTH), dtype=np.uint8), name="field.tif")
    srv = serve_dirs(tmp_path / "data")
    return srv, srv.image_id("field.tif")


def post(srv: LiveServer, path: str, body: Any, token: str | None = None) -> requests.Response:
    return requests.post(
        srv.url + path,
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {token or srv.token}"},
        timeout=120,
    )


def bulk(srv: LiveServer, image: str, rings: list[list[list[float]]], label: str = "cell") -> list[int]:
    features = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [r]}, "properties": {"label": label}}
        for r in rings
    ]
    r = post(srv, f"/api/v1/images/{image}/annotations/bulk?crs=pixel", {"type": "FeatureCollection", "features": features})
    assert r.status_code == 201, r.text
    return [int(i) for i in r.json()["ids"]]


def tile(srv: LiveServer, image: str, z: int, x: int, y: int, **kw: Any) -> requests.Response:
    return srv.get(f"/api/v1/images/{image}/annotations/tiles/{z}/{x}/{y}.mvt", **kw)


def decode(body: bytes) -> list[dict[str, Any]]:
    layers = mapbox_vector_tile.decode(body, default_options={"y_coord_down": True})
    assert set(layers) <= {"annotations"}
    if not layers:
        return []
    assert layers["annotations"]["extent"] == EXTENT
    return list(layers["annotations"]["features"])


def to_pixels(units: Any, z: int, x: int, y: int) -> np.ndarray:
    span = TILE * 2 ** (MAX_Z - z)
    return np.asarray(units, dtype=float) * (span / EXTENT) + [x * span, y * span]


def circle(cx: float, cy: float, r: float, n: int = 400) -> list[list[float]]:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    ring = np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t)]).tolist()
    return [*ring, ring[0]]


def test_coordinates_match_the_stored_shapes_within_the_tolerance(server) -> None:
    srv, image = server
    ring = circle(700.0, 600.0, 150.0)  # crosses no tile edge at z=3 (tile 2/2 covers 512-768)
    big = circle(1000.0, 700.0, 600.0)  # spans many tiles at z=3
    aid, big_id = bulk(srv, image, [circle(640.0, 640.0, 100.0), big])
    stored = shapely.Polygon(circle(640.0, 640.0, 100.0))
    del ring
    for z in range(MAX_Z + 1):
        factor = 2 ** (MAX_Z - z)
        span = TILE * factor
        x, y = 640 // span, 640 // span
        r = tile(srv, image, z, x, y)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "application/vnd.mapbox-vector-tile"
        features = {f["id"]: f for f in decode(r.content)}
        got = features[aid]
        assert got["properties"]["id"] == aid
        assert got["properties"]["label"] == "cell"
        assert got["properties"]["author"] == "admin" and got["properties"]["status"] == "draft"
        assert got["geometry"]["type"] == "Polygon"
        shell = to_pixels(got["geometry"]["coordinates"][0], z, x, y)
        # half a screen pixel of simplification plus half a unit of rounding, in image pixels
        tolerance = 0.5 * factor + 0.5 * span / EXTENT
        assert shapely.hausdorff_distance(shapely.Polygon(shell), stored) <= tolerance + 1e-9
        if z < MAX_Z:  # simplified to the level's resolution: fewer vertices than stored
            assert len(shell) < 401
        # the big circle is clipped to the buffered tile (4 screen px = 64 units past each edge)
        big_units = np.asarray(features[big_id]["geometry"]["coordinates"][0], dtype=float)
        assert big_units.min() >= -64 and big_units.max() <= EXTENT + 64
        clipped_stored = shapely.Polygon(big).intersection(
            shapely.box(x * span - 4 * factor, y * span - 4 * factor, (x + 1) * span + 4 * factor, (y + 1) * span + 4 * factor)
        )
        assert shapely.hausdorff_distance(
            shapely.Polygon(to_pixels(big_units, z, x, y)), clipped_stored
        ) <= tolerance + 1e-9


def test_no_shape_is_lost_at_z0(server) -> None:
    """5,000 shapes of 1-5 px: at z=0 (8 image px per screen px) all are tiny; every one is a
    point or counted in an aggregate whose cell and count match the stored shapes."""
    srv, image = server
    rng = np.random.default_rng(7)
    n = 5000
    centres = rng.uniform([10, 10], [WIDTH - 10, HEIGHT - 10], size=(n, 2))
    sizes = rng.uniform(1.0, 5.0, size=n)
    rings = [
        [[cx - s / 2, cy - s / 2], [cx + s / 2, cy - s / 2], [cx + s / 2, cy + s / 2], [cx - s / 2, cy + s / 2], [cx - s / 2, cy - s / 2]]
        for (cx, cy), s in zip(centres.tolist(), sizes.tolist(), strict=True)
    ]
    ids = bulk(srv, image, rings)
    big = bulk(srv, image, [circle(1000, 750, 400, 64)], label="region")[0]
    r = tile(srv, image, 0, 0, 0)
    assert r.status_code == 200, r.text
    features = decode(r.content)
    assert sum(int(f["properties"].get("count", 1)) for f in features) == n + 1
    assert [f["id"] for f in features if "count" not in f["properties"] and f["geometry"]["type"] == "Polygon"] == [big]
    # Where each tiny shape should be: its bounds' centre, in units, in cells of 8 screen px.
    units = centres * (EXTENT / (TILE * 8))
    cell = CELL_SCREEN_PX * EXTENT / TILE
    expected: dict[tuple[int, int], list[int]] = {}
    for i, (u, v) in enumerate(units.tolist()):
        expected.setdefault((int(u // cell), int(v // cell)), []).append(i)
    seen: dict[tuple[int, int], dict[str, Any]] = {}
    for f in features:
        if f["geometry"]["type"] == "Point":  # a single tiny shape, at its centre
            u, v = f["geometry"]["coordinates"]
        elif "count" in f["properties"]:  # the inset square of its cell
            u, v = np.asarray(f["geometry"]["coordinates"][0], dtype=float).mean(axis=0)
        else:
            continue
        key = (int(u // cell), int(v // cell))
        assert key not in seen, key
        seen[key] = f
    assert set(seen) == set(expected)
    for key, members in expected.items():
        f = seen[key]
        if len(members) == 1:
            assert f["geometry"]["type"] == "Point"
            assert f["id"] == ids[members[0]] and f["properties"]["id"] == ids[members[0]]
            assert np.allclose(f["geometry"]["coordinates"], units[members[0]], atol=0.51)
        else:
            assert f["properties"]["count"] == len(members) and f["properties"]["label"] == "cell"
            square = np.asarray(f["geometry"]["coordinates"][0], dtype=float)
            assert np.allclose(square.min(axis=0), np.array(key) * cell + 16)
            assert np.allclose(square.max(axis=0), (np.array(key) + 1) * cell - 16)


def test_304_while_unchanged_and_a_new_etag_after_a_change(server) -> None:
    srv, image = server
    (aid,) = bulk(srv, image, [circle(300, 300, 50)])
    first = tile(srv, image, 1, 0, 0)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and first.headers["Cache-Control"] == "private, no-cache"
    again = tile(srv, image, 1, 0, 0, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other_tile = tile(srv, image, 1, 1, 0)
    assert other_tile.headers["ETag"] != etag
    r = requests.delete(
        f"{srv.url}/api/v1/annotations/{aid}", headers={"Authorization": f"Bearer {srv.token}"}, timeout=30
    )
    assert r.status_code == 204
    changed = tile(srv, image, 1, 0, 0, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert decode(changed.content) == []


@pytest.mark.parametrize(
    "path",
    [
        "4/0/0.mvt",  # z past full resolution
        "3/8/0.mvt",  # x past the right edge (2000 px = 8 tiles at z=3: 0..7)
        "3/0/6.mvt",  # y past the bottom (1500 px: 0..5)
        "0/1/0.mvt",
        "-1/0/0.mvt",
        "a/0/0.mvt",
        "1/0/0.5.mvt",
        "0/0/0.mvt?slice=1",  # slice on a 2D image
        "0/0/0.mvt?bbox=1,2,3,4",  # unknown parameter
    ],
)
def test_bad_tile_coordinates_are_a_json_400(server, path: str) -> None:
    srv, image = server
    r = srv.get(f"/api/v1/images/{image}/annotations/tiles/{path}")
    assert r.status_code == 400, (path, r.status_code, r.text)
    body = r.json()
    assert body["error"] == "bad_request" and body["message"]


def test_permissions(server, tmp_path: Path) -> None:
    srv, image = server
    bulk(srv, image, [circle(300, 300, 50)])
    assert tile(srv, image, 0, 0, 0, token=None).status_code == 401
    assert tile(srv, image, 0, 0, 0, token="not-a-token").status_code == 401
    assert tile(srv, "no-such-image", 0, 0, 0).status_code == 404
    store = open_store(f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}")
    _, token = store.add_user("ann", Role.annotator)
    store.close()
    r = tile(srv, image, 0, 0, 0, token=token)  # annotators see the default project's shapes
    assert r.status_code == 200 and len(decode(r.content)) == 1
    with_cookie_only = requests.get(
        f"{srv.url}/api/v1/images/{image}/annotations/tiles/0/0/0.mvt",
        cookies={"tessera_session": "forged"},
        timeout=30,
    )
    assert with_cookie_only.status_code == 401


def test_vectorised_polygon_commands_equal_the_plain_ones() -> None:
    """The fast path (one ragged array for every polygon) writes the very commands that the
    per-geometry path writes: holes, multipolygons, and shapes that rounding collapses."""
    from annot.mvt import geometry_commands, polygon_commands

    rng = np.random.default_rng(3)
    shapes = []
    for i in range(2000):
        c = rng.uniform(0, 4096, 2)
        r = rng.uniform(0.3, 300)
        p = shapely.Point(c).buffer(r, quad_segs=int(rng.integers(1, 8)))
        if i % 5 == 0:
            p = p.difference(shapely.Point(c).buffer(r / 2))
        if i % 7 == 0:
            p = shapely.MultiPolygon([p, shapely.box(c[0] + 2 * r, c[1], c[0] + 3 * r, c[1] + r)])
        shapes.append(p)
    for group in (shapes, [s for s in shapes if isinstance(s, shapely.Polygon)]):
        oriented = shapely.orient_polygons(np.array(group, dtype=object), exterior_cw=False)
        assert polygon_commands(oriented) == [geometry_commands(g)[1] for g in oriented]
    collapsed = shapely.orient_polygons(np.array([shapely.box(10, 10, 10.2, 10.2)], dtype=object))
    assert polygon_commands(collapsed) == [[]]


def test_postgis_serves_the_same_tiles_as_sqlite(
    server, pg_server, pg_database, tmp_path: Path  # noqa: F811
) -> None:
    """The same shapes in both stores give the same decoded tiles at every level."""
    srv, image = server
    pg.truncate(pg_database)
    pg_srv = pg_server(tmp_path / "data", pg_database)
    rng = np.random.default_rng(5)
    centres = rng.uniform([100, 100, 1], [WIDTH - 100, HEIGHT - 100, 80], (300, 3))
    rings = [circle(x, y, r, 12) for x, y, r in centres.tolist()]
    bulk(srv, image, rings)
    bulk(pg_srv, image, rings)
    for z, x, y in [(0, 0, 0), (1, 1, 0), (2, 1, 1), (3, 3, 2)]:
        a, b = decode(tile(srv, image, z, x, y).content), decode(tile(pg_srv, image, z, x, y).content)
        assert len(a) > 0
        # ids differ between the stores (each numbers its own), everything else is equal
        strip = [
            sorted(json.dumps([f["geometry"], {k: v for k, v in f["properties"].items() if k != "id"}], sort_keys=True) for f in t)
            for t in (a, b)
        ]
        assert strip[0] == strip[1], (z, x, y)


def test_volume_tiles_per_slice_and_plane(shared_data: Path, serve_dirs) -> None:
    """On a real CT (23 x 38 pixels, 3 axial slices: one 256 px tile, z=0 only, 16 units a
    pixel): a polygon drawn on axial slice 1 is in that slice's tile, not in slice 0's, and a
    coronal slice's tile has the segment where the planes meet, as the GeoJSON listing has it."""
    srv = serve_dirs(shared_data / "dicom" / "ct_dcmqi_23x38x3")
    (image,) = list(srv.catalog.images)
    ring = [[2.25, 5.5], [20.0, 5.0], [20.5, 30.0], [2.0, 30.25], [2.25, 5.5]]
    body = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"label": "liver", "slice": 1}}
    r = post(srv, f"/api/v1/images/{image}/annotations?crs=pixel", body)
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    (got,) = decode(tile(srv, image, 0, 0, 0, params={"slice": 1}).content)
    assert got["id"] == aid and got["geometry"]["type"] == "Polygon"
    shell = np.asarray(got["geometry"]["coordinates"][0], dtype=float) / 16  # units -> pixels
    tolerance = 0.5 + 0.5 / 16  # half a screen pixel of simplification, half a unit of rounding
    assert shapely.hausdorff_distance(shapely.Polygon(shell), shapely.Polygon(ring)) <= tolerance
    assert decode(tile(srv, image, 0, 0, 0, params={"slice": 0}).content) == []
    coronal = {"slice": 20, "plane": "coronal"}
    (cut,) = decode(tile(srv, image, 0, 0, 0, params=coronal).content)
    listed = srv.get(f"/api/v1/images/{image}/annotations", params={"crs": "pixel", **coronal}).json()
    (line,) = [f for f in listed["features"] if f["id"] == aid]
    expected = shapely.geometry.shape(line["geometry"])
    assert cut["id"] == aid and cut["geometry"]["type"] in ("LineString", "MultiLineString")
    decoded = shapely.geometry.shape(cut["geometry"])
    pixels = shapely.transform(decoded, lambda c: c / 16)
    assert shapely.hausdorff_distance(pixels, expected) <= tolerance
    for bad in ({}, {"slice": 3}, {"slice": 1, "plane": "oblique"}, {"slice": "x"}):
        r = tile(srv, image, 0, 0, 0, params=bad)
        assert r.status_code == 400, (bad, r.text)
