"""TIFF through tifffile (OME-TIFF, pyramidal TIFF, BigTIFF) and OME-NGFF zarr, end to end.

Every file is generated here. Stored pyramid levels hold values unrelated to a downsample of
the full-resolution image, so a coarse tile that equals the stored level proves it came from
that level (and not from reading and shrinking the full image).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from tests.conftest import decode_png
from tileserver.catalog import scan
from tileserver.readers.geotiff import GeoTIFFSource
from tileserver.readers.tiff import TiffSource
from tileserver.readers.zarr_source import NGFFSource

W, H = 1200, 1000  # 5x4 full-resolution tiles; the pyramid has zooms 0..3


def rand(shape: tuple[int, ...], seed: int, dtype: Any = np.uint8, hi: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, hi, shape).astype(dtype)


def levels_cyx(channels: int, dtype: Any = np.uint8, hi: int = 256) -> list[np.ndarray]:
    """Full resolution and two stored levels (1/2, 1/4), each independent random data."""
    return [rand((channels, H // f, W // f), seed, dtype, hi) for seed, f in enumerate((1, 2, 4))]


def tile(srv: Any, image_id: str, z: int, x: int, y: int, query: str = "") -> np.ndarray:
    r = srv.get(f"/api/v1/images/{image_id}/tiles/{z}/{x}/{y}.png{query}")
    assert r.status_code == 200, r.text
    return decode_png(r.content)


def expected_tile(level: np.ndarray, x: int, y: int, step: int = 1) -> np.ndarray:
    """(rows, cols, bands) of a 256 px tile over ``level`` (bands, rows, cols) whose output
    pixels are ``step`` level pixels wide, sampled at the output pixels' centres."""
    span = 256 * step
    win = level[:, y * span : (y + 1) * span, x * span : (x + 1) * span]
    off = step // 2  # the level pixel under each output pixel's centre
    return np.moveaxis(win[:, off::step, off::step], 0, -1)


def assert_tile(got: np.ndarray, want: np.ndarray) -> None:
    """``want`` fills the top-left of the tile; the rest is transparent padding."""
    h, w = want.shape[:2]
    bands = want.shape[2]
    np.testing.assert_array_equal(got[:h, :w, :bands], want)
    if (h, w) != (256, 256):
        assert got.shape[2] == bands + 1, "an edge tile has an alpha channel"
        assert (got[:h, :w, -1] == 255).all()
        assert not got[h:, :, -1].any() and not got[:, w:, -1].any(), "padding is opaque"


def check_pyramid_tiles(srv: Any, image_id: str, levels: list[np.ndarray]) -> None:
    full, half, quarter = levels
    # z=3 full resolution: first tile and the bottom-right edge tile.
    assert_tile(tile(srv, image_id, 3, 0, 0), expected_tile(full, 0, 0))
    assert_tile(tile(srv, image_id, 3, 4, 3), expected_tile(full, 4, 3))
    # z=2 and z=1 are the stored levels themselves, z=0 samples the coarsest one.
    assert_tile(tile(srv, image_id, 2, 1, 1), expected_tile(half, 1, 1))
    assert_tile(tile(srv, image_id, 1, 0, 0), expected_tile(quarter, 0, 0))
    assert_tile(tile(srv, image_id, 0, 0, 0), expected_tile(quarter, 0, 0, step=2))


def write_ome_subifds(path: Path, levels: list[np.ndarray], axes: str = "CYX", **kw: Any) -> None:
    with tifffile.TiffWriter(path, ome=True) as tw:
        names = {"Channel": {"Name": [f"ch{i}" for i in range(levels[0].shape[0])]}}
        meta = {"axes": axes, **(names if axes == "CYX" else {})}
        tw.write(levels[0], subifds=len(levels) - 1, tile=(256, 256), metadata=meta, **kw)
        for level in levels[1:]:
            tw.write(level, subfiletype=1, tile=(256, 256), **kw)


# -- TIFF ---------------------------------------------------------------------------------------


