"""GeoJSON export and import, checked with GDAL's ogrinfo and against the real building file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import shapely
from pyproj import Transformer

from annot.export.geojson import _split_antimeridian
from annot.storage import open_store
from annot.taxonomy import Label
from tileserver.cli import main as cli_main

IMAGE = "sample-geotiff"


@pytest.fixture
def geo_copy(tmp_path: Path, geo_dir: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(geo_dir / "sample_geotiff.tif", folder / "sample_geotiff.tif")
    return folder


@pytest.fixture
def buildings(shared_data: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (shared_data / "vector" / "geotiff_labels.geojson").read_text()
    )
    return data


def _auth(server: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def _post(server: Any, path: str, body: Any) -> requests.Response:
    return requests.post(server.url + path, json=body, headers=_auth(server), timeout=60)


def _feature(geom: dict[str, Any], label: str, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geom, "properties": {"label": label, **props}}


# In EPSG:32616 inside the image (733601..734051, 3724689..3725139).
SQUARE_CW = [[733700.125, 3725000.5], [733750.25, 3725000.5], [733750.25, 3724950.75],
             [733700.125, 3724950.75], [733700.125, 3725000.5]]  # fmt: skip
HOLE = [[733710.0, 3724990.0], [733720.0, 3724990.0], [733720.0, 3724980.0],
        [733710.0, 3724980.0], [733710.0, 3724990.0]]  # fmt: skip


def _create_some(server: Any) -> list[dict[str, Any]]:
    feats = [
        _feature({"type": "Polygon", "coordinates": [SQUARE_CW, HOLE]}, "building/house",
                 attributes={"floors": 2}),
        _feature({"type": "Point", "coordinates": [733800.3, 3724800.7]}, "tree",
                 status="submitted"),
        _feature({"type": "LineString", "coordinates": [[733610.0, 3724700.0],
                                                        [734000.0, 3725100.0]]}, "road"),
    ]  # fmt: skip
    out = []
    for f in feats:
        r = _post(server, f"/api/v1/images/{IMAGE}/annotations?crs=EPSG:32616", f)
        assert r.status_code == 201, r.text
        out.append(r.json())
    return out


def _stored(server: Any, crs: str = "EPSG:32616") -> dict[int, shapely.Geometry]:
    r = server.get(f"/api/v1/images/{IMAGE}/annotations?crs={crs}&limit=10000")
    assert r.status_code == 200
    return {f["id"]: shapely.geometry.shape(f["geometry"]) for f in r.json()["features"]}


def ogr_read(path: Path) -> tuple[str, list[tuple[dict[str, str], shapely.Geometry]]]:
    """The layer SRS WKT and each feature's fields and geometry, as GDAL's ogrinfo reads them."""
    out = subprocess.run(
        ["ogrinfo", "-ro", "-al", "-geom=ISO_WKT", "-wkt_format", "WKT2", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    srs = out.split("Layer SRS WKT:", 1)[1].split("\nData axis", 1)[0] if "Layer SRS" in out else ""
    features = []
    for block in re.split(r"\nOGRFeature\([^)]*\):\d+\n", out)[1:]:
        fields: dict[str, str] = {}
        geom = None
        for line in block.splitlines():
            m = re.match(r"\s+(\w+) \([^)]*\) = (.*)$", line)
            if m:
                fields[m.group(1)] = m.group(2)
            elif re.match(r"\s+(POINT|LINESTRING|POLYGON|MULTI)", line):
                geom = shapely.from_wkt(line.strip())
        features.append((fields, geom))
    return srs, features


def _max_diff(a: shapely.Geometry, b: shapely.Geometry) -> float:
    ca, cb = shapely.get_coordinates(a), shapely.get_coordinates(b)
    assert ca.shape == cb.shape
    return float(np.abs(ca - cb).max())


def _same_ring_set(a: shapely.Geometry, b: shapely.Geometry, tol: float) -> None:
    """Equal as shapes (rings may start elsewhere or turn the other way)."""
    assert a.geom_type == b.geom_type
    assert shapely.equals_exact(shapely.normalize(a), shapely.normalize(b), tolerance=tol)


def test_export_wgs84_read_by_ogrinfo(serve_dirs: Any, geo_copy: Path, tmp_path: Path) -> None:
    server = serve_dirs(geo_copy)
    created = _create_some(server)
    r = server.get(f"/api/v1/images/{IMAGE}/export?format=geojson")
    assert r.status_code == 200, r.text
    assert "attachment" in r.headers["Content-Disposition"]
    assert r.headers["Content-Type"].startswith("application/geo+json")
    doc = r.json()
    assert "crs" not in doc
    path = tmp_path / "out.geojson"
    path.write_bytes(r.content)

    # RFC 7946 right-hand rule: exterior counter-clockwise, holes clockwise
    poly = next(f for f in doc["features"] if f["geometry"]["type"] == "Polygon")
    rings = poly["geometry"]["coordinates"]
    assert shapely.LinearRing(rings[0]).is_ccw and not shapely.LinearRing(rings[1]).is_ccw
    props = poly["properties"]
    assert props["label"] == "building/house" and props["label_path"] == ["building", "house"]
    assert props["attributes"] == {"floors": 2} and props["author"] == "admin"
    for key in ("status", "created_at", "updated_at", "id", "version"):
        assert key in props

    srs, feats = ogr_read(path)
    assert "WGS 84" in srs
    assert len(feats) == 3
    stored = _stored(server)
    to_wgs = Transformer.from_crs("EPSG:32616", "EPSG:4326", always_xy=True)
    for fields, geom in feats:
        truth = shapely.transform(stored[int(fields["id"])], lambda c: np.column_stack(
            to_wgs.transform(c[:, 0], c[:, 1])))  # fmt: skip
        _same_ring_set(geom, truth, 1e-9)
    assert {int(f["id"]) for f, _ in feats} == {c["id"] for c in created}

    # filters
    r = server.get(f"/api/v1/images/{IMAGE}/export?format=geojson&labels=building")
    assert [f["properties"]["label"] for f in r.json()["features"]] == ["building/house"]
    r = server.get(f"/api/v1/images/{IMAGE}/export?format=geojson&status=submitted")
    assert [f["properties"]["label"] for f in r.json()["features"]] == ["tree"]
    assert server.get(f"/api/v1/images/{IMAGE}/export?format=shp").status_code == 400
    assert server.get(f"/api/v1/images/{IMAGE}/export?format=geojson&crs=foo").status_code == 400
    assert server.get(f"/api/v1/images/{IMAGE}/export?format=geojson&status=x").status_code == 400


def test_export_image_crs_named_for_gdal_and_reimport_is_identical(
    serve_dirs: Any, geo_copy: Path, tmp_path: Path
) -> None:
    server = serve_dirs(geo_copy)
    _create_some(server)
    r = server.get(f"/api/v1/images/{IMAGE}/export?format=geojson&crs=image")
    doc = r.json()
    assert doc["crs"] == {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}}
    path = tmp_path / "utm.geojson"
    path.write_bytes(r.content)
    srs, feats = ogr_read(path)
    assert 'ID["EPSG",32616]' in srs
    stored = _stored(server)
    for fields, geom in feats:
        _same_ring_set(geom, stored[int(fields["id"])], 1e-9)

    # another CRS by EPSG code
    r = server.get(f"/api/v1/images/{IMAGE}/export?format=geojson&crs=EPSG:3857")
    assert r.json()["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::3857"

    # re-import both exports into a fresh server: the same annotations
    for exported, tol in ((doc, 1e-9), (server.get(
            f"/api/v1/images/{IMAGE}/export?format=geojson").json(), 1e-6)):  # fmt: skip
        fresh = serve_dirs(geo_copy)
        r = _post(fresh, f"/api/v1/images/{IMAGE}/import?format=geojson", exported)
        assert r.status_code == 201, r.text
        assert r.json()["created"] == 3
        again = fresh.get(f"/api/v1/images/{IMAGE}/export?format=geojson&crs=image").json()
        before = sorted(doc["features"], key=lambda f: f["properties"]["label"])
        after = sorted(again["features"], key=lambda f: f["properties"]["label"])
        for a, b in zip(before, after, strict=True):
            for key in ("label", "kind", "status", "attributes"):
                assert a["properties"][key] == b["properties"][key]
            ga, gb = shapely.geometry.shape(a["geometry"]), shapely.geometry.shape(b["geometry"])
            assert _max_diff(ga, gb) <= tol


def test_antimeridian_split() -> None:
    crossing = shapely.Polygon([(179.0, 0.0), (-179.0, 0.0), (-179.0, 1.0), (179.0, 1.0)])
    split = _split_antimeridian(crossing)
    assert split.geom_type == "MultiPolygon" and len(split.geoms) == 2
    assert split.area == pytest.approx(2.0)
    xs = shapely.get_coordinates(split)[:, 0]
    assert xs.min() >= -180 and xs.max() <= 180
    line = _split_antimeridian(shapely.LineString([(170.0, 0.0), (-170.0, 0.0)]))
    assert line.geom_type == "MultiLineString" and line.length == pytest.approx(20.0)
    same = shapely.Polygon([(10.0, 0.0), (11.0, 0.0), (11.0, 1.0)])
    assert _split_antimeridian(same) is same


def test_antimeridian_round_trip(tmp_path: Path, make_raster: Any) -> None:
    """A polygon across the antimeridian on a UTM zone 60 image exports as two parts and
    imports as the one polygon again."""
    from rasterio.transform import from_origin

    from annot.export.geojson import feature_collection
    from annot.frames import frame_from_metadata
    from annot.imports.geojson import plan
    from annot.model import Annotation, Content, Kind
    from annot.taxonomy import Project

    # EPSG:32660 (UTM 60N, central meridian 177E): 180E is near easting 830 km here
    extra = {"crs": {"epsg": 32660, "wkt": ""},
             "transform": list(from_origin(700_000.0, 1_000_000.0, 100.0, 100.0))[:6]}  # fmt: skip
    frame = frame_from_metadata(2000, 2000, extra)
    poly = shapely.Polygon([(800_000, 950_000), (860_000, 950_000), (860_000, 960_000),
                            (800_000, 960_000)])  # fmt: skip
    a = Annotation(1, "img", "default", Content(Kind.polygon, "ice", poly), "me", "t", "me", "t", 1)
    doc = json.loads(export_geojson_bytes(feature_collection([a], frame)))
    geom = doc["features"][0]["geometry"]
    assert geom["type"] == "MultiPolygon" and len(geom["coordinates"]) == 2
    result = plan(doc, frame, Project("default"))
    assert result.ok, result.rejected
    (content,) = result.contents
    assert content.kind is Kind.polygon
    assert content.geometry is not None
    # every original vertex comes back (to a micrometre); the split adds two vertices on the
    # antimeridian, interpolated in longitude/latitude, so the edges they sit on bend slightly
    back = shapely.get_coordinates(content.geometry)
    for v in shapely.get_coordinates(poly):
        assert np.abs(back - v).max(axis=1).min() < 1e-6
    assert len(back) == len(shapely.get_coordinates(poly)) + 2
    assert content.geometry.symmetric_difference(poly).area < 2e-3 * poly.area


def export_geojson_bytes(doc: dict[str, Any]) -> bytes:
    from annot.features import dumps

    return dumps(doc)


def test_import_real_buildings(serve_dirs: Any, geo_copy: Path, buildings: dict[str, Any]) -> None:
    server = serve_dirs(geo_copy)
    url = f"/api/v1/images/{IMAGE}/import?format=geojson&label=building"
    r = _post(server, url + "&dry_run=1", buildings)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["would_create"] == 43 and report["rejected"] == [] and report["created"] == 0
    assert report["crs"] == "EPSG:32616"
    assert server.get(f"/api/v1/images/{IMAGE}/annotations").json()["features"] == []

    r = _post(server, url, buildings)
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 43
    doc = server.get(f"/api/v1/images/{IMAGE}/export?format=geojson&crs=image").json()
    assert len(doc["features"]) == 43
    by_osm = {f["properties"]["attributes"]["osm_id"]: f for f in doc["features"]}
    for f in buildings["features"]:
        mine = by_osm[f["properties"]["osm_id"]]
        assert mine["properties"]["attributes"]["building"] == "yes"
        _same_ring_set(
            shapely.geometry.shape(mine["geometry"]), shapely.geometry.shape(f["geometry"]), 1e-9
        )


def test_import_rejections_in_a_locked_project(
    serve_dirs: Any, geo_copy: Path, buildings: dict[str, Any]
) -> None:
    server = serve_dirs(geo_copy)
    assert _post(server, f"/api/v1/images/{IMAGE}/annotations?crs=EPSG:32616",
                 _feature({"type": "Point", "coordinates": [733800, 3724800]}, "building"),
                 ).status_code == 201  # fmt: skip
    r = requests.patch(server.url + "/api/v1/projects/default", json={"locked": True},
                       headers=_auth(server), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    bowtie = [[733700, 3725000], [733750, 3724950], [733750, 3725000], [733700, 3724950],
              [733700, 3725000]]  # fmt: skip
    good = buildings["features"][0]
    bad = {
        "type": "FeatureCollection",
        "crs": buildings["crs"],
        "features": [
            {**good, "properties": {"label": "building"}},
            {"type": "Feature", "id": "bow", "geometry": {"type": "Polygon",
             "coordinates": [bowtie]}, "properties": {"label": "building"}},
            {**good, "id": "car1", "properties": {"label": "car"}},
        ],
    }  # fmt: skip
    url = f"/api/v1/images/{IMAGE}/import?format=geojson"
    r = _post(server, url + "&dry_run=1", bad)
    assert r.status_code == 200
    report = r.json()
    rejected = {x["index"]: x for x in report["rejected"]}
    assert set(rejected) == {1, 2}
    assert "Self-intersection" in rejected[1]["reason"] and rejected[1]["id"] == "bow"
    assert "car" in rejected[2]["reason"] and "locked" in rejected[2]["reason"]
    assert report["valid"] == 1 and report["would_create"] == 0
    r = _post(server, url, bad)
    assert r.status_code == 422
    assert len(r.json()["rejected"]) == 2
    assert len(server.get(f"/api/v1/images/{IMAGE}/annotations").json()["features"]) == 1


def test_cli_import_and_export(geo_copy: Path, tmp_path: Path, shared_data: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    src = shared_data / "vector" / "geotiff_labels.geojson"
    common = ["--image", IMAGE, "--format", "geojson", "--data", str(geo_copy), "--db", db]
    assert cli_main(["import", str(src), *common, "--label", "building", "--dry-run"]) == 0
    assert cli_main(["import", str(src), *common, "--label", "building"]) == 0
    out = tmp_path / "cli.geojson"
    assert cli_main(["export", *common, "-o", str(out), "--crs", "image"]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["features"]) == 43
    _, feats = ogr_read(out)
    assert len(feats) == 43
    # a subprocess as a user runs it, with its progress bar on stderr
    proc = subprocess.run(
        [sys.executable, "-m", "tileserver.cli", "export", *common, "-o", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "43 annotation(s) written" in proc.stderr
    assert "crs" not in json.loads(out.read_text())


def test_cli_import_and_export_follow_the_images_project(
    geo_copy: Path, tmp_path: Path, shared_data: Path
) -> None:
    """An image moved to another project: the CLI stores its annotations in that project
    (grows that taxonomy, not default's) and exports with that project's taxonomy."""
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    store = open_store(db)
    store.create_project("survey")
    store.put_label("survey", Label("roof", "#123456"))
    store.move_image(IMAGE, "survey")
    store.close()
    src = shared_data / "vector" / "geotiff_labels.geojson"
    common = ["--image", IMAGE, "--format", "geojson", "--data", str(geo_copy), "--db", db]
    assert cli_main(["import", str(src), *common, "--label", "building"]) == 0
    store = open_store(db)
    stored = store.query(IMAGE, limit=100)
    assert len(stored) == 43 and {a.project for a in stored} == {"survey"}
    assert "building" not in store.get_project("default").labels
    store.close()
    out = tmp_path / "cli.coco.json"
    coco = [a if a != "geojson" else "coco" for a in common]
    assert cli_main(["export", *coco, "-o", str(out)]) == 0
    names = [c["name"] for c in json.loads(out.read_text())["categories"]]
    assert sorted(names) == ["building", "roof"], names  # survey's taxonomy (default has no roof)
