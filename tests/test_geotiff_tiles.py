"""Tiles of real and generated GeoTIFFs compared with what rasterio reads for the same pixels."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
import rasterio.warp
from PIL import Image
from rasterio.windows import Window

from tests.conftest import decode_png

TMS = morecantile.tms.get("WebMercatorQuad")


def full_res_window(source_w: int, source_h: int, x: int, y: int, ts: int = 256) -> Window:
    return Window(x * ts, y * ts, min(ts, source_w - x * ts), min(ts, source_h - y * ts))


@pytest.mark.parametrize(
    "name", ["RGB.byte.tif", "cogeo.tif", "201404_13SED190110_201404_0x1500m_CL_1_mask.tif"]
)
def test_full_resolution_uint8_tiles_equal_rasterio(geo_dir: Path, serve_dirs, name: str) -> None:
    srv = serve_dirs(geo_dir)
    image_id = srv.image_id(name)
    meta = srv.get(f"/api/v1/images/{image_id}").json()
    z = meta["levels"] - 1
    with rasterio.open(geo_dir / name) as ds:
        nx, ny = math.ceil(ds.width / 256), math.ceil(ds.height / 256)
        for x, y in {(0, 0), (nx - 1, ny - 1), (nx // 2, ny // 2)}:
            r = srv.get(f"/api/v1/images/{image_id}/tiles/{z}/{x}/{y}.png")
            assert r.status_code == 200, r.text
            assert r.headers["Content-Type"] == "image/png"
            tile = decode_png(r.content)
            win = full_res_window(ds.width, ds.height, x, y)
            expected = np.moveaxis(ds.read([1, 2, 3], window=win), 0, -1)
            mask = ds.dataset_mask(window=win) > 0
            h, w = expected.shape[:2]
            if tile.shape[2] == 4:
                alpha = tile[:h, :w, 3]
                np.testing.assert_array_equal(alpha > 0, mask)
                assert not tile[h:, :, 3].any() and not tile[:, w:, 3].any(), "padding is opaque"
                got = tile[:h, :w, :3]
                np.testing.assert_array_equal(got[mask], expected[mask])
            else:
                assert mask.all()
                np.testing.assert_array_equal(tile[:h, :w, :3], expected)


def test_uint16_tile_with_rescale_matches_formula(geo_dir: Path, serve_dirs) -> None:
    srv = serve_dirs(geo_dir)
    image_id = srv.image_id("cog.tif")
    lo, hi = 100.0, 5000.0
    r = srv.get(f"/api/v1/images/{image_id}/tiles/4/3/2.png?rescale={lo},{hi}")
    assert r.status_code == 200, r.text
    tile = decode_png(r.content)
    with rasterio.open(geo_dir / "cog.tif") as ds:
        raw = ds.read(1, window=full_res_window(ds.width, ds.height, 3, 2)).astype(np.float64)
    expected = np.clip(np.floor((raw - lo) * 255 / (hi - lo) + 0.5), 0, 255)
    got = tile[: raw.shape[0], : raw.shape[1], 0].astype(np.float64)
    assert np.abs(got - expected).max() <= 1  # float32 rounding at .5 boundaries


def test_coarse_levels_read_the_internal_overview(make_raster, serve_dirs, tmp_path: Path) -> None:
    # Overviews built from 100s, then full resolution overwritten with 200s: a coarse tile that
    # shows 100 can only have come from the overview.
    path = make_raster(np.full((1, 2048, 2048), 100, np.uint8), overviews=[2, 4, 8])
    with rasterio.open(path, "r+") as ds:
        ds.write(np.full((1, 2048, 2048), 200, np.uint8))
    srv = serve_dirs(path.parent)
    image_id = srv.image_id(path.name)
    assert srv.get(f"/api/v1/images/{image_id}").json()["levels"] == 4
    coarse = decode_png(srv.get(f"/api/v1/images/{image_id}/tiles/0/0/0.png").content)
    full = decode_png(srv.get(f"/api/v1/images/{image_id}/tiles/3/0/0.png").content)
    assert (coarse[..., 0] == 100).all()
    assert (full[..., 0] == 200).all()
    z1 = decode_png(srv.get(f"/api/v1/images/{image_id}/tiles/1/1/1.png").content)
    assert (z1[..., 0] == 100).all()  # factor 4: the 4x overview


def test_overview_tile_equals_rasterio_overview(geo_dir: Path, serve_dirs) -> None:
    srv = serve_dirs(geo_dir)
    image_id = srv.image_id("cogeo.tif")  # 1024 px, overviews 2..64
    tile = decode_png(srv.get(f"/api/v1/images/{image_id}/tiles/1/1/0.png").content)
    with rasterio.open(geo_dir / "cogeo.tif", overview_level=0) as ov:  # the 2x overview
        expected = np.moveaxis(ov.read([1, 2, 3], window=Window(256, 0, 256, 256)), 0, -1)
        mask = ov.dataset_mask(window=Window(256, 0, 256, 256)) > 0
    np.testing.assert_array_equal(tile[..., :3][mask], expected[mask])


def test_nodata_becomes_transparent(geo_dir: Path, serve_dirs) -> None:
    srv = serve_dirs(geo_dir)
    image_id = srv.image_id("RGB.byte.tif")
    tile = decode_png(srv.get(f"/api/v1/images/{image_id}/tiles/2/0/0.png").content)
    with rasterio.open(geo_dir / "RGB.byte.tif") as ds:
        data = ds.read(window=Window(0, 0, 256, 256))
    nodata = np.all(data == 0, axis=0)
    assert nodata.any() and (~nodata).any()
    assert (tile[..., 3][nodata] == 0).all()
    assert (tile[..., 3][~nodata] == 255).all()


def test_float_nan_and_int16_nodata(make_raster, serve_dirs) -> None:
    data = np.linspace(-1.0, 1.0, 250 * 200, dtype=np.float32).reshape(1, 200, 250)
    data[0, :10, :10] = np.nan
    folder = make_raster(data, name="f.tif").parent
    dem = np.arange(250 * 200, dtype=np.int16).reshape(1, 200, 250)
    dem[0, 50:60, 50:60] = -32768
    make_raster(
        dem,
        name="dem.tif",
        nodata=-32768,
        crs="EPSG:4326",
        transform=rasterio.transform.from_origin(-97.5, 32.8, 0.001, 0.001),
    )
    srv = serve_dirs(folder)
    f = decode_png(
        srv.get(f"/api/v1/images/{srv.image_id('f.tif')}/tiles/0/0/0.png?rescale=-1,1").content
    )
    assert (f[:10, :10, 1] == 0).all() and (f[10:200, 10:250, 1] == 255).all()
    assert (f[200:, :, 1] == 0).all() and (f[:, 250:, 1] == 0).all()  # padding
    assert f[199, 249, 0] == 255 and f[0, 10, 0] == 0
    d = decode_png(srv.get(f"/api/v1/images/{srv.image_id('dem.tif')}/tiles/0/0/0.png").content)
    assert (d[50:60, 50:60, 1] == 0).all() and (d[:50, :250, 1] == 255).all()
    meta = srv.get(f"/api/v1/images/{srv.image_id('dem.tif')}").json()
    assert meta["dtype"] == "int16" and len(meta["default_rescale"]) == 1


def test_band_selection_and_per_band_rescale(make_raster, serve_dirs) -> None:
    data = np.stack([np.full((256, 256), v, np.uint16) for v in (1000, 2000, 3000, 4000)])
    path = make_raster(data)
    srv = serve_dirs(path.parent)
    image_id = srv.image_id(path.name)
    url = f"/api/v1/images/{image_id}/tiles/0/0/0.png?bands=4,2,1"
    t = decode_png(srv.get(url + "&rescale=0,4000&rescale=0,4000&rescale=0,2000").content)
    assert tuple(t[5, 5, :3]) == (255, 128, 128)
    grey = decode_png(
        srv.get(f"/api/v1/images/{image_id}/tiles/0/0/0.png?bands=3&rescale=0,6000").content
    )
    assert grey.shape[2] == 1 and grey[0, 0, 0] == 128


@pytest.mark.parametrize(
    "fmt,magic", [("jpg", b"\xff\xd8\xff"), ("webp", b"RIFF"), ("png", b"\x89PNG")]
)
def test_output_formats_decode(geo_dir: Path, serve_dirs, fmt: str, magic: bytes) -> None:
    srv = serve_dirs(geo_dir)
    image_id = srv.image_id("RGB.byte.tif")
    r = srv.get(f"/api/v1/images/{image_id}/tiles/2/1/1.{fmt}")
    assert r.status_code == 200 and r.content.startswith(magic)
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (256, 256)
    with rasterio.open(geo_dir / "RGB.byte.tif") as ds:
        expected = np.moveaxis(ds.read(window=Window(256, 256, 256, 256)), 0, -1).astype(int)
    got = np.asarray(img.convert("RGB")).astype(int)
    valid = expected.any(axis=2)
    assert np.abs(got[valid] - expected[valid]).mean() < 6  # lossy formats stay close


def _wmq_pixel_lonlat(tile: morecantile.Tile, u: int, v: int) -> tuple[float, float]:
    b = TMS.xy_bounds(tile)
    res = (b.right - b.left) / 256
    x, y = b.left + (u + 0.5) * res, b.top - (v + 0.5) * res
    return TMS.lnglat(x, y)


@pytest.mark.parametrize(
    "name,zoom_offset", [("RGB.byte.tif", 0), ("cog.tif", 1), ("cogeo.tif", 0), ("dem.tif", 0)]
)
def test_webmercator_tiles_sample_the_right_source_pixels(
    geo_dir: Path, serve_dirs, name: str, zoom_offset: int
) -> None:
    srv = serve_dirs(geo_dir)
    image_id = srv.image_id(name)
    tj = srv.get(f"/api/v1/images/{image_id}/tilejson.json?tms=WebMercatorQuad").json()
    lo_hi = srv.get(f"/api/v1/images/{image_id}").json().get("default_rescale", [[0, 255]])[0]
    z = tj["maxzoom"] + zoom_offset
    lon, lat = tj["center"][:2]
    tile = TMS.tile(lon, lat, z)
    r = srv.get(f"/api/v1/images/{image_id}/tiles/WebMercatorQuad/{z}/{tile.x}/{tile.y}.png")
    assert r.status_code == 200, r.text
    got = decode_png(r.content)
    rng = np.random.default_rng(0)
    checked = agree = 0
    with rasterio.open(geo_dir / name) as ds:
        data = ds.read()
        for u, v in rng.integers(0, 256, (300, 2)):
            lon_p, lat_p = _wmq_pixel_lonlat(tile, int(u), int(v))
            xs, ys = rasterio.warp.transform("EPSG:4326", ds.crs, [lon_p], [lat_p])
            row, col = ds.index(xs[0], ys[0])
            if not (0 <= row < ds.height and 0 <= col < ds.width):
                if got.shape[2] in (2, 4):
                    assert got[v, u, -1] == 0, "outside the image must be transparent"
                continue
            value = data[:, row, col]
            if ds.nodata is not None and np.all(value == ds.nodata):
                continue
            checked += 1
            lo, hi = lo_hi
            expected = np.clip(np.floor((value[:3] - lo) * 255.0 / (hi - lo) + 0.5), 0, 255)
            agree += bool(np.abs(got[v, u, : len(expected)] - expected).max() <= 1)
    assert checked > 50
    # A pixel centre can fall within float rounding of a source pixel edge: allow a few.
    assert agree / checked > 0.97


def test_tilejson_bounds_agree_with_morecantile(geo_dir: Path, serve_dirs) -> None:
    srv = serve_dirs(geo_dir)
    image_id = srv.image_id("cogeo.tif")
    tj = srv.get(f"/api/v1/images/{image_id}/tilejson.json?tms=WebMercatorQuad").json()
    with rasterio.open(geo_dir / "cogeo.tif") as ds:
        left, bottom, right, top = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    np.testing.assert_allclose(tj["bounds"], [left, bottom, right, top], atol=1e-9)
    # Every tile morecantile lists for the bounds exists; the ring of tiles around does not.
    z = tj["maxzoom"]
    tiles = list(TMS.tiles(left, bottom, right, top, [z]))
    for t in tiles:
        r = srv.get(f"/api/v1/images/{image_id}/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}.png")
        assert r.status_code == 200, (t, r.text)
    xs = [t.x for t in tiles]
    ys = [t.y for t in tiles]
    outside = srv.get(
        f"/api/v1/images/{image_id}/tiles/WebMercatorQuad/{z}/{max(xs) + 2}/{min(ys)}.png"
    )
    assert outside.status_code == 404
    assert outside.json()["error"] == "tile_out_of_bounds"


def test_striped_and_tiled_files_give_identical_tiles(
    make_raster, serve_dirs, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, (3, 700, 900), dtype=np.uint8)
    make_raster(data, name="tiled.tif", tiled=True, block=128)
    make_raster(data, name="striped.tif", tiled=False)
    srv = serve_dirs(tmp_path / "data")
    for z, x, y in [(2, 0, 0), (2, 3, 2), (1, 1, 1), (0, 0, 0)]:
        a = srv.get(f"/api/v1/images/{srv.image_id('tiled.tif')}/tiles/{z}/{x}/{y}.png").content
        b = srv.get(f"/api/v1/images/{srv.image_id('striped.tif')}/tiles/{z}/{x}/{y}.png").content
        np.testing.assert_array_equal(decode_png(a), decode_png(b))


def test_reprojected_copy_in_another_crs_serves(
    geo_dir: Path, make_raster, serve_dirs, tmp_path: Path
) -> None:
    # Any CRS: a Lambert azimuthal copy of the Landsat scene still maps into WebMercator tiles.
    src = geo_dir / "RGB.byte.tif"
    dst_dir = tmp_path / "laea"
    dst_dir.mkdir()
    with rasterio.open(src) as ds:
        from rasterio.warp import calculate_default_transform, reproject

        crs = "+proj=laea +lat_0=24 +lon_0=-77 +datum=WGS84 +units=m"
        transform, w, h = calculate_default_transform(ds.crs, crs, ds.width, ds.height, *ds.bounds)
        profile = ds.profile | {"crs": crs, "transform": transform, "width": w, "height": h}
        with rasterio.open(dst_dir / "laea.tif", "w", **profile) as out:
            for b in (1, 2, 3):
                reproject(rasterio.band(ds, b), rasterio.band(out, b))
    shutil.copy(src, dst_dir / "utm.tif")
    srv = serve_dirs(dst_dir)
    tj = srv.get(
        f"/api/v1/images/{srv.image_id('laea.tif')}/tilejson.json?tms=WebMercatorQuad"
    ).json()
    tile = TMS.tile(*tj["center"][:2], 8)
    a = decode_png(
        srv.get(
            f"/api/v1/images/{srv.image_id('laea.tif')}/tiles/WebMercatorQuad/8/{tile.x}/{tile.y}.png"
        ).content
    )
    b = decode_png(
        srv.get(
            f"/api/v1/images/{srv.image_id('utm.tif')}/tiles/WebMercatorQuad/8/{tile.x}/{tile.y}.png"
        ).content
    )
    both = (a[..., 3] == 255) & (b[..., 3] == 255)
    assert both.mean() > 0.5
    # Two resamplings of the same scene: most pixels identical or close.
    assert np.median(np.abs(a[..., :3][both].astype(int) - b[..., :3][both].astype(int))) <= 10
