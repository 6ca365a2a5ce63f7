"""COCO export read back by pycocotools; COCO import."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import shapely
from PIL import Image
from pycocotools.coco import COCO

from annot.export.coco import _decode_string, rasterise, rle_decode, rle_encode
from annot.model import Mask
from tileserver.cli import main as cli_main

IMAGE = "sample-geotiff"
W = H = 900


@pytest.fixture
def geo_copy(tmp_path: Path, geo_dir: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(geo_dir / "sample_geotiff.tif", folder / "sample_geotiff.tif")
    return folder


def _post(server: Any, path: str, body: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {server.token}"}
    return requests.post(server.url + path, json=body, headers=headers, timeout=60)


MASK_ARRAY = np.zeros((40, 50), dtype=bool)
MASK_ARRAY[5:30, 10:45] = True
MASK_ARRAY[12:18, 20:25] = False
MASK = Mask.from_array(MASK_ARRAY, col=600, row=700)

SHAPES: list[dict[str, Any]] = [
    {"type": "Polygon", "coordinates": [[[10.25, 20.5], [200.75, 30.0], [150.0, 180.5],
                                         [10.25, 20.5]]]},
    {"type": "Polygon", "coordinates": [[[300, 300], [500, 300], [500, 500], [300, 500],
                                         [300, 300]],
                                        [[350, 350], [350, 400], [400, 400], [400, 350],
                                         [350, 350]]]},
    {"type": "MultiPolygon", "coordinates": [[[[600, 50], [700, 50], [650, 150], [600, 50]]],
                                             [[[720, 60], [800, 60], [800, 90], [720, 60]]]]},
]  # fmt: skip


def _create(server: Any) -> None:
    url = f"/api/v1/images/{IMAGE}/annotations?crs=pixel"
    for n, geom in enumerate(SHAPES):
        props = {"label": ["building/house", "pool", "field"][n], "attributes": {"n": n}}
        r = _post(server, url, {"type": "Feature", "geometry": geom, "properties": props})
        assert r.status_code == 201, r.text
    mask_props = {"label": "water", "mask": MASK.to_json()}
    r = _post(server, url, {"type": "Feature", "geometry": None, "properties": mask_props})
    assert r.status_code == 201, r.text
    point = {"type": "Point", "coordinates": [5, 5]}
    r = _post(server, url, {"type": "Feature", "geometry": point, "properties": {"label": "x"}})
    assert r.status_code == 201, r.text


def _load(doc: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = doc
    coco.createIndex()
    return coco


def _boundary_only(diff: np.ndarray, shape: shapely.Geometry) -> bool:
    """Every differing pixel's centre lies within a pixel of the shape's boundary."""
    rows, cols = np.nonzero(diff)
    centres = shapely.points(cols + 0.5, rows + 0.5)
    return bool((shapely.distance(centres, shape.boundary) <= 1.0).all())


def test_rle_round_trips() -> None:
    rng = np.random.default_rng(3)
    a = rng.random((37, 23)) > 0.5
    assert np.array_equal(rle_decode(rle_encode(a)), a)
    a[0, 0] = True
    assert rle_encode(a)["counts"][0] == 0
    from pycocotools import mask as mask_utils

    compressed = mask_utils.encode(np.asfortranarray(a.astype(np.uint8)))
    counts = compressed["counts"].decode()
    assert np.array_equal(rle_decode({"size": compressed["size"], "counts": counts}), a)
    assert sum(_decode_string(counts)) == a.size


def test_coco_export_read_by_pycocotools(serve_dirs: Any, geo_copy: Path) -> None:
    server = serve_dirs(geo_copy)
    _create(server)
    r = server.get(f"/api/v1/images/{IMAGE}/export?format=coco")
    assert r.status_code == 200, r.text
    assert "attachment" in r.headers["Content-Disposition"]
    doc = r.json()
    coco = _load(doc)
    assert coco.imgs[1]["width"] == W and coco.imgs[1]["height"] == H
    names = {c["name"]: c for c in doc["categories"]}
    assert {"building", "building/house", "pool", "field", "water", "x"} <= set(names)
    assert names["building/house"]["supercategory"] == "building"
    assert doc["info"]["skipped"] == 1  # the point
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(anns) == 4
    by_label = {coco.cats[a["category_id"]]["name"]: a for a in anns}

    # the mask: exactly our mask
    water = coco.annToMask(by_label["water"]).astype(bool)
    expected = np.zeros((H, W), dtype=bool)
    expected[700:740, 600:650] = MASK_ARRAY
    assert np.array_equal(water, expected)
    assert by_label["water"]["area"] == MASK_ARRAY.sum()

    # the polygon with a hole is RLE: exactly rasterio's rasterisation
    pool = coco.annToMask(by_label["pool"]).astype(bool)
    ours = rasterise(shapely.geometry.shape(SHAPES[1]), W, H)
    assert np.array_equal(pool, ours)
    # plain polygons: pycocotools rasterises them itself; equal but for boundary pixels
    for label, n in (("building/house", 0), ("field", 2)):
        ann = by_label[label]
        assert isinstance(ann["segmentation"], list)
        theirs = coco.annToMask(ann).astype(bool)
        ours = rasterise(shapely.geometry.shape(SHAPES[n]), W, H)
        diff = theirs ^ ours
        assert diff.sum() < 0.05 * ours.sum()
        assert _boundary_only(diff, shapely.geometry.shape(SHAPES[n]))
        assert ann["area"] == pytest.approx(shapely.geometry.shape(SHAPES[n]).area)

    # segmentation=rle: every mask equals rasterio's rasterisation exactly
    doc_rle = server.get(f"/api/v1/images/{IMAGE}/export?format=coco&segmentation=rle").json()
    coco = _load(doc_rle)
    for ann in coco.loadAnns(coco.getAnnIds()):
        label = coco.cats[ann["category_id"]]["name"]
        if label == "water":
            continue
        n = ["building/house", "pool", "field"].index(label)
        ours = rasterise(shapely.geometry.shape(SHAPES[n]), W, H)
        assert np.array_equal(coco.annToMask(ann).astype(bool), ours)


def test_masks_export_2d(serve_dirs: Any, geo_copy: Path) -> None:
    server = serve_dirs(geo_copy)
    _create(server)
    r = server.get(f"/api/v1/images/{IMAGE}/export?format=masks")
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        index = json.loads(zf.read("index.json"))
        files = {m["label"]: m["file"] for m in index["masks"]}
        assert set(files) == {"building/house", "pool", "field", "water"}
        assert index["skipped"] == 1
        water = np.asarray(Image.open(io.BytesIO(zf.read(files["water"])))) > 0
        expected = np.zeros((H, W), dtype=bool)
        expected[700:740, 600:650] = MASK_ARRAY
        assert np.array_equal(water, expected)
        pool = np.asarray(Image.open(io.BytesIO(zf.read(files["pool"])))) > 0
        assert np.array_equal(pool, rasterise(shapely.geometry.shape(SHAPES[1]), W, H))


def _full(mask_json: Any) -> np.ndarray:
    back = Mask.from_json(mask_json)
    full = np.zeros((H, W), dtype=bool)
    full[back.row : back.row + back.height, back.col : back.col + back.width] = back.to_array()
    return full


def test_coco_import_round_trip(serve_dirs: Any, geo_copy: Path, tmp_path: Path) -> None:
    server = serve_dirs(geo_copy)
    _create(server)
    doc = server.get(f"/api/v1/images/{IMAGE}/export?format=coco").json()
    fresh = serve_dirs(geo_copy)
    url = f"/api/v1/images/{IMAGE}/import?format=coco"
    r = _post(fresh, url + "&dry_run=1", doc)
    assert r.status_code == 200 and r.json()["would_create"] == 4, r.text
    r = _post(fresh, url, doc)
    assert r.status_code == 201, r.text
    got = fresh.get(f"/api/v1/images/{IMAGE}/annotations?crs=pixel").json()["features"]
    by_label = {f["properties"]["label"]: f for f in got}
    assert set(by_label) == {"building/house", "pool", "field", "water"}
    # masks come back as the same pixels (cropped to their bounding box)
    water = np.zeros((H, W), dtype=bool)
    water[700:740, 600:650] = MASK_ARRAY
    assert np.array_equal(_full(by_label["water"]["properties"]["mask"]), water)
    for label, n in (("building/house", 0), ("field", 2)):
        a = shapely.geometry.shape(by_label[label]["geometry"])
        assert shapely.equals_exact(
            shapely.normalize(a), shapely.normalize(shapely.geometry.shape(SHAPES[n])), 1e-9
        )
    assert by_label["field"]["properties"]["attributes"] == {"n": 2}
    # the pool (holes, exported as RLE) comes back as a mask of the same pixels
    pool = _full(by_label["pool"]["properties"]["mask"])
    assert np.array_equal(pool, rasterise(shapely.geometry.shape(SHAPES[1]), W, H))

    # the CLI does the same
    path = tmp_path / "x.coco.json"
    path.write_text(json.dumps(doc))
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    common = ["--image", IMAGE, "--format", "coco", "--data", str(geo_copy), "--db", db]
    assert cli_main(["import", str(path), *common]) == 0
    out = tmp_path / "out.json"
    assert cli_main(["export", *common, "-o", str(out)]) == 0
    assert len(json.loads(out.read_text())["annotations"]) == 4