def test_ome_tiff_with_subifds_serves_its_stored_levels(tmp_path: Path, serve_dirs) -> None:
    levels = levels_cyx(3)
    data = tmp_path / "data"
    data.mkdir()
    write_ome_subifds(data / "slide.ome.tif", levels, photometric="minisblack")
    srv = serve_dirs(data)
    image_id = srv.image_id("slide.ome.tif")
    assert isinstance(srv.catalog.images[image_id], TiffSource)
    meta = srv.get(f"/api/v1/images/{image_id}").json()
    assert meta["kind"] == "ome-tiff"
    assert (meta["width"], meta["height"], meta["levels"], meta["tile_size"]) == (W, H, 4, 256)
    assert meta["dtype"] == "uint8" and meta["bands"] == 3
    assert meta["band_names"] == ["ch0", "ch1", "ch2"]
    sizes = [(lv["width"], lv["height"]) for lv in meta["pyramid_levels"]]
    assert sizes == [(1200, 1000), (600, 500), (300, 250)]
    check_pyramid_tiles(srv, image_id, levels)
    # Band selection: one band (grey) and a permutation.
    grey = tile(srv, image_id, 2, 0, 1, "?bands=3")
    assert_tile(grey, expected_tile(levels[1][2:3], 0, 1))
    perm = tile(srv, image_id, 3, 1, 1, "?bands=3,1,2")
    np.testing.assert_array_equal(perm, expected_tile(levels[0], 1, 1)[:, :, [2, 0, 1]])
    assert srv.get(f"/api/v1/images/{image_id}/tiles/3/0/0.png?bands=4").status_code == 400
    # Outside the pyramid.
    for z, x, y in ((4, 0, 0), (3, 5, 0), (3, 0, 4), (0, 1, 0)):
        r = srv.get(f"/api/v1/images/{image_id}/tiles/{z}/{x}/{y}.png")
        assert r.status_code == 404, (z, x, y)
    # The pixel route: every band at full resolution.
    r = srv.get(f"/api/v1/images/{image_id}/pixel?col=1000.5&row=700.25")
    assert r.status_code == 200, r.text
    assert r.json()["value"] == [float(v) for v in levels[0][:, 700, 1000]]
    assert srv.get(f"/api/v1/images/{image_id}/pixel?col=1200&row=0").status_code == 404
    assert srv.get(f"/api/v1/images/{image_id}/pixel?col=1&row=1&slice=0").status_code == 400


def test_multipage_reduced_resolution_pyramid(tmp_path: Path, serve_dirs) -> None:
    levels = levels_cyx(3)
    data = tmp_path / "data"
    data.mkdir()
    with tifffile.TiffWriter(data / "pyramid.tif") as tw:  # as vips/GDAL lay out overviews
        for i, level in enumerate(levels):
            tw.write(
                np.moveaxis(level, 0, -1),
                tile=(256, 256),
                photometric="rgb",
                subfiletype=1 if i else 0,
                compression="zlib",
            )
    srv = serve_dirs(data)
    image_id = srv.image_id("pyramid.tif")
    assert isinstance(srv.catalog.images[image_id], TiffSource)
    meta = srv.get(f"/api/v1/images/{image_id}").json()
    assert meta["kind"] == "tiff" and len(meta["pyramid_levels"]) == 3
    assert meta["bigtiff"] is False
    check_pyramid_tiles(srv, image_id, levels)


def test_bigtiff_planar_and_interleaved_rgb_agree(tmp_path: Path, serve_dirs) -> None:
    rgb = rand((3, H, W), 7)
    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(
        data / "planar.tif",
        rgb,
        bigtiff=True,
        photometric="rgb",
        planarconfig="separate",
        rowsperstrip=64,
    )
    tifffile.imwrite(
        data / "interleaved.tif",
        np.moveaxis(rgb, 0, -1),
        bigtiff=True,
        photometric="rgb",
        tile=(128, 128),
        compression="zlib",
    )
    srv = serve_dirs(data)
    for name in ("planar.tif", "interleaved.tif"):
        image_id = srv.image_id(name)
        assert isinstance(srv.catalog.images[image_id], TiffSource), name
        meta = srv.get(f"/api/v1/images/{image_id}").json()
        assert meta["bigtiff"] is True and meta["bands"] == 3 and meta["kind"] == "tiff"
        assert meta["pyramid_levels"] == [{"width": W, "height": H, "downsample": [1.0, 1.0]}]
        assert_tile(tile(srv, image_id, 3, 2, 1), expected_tile(rgb, 2, 1))
        assert_tile(tile(srv, image_id, 3, 4, 3), expected_tile(rgb, 4, 3))
        # No stored levels: coarse tiles sample the full image.
        assert_tile(tile(srv, image_id, 1, 0, 0), expected_tile(rgb, 0, 0, step=4))
        v = srv.get(f"/api/v1/images/{image_id}/pixel?col=3&row=999").json()["value"]
        assert v == [float(c) for c in rgb[:, 999, 3]]


