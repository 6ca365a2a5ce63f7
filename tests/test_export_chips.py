"""Training chips export (format=chips): every chip is checked against the source file's pixels
and against an independent rasterisation of the annotations as stored (world coordinates,
``rasterio.features.rasterize`` at the chip's own transform)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import requests
import shapely
from pycocotools.coco import COCO
from rasterio import features as rio_features
from rasterio.io import MemoryFile
from rasterio.transform import Affine, from_origin
from rasterio.windows import Window

from annot.errors import BadRequest
from annot.export.chips import ChipGrid, parse_chip_options, split_for
from annot.frames import GeoFrame, ImageFrame, frame_from_metadata
from annot.model import Annotation, Content, Kind, Mask
from annot.storage import open_store
from annot.taxonomy import Label, Project, auto_color
from tileserver.chips import RasterioChips
from tileserver.cli import main as cli_main
from tileserver.formats import EXPORTS, ExportJob
from tileserver.readers.geotiff import GeoTIFFSource

IMAGE = "scene"
W, H = 700, 600
SCENE_TRANSFORM = from_origin(500_000.0, 2_800_000.0, 0.5, 0.5)
LABELS = ("building", "building/house", "car", "field", "water")


# -- fixtures ------------------------------------------------------------------------------


def _scene() -> np.ndarray:
    """3-band uint8 noise with bright rectangles (so that every pixel check means something)."""
    rng = np.random.default_rng(11)
    data = rng.integers(0, 200, (3, H, W), dtype=np.uint8)
    for x, y, w, h in ((40, 30, 120, 80), (300, 200, 60, 220), (520, 420, 150, 150)):
        data[:, y : y + h, x : x + w] = 230
    return data


@pytest.fixture
def scene_path(make_raster: Any, tmp_path: Path) -> Path:
    return make_raster(_scene(), name="scene.tif", transform=SCENE_TRANSFORM)  # type: ignore[no-any-return]


def _project(labels: tuple[str, ...] = LABELS) -> Project:
    return Project("default", labels={n: Label(n, auto_color(n)) for n in labels})


def _world(frame: ImageFrame, shape: shapely.Geometry) -> shapely.Geometry:
    return shapely.transform(shape, lambda c: frame.pixel_to_world(c))


def _annotation(aid: int, label: str, content: Content) -> Annotation:
    return Annotation(aid, IMAGE, "default", content, "test", "t", "test", "t", 1)


MASK_ARRAY = np.zeros((50, 70), dtype=bool)
MASK_ARRAY[5:45, 10:60] = True
MASK_ARRAY[20:30, 30:40] = False


def _scene_annotations(frame: ImageFrame) -> list[Annotation]:
    """Shapes in pixel coordinates, stored in world coordinates as the server stores them:
    overlaps (a car on a field, a house on a building), a hole, a multipolygon, a chip edge
    crossing, a brush mask, and a point and a line (no area: skipped).

    No edge runs exactly through a pixel centre: which side such a tie falls on depends on the
    direction of the axes a shape is rasterised in (pixel rows down, world y up)."""
    px = [
        ("field", shapely.box(20.25, 20.5, 410.75, 330.25)),
        ("car", shapely.box(100.3, 100.6, 130.2, 115.9)),  # on the field: the car wins
        ("building", shapely.Polygon([(250.3, 240.2), (380.1, 250.7), (360.4, 380.2),
                                      (240.2, 360.6)])),
        ("building/house", shapely.box(270.4, 270.6, 330.6, 330.4)),
        ("water", shapely.Polygon(
            [(450.3, 50.2), (680.1, 60.7), (690.2, 250.3), (440.6, 240.1)],
            [[(500.2, 100.3), (600.4, 100.1), (600.3, 180.4), (500.1, 180.2)]],
        )),
        ("building", shapely.MultiPolygon([shapely.box(50, 450, 110, 520),
                                           shapely.box(140, 470, 200, 590)])),
        ("car", shapely.box(508.1, 250.2, 520.7, 262.4)),  # across the 512 chip edge
        ("car", shapely.box(100.3, 100.6, 130.2, 115.9)),  # the same area as the first car
    ]  # fmt: skip
    out = [
        _annotation(n + 1, label, Content(Kind.polygon, label, _world(frame, g)))
        for n, (label, g) in enumerate(px)
    ]
    mask = Mask.from_array(MASK_ARRAY, col=600, row=500)
    footprint = _world(frame, mask.footprint())
    out.append(_annotation(20, "water", Content(Kind.mask, "water", footprint, mask=mask)))
    point = _world(frame, shapely.Point(10, 10))
    out.append(_annotation(21, "car", Content(Kind.point, "car", point)))
    line = _world(frame, shapely.LineString([(0, 0), (50, 50)]))
    out.append(_annotation(22, "car", Content(Kind.polyline, "car", line)))
    return out


def _job(path: Path, annotations: list[Annotation] | None = None, **options: str) -> ExportJob:
    source = GeoTIFFSource(IMAGE, path, path.name)
    frame = frame_from_metadata(source.info.width, source.info.height, source.info.extra)
    anns = _scene_annotations(frame) if annotations is None else annotations
    return ExportJob(IMAGE, path.name, frame, source, _project(), anns, options)


def _export(job: ExportJob) -> zipfile.ZipFile:
    buf = io.BytesIO()
    EXPORTS["chips"].write(job, buf)
    return zipfile.ZipFile(io.BytesIO(buf.getvalue()))


# -- the independent reference --------------------------------------------------------------


def _class_index(label: str, labels: tuple[str, ...] = LABELS) -> int:
    return sorted(labels).index(label) + 1


def _world_area(a: Annotation, image: Affine) -> float:
    if a.content.mask is not None:
        return a.content.mask.area * abs(image.determinant)
    assert a.content.geometry is not None
    return float(a.content.geometry.area)


def _instance_pixels(a: Annotation, chip: Affine, image: Affine, size: int) -> np.ndarray:
    """One annotation's pixels in a chip: the world shape burnt at the chip's transform, or a
    mask looked up at each chip pixel centre."""
    if a.content.mask is not None:
        m = a.content.mask
        jj, ii = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
        xs, ys = chip @ (jj, ii)
        cols, rows = ~image @ (xs, ys)
        c = np.floor(cols + 1e-9).astype(int) - m.col
        r = np.floor(rows + 1e-9).astype(int) - m.row
        inside = (c >= 0) & (c < m.width) & (r >= 0) & (r < m.height)
        out = np.zeros((size, size), dtype=bool)
        out[inside] = m.to_array()[r[inside], c[inside]]
        return out
    burnt = rio_features.rasterize(
        [(a.content.geometry, 1)], out_shape=(size, size), transform=chip, fill=0, dtype="uint8"
    )
    return np.asarray(burnt, dtype=bool)


def _with_area(annotations: list[Annotation]) -> list[Annotation]:
    return [a for a in annotations if a.content.kind in (Kind.polygon, Kind.box,
                                                         Kind.multipolygon, Kind.mask)]  # fmt: skip


def _expected_mask(
    annotations: list[Annotation], chip: Affine, image: Affine, size: int, labels: tuple[str, ...]
) -> np.ndarray:
    """Smaller shapes (world area) painted last; equal areas: the higher id last."""
    out = np.zeros((size, size), dtype=np.uint8)
    for a in sorted(_with_area(annotations), key=lambda a: (-_world_area(a, image), a.id)):
        out[_instance_pixels(a, chip, image, size)] = _class_index(a.label, labels)
    return out


def _chip_instances(
    annotations: list[Annotation], chip: Affine, image: Affine, size: int
) -> list[Annotation]:
    """Annotations with part of their area in the chip (a mask: a pixel)."""
    footprint = shapely.transform(shapely.box(0, 0, size, size), lambda c: np.column_stack(chip @ (c[:, 0], c[:, 1])))
    out = []
    for a in _with_area(annotations):
        if a.content.mask is not None:
            if _instance_pixels(a, chip, image, size).any():
                out.append(a)
        elif shapely.intersection(a.content.geometry, footprint).area > 1e-9 * footprint.area:
            out.append(a)
    return out


def _read_tif(body: bytes) -> tuple[np.ndarray, Affine, Any, Any]:
    with MemoryFile(body) as mem, mem.open() as ds:
        return ds.read(), ds.transform, ds.crs, ds.nodata


def _check_chips(
    zf: zipfile.ZipFile,
    path: Path,
    annotations: list[Annotation],
    labels: tuple[str, ...] = LABELS,
    full_resolution: bool = True,
) -> dict[str, Any]:
    """Every chip against the source and the reference; the manifest's counts against both."""
    manifest = json.loads(zf.read("manifest.json"))
    size = manifest["size"]
    per_class: Counter[str] = Counter()
    per_class_instances: Counter[str] = Counter()
    with rasterio.open(path) as src:
        image = src.transform
        for chip in manifest["chips"]:
            pixels, transform, crs, nodata = _read_tif(zf.read(chip["image"]))
            mask, mask_transform, mask_crs, _ = _read_tif(zf.read(chip["mask"]))
            col_off, row_off, width, height = chip["window"]
            sx, sy = manifest["scale"]
            expected_transform = image @ Affine.translation(col_off, row_off) @ Affine.scale(sx, sy)
            assert transform.almost_equals(expected_transform, precision=1e-9)
            assert mask_transform.almost_equals(expected_transform, precision=1e-9)
            assert list(expected_transform)[:6] == pytest.approx(chip["transform"], abs=1e-9)
            assert crs == src.crs and mask_crs == src.crs and nodata == src.nodata
            if full_resolution:
                source = src.read(window=Window(col_off, row_off, width, height))
                assert np.array_equal(pixels[:, : int(height), : int(width)], source)
            want = _expected_mask(annotations, transform, image, size, labels)
            assert mask.shape == (1, size, size)
            assert np.array_equal(mask[0], want), chip["name"]
            counts = np.bincount(want.ravel(), minlength=len(labels) + 1)
            inside = Counter(a.label for a in _chip_instances(annotations, transform, image, size))
            got = chip["classes"]
            for n, label in enumerate(sorted(labels), start=1):
                assert got.get(label, {}).get("pixels", 0) == counts[n], (chip["name"], label)
                assert got.get(label, {}).get("instances", 0) == inside[label], (chip["name"], label)
                per_class[label] += int(counts[n])
                per_class_instances[label] += inside[label]
            assert chip["background_pixels"] == counts[0]
    totals = manifest["totals"]["classes"]
    for label in labels:
        assert totals.get(label, {}).get("pixels", 0) == per_class[label]
        assert totals.get(label, {}).get("instances", 0) == per_class_instances[label]
    by_split = Counter(c["split"] for c in manifest["chips"])
    for split, t in manifest["totals"]["splits"].items():
        assert t["chips"] == by_split[split]
    return dict(manifest)


