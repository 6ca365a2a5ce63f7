"""GeoPackage and FlatGeobuf export and import, read back by GDAL's ogrinfo and by pyogrio."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import pytest
import requests
import shapely
from pyproj import Transformer

from tests.test_export_geojson import IMAGE, _create_some, _max_diff, ogr_read
from tileserver.cli import main as cli_main

FORMATS = {  # format -> (GDAL driver name, media type, file suffix)
    "gpkg": ("GPKG", "application/geopackage+sqlite3", ".gpkg"),
    "fgb": ("FlatGeobuf", "application/vnd.flatgeobuf", ".fgb"),
}
# ogrinfo prints 15 significant digits: 1e-8 m at northings of 3.7e6 m
OGRINFO_TOL = 1e-8
TO_WGS84 = Transformer.from_crs("EPSG:32616", "EPSG:4326", always_xy=True)


@pytest.fixture
def geo_copy(tmp_path: Path, geo_dir: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(geo_dir / "sample_geotiff.tif", folder / "sample_geotiff.tif")
    return folder


def _headers(server: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def _import(server: Any, fmt: str, body: bytes, extra: str = "") -> requests.Response:
    url = f"{server.url}/api/v1/images/{IMAGE}/import?format={fmt}{extra}"
    return requests.post(url, data=body, headers=_headers(server), timeout=60)


def _create_all(server: Any) -> None:
    """A polygon with a hole (with attributes), a point, a line, and a tag (no geometry)."""
    _create_some(server)
    tag = {"type": "Feature", "geometry": None,
           "properties": {"label": "cloudy", "kind": "tag", "attributes": {"cover": 0.5}}}  # fmt: skip
    r = requests.post(f"{server.url}/api/v1/images/{IMAGE}/annotations", json=tag,
                      headers=_headers(server), timeout=60)  # fmt: skip
    assert r.status_code == 201, r.text


def _stored(server: Any) -> dict[int, shapely.Geometry]:
    """Each stored annotation's geometry in EPSG:32616, the image's CRS (tags have none)."""
    r = server.get(f"/api/v1/images/{IMAGE}/annotations?crs=EPSG:32616&limit=10000")
    assert r.status_code == 200
    features = r.json()["features"]
    return {f["id"]: shapely.geometry.shape(f["geometry"]) for f in features if f["geometry"]}


def _ogr_driver(path: Path) -> str:
    out = subprocess.run(["ogrinfo", "-ro", "-so", str(path)], check=True, capture_output=True,
                         text=True).stdout  # fmt: skip
    return out.split("using driver `", 1)[1].split("'", 1)[0]


def _same(a: shapely.Geometry, b: shapely.Geometry, tol: float) -> None:
    """The same shape to ``tol`` vertex by vertex, in the same order."""
    assert a.geom_type == b.geom_type
    assert _max_diff(a, b) <= tol


def _to_wgs84(geom: shapely.Geometry) -> shapely.Geometry:
    return shapely.transform(geom, lambda c: np.column_stack(TO_WGS84.transform(c[:, 0], c[:, 1])))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_read_by_ogrinfo_and_pyogrio(
    fmt: str, serve_dirs: Any, geo_copy: Path, tmp_path: Path
) -> None:
    driver, media_type, suffix = FORMATS[fmt]
    server = serve_dirs(geo_copy)
    _create_all(server)
    stored = _stored(server)  # id -> geometry in EPSG:32616, the image's CRS
    r = server.get(f"/api/v1/images/{IMAGE}/export?format={fmt}")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == media_type
    assert r.headers["Content-Disposition"] == f'attachment; filename="{IMAGE}{suffix}"'
    path = tmp_path / f"out{suffix}"
    path.write_bytes(r.content)

    # GDAL's command-line reader: the driver, the image's CRS, every field, exact coordinates
    assert _ogr_driver(path) == driver
    srs, feats = ogr_read(path)
    assert 'ID["EPSG",32616]' in srs
    assert len(feats) == 4
    by_label = {fields["label"]: (fields, geom) for fields, geom in feats}
    assert set(by_label) == {"building/house", "tree", "road", "cloudy"}
    house, house_geom = by_label["building/house"]
    assert json.loads(house["attributes"]) == {"floors": 2}
    assert house["kind"] == "polygon" and house["status"] == "draft"
    assert house["author"] == "admin" and house["created_at"] and house["version"] == "1"
    assert len(house_geom.interiors) == 1
    assert by_label["tree"][0]["status"] == "submitted"
    assert by_label["cloudy"][1] is None and json.loads(by_label["cloudy"][0]["attributes"]) == {
        "cover": 0.5
    }
    for fields, geom in feats:
        if geom is not None:
            _same(geom, stored[int(fields["id"])], 1e-9)
    assert {by_label[k][1].geom_type for k in ("building/house", "tree", "road")} == {
        "Polygon", "Point", "LineString"}  # fmt: skip

    # pyogrio (GDAL as a library): one layer of mixed geometry type in EPSG:32616
    meta, _, wkb, fields = pyogrio.raw.read(str(path))
    assert meta["crs"] == "EPSG:32616" and meta["geometry_type"] == "Unknown"
    columns = dict(zip(meta["fields"], fields, strict=True))
    for i, fid in enumerate(columns["id"].tolist()):
        if wkb[i] is None:
            assert fid not in stored
            continue
        _same(shapely.from_wkb(wkb[i]), stored[fid], 1e-9)

    # WGS84: longitude/latitude, as an independent pyproj transform gives them
    r = server.get(f"/api/v1/images/{IMAGE}/export?format={fmt}&crs=world")
    assert r.status_code == 200, r.text
    wgs = tmp_path / f"wgs{suffix}"
    wgs.write_bytes(r.content)
    srs, feats = ogr_read(wgs)
    assert 'ID["EPSG",4326]' in srs
    for fields, geom in feats:
        if geom is not None:
            _same(geom, _to_wgs84(stored[int(fields["id"])]), 1e-9)
    meta, _, wkb, fields = pyogrio.raw.read(str(wgs))
    assert meta["crs"] == "EPSG:4326"
    for fid, g in zip(fields[list(meta["fields"]).index("id")].tolist(), wkb, strict=True):
        if g is not None:
            _same(shapely.from_wkb(g), _to_wgs84(stored[fid]), 1e-9)

    # filters and options as for GeoJSON
    r = server.get(f"/api/v1/images/{IMAGE}/export?format={fmt}&labels=building")
    filtered = tmp_path / f"filtered{suffix}"
    filtered.write_bytes(r.content)
    assert [f["label"] for f, _ in ogr_read(filtered)[1]] == ["building/house"]
    r = server.get(f"/api/v1/images/{IMAGE}/export?format={fmt}&crs=foo")
    assert r.status_code == 400 and "crs" in r.json()["message"]
    r = server.get(f"/api/v1/images/{IMAGE}/export?format={fmt}&segmentation=rle")
    assert r.status_code == 400


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_reimport_gives_the_same_annotations(fmt: str, serve_dirs: Any, geo_copy: Path) -> None:
    server = serve_dirs(geo_copy)
    _create_all(server)
    before = server.get(f"/api/v1/images/{IMAGE}/export?format=geojson&crs=image").json()
    # metres; WGS84 and WebMercator are reprojections
    for crs, tol in (("image", 1e-9), ("world", 1e-6), ("EPSG:3857", 1e-6)):
        body = server.get(f"/api/v1/images/{IMAGE}/export?format={fmt}&crs={crs}").content
        fresh = serve_dirs(geo_copy)
        r = _import(fresh, fmt, body, "&dry_run=1")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["would_create"] == 4 and report["rejected"] == []
        assert report["created"] == 0 and report["dry_run"] is True
        assert report["crs"] == {"image": "EPSG:32616", "world": "world"}.get(crs, crs)
        assert report["labels"] == {"building/house": 1, "tree": 1, "road": 1, "cloudy": 1}
        assert fresh.get(f"/api/v1/images/{IMAGE}/annotations").json()["features"] == []

        r = _import(fresh, fmt, body)
        assert r.status_code == 201, r.text
        assert r.json()["created"] == 4
        after = fresh.get(f"/api/v1/images/{IMAGE}/export?format=geojson&crs=image").json()
        _assert_same_annotations(before, after, tol)


def _assert_same_annotations(before: dict[str, Any], after: dict[str, Any], tol: float) -> None:
    def by_label(doc: dict[str, Any]) -> list[dict[str, Any]]:
        def key(f: dict[str, Any]) -> tuple[str, str]:
            props = f["properties"]
            return props["label"], json.dumps(props["attributes"], sort_keys=True)

        return sorted(doc["features"], key=key)

    for a, b in zip(by_label(before), by_label(after), strict=True):
        for key in ("label", "kind", "status", "attributes"):
            assert a["properties"][key] == b["properties"][key]
        if a["geometry"] is None:
            assert b["geometry"] is None
            continue
        ga, gb = shapely.geometry.shape(a["geometry"]), shapely.geometry.shape(b["geometry"])
        _same(ga, gb, tol)


def test_bad_uploads_answer_400(serve_dirs: Any, geo_copy: Path) -> None:
    server = serve_dirs(geo_copy)
    _create_all(server)
    gpkg = server.get(f"/api/v1/images/{IMAGE}/export?format=gpkg").content
    fgb = server.get(f"/api/v1/images/{IMAGE}/export?format=fgb").content
    no_crs = server.get(f"/api/v1/images/{IMAGE}/export?format=gpkg&crs=pixel").content
    cases = [
        ("gpkg", b"garbage, not a database" * 10, "not a GeoPackage"),
        ("fgb", b"garbage" * 10, "not a FlatGeobuf"),
        ("gpkg", fgb, "not a GeoPackage"),
        ("fgb", gpkg, "not a FlatGeobuf"),
        ("gpkg", gpkg[: len(gpkg) // 3], "cannot read the GeoPackage"),
        ("fgb", fgb[: len(fgb) // 2], "cannot read the FlatGeobuf"),
        ("gpkg", no_crs, "names no CRS"),
    ]
    for fmt, body, reason in cases:
        r = _import(server, fmt, body, "&dry_run=1")
        assert r.status_code == 400, (fmt, reason, r.text)
        assert reason in r.json()["message"], r.text
    # the pixel export imports when its CRS is named
    r = _import(server, "gpkg", no_crs, "&dry_run=1&crs=pixel")
    assert r.status_code == 200 and r.json()["would_create"] == 4, r.text


def test_volume_answers_400(serve_dirs: Any, shared_data: Path, geo_copy: Path) -> None:
    server = serve_dirs(shared_data / "dicom" / "ct_dcmqi_23x38x3")
    (image,) = list(server.catalog.images)
    gpkg = serve_dirs(geo_copy).get(f"/api/v1/images/{IMAGE}/export?format=gpkg").content
    for fmt in FORMATS:
        r = server.get(f"/api/v1/images/{image}/export?format={fmt}")
        assert r.status_code == 400
        message = r.json()["message"]
        assert "dicom-seg" in message and "nifti" in message
        url = f"{server.url}/api/v1/images/{image}/import?format={fmt}"
        r = requests.post(url, data=gpkg, headers=_headers(server), timeout=60)
        assert r.status_code == 400 and "dicom-seg" in r.json()["message"]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_cli_export_and_import(fmt: str, geo_copy: Path, tmp_path: Path, shared_data: Path) -> None:
    driver, _, suffix = FORMATS[fmt]
    src = shared_data / "vector" / "geotiff_labels.geojson"
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    common = ["--image", IMAGE, "--data", str(geo_copy)]
    assert cli_main(["import", str(src), *common, "--format", "geojson", "--db", db,
                     "--label", "building"]) == 0  # fmt: skip
    out = tmp_path / f"cli{suffix}"
    assert cli_main(["export", *common, "--format", fmt, "--db", db, "-o", str(out)]) == 0
    assert _ogr_driver(out) == driver
    srs, feats = ogr_read(out)
    assert 'ID["EPSG",32616]' in srs and len(feats) == 43
    buildings = json.loads(src.read_text())["features"]
    by_osm = {json.loads(f["attributes"])["osm_id"]: g for f, g in feats}
    meta, _, wkb, fields = pyogrio.raw.read(str(out))
    attributes = fields[list(meta["fields"]).index("attributes")]
    exact = {
        json.loads(a)["osm_id"]: shapely.from_wkb(g) for a, g in zip(attributes, wkb, strict=True)
    }
    for b in buildings:  # in EPSG:32616 too: the same vertices, exterior counter-clockwise
        truth = shapely.orient_polygons(shapely.geometry.shape(b["geometry"]), exterior_cw=False)
        _same(by_osm[b["properties"]["osm_id"]], truth, OGRINFO_TOL)
        _same(exact[b["properties"]["osm_id"]], truth, 1e-9)

    # imported again through the CLI into another database: dry run, then for real
    db2 = f"sqlite:///{tmp_path / 'cli2.db'}"
    again = [str(out), *common, "--format", fmt, "--db", db2]
    assert cli_main(["import", *again, "--dry-run"]) == 0
    geojson_out = tmp_path / "empty.geojson"
    assert cli_main(["export", *common, "--format", "geojson", "--db", db2,
                     "-o", str(geojson_out)]) == 0  # fmt: skip
    assert json.loads(geojson_out.read_text())["features"] == []
    assert cli_main(["import", *again]) == 0
    first, second = tmp_path / "first.geojson", tmp_path / "second.geojson"
    for db_url, path in ((db, first), (db2, second)):
        assert cli_main(["export", *common, "--format", "geojson", "--db", db_url,
                         "--crs", "image", "-o", str(path)]) == 0  # fmt: skip
    _assert_same_annotations(json.loads(first.read_text()), json.loads(second.read_text()), 1e-9)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_import_a_file_written_by_ogr2ogr(
    fmt: str, serve_dirs: Any, geo_copy: Path, tmp_path: Path, shared_data: Path
) -> None:
    """The real building outlines converted by the system's GDAL (another writer than ours):
    every field not ours is kept in attributes, every vertex comes in unchanged."""
    driver, _, suffix = FORMATS[fmt]
    src = shared_data / "vector" / "geotiff_labels.geojson"
    converted = tmp_path / f"buildings{suffix}"
    subprocess.run(["ogr2ogr", "-f", driver, str(converted), str(src)], check=True,
                   capture_output=True)  # fmt: skip
    server = serve_dirs(geo_copy)
    r = _import(server, fmt, converted.read_bytes(), "&label=building&dry_run=1")
    assert r.status_code == 200, r.text
    assert r.json()["would_create"] == 43 and r.json()["crs"] == "EPSG:32616"
    r = _import(server, fmt, converted.read_bytes(), "&label=building")
    assert r.status_code == 201 and r.json()["created"] == 43, r.text
    doc = server.get(f"/api/v1/images/{IMAGE}/export?format=geojson&crs=image").json()
    by_osm = {f["properties"]["attributes"]["osm_id"]: f for f in doc["features"]}
    for b in json.loads(src.read_text())["features"]:
        mine = by_osm[b["properties"]["osm_id"]]
        assert mine["properties"]["label"] == "building"
        assert mine["properties"]["attributes"]["building"] == b["properties"]["building"]
        truth = shapely.orient_polygons(shapely.geometry.shape(b["geometry"]), exterior_cw=False)
        _same(shapely.geometry.shape(mine["geometry"]), truth, 1e-9)


def test_image_without_georeference_writes_pixels_without_crs(
    serve_dirs: Any, make_raster: Any, tmp_path: Path
) -> None:
    path = make_raster(np.zeros((1, 300, 400), dtype=np.uint8), name="plain.tif", crs=None)
    server = serve_dirs(path.parent)
    image = server.image_id("plain.tif")
    ring = [[10.5, 20.25], [110.0, 20.25], [110.0, 90.75], [10.5, 90.75], [10.5, 20.25]]
    feat = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"label": "cell"}}  # fmt: skip
    r = requests.post(f"{server.url}/api/v1/images/{image}/annotations?crs=pixel", json=feat,
                      headers=_headers(server), timeout=60)  # fmt: skip
    assert r.status_code == 201, r.text
    for fmt, (_, _, suffix) in FORMATS.items():
        r = server.get(f"/api/v1/images/{image}/export?format={fmt}")
        assert r.status_code == 200, r.text
        out = tmp_path / f"plain{suffix}"
        out.write_bytes(r.content)
        meta, _, wkb, _ = pyogrio.raw.read(str(out))
        assert meta["crs"] is None
        _same(shapely.from_wkb(wkb[0]), shapely.Polygon(ring), 1e-9)
        assert (
            server.get(f"/api/v1/images/{image}/export?format={fmt}&crs=EPSG:3857").status_code
            == 400
        )
        # read back without a CRS: the image's own coordinates
        url = f"{server.url}/api/v1/images/{image}/import?format={fmt}&dry_run=1"
        r = requests.post(url, data=out.read_bytes(), headers=_headers(server), timeout=60)
        assert r.status_code == 200 and r.json()["would_create"] == 1, r.text


def test_openapi_lists_the_formats() -> None:
    from tileserver.web.openapi import openapi_document

    paths = openapi_document()["paths"]
    for path, method in (("/api/v1/images/{id}/export", "get"),
                         ("/api/v1/images/{id}/import", "post")):  # fmt: skip
        (fmt,) = [p for p in paths[path][method]["parameters"] if p.get("name") == "format"]
        assert {"gpkg", "fgb"} <= set(fmt["schema"]["enum"])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_kind_round_trips(fmt: str) -> None:
    """Masks (their run lengths as JSON text beside the outline), named keypoints, boxes and
    multipolygons come back as they were (FlatGeobuf's spatial index reorders features)."""
    import io

    from annot.export.gis import FLATGEOBUF, GPKG, export_gis
    from annot.features import content_from_feature
    from annot.frames import frame_from_metadata
    from annot.imports.geojson import plan
    from annot.imports.gis import read_gis
    from annot.model import Annotation, Mask
    from annot.taxonomy import Project

    extra = {"crs": {"epsg": 32616, "wkt": ""},
             "transform": [0.3, 0.0, 733601.0, 0.0, -0.3, 3725139.0]}  # fmt: skip
    frame = frame_from_metadata(1500, 1500, extra)
    arr = np.zeros((20, 30), dtype=bool)
    arr[2:18, 4:26] = True
    arr[5, 5:9] = False
    square = [[[1.5, 1.5], [9.0, 1.5], [9.0, 5.0], [1.5, 5.0], [1.5, 1.5]]]
    feats = [
        {"geometry": None, "properties": {"label": "blob",
                                          "mask": Mask.from_array(arr, 40, 400).to_json()}},
        {"geometry": {"type": "MultiPoint", "coordinates": [[10.5, 10.5], [20.0, 30.25]]},
         "properties": {"label": "face", "keypoints": ["eye", "nose"]}},
        {"geometry": {"type": "Polygon", "coordinates": square},
         "properties": {"label": "car", "kind": "box"}},
        {"geometry": {"type": "MultiPolygon", "coordinates": [
            [[[100, 100], [109, 100], [109, 105], [100, 100]]],
            [[[200, 200], [209, 200], [209, 205], [200, 200]]]]},
         "properties": {"label": "field", "attributes": {"crop": "wheat", "ha": 1.5}}},
    ]  # fmt: skip
    contents = [content_from_feature({"type": "Feature", **f}, frame, "pixel") for f in feats]
    anns = [Annotation(i + 1, "img", "default", c, "me", "t", "me", "t", 1)
            for i, c in enumerate(contents)]  # fmt: skip
    out = io.BytesIO()
    gis = {"gpkg": GPKG, "fgb": FLATGEOBUF}[fmt]
    export_gis(anns, frame, gis, out)
    collection, crs = read_gis(out.getvalue(), frame, gis, None)
    result = plan(collection, frame, Project("default"), crs)
    assert result.ok, result.rejected
    back = {c.label: c for c in result.contents}
    assert set(back) == {c.label for c in contents}
    for c in contents:
        b = back[c.label]
        assert (b.kind, b.keypoints, b.mask, b.attributes) == (
            c.kind, c.keypoints, c.mask, c.attributes)  # fmt: skip
        if c.geometry is None:
            assert b.geometry is None
        else:
            assert b.geometry is not None
            _same(shapely.normalize(b.geometry), shapely.normalize(c.geometry), 1e-9)