def test_uint16_default_and_explicit_rescale(tmp_path: Path, serve_dirs) -> None:
    levels = [lv[:1] for lv in levels_cyx(1, np.uint16, hi=4000)]
    levels[2][0, :10, :10] = 60000  # outliers only the percentile range ignores
    data = tmp_path / "data"
    data.mkdir()
    write_ome_subifds(data / "grey16.ome.tif", [lv[0] for lv in levels], axes="YX")
    srv = serve_dirs(data)
    image_id = srv.image_id("grey16.ome.tif")
    meta = srv.get(f"/api/v1/images/{image_id}").json()
    assert meta["dtype"] == "uint16" and meta["bands"] == 1
    lo, hi = np.percentile(levels[2], [2.0, 98.0])
    np.testing.assert_allclose(meta["default_rescale"], [[lo, hi]])

    def scaled(raw: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return np.clip(np.floor((raw.astype(np.float64) - lo) * 255 / (hi - lo) + 0.5), 0, 255)

    raw = expected_tile(levels[0], 1, 1)[:, :, 0]
    got = tile(srv, image_id, 3, 1, 1, "?rescale=100,3000")[:, :, 0].astype(np.float64)
    assert np.abs(got - scaled(raw, 100, 3000)).max() <= 1  # float32 rounding at .5
    raw = expected_tile(levels[1], 0, 0)[:, :, 0]
    got = tile(srv, image_id, 2, 0, 0)[:, :, 0].astype(np.float64)
    assert np.abs(got - scaled(raw, lo, hi)).max() <= 1
    r = srv.get(f"/api/v1/images/{image_id}/pixel?col=5&row=5")
    assert r.json()["value"] == [float(levels[0][0, 5, 5])]


def test_float_nan_is_transparent(tmp_path: Path, serve_dirs) -> None:
    data = tmp_path / "data"
    data.mkdir()
    values = np.linspace(0, 1, 300 * 200, dtype=np.float32).reshape(200, 300)
    values[50:60, 70:90] = np.nan
    tifffile.imwrite(data / "f.tif", values, bigtiff=True)
    srv = serve_dirs(data)
    image_id = srv.image_id("f.tif")
    got = tile(srv, image_id, 1, 0, 0, "?rescale=0,1")
    alpha = got[:, :, -1]
    assert not alpha[50:60, 70:90].any() and alpha[:50, :300].all()
    assert not alpha[200:, :].any() and not alpha[:, 300:].any()
    r = srv.get(f"/api/v1/images/{image_id}/pixel?col=75&row=55").json()
    assert r["valid"] is False


def test_routing_rule(tmp_path: Path, make_raster) -> None:
    data = tmp_path / "data"
    plain = rand((1, 300, 400), 1)
    make_raster(plain, name="geo.tif", folder=data)  # georeferenced: GDAL
    make_raster(plain, name="geo_big.tif", folder=data, overviews=[2])
    tifffile.imwrite(data / "plain.tif", plain[0])  # plain classic TIFF: GDAL, as before
    tifffile.imwrite(data / "big.tif", plain[0], bigtiff=True)
    write_ome_subifds(data / "one.ome.tif", [plain[0], plain[0, ::2, ::2]], axes="YX")
    catalog = scan([data])
    try:
        kinds = {s.info.name: (type(s), s.info.kind) for s in catalog.images.values()}
        assert kinds == {
            "geo.tif": (GeoTIFFSource, "geotiff"),
            "geo_big.tif": (GeoTIFFSource, "geotiff"),
            "plain.tif": (GeoTIFFSource, "tiff"),
            "big.tif": (TiffSource, "tiff"),
            "one.ome.tif": (TiffSource, "ome-tiff"),
        }
    finally:
        catalog.close()


def test_truncated_pyramid_is_skipped_with_a_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    levels = levels_cyx(1)
    write_ome_subifds(data / "whole.ome.tif", levels, photometric="minisblack")
    body = (data / "whole.ome.tif").read_bytes()
    (data / "cut.ome.tif").write_bytes(body[: len(body) - 5000])
    (data / "stub.ome.tif").write_bytes(body[:300])
    catalog = scan([data])
    try:
        assert [s.info.name for s in catalog.images.values()] == ["whole.ome.tif"]
        reasons = {s.path: s.reason for s in catalog.skipped}
        assert set(reasons) == {"cut.ome.tif", "stub.ome.tif"}
        assert "truncated" in reasons["cut.ome.tif"]
    finally:
        catalog.close()


# -- OME-NGFF zarr ------------------------------------------------------------------------------


def write_ngff(
    folder: Path,
    levels: list[np.ndarray],
    axes: list[dict[str, str]],
    version: str = "0.4",
    omero: dict[str, Any] | None = None,
) -> None:
    """Write an OME-NGFF multiscales image (v0.4: zarr v2; v0.5: zarr v3)."""
    fmt = 2 if version == "0.4" else 3
    datasets = []
    for i, level in enumerate(levels):
        f = 2.0**i
        scale = [f if a["type"] == "space" and a["name"] in "xy" else 1.0 for a in axes]
        arr = zarr.create_array(
            store=str(folder / str(i)),
            shape=level.shape,
            chunks=tuple(
                min(n, 128) if a["name"] in "xy" else 1
                for n, a in zip(level.shape, axes, strict=True)
            ),
            dtype=level.dtype,
            zarr_format=fmt,
        )
        arr[...] = level
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    ms = {"version": version, "axes": axes, "datasets": datasets}
    attrs: dict[str, Any] = {"multiscales": [ms]}
    if omero:
        attrs["omero"] = omero
    if fmt == 2:
        (folder / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (folder / ".zattrs").write_text(json.dumps(attrs))
    else:
        del ms["version"]
        doc = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {"ome": {"version": version, **attrs}},
        }
        (folder / "zarr.json").write_text(json.dumps(doc))


CYX = [
    {"name": "c", "type": "channel"},
    {"name": "y", "type": "space"},
    {"name": "x", "type": "space"},
]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ngff_zarr_three_levels(tmp_path: Path, serve_dirs, version: str) -> None:
    levels = levels_cyx(3)
    data = tmp_path / "data"
    image = data / "sub" / "scene.ome.zarr"
    image.mkdir(parents=True)
    omero = {"channels": [{"label": n} for n in ("red", "green", "blue")]}
    write_ngff(image, levels, CYX, version, omero)
    (image / "0" / "decoy.tif").write_bytes(b"not a TIFF: never scanned")
    srv = serve_dirs(data)
    assert [s.info.name for s in srv.catalog.images.values()] == ["sub/scene.ome.zarr"]
    assert srv.catalog.skipped == []  # the scan did not look inside the zarr folder
    image_id = srv.image_id("sub/scene.ome.zarr")
    assert isinstance(srv.catalog.images[image_id], NGFFSource)
    meta = srv.get(f"/api/v1/images/{image_id}").json()
    assert meta["kind"] == "zarr" and meta["zarr_format"] == (2 if version == "0.4" else 3)
    assert (meta["width"], meta["height"], meta["levels"], meta["bands"]) == (W, H, 4, 3)
    assert meta["band_names"] == ["red", "green", "blue"]
    assert [lv["downsample"] for lv in meta["pyramid_levels"]] == [[1, 1], [2, 2], [4, 4]]
    check_pyramid_tiles(srv, image_id, levels)
    grey = tile(srv, image_id, 3, 4, 0, "?bands=2")
    assert_tile(grey, expected_tile(levels[0][1:2], 4, 0))
    assert srv.get(f"/api/v1/images/{image_id}/tiles/2/3/0.png").status_code == 404
    r = srv.get(f"/api/v1/images/{image_id}/pixel?col=17.5&row=999.9").json()
    assert r["value"] == [float(v) for v in levels[0][:, 999, 17]]


def test_ngff_5d_uint16_slices_and_rescale(tmp_path: Path, serve_dirs) -> None:
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}]
    axes += [{"name": n, "type": "space"} for n in "zyx"]
    shape = (2, 2, 5, 300, 400)
    full = rand(shape, 3, np.uint16, 5000)
    half = rand((2, 2, 5, 150, 200), 4, np.uint16, 5000)
    data = tmp_path / "data"
    image = data / "vol.zarr"
    image.mkdir(parents=True)
    omero = {
        "channels": [{"window": {"start": 10, "end": 4000}}, {"window": {"start": 0, "end": 500}}]
    }
    write_ngff(image, [full, half], axes, "0.4", omero)
    srv = serve_dirs(data)
    image_id = srv.image_id("vol.zarr")
    meta = srv.get(f"/api/v1/images/{image_id}").json()
    assert meta["slices"] == 5 and meta["bands"] == 2 and meta["dtype"] == "uint16"
    assert meta["default_rescale"] == [[10, 4000], [0, 500]]
    # Default: t=0, the middle z; one band shown (two bands are not an RGB triple).
    got = tile(srv, image_id, 1, 1, 0, "?rescale=0,5000")[:, :, 0].astype(np.float64)
    raw = full[0, 0, 2, :256, 256:400].astype(np.float64)
    assert np.abs(got[:256, :144] - np.floor(raw * 255 / 5000 + 0.5)).max() <= 1
    got = tile(srv, image_id, 0, 0, 0, "?slice=4&bands=2&rescale=0,5000")[:, :, 0]
    raw = half[0, 1, 4].astype(np.float64)
    assert np.abs(got[:150, :200] - np.floor(raw * 255 / 5000 + 0.5)).max() <= 1
    assert srv.get(f"/api/v1/images/{image_id}/tiles/0/0/0.png?slice=5").status_code == 404
    r = srv.get(f"/api/v1/images/{image_id}/pixel?col=3&row=4&slice=1").json()
    assert r["value"] == [float(full[0, 0, 1, 4, 3]), float(full[0, 1, 1, 4, 3])]
    assert r["slice"] == 1