def _coco(doc: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = doc
    coco.createIndex()
    return coco


# -- tests: the pure parts ------------------------------------------------------------------


def test_grid_moves_the_last_chip_back_to_the_edge() -> None:
    grid = ChipGrid.for_image(700, 600, 256, 32, (1.0, 1.0))
    assert grid.starts(700) == [0, 224, 444]
    assert grid.starts(600) == [0, 224, 344]
    assert ChipGrid.for_image(100, 100, 256, 0, (1.0, 1.0)).windows()[0].width == 100
    half = ChipGrid.for_image(701, 600, 128, 0, (2.0, 2.0))  # a partial output pixel is dropped
    assert (half.width, half.height) == (350, 300)


def test_splits_are_deterministic_and_respect_the_fractions() -> None:
    keys = [f"cell:{i}:{j}" for i in range(100) for j in range(200)]
    got = Counter(split_for(k, 5, (0.7, 0.2, 0.1)) for k in keys)
    for split, fraction in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs(got[split] / len(keys) - fraction) < 0.01, got
    assert [split_for(k, 5, (0.7, 0.2, 0.1)) for k in keys[:500]] == [
        split_for(k, 5, (0.7, 0.2, 0.1)) for k in keys[:500]
    ]
    other_seed = [split_for(k, 6, (0.7, 0.2, 0.1)) for k in keys[:500]]
    assert other_seed != [split_for(k, 5, (0.7, 0.2, 0.1)) for k in keys[:500]]
    assert {split_for(k, 1, (1.0, 0.0, 0.0)) for k in keys[:500]} == {"train"}
    assert {split_for(k, 1, (0.0, 0.0, 1.0)) for k in keys[:500]} == {"test"}


@pytest.mark.parametrize(
    "options",
    [
        {"size": "abc"}, {"size": "8"}, {"size": "256", "overlap": "256"}, {"mode": "tiles"},
        {"chip_format": "jpeg"}, {"split": "0.5,0.6,0.1"}, {"split": "a,b"}, {"split": "1"},
        {"resolution": "1", "level": "1"}, {"resolution": "-2"}, {"resolution": "nan"},
        {"level": "99"}, {"split_by": "row"}, {"bands": "0"}, {"bands": "1,1"},
        {"segmentation": "mesh"}, {"seed": "x"}, {"cell": "0"},
    ],
)  # fmt: skip
def test_bad_options_are_refused(options: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        parse_chip_options(options)


# -- tests: the export on a synthetic scene -------------------------------------------------


def test_every_chip_matches_the_source_and_the_annotations(scene_path: Path) -> None:
    job = _job(scene_path, size="256", overlap="32", mode="grid", split="0.5,0.3,0.2",
               cell="60")  # fmt: skip
    zf = _export(job)
    manifest = _check_chips(zf, scene_path, list(job.annotations))
    assert len(manifest["chips"]) == 9  # 3 x 3 chips: starts 0, 224, 444 / 0, 224, 344
    assert manifest["skipped"] == 2  # the point and the line
    # overlaps: the car beats the field it stands on, the house the building
    chip = next(c for c in manifest["chips"] if c["grid"] == [0, 0])
    mask, *_ = _read_tif(zf.read(chip["mask"]))
    assert mask[0, 105, 110] == _class_index("car")
    assert mask[0, 60, 60] == _class_index("field")
    classes = json.loads(zf.read("classes.json"))
    assert [c["label"] for c in classes["classes"]] == [None, *sorted(LABELS)]
    assert classes["classes"][1]["color"] == auto_color("building")
    assert classes["classes"][2]["path"] == ["building", "house"]
    # splits: one hash per area cell, the same again for the same options
    for c in manifest["chips"]:
        assert c["split"] == split_for(c["split_key"], 0, (0.5, 0.3, 0.2))
    assert len({c["split"] for c in manifest["chips"]}) > 1
    buf = io.BytesIO()
    EXPORTS["chips"].write(_job(scene_path, size="256", overlap="32", mode="grid",
                                split="0.5,0.3,0.2", cell="60"), buf)  # fmt: skip
    again = zipfile.ZipFile(buf)
    assert again.namelist() == zf.namelist()
    assert [c["split"] for c in json.loads(again.read("manifest.json"))["chips"]] == [
        c["split"] for c in manifest["chips"]
    ]


def test_annotated_mode_keeps_the_chips_with_annotations(scene_path: Path) -> None:
    anns = [a for a in _scene_annotations(GeoFrame.from_metadata(W, H, {
        "crs": {"epsg": 32618}, "transform": list(SCENE_TRANSFORM)[:6]}))
        if a.label == "car"]  # fmt: skip
    zf = _export(_job(scene_path, anns, size="128"))
    manifest = _check_chips(zf, scene_path, anns)
    grid = ChipGrid.for_image(W, H, 128, 0, (1.0, 1.0))
    expected = []
    for w in grid.windows():
        chip = SCENE_TRANSFORM @ Affine.translation(w.col, w.row)
        if _chip_instances(anns, chip, SCENE_TRANSFORM, 128):
            expected.append([w.col, w.row])
    assert [c["grid"] for c in manifest["chips"]] == expected
    # the two cars at (100, 100) cross x=128; the third car crosses x=512 and y=256
    assert len(expected) == 6


def test_split_by_image_puts_the_whole_image_in_one_split(scene_path: Path) -> None:
    zf = _export(_job(scene_path, size="256", mode="grid", split_by="image", seed="3"))
    manifest = json.loads(zf.read("manifest.json"))
    expected = split_for(f"image:{IMAGE}", 3, (0.8, 0.1, 0.1))
    assert {c["split"] for c in manifest["chips"]} == {expected}
    assert all(name.startswith(f"{expected}/") for name in zf.namelist() if "/" in name)
    assert manifest["totals"]["splits"][expected]["chips"] == len(manifest["chips"])


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_coco_per_split_matches_the_masks(scene_path: Path, segmentation: str) -> None:
    job = _job(scene_path, size="256", mode="grid", segmentation=segmentation, split="0.4,0.3,0.3",
               cell="100")  # fmt: skip
    zf = _export(job)
    manifest = json.loads(zf.read("manifest.json"))
    chips = {c["image"]: c for c in manifest["chips"]}
    image = SCENE_TRANSFORM
    by_id = {a.id: a for a in job.annotations}
    seen = 0
    for split in ("train", "val", "test"):
        coco = _coco(json.loads(zf.read(f"coco_{split}.json")))
        assert [c["id"] for c in coco.dataset["categories"]] == list(range(1, len(LABELS) + 1))
        for img in coco.dataset["images"]:
            chip = chips[img["file_name"]]
            assert chip["split"] == split
            seen += 1
            transform = Affine(*chip["transform"])
            mask, *_ = _read_tif(zf.read(chip["mask"]))
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            assert sorted(a["annotation_id"] for a in anns) == sorted(
                a.id for a in _chip_instances(list(job.annotations), transform, image, 256)
            )
            painted = np.zeros((256, 256), dtype=np.uint8)
            order = sorted(anns, key=lambda a: (-_world_area(by_id[a["annotation_id"]], image),
                                                a["annotation_id"]))  # fmt: skip
            for ann in order:
                theirs = coco.annToMask(ann).astype(bool)
                ours = _instance_pixels(by_id[ann["annotation_id"]], transform, image, 256)
                if isinstance(ann["segmentation"], dict):  # RLE: exactly our pixels
                    assert np.array_equal(theirs, ours)
                else:  # pycocotools' own polygon fill: differs at most on boundary pixels
                    diff = theirs ^ ours
                    rows, cols = np.nonzero(diff)
                    inverse = ~transform
                    local = shapely.transform(by_id[ann["annotation_id"]].content.geometry,
                                              lambda c, t=inverse: np.column_stack(t @ (c[:, 0], c[:, 1])))  # fmt: skip
                    clipped = shapely.intersection(local, shapely.box(0, 0, 256, 256))
                    centres = shapely.points(cols + 0.5, rows + 0.5)
                    assert (shapely.distance(centres, clipped.boundary) <= 1.0).all()
                    assert diff.sum() <= 0.1 * max(ours.sum(), 1) + 4
                painted[theirs] = ann["category_id"]
            if segmentation == "rle":
                assert np.array_equal(painted, mask[0])
    assert seen == len(manifest["chips"])


def test_coarser_resolution_and_level_give_the_same_chips(scene_path: Path) -> None:
    by_resolution = _export(_job(scene_path, size="128", resolution="1.0", mode="grid"))
    manifest = _check_chips(by_resolution, scene_path, list(_job(scene_path).annotations),
                            full_resolution=False)  # fmt: skip
    assert manifest["scale"] == [2.0, 2.0] and manifest["resolution"] == pytest.approx(1.0)
    with rasterio.open(scene_path) as src:
        for chip in manifest["chips"]:
            pixels, transform, *_ = _read_tif(by_resolution.read(chip["image"]))
            assert (transform.a, transform.e) == (1.0, -1.0)
            col, row, w, h = (int(v) for v in chip["window"])
            full = src.read(window=Window(col, row, w, h)).astype(np.float64)
            means = full.reshape(3, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
            assert np.abs(pixels.astype(np.float64) - means).max() <= 1.0  # average, rounded
    by_level = _export(_job(scene_path, size="128", level="1", mode="grid"))
    assert by_level.namelist() == by_resolution.namelist()
    for name in by_level.namelist():
        assert by_level.read(name) == by_resolution.read(name), name


def test_png_chips_carry_a_world_file(scene_path: Path) -> None:
    zf = _export(_job(scene_path, size="256", chip_format="png", bands="3,1", mode="grid"))
    manifest = json.loads(zf.read("manifest.json"))
    from PIL import Image

    with rasterio.open(scene_path) as src:
        for chip in manifest["chips"]:
            col, row, w, h = chip["window"]
            png = np.asarray(Image.open(io.BytesIO(zf.read(chip["image"]))))
            assert png.shape == (256, 256, 2)
            assert np.array_equal(np.moveaxis(png, -1, 0), src.read([3, 1], window=Window(col, row, w, h)))
            lines = [float(v) for v in zf.read(chip["image"][:-4] + ".pgw").split()]
            t = src.transform @ Affine.translation(col, row)
            assert lines == pytest.approx([t.a, t.d, t.b, t.e, t.c + 0.25, t.f - 0.25], abs=1e-9)
            assert chip["mask"][:-4] + ".pgw" in zf.namelist()
            mask = np.asarray(Image.open(io.BytesIO(zf.read(chip["mask"]))))
            assert mask.dtype == np.uint8 and mask.shape == (256, 256)


def test_zip_is_written_to_a_stream_that_cannot_seek(scene_path: Path) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def tell(self) -> int:
            raise OSError("not seekable")

        def write(self, b: Any) -> int:
            self.data += bytes(b)
            return len(b)

    pipe = Pipe()
    EXPORTS["chips"].write(_job(scene_path, size="256"), pipe)  # type: ignore[arg-type]
    zf = zipfile.ZipFile(io.BytesIO(bytes(pipe.data)))
    assert zf.testzip() is None
    _check_chips(zf, scene_path, list(_job(scene_path).annotations))


def test_reads_only_chip_windows_and_reports_progress(
    scene_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[tuple[float, ...]] = []
    original = RasterioChips.read

    def spy(self: RasterioChips, window: Any) -> Any:
        data = original(self, window)
        reads.append((*window.source, *data.shape))
        return data

    monkeypatch.setattr(RasterioChips, "read", spy)
    steps: list[int] = []
    job = _job(scene_path, size="128", mode="grid")
    job = ExportJob(job.image_id, job.image_name, job.frame, job.source, job.project,
                    job.annotations, job.options, steps.append)  # fmt: skip
    zf = _export(job)
    chips = json.loads(zf.read("manifest.json"))["chips"]
    assert len(reads) == len(chips) == len(steps) == sum(steps)
    assert all(r[2] <= 128 and r[3] <= 128 and r[-2:] == (128, 128) for r in reads)


def test_small_image_is_padded(make_raster: Any) -> None:
    data = np.arange(3 * 40 * 50, dtype=np.uint16).reshape(3, 40, 50)
    path = make_raster(data, name="small.tif", transform=SCENE_TRANSFORM)
    source = GeoTIFFSource(IMAGE, path, path.name)
    frame = frame_from_metadata(50, 40, source.info.extra)
    box = _world(frame, shapely.box(10, 10, 30, 20))
    anns = [_annotation(1, "car", Content(Kind.box, "car", box))]
    job = ExportJob(IMAGE, path.name, frame, source, _project(), anns, {"size": "64"})
    zf = _export(job)
    manifest = _check_chips(zf, path, anns)
    pixels, *_ = _read_tif(zf.read(manifest["chips"][0]["image"]))
    assert pixels.dtype == np.uint16 and manifest["chips"][0]["valid"] == [50, 40]
    assert not pixels[:, 40:, :].any() and not pixels[:, :, 50:].any()


def test_volumes_and_other_sources_are_refused(scene_path: Path) -> None:
    from annot.frames import AffineVolume, VolumeFrame

    job = _job(scene_path)
    volume = VolumeFrame(AffineVolume((0, 0, 0), (1, 1, 1), ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
                                      (10, 10, 3)))  # fmt: skip
    with pytest.raises(BadRequest, match="nifti"):
        EXPORTS["chips"].write(ExportJob(IMAGE, "v", volume, job.source, job.project, [], {}),
                               io.BytesIO())  # fmt: skip
    with pytest.raises(BadRequest, match="bands"):
        EXPORTS["chips"].write(_job(scene_path, bands="4"), io.BytesIO())


def test_geotiff_writer_keeps_any_transform_crs_and_nodata() -> None:
    from rasterio.crs import CRS

    from tileserver.chips import GeoTiffWriter

    data = np.arange(2 * 30 * 40, dtype=np.int16).reshape(2, 30, 40) - 500
    rotated = Affine(0.4, 0.3, 600_000.0, 0.3, -0.4, 4_100_000.0)
    north_up = Affine(2.0, 0.0, -100.0, 0.0, -3.0, 50.0)
    for crs, transform in ((CRS.from_epsg(32633), rotated), (CRS.from_epsg(4326), north_up),
                           (None, north_up)):  # fmt: skip
        body = GeoTiffWriter(crs, -9999.0).encode(data, transform, is_mask=False)
        pixels, got, got_crs, nodata = _read_tif(body)
        assert np.array_equal(pixels, data) and got.almost_equals(transform, 1e-12)
        assert got_crs == crs and nodata == -9999.0
    mask_body = GeoTiffWriter(CRS.from_epsg(32633), -9999.0).encode(
        data[:1].astype(np.uint8), rotated, is_mask=True
    )
    _, got, _, nodata = _read_tif(mask_body)
    assert got.almost_equals(rotated, 1e-12) and nodata is None


def test_an_invalid_stored_shape_is_repaired_not_fatal(scene_path: Path) -> None:
    frame = _job(scene_path, []).frame
    bowtie = _world(frame, shapely.Polygon([(10.3, 10.2), (90.6, 80.1), (90.2, 10.4),
                                            (10.1, 80.7)]))  # fmt: skip
    assert not bowtie.is_valid
    anns = [_annotation(1, "car", Content(Kind.polygon, "car", bowtie))]
    zf = _export(_job(scene_path, anns, size="128"))
    manifest = json.loads(zf.read("manifest.json"))
    chip = manifest["chips"][0]
    mask, transform, *_ = _read_tif(zf.read(chip["mask"]))
    repaired = shapely.make_valid(bowtie)  # two triangles
    want = rio_features.rasterize([(repaired, 1)], out_shape=(128, 128), transform=transform)
    assert np.array_equal(mask[0] > 0, want > 0) and want.sum() > 1000


def test_plain_tiff_chips_use_its_pixel_grid(make_raster: Any) -> None:
    data = np.random.default_rng(4).integers(0, 60000, (1, 300, 420), dtype=np.uint16)
    path = make_raster(data, name="plain.tif", crs=None)
    source = GeoTIFFSource("plain", path, path.name)
    frame = frame_from_metadata(420, 300, source.info.extra)
    assert source.info.kind == "tiff" and not isinstance(frame, GeoFrame)
    anns = [_annotation(1, "field", Content(Kind.polygon, "field",
                                            shapely.box(30.3, 40.6, 250.2, 210.9))),
            _annotation(2, "car", Content(Kind.box, "car", shapely.box(100.2, 100.3, 120.6, 111.7)))]  # fmt: skip
    job = ExportJob("plain", path.name, frame, source, _project(), anns,
                    {"size": "64", "resolution": "2", "mode": "grid"})  # fmt: skip
    zf = _export(job)
    manifest = _check_chips(zf, path, anns, full_resolution=False)
    assert manifest["crs"] is None and manifest["scale"] == [2.0, 2.0]
    assert len(manifest["chips"]) == len(ChipGrid.for_image(420, 300, 64, 0, (2.0, 2.0)).windows())
    assert manifest["totals"]["classes"]["car"]["instances"] >= 1


def test_openapi_lists_chips_and_its_options() -> None:
    from annot.export.chips import CHIP_OPTIONS
    from tileserver.web.openapi import openapi_document

    params = openapi_document()["paths"]["/api/v1/images/{id}/export"]["get"]["parameters"]
    (fmt,) = [p for p in params if p.get("name") == "format"]
    assert "chips" in fmt["schema"]["enum"]
    assert {p.get("name") for p in params} >= CHIP_OPTIONS
    assert set(EXPORTS["chips"].options) == CHIP_OPTIONS


# -- tests: real GeoTIFFs -----------------------------------------------------------------------


def test_real_buildings_on_the_real_geotiff(geo_dir: Path, shared_data: Path) -> None:
    path = geo_dir / "sample_geotiff.tif"
    source = GeoTIFFSource("sample", path, path.name)
    frame = frame_from_metadata(source.info.width, source.info.height, source.info.extra)
    features = json.loads((shared_data / "vector" / "geotiff_labels.geojson").read_text())
    anns = [  # EPSG:32616 coordinates: the image's own CRS, as Tessera stores them
        _annotation(n + 1, "building", Content(Kind.polygon, "building",
                                               shapely.geometry.shape(f["geometry"])))
        for n, f in enumerate(features["features"])
    ]  # fmt: skip
    assert len(anns) == 43
    job = ExportJob("sample", path.name, frame, source, _project(("building",)), anns,
                    {"size": "256", "overlap": "64"})  # fmt: skip
    zf = _export(job)
    manifest = _check_chips(zf, path, anns, ("building",))
    assert manifest["totals"]["classes"]["building"]["pixels"] > 10_000
    assert manifest["crs"] == "EPSG:32616"


def test_real_landsat_scene_keeps_bands_and_nodata(geo_dir: Path) -> None:
    path = geo_dir / "RGB.byte.tif"  # 791x718, 3 bands, nodata 0, striped, UTM 18N
    source = GeoTIFFSource("rgb", path, path.name)
    frame = frame_from_metadata(source.info.width, source.info.height, source.info.extra)
    lake = shapely.Polygon([(200_000.3, 2_700_000.2), (260_000.7, 2_690_000.1),
                            (250_000.2, 2_760_000.6)])  # world (EPSG:32618) coordinates
    anns = [_annotation(1, "water", Content(Kind.polygon, "water", lake))]
    job = ExportJob("rgb", path.name, frame, source, _project(), anns,
                    {"size": "256", "mode": "grid", "overlap": "16"})  # fmt: skip
    manifest = _check_chips(_export(job), path, anns)
    assert len(manifest["chips"]) == 12  # columns 0, 240, 480, 535; rows 0, 240, 462
    assert manifest["crs"] == "EPSG:32618"
    assert manifest["totals"]["classes"]["water"]["pixels"] > 5_000


def test_real_cog_level_is_its_stored_overview(geo_dir: Path) -> None:
    path = geo_dir / "cog.tif"  # overviews 2, 4, 8, 16
    source = GeoTIFFSource("cog", path, path.name)
    frame = frame_from_metadata(source.info.width, source.info.height, source.info.extra)
    box = _world(frame, shapely.box(1000.5, 900.5, 1500.5, 1300.5))
    anns = [_annotation(1, "field", Content(Kind.box, "field", box))]
    job = ExportJob("cog", path.name, frame, source, _project(), anns,
                    {"level": "2", "size": "256", "mode": "grid"})  # fmt: skip
    zf = _export(job)
    manifest = _check_chips(zf, path, anns, full_resolution=False)
    with rasterio.open(path, overview_level=1) as ovr:  # level 2: the 4x overview, 665x667
        assert manifest["scale"] == [2658 / ovr.width, 2667 / ovr.height]
        assert manifest["chips"][-1]["grid"] == [ovr.width - 256, ovr.height - 256]
        for chip in manifest["chips"]:
            pixels, transform, *_ = _read_tif(zf.read(chip["image"]))
            col, row = chip["grid"]
            assert np.array_equal(pixels, ovr.read(window=Window(col, row, 256, 256)))
            assert transform.almost_equals(ovr.transform @ Affine.translation(col, row), 1e-6)


# -- tests: HTTP and CLI ------------------------------------------------------------------------


def _post(server: Any, path: str, body: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {server.token}"}
    return requests.post(server.url + path, json=body, headers=headers, timeout=60)


def test_http_route_and_bad_options(serve_dirs: Any, scene_path: Path, shared_data: Path) -> None:
    shutil.copytree(shared_data / "dicom" / "ct_dcmqi_23x38x3", scene_path.parent / "ct")
    server = serve_dirs(scene_path.parent)
    image = server.image_id("scene.tif")
    feats = [
        {"type": "Feature", "geometry": shapely.geometry.mapping(g), "properties": {"label": label}}
        for label, g in (("car", shapely.box(100.3, 100.6, 130.2, 115.9)),
                         ("field", shapely.box(20.25, 20.5, 410.75, 330.25)))
    ]  # fmt: skip
    r = _post(server, f"/api/v1/images/{image}/annotations/bulk?crs=pixel",
              {"type": "FeatureCollection", "features": feats})  # fmt: skip
    assert r.status_code == 201, r.text
    r = server.get(f"/api/v1/images/{image}/export?format=chips&size=256&overlap=16&labels=car")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/zip"
    assert f'filename="{image}.chips.zip"' in r.headers["Content-Disposition"]
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    manifest = json.loads(zf.read("manifest.json"))
    assert len(manifest["chips"]) == 1 and set(manifest["totals"]["classes"]) == {"car"}
    stored = requests.get(server.url + f"/api/v1/images/{image}/annotations?crs=EPSG:32618",
                          headers={"Authorization": f"Bearer {server.token}"}, timeout=30)  # fmt: skip
    assert stored.status_code == 200, stored.text
    world = [
        _annotation(f["id"], "car", Content(Kind.polygon, "car", shapely.geometry.shape(f["geometry"])))
        for f in stored.json()["features"] if f["properties"]["label"] == "car"
    ]
    labels = tuple(json.loads(zf.read("classes.json"))["classes"][i]["label"] for i in (1, 2))
    _check_chips(zf, scene_path, world, labels)

    base = f"/api/v1/images/{image}/export?format=chips"
    for bad in ("&size=abc", "&overlap=512", "&mode=all", "&chip_format=jpeg", "&split=0.9,0.9",
                "&resolution=1&level=1", "&bands=9", "&split_by=x", "&nonsense=1"):
        r = server.get(base + bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["message"], bad
    ct = next(i for i, s in server.catalog.images.items() if s.info.kind != "geotiff")
    r = server.get(f"/api/v1/images/{ct}/export?format=chips")
    assert r.status_code == 400 and "nifti" in r.json()["message"], r.text


def test_cli_writes_the_same_chips(tmp_path: Path, scene_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    source = GeoTIFFSource(IMAGE, scene_path, scene_path.name)
    frame = frame_from_metadata(W, H, source.info.extra)
    store = open_store(db)
    try:
        contents = [a.content for a in _scene_annotations(frame)]
        store.add(IMAGE, "default", contents, "admin")
    finally:
        store.close()
    out = tmp_path / "chips.zip"
    args = ["export", "--image", IMAGE, "--format", "chips", "--data", str(scene_path.parent),
            "--db", db, "-o", str(out), "--size", "256", "--overlap", "32", "--mode", "grid",
            "--chip-format", "png", "--split", "0.6,0.4", "--split-by", "area", "--cell", "80",
            "--seed", "9", "--bands", "2"]  # fmt: skip
    assert cli_main(args) == 0
    zf = zipfile.ZipFile(out)
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["chip_format"] == "png" and manifest["bands"] == [2]
    assert manifest["split"] == {"fractions": [0.6, 0.4, 0.0], "by": "area", "seed": 9, "cell": 80.0}
    assert len(manifest["chips"]) == 9
    assert {c["split"] for c in manifest["chips"]} <= {"train", "val"}
    from PIL import Image

    with rasterio.open(scene_path) as src:
        for chip in manifest["chips"]:
            col, row, w, h = chip["window"]
            png = np.asarray(Image.open(io.BytesIO(zf.read(chip["image"]))))
            assert np.array_equal(png, src.read(2, window=Window(col, row, w, h)))
            mask = np.asarray(Image.open(io.BytesIO(zf.read(chip["mask"]))))
            labels = tuple(sorted({a.label for a in _scene_annotations(frame)}))
            project_labels = tuple(c["label"] for c in json.loads(zf.read("classes.json"))["classes"][1:])
            assert set(labels) <= set(project_labels)
            stored = _scene_annotations(frame)
            want = _expected_mask(stored, Affine(*chip["transform"]), src.transform, 256,
                                  project_labels)  # fmt: skip
            assert np.array_equal(mask, want)
    assert cli_main([*args[:-2], "--bands", "7"]) == 2
