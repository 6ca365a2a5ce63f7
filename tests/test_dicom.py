"""DICOM as tile sources: scanning, series grouping, decoding, window/level, planes, the API."""

from __future__ import annotations

import os
import random
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.pixels.utils import pixel_array

from annot.patient import PLANES
from tests.conftest import LiveServer, decode_png
from tileserver.catalog import scan
from tileserver.phantom import PhantomSpec, hu_at, write_ct_phantom
from tileserver.readers import dicom_index
from tileserver.readers.base import Pyramid, TileOptions
from tileserver.readers.dicom import DicomSource
from tileserver.render import voi_linear, voi_linear_range
from tileserver.web.pixel import pixel_routes

LUNG = "ct_lung_pet_ct_dx_A0002_B40f"


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("TESSERA_STATE_DIR", str(path))
    return path


@pytest.fixture
def dicom_dir(shared_data: Path) -> Path:
    return shared_data / "dicom"


@pytest.fixture(scope="module")
def dicom_catalog(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    old = os.environ.get("TESSERA_STATE_DIR")
    os.environ["TESSERA_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    try:
        yield scan([shared_data / "dicom"])
    finally:
        if old is None:
            os.environ.pop("TESSERA_STATE_DIR", None)
        else:
            os.environ["TESSERA_STATE_DIR"] = old


def by_name(catalog: Any, name: str) -> DicomSource:
    for source in catalog.images.values():
        if source.info.name == name:
            assert isinstance(source, DicomSource)
            return source
    raise KeyError(f"{name} not in {[s.info.name for s in catalog.images.values()]}")


@pytest.fixture
def serve(
    serve_dirs: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., LiveServer]:
    """The live server of conftest, with the pixel-value route added."""
    real = serve_dirs.__globals__["make_app"]  # type: ignore[attr-defined]

    def make_app_with_pixel(ctx: Any, secret: str) -> Any:
        app = real(ctx, secret)
        app.add_handlers(r".*", pixel_routes({"ctx": ctx}))
        return app

    monkeypatch.setitem(serve_dirs.__globals__, "make_app", make_app_with_pixel)  # type: ignore[attr-defined]
    return serve_dirs


def reference_volume(folder: Path) -> tuple[np.ndarray, list[Path]]:
    """HU volume (slices, rows, cols) straight from pydicom, sorted along the normal."""
    items = []
    for p in folder.iterdir():
        ds = pydicom.dcmread(p)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        h = float(
            np.array([float(v) for v in ds.ImagePositionPatient]) @ np.cross(iop[:3], iop[3:])
        )
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        items.append((h, hu, p))
    items.sort(key=lambda t: t[0])
    return np.stack([t[1] for t in items]), [t[2] for t in items]


# -- scanning and grouping ----------------------------------------------------------------------


def test_scan_groups_series_and_serves_every_kind(dicom_catalog: Any) -> None:
    kinds = {s.info.name: s.info.kind for s in dicom_catalog.images.values()}
    assert kinds[LUNG] == "dicom-volume"
    assert kinds["mr_adc_ge_dcmqi_20slice"] == "dicom-volume"
    assert kinds["ct_pydicom_ct2_tiny"] == "dicom-volume"  # files without a suffix
    assert kinds["ct_single_pydicom/CT_small.dcm"] == "dicom-image"  # TIFF-like preamble too
    assert kinds["mr_enhanced_siemens_xa10/6_1.dcm"] == "dicom-multiframe"
    assert (
        kinds[
            "compressed/us_multiframe_jpeg_baseline/IM00001.fragmented_no_bot_jpeg_baseline.50.dcm"
        ]
        == "dicom-multiframe"
    )
    # Seven copies of one image (same series, same position): served one by one, with a warning.
    mosaic = [s for s in dicom_catalog.images.values() if "mr_mosaic_siemens_ts" in s.info.name]
    assert len(mosaic) == 7
    assert all(s.info.kind == "dicom-image" and s.info.warnings for s in mosaic)
    skipped = {f.path: f.reason for f in dicom_catalog.skipped}
    assert "not an image" in skipped["rtstruct/rtutils_rt.dcm"]
    assert "segmentation" not in str(kinds)


def test_metadata_of_a_volume(dicom_catalog: Any) -> None:
    src = by_name(dicom_catalog, LUNG)
    meta = src.info.to_json()
    assert meta["kind"] == "dicom-volume"
    assert (meta["width"], meta["height"], meta["slices"]) == (512, 512, 30)
    assert (
        meta["series_instance_uid"]
        == "1.3.6.1.4.1.14519.5.2.1.6655.2359.207154000096236603057216610983"
    )
    assert (
        meta["frame_of_reference_uid"]
        == "1.3.6.1.4.1.14519.5.2.1.6655.2359.221638908309288504111675002096"
    )
    assert meta["study_instance_uid"]
    assert meta["modality"] == "CT" and meta["units"] == "HU"
    assert meta["spacing"][2] == pytest.approx(8.0)
    assert meta["origin"][2] == pytest.approx(80.0)  # slice 0 is the lowest (InstanceNumber 30)
    np.testing.assert_allclose(meta["direction"], np.eye(3), atol=1e-9)
    presets = {p["name"]: p for p in meta["window_presets"]}
    # The file's own presets first (WindowCenter 40\-600, WindowWidth 350\1200), then CT's.
    assert meta["window_presets"][0]["source"] == "file"
    assert meta["default_window"]["center"] == 40 and meta["default_window"]["width"] == 350
    for name in ("brain", "lung", "bone", "soft_tissue", "liver"):
        assert presets[name]["source"] == "modality"
    assert set(meta["planes"]) == set(PLANES)
    assert meta["acquisition_plane"] == "axial"
    assert "linear" in meta["interpolation"]
    assert len(meta["sop_instance_uids"]) == 30
    assert "warnings" not in meta


def test_gaps_are_reported(dicom_catalog: Any) -> None:
    src = by_name(dicom_catalog, "ct_pydicom_ct2_tiny")  # z = -99.48, 103.02, 104.27, 105.52
    assert any("missing slices" in w for w in src.info.warnings)
    assert src.info.to_json()["warnings"]
    # The gap is transparent in the coronal plane; slices are not.
    grid = src.planes["coronal"]
    n = min(256, grid.shape[1])
    max_z = Pyramid(grid.shape[0], grid.shape[1]).max_z
    px = src.read_tile(max_z, 0, 0, TileOptions(plane="coronal", slice=8))
    assert px.valid is not None
    rows_valid = px.valid[:n, 0]
    t = grid.shape[1] - (np.arange(n) + 0.5)  # the row axis runs downwards
    h = grid.start + t * grid.span / grid.shape[1]
    heights = np.asarray(grid.heights)
    np.testing.assert_array_equal(rows_valid, ~((h > heights[0]) & (h < heights[1])))
    assert rows_valid[0] and not rows_valid.all()


def test_enhanced_multiframe_geometry(dicom_catalog: Any) -> None:
    xa = by_name(dicom_catalog, "mr_enhanced_siemens_xa10/6_1.dcm")
    meta = xa.info.to_json()
    assert meta["slices"] == 6 and meta["spacing"][2] == pytest.approx(2.4, abs=1e-3)
    assert meta["spacing"][0] == pytest.approx(3.375, abs=1e-3)
    heights = np.asarray(meta["slice_positions"]) @ np.asarray(meta["direction"][2])
    assert np.all(np.diff(heights) > 0)


def test_legacy_enhanced_multiframe_equals_its_classic_series(dicom_catalog: Any) -> None:
    classic = by_name(dicom_catalog, "ct_dcmqi_23x38x3")
    enhanced = by_name(dicom_catalog, "ct_dcmqi_23x38x3_legacy_enhanced/mf.dcm")
    np.testing.assert_array_equal(np.asarray(classic.volume()), np.asarray(enhanced.volume()))
    a, b = classic.info.to_json(), enhanced.info.to_json()
    np.testing.assert_allclose(a["slice_positions"], b["slice_positions"], atol=1e-6)
    np.testing.assert_allclose(a["direction"], b["direction"], atol=1e-9)


def test_frames_without_geometry_are_a_stack(dicom_catalog: Any) -> None:
    src = by_name(dicom_catalog, "compressed/mr_enhanced_emri_small/emri_small.dcm")
    assert src.info.kind == "dicom-multiframe"
    assert any("stack of frames" in w for w in src.info.warnings)
    assert "plane" not in src.supported_options and "slice" in src.supported_options
    assert src.info.to_json()["slices"] == 10


# -- decoding ---------------------------------------------------------------------------------


def all_values(src: DicomSource) -> np.ndarray:
    return np.stack(
        [src.region(None, k, np.arange(src.rows), np.arange(src.cols))[0] for k in range(src.n)]
    )


def test_compressed_mosaic_decodes_like_uncompressed(dicom_catalog: Any) -> None:
    ref = all_values(by_name(dicom_catalog, "compressed/mr_mosaic_siemens_ts/1.dcm"))
    assert ref.std() > 0
    for n in (2, 3, 4, 5, 7, 9):
        got = all_values(by_name(dicom_catalog, f"compressed/mr_mosaic_siemens_ts/{n}.dcm"))
        np.testing.assert_array_equal(got, ref, err_msg=f"{n}.dcm")


def test_compressed_enhanced_ct_decodes_like_uncompressed(dicom_catalog: Any) -> None:
    folder = "compressed/ct_enhanced_nema_ct0012/"
    ref = all_values(by_name(dicom_catalog, folder + "CT0012.explicit_little_endian.dcm"))
    for name in (
        "CT0012.fragmented_no_bot_jpeg_lossless.70.dcm",
        "CT0012.not_fragmented_bot_jpeg_ls.80.dcm",
        "CT0012.not_fragmented_bot_rle.dcm",
    ):
        np.testing.assert_array_equal(
            all_values(by_name(dicom_catalog, folder + name)), ref, err_msg=name
        )
    # JPEG extended (12-bit, lossy): this re-encoding stores the values shifted by about 1023
    # without changing the rescale intercept; it is served as the file says. Close up to that.
    lossy = all_values(
        by_name(dicom_catalog, folder + "CT0012.fragmented_no_bot_jpeg_baseline.51.dcm")
    )
    diff = lossy.astype(np.float64) - ref
    assert np.abs(diff - np.median(diff)).mean() < 5


def test_compressed_enhanced_mr_decodes_like_uncompressed(dicom_catalog: Any) -> None:
    folder = "compressed/mr_enhanced_emri_small/"
    ref = all_values(by_name(dicom_catalog, folder + "emri_small.dcm"))
    for name in (
        "emri_small_RLE.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
    ):
        np.testing.assert_array_equal(
            all_values(by_name(dicom_catalog, folder + name)), ref, err_msg=name
        )


def test_ultrasound_frames_are_rgb_slices(dicom_catalog: Any, dicom_dir: Path) -> None:
    name = "compressed/us_multiframe_jpeg_baseline/IM00001.fragmented_no_bot_jpeg_baseline.50.dcm"
    src = by_name(dicom_catalog, name)
    assert src.info.bands == 3 and src.info.extra["slices"] == 8
    assert src.supported_options == frozenset({"slice"})
    assert src.display_ranges(TileOptions()) is None
    px = src.read_tile(1, 0, 0, TileOptions(slice=5))
    expected = pixel_array(str(dicom_dir / name), index=5)  # YBR_FULL JPEG -> RGB
    np.testing.assert_array_equal(np.moveaxis(px.data, 0, -1)[:240, :256], expected[:, :256])


def test_lung_values_are_hounsfield_units(dicom_catalog: Any, dicom_dir: Path) -> None:
    src = by_name(dicom_catalog, LUNG)
    ref, _ = reference_volume(dicom_dir / LUNG)
    np.testing.assert_array_equal(all_values(src), ref)
    assert ref.min() < -900  # air: the intercept was applied


def test_shuffled_renamed_copy_gives_the_identical_volume(dicom_dir: Path, tmp_path: Path) -> None:
    files = sorted((dicom_dir / LUNG).iterdir())
    random.Random(5).shuffle(files)
    copy = tmp_path / "copy" / "scrambled"
    copy.mkdir(parents=True)
    for i, f in enumerate(files):
        shutil.copyfile(f, copy / f"img{i:03d}.dcm")
    a = by_name(scan([dicom_dir]), LUNG)
    b = next(iter(scan([tmp_path / "copy"]).images.values()))
    np.testing.assert_array_equal(np.asarray(a.volume()), np.asarray(b.volume()))
    ma, mb = a.info.to_json(), b.info.to_json()
    for key in (
        "slices",
        "spacing",
        "origin",
        "direction",
        "slice_positions",
        "sop_instance_uids",
        "planes",
    ):
        assert ma[key] == mb[key], key


def test_bad_files_are_skipped_with_a_reason(dicom_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    good = data / "series"
    good.mkdir(parents=True)
    for f in sorted((dicom_dir / "ct_dcmqi_23x38x3").iterdir()):
        shutil.copyfile(f, good / f.name)
    raw = (dicom_dir / LUNG / "1-01.dcm").read_bytes()
    (data / "truncated.dcm").write_bytes(raw[: len(raw) // 2])
    (data / "header_only.dcm").write_bytes(raw[:1500])
    (data / "notes.dcm").write_text("not DICOM at all\n" * 20)
    (data / "README").write_text("no suffix, not DICOM: ignored")
    catalog = scan([data])
    assert [s.info.kind for s in catalog.images.values()] == ["dicom-volume"]
    reasons = {f.path: f.reason for f in catalog.skipped}
    assert "truncated" in reasons["truncated.dcm"]
    assert "header_only.dcm" in reasons
    assert "not a DICOM file" in reasons["notes.dcm"]
    assert "README" not in reasons


def test_inconsistent_series_is_served_as_separate_images(tmp_path: Path) -> None:
    paths = write_ct_phantom(tmp_path / "data" / "mixed", PhantomSpec(cols=16, rows=16, slices=4))
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(paths[2])
    catalog = scan([tmp_path / "data"])
    kinds = sorted(s.info.kind for s in catalog.images.values())
    assert kinds == ["dicom-image"] * 4
    assert all("orientation" in s.info.warnings[0] for s in catalog.images.values())


def test_two_series_in_one_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "both"
    write_ct_phantom(
        folder, PhantomSpec(cols=16, rows=16, slices=5), names=[f"a{i}.dcm" for i in range(5)]
    )
    write_ct_phantom(
        folder,
        PhantomSpec(cols=16, rows=16, slices=3, seed=9),
        names=[f"b{i}.dcm" for i in range(3)],
    )
    catalog = scan([tmp_path / "data"])
    slices = sorted(s.info.extra["slices"] for s in catalog.images.values())
    assert slices == [3, 5]
    assert len({s.info.name for s in catalog.images.values()}) == 2


def test_headers_are_indexed_and_the_volume_cache_is_reused(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_ct_phantom(tmp_path / "data" / "ph", PhantomSpec(cols=24, rows=24, slices=10))
    first = next(iter(scan([tmp_path / "data"]).images.values()))
    first.read_tile(0, 0, 0, TileOptions(plane="coronal"))
    assert list((state / "dicom-cache").glob("*.npy"))
    calls: list[Path] = []
    real = dicom_index.read_header
    monkeypatch.setattr(dicom_index, "read_header", lambda p: calls.append(p) or real(p))
    decodes: list[int] = []
    real_decode = DicomSource._decode
    monkeypatch.setattr(
        DicomSource, "_decode", lambda self, k: decodes.append(k) or real_decode(self, k)
    )
    second = next(iter(scan([tmp_path / "data"]).images.values()))
    px = second.read_tile(0, 0, 0, TileOptions(plane="sagittal"))
    assert calls == [] and decodes == []  # headers from the index, pixels from the volume cache
    assert px.data.shape == (1, 256, 256)


def test_read_only_data_folder_is_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "ro"
    write_ct_phantom(data / "ph", PhantomSpec(cols=16, rows=16, slices=6))
    monkeypatch.delenv("TESSERA_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    for p in [data, data / "ph"]:
        p.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        src = next(iter(scan([data]).images.values()))
        src.read_tile(0, 0, 0, TileOptions(plane="coronal"))
        assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
        assert list((tmp_path / "xdg").rglob("*.npy"))
    finally:
        for p in [data, data / "ph"]:
            p.chmod(0o755)


def test_phantom_is_deterministic(tmp_path: Path) -> None:
    spec = PhantomSpec(cols=16, rows=16, slices=3)
    a = write_ct_phantom(tmp_path / "a", spec)
    b = write_ct_phantom(tmp_path / "b", spec)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


# -- window/level, planes and tiles through the API ---------------------------------------------


def test_voi_range_is_the_dicom_linear_function() -> None:
    x = np.linspace(-1200, 1200, 4801)
    for c, w in [(40, 400), (-600, 1500), (0, 2), (10.5, 7), (100, 1)]:
        lo, hi = voi_linear_range(c, w)
        mapped = np.clip((x - lo) / (hi - lo) * 255, 0, 255)
        ref = voi_linear(x, c, w)
        if w > 1:
            np.testing.assert_allclose(mapped, ref, atol=1e-9)
        else:  # width 1: a threshold at c - 0.5
            assert np.array_equal(mapped[x <= c - 0.5], ref[x <= c - 0.5])
            assert np.all(mapped[x >= c + 0.5] == 255)
    # The standard's own edge cases (PS3.3 C.11.2.1.2.1).
    assert voi_linear(np.array([40 - 0.5 - 199.5]), 40, 400)[0] == 0
    assert voi_linear(np.array([40 - 0.5 + 199.5 + 1e-9]), 40, 400)[0] == 255


def test_window_level_tile_follows_the_voi_formula(
    serve: Callable[..., LiveServer], dicom_dir: Path
) -> None:
    srv = serve(dicom_dir / LUNG)
    image = next(iter(srv.catalog.images))
    ref, _ = reference_volume(dicom_dir / LUNG)
    for query, (c, w) in [
        ("window=400&level=40", (40, 400)),
        ("preset=lung", (-600, 1500)),
        ("", (40, 350)),
    ]:
        r = srv.get(f"/api/v1/images/{image}/tiles/1/1/0.png?slice=12&{query}")
        assert r.status_code == 200, r.text
        got = decode_png(r.content)[:, :, 0].astype(int)
        expected = np.floor(voi_linear(ref[12, 0:256, 256:512], c, w) + 0.5).astype(int)
        diff = np.abs(got - expected)
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999, query


def test_pixel_route_returns_hounsfield_units(
    serve: Callable[..., LiveServer], dicom_dir: Path
) -> None:
    srv = serve(dicom_dir / LUNG)
    image = next(iter(srv.catalog.images))
    ref, files = reference_volume(dicom_dir / LUNG)
    r = srv.get(f"/api/v1/images/{image}/pixel?col=300.5&row=200.5&slice=7")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["value"] == ref[7, 200, 300] and body["unit"] == "HU"
    ds = pydicom.dcmread(files[7], stop_before_pixels=True)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    ps = [float(v) for v in ds.PixelSpacing]
    np.testing.assert_allclose(
        body["patient"], ipp + np.array([300 * ps[1], 200 * ps[0], 0]), atol=1e-6
    )
    # Coronal: plane row r lies between stored slices; linear interpolation along the normal.
    src = srv.catalog.images[image]
    grid = src.planes["coronal"]
    t = 100.5  # centre of coronal row 100
    h = grid.start + (grid.shape[1] - t) * grid.span / grid.shape[1]  # the row axis is reversed
    k = h / 8.0
    k0 = int(np.floor(k))
    expected = ref[k0, 200, 300] + (ref[k0 + 1, 200, 300] - ref[k0, 200, 300]) * (k - k0)
    r = srv.get(f"/api/v1/images/{image}/pixel?col=300.5&row={t}&slice=200&plane=coronal")
    assert r.json()["value"] == pytest.approx(expected, abs=1e-3)
    for bad, status in [
        ("col=1", 400),
        ("col=1&row=1&slice=30", 404),
        ("col=600&row=1", 404),
        ("col=1&row=1&plane=oblique", 400),
    ]:
        assert srv.get(f"/api/v1/images/{image}/pixel?{bad}").status_code == status, bad


def test_coronal_tiles_have_the_right_shape_and_values(
    serve: Callable[..., LiveServer], dicom_dir: Path
) -> None:
    srv = serve(dicom_dir / LUNG)
    image = next(iter(srv.catalog.images))
    meta = srv.get(f"/api/v1/images/{image}").json()
    cor = meta["planes"]["coronal"]
    height = cor["height"]
    assert height == round(240 / meta["spacing"][0])
    ref, _ = reference_volume(dicom_dir / LUNG)
    src = srv.catalog.images[image]
    grid = src.planes["coronal"]
    j = 260  # stored row cut by coronal slice 260
    r = srv.get(
        f"/api/v1/images/{image}/tiles/1/0/1.png?plane=coronal&slice={j}&window=1500&level=-600"
    )
    assert r.status_code == 200, r.text
    img = decode_png(r.content)
    assert img.shape == (256, 256, 2)  # grey + alpha: padded below the plane's last row
    alpha = img[:, 0, 1]
    assert (alpha[: height - 256] == 255).all() and (alpha[height - 256 :] == 0).all()
    # Independent resampling: output row m is centred at height h along the normal.
    m = np.arange(256, height)
    h = grid.start + (height - (m + 0.5)) * grid.span / height
    k = np.clip(h / 8.0, 0, 29)
    k0 = np.minimum(np.floor(k).astype(int), 28)
    w = (k - k0)[:, None]
    values = ref[k0, j, :256] * (1 - w) + ref[k0 + 1, j, :256] * w
    expected = np.floor(voi_linear(values, -600, 1500) + 0.5)
    diff = np.abs(img[: height - 256, :, 0].astype(int) - expected.astype(int))
    assert diff.max() <= 1


def test_tile_parameter_errors(serve: Callable[..., LiveServer], dicom_dir: Path) -> None:
    srv = serve(dicom_dir / LUNG, dicom_dir / "ct_single_pydicom")
    vol = (
        srv.image_id(f"{dicom_dir.name}/{LUNG}")
        if False
        else next(i for i, s in srv.catalog.images.items() if s.info.kind == "dicom-volume")
    )
    single = next(i for i, s in srv.catalog.images.items() if s.info.kind == "dicom-image")
    cases = [
        (f"{vol}/tiles/0/0/0.png?slice=30", 404, "outside 0..29"),
        (f"{vol}/tiles/0/0/0.png?plane=coronal&slice=512", 404, "coronal"),
        (f"{vol}/tiles/0/0/0.png?preset=nope", 400, "unknown preset"),
        (f"{vol}/tiles/0/0/0.png?preset=lung&window=100", 400, "not both"),
        (f"{vol}/tiles/0/0/0.png?bands=1", 400, "does not apply"),
        (f"{single}/tiles/0/0/0.png?slice=0", 400, "does not apply"),
        (f"{single}/tiles/0/0/0.png?plane=coronal", 400, "does not apply"),
    ]
    for url, status, text in cases:
        r = srv.get(f"/api/v1/images/{url}")
        assert r.status_code == status, (url, r.status_code, r.text)
        assert text in r.json()["message"], (url, r.json())
    for plane in PLANES:
        assert srv.get(f"/api/v1/images/{vol}/tiles/1/1/1.jpg?plane={plane}").status_code == 200


def test_monochrome1_is_inverted(serve: Callable[..., LiveServer], tmp_path: Path) -> None:
    spec = PhantomSpec(cols=32, rows=32, slices=4, monochrome1=True)
    write_ct_phantom(tmp_path / "m1" / "ph", spec)
    srv = serve(tmp_path / "m1")
    image = next(iter(srv.catalog.images))
    r = srv.get(f"/api/v1/images/{image}/tiles/0/0/0.png?slice=2&window=400&level=40")
    got = decode_png(r.content)[:32, :32, 0].astype(int)
    src = srv.catalog.images[image]
    hu = src.region(None, 2, np.arange(32), np.arange(32))[0]
    expected = 255 - np.floor(voi_linear(hu, 40, 400) + 0.5)
    assert np.abs(got - expected).max() <= 1
    assert got[16, 16] < got[0, 0] or hu[16, 16] <= hu[0, 0]  # air (corner) shows white


def test_phantom_tile_values(serve: Callable[..., LiveServer], tmp_path: Path) -> None:
    spec = PhantomSpec(cols=64, rows=64, slices=40)
    write_ct_phantom(tmp_path / "ph" / "ct", spec)
    srv = serve(tmp_path / "ph")
    image = next(iter(srv.catalog.images))
    meta = srv.get(f"/api/v1/images/{image}").json()
    centre, _, hu = spec.sphere_centres()["bone"]
    k = round((centre[2] - spec.position(0)[2]) / spec.slice_spacing)
    r = srv.get(f"/api/v1/images/{image}/tiles/0/0/0.png?slice={k}&window=2000&level=0")
    img = decode_png(r.content)[:64, :64, 0]
    col = int((centre[0] - meta["origin"][0]) / spec.pixel_spacing)
    row = int((centre[1] - meta["origin"][1]) / spec.pixel_spacing)
    assert int(img[row, col]) == int(np.floor(voi_linear(np.array([hu]), 0, 2000)[0] + 0.5))
    assert hu_at(spec, centre) == hu