def test_broken_zarr_folders_are_skipped_with_a_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    levels = levels_cyx(1)
    for name in ("good.zarr", "no_level.zarr", "bad_json.zarr", "bad_chunk.zarr"):
        (data / name).mkdir(parents=True)
        write_ngff(data / name, levels, CYX)
    shutil.rmtree(data / "no_level.zarr" / "2")
    (data / "bad_json.zarr" / ".zattrs").write_text("{not json")
    chunk = data / "bad_chunk.zarr" / "2" / "0.0.0"
    assert chunk.is_file()
    chunk.write_bytes(b"garbage")
    catalog = scan([data])
    try:
        assert [s.info.name for s in catalog.images.values()] == ["good.zarr"]
        reasons = {s.path: s.reason for s in catalog.skipped}
        assert set(reasons) == {"no_level.zarr", "bad_json.zarr", "bad_chunk.zarr"}
        assert all(r for r in reasons.values())
    finally:
        catalog.close()


def test_a_zarr_folder_given_as_the_data_folder(tmp_path: Path) -> None:
    image = tmp_path / "only.zarr"
    image.mkdir()
    write_ngff(image, levels_cyx(1), CYX)
    catalog = scan([image])
    try:
        assert [s.info.name for s in catalog.images.values()] == ["only.zarr"]
    finally:
        catalog.close()


def test_concurrent_tile_reads_agree(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tileserver.readers.base import TileOptions

    levels = levels_cyx(3)
    write_ome_subifds(tmp_path / "c.ome.tif", levels, photometric="minisblack")
    source = TiffSource("c", tmp_path / "c.ome.tif", "c.ome.tif")
    keys = [(z, x, y) for z in (2, 3) for x in range(3) for y in range(2)]
    try:
        ref = {k: source.read_tile(*k, TileOptions()).data for k in keys}
        with ThreadPoolExecutor(4) as pool:
            same = pool.map(
                lambda k: np.array_equal(source.read_tile(*k, TileOptions()).data, ref[k]),
                keys * 4,
            )
            assert all(same)
    finally:
        source.close()
