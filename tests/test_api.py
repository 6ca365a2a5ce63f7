"""HTTP behaviour: auth, JSON errors, ETags, bad parameters, path tricks, broken files."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import decode_png


@pytest.fixture
def srv(geo_dir: Path, serve_dirs):
    return serve_dirs(geo_dir)


def test_health_and_openapi_need_no_token(srv) -> None:
    assert srv.get("/healthz", token=None).json() == {"status": "ok"}
    doc = srv.get("/api/v1/openapi.json", token=None).json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/images/{id}/tiles/{z}/{x}/{y}.{format}" in doc["paths"]
    assert "/api/v1/images/{id}/tiles/WebMercatorQuad/{z}/{x}/{y}.{format}" in doc["paths"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/images",
        "/api/v1/images/cog",
        "/api/v1/images/cog/tiles/0/0/0.png",
        "/api/v1/images/cog/tiles/WebMercatorQuad/5/10/7.png",
        "/api/v1/images/cog/tilejson.json",
    ],
)
def test_every_api_route_needs_a_valid_token(srv, path: str) -> None:
    for token in (None, "wrong-token"):
        r = srv.get(path, token=token)
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
        assert "Bearer" in r.headers["WWW-Authenticate"]
    r = requests.get(srv.url + path, headers={"Authorization": "Basic abc"}, timeout=10)
    assert r.status_code == 401


def test_image_list_and_metadata(srv, geo_dir: Path) -> None:
    images = srv.get("/api/v1/images").json()["images"]
    names = {i["name"] for i in images}
    assert names == {p.name for p in geo_dir.glob("*.tif")}
    meta = srv.get(f"/api/v1/images/{srv.image_id('RGB.byte.tif')}").json()
    assert (meta["width"], meta["height"], meta["bands"], meta["dtype"]) == (791, 718, 3, "uint8")
    assert meta["levels"] == 3 and meta["tile_size"] == 256
    assert meta["crs"]["epsg"] == 32618
    assert meta["transform"][0] == pytest.approx(300.0379266750948)
    np.testing.assert_allclose(
        meta["bounds_wgs84"], [-78.9586, 23.565, -76.5749, 25.5509], atol=1e-4
    )


def test_etag_and_conditional_requests(srv) -> None:
    path = f"/api/v1/images/{srv.image_id('cog.tif')}/tiles/2/1/1.jpg"
    first = srv.get(path)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert etag.startswith('"') and "max-age" in first.headers["Cache-Control"]
    again = srv.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = srv.get(path, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.content == first.content
    png = srv.get(path.replace(".jpg", ".png"))
    assert png.headers["ETag"] != etag
    rescaled = srv.get(path + "?rescale=0,100")
    assert rescaled.headers["ETag"] != etag


def test_tile_cache_serves_identical_bytes(geo_dir: Path, serve_dirs) -> None:
    srv = serve_dirs(geo_dir, tile_cache_mb=16)
    path = f"/api/v1/images/{srv.image_id('cogeo.tif')}/tiles/2/1/2.png"
    a, b = srv.get(path), srv.get(path)
    assert a.status_code == b.status_code == 200 and a.content == b.content


@pytest.mark.parametrize(
    "path,status,code",
    [
        ("/api/v1/images/nope", 404, "not_found"),
        ("/api/v1/images/nope/tiles/0/0/0.png", 404, "not_found"),
        ("/api/v1/images/{cog}/tiles/5/0/0.png", 404, "tile_out_of_bounds"),
        ("/api/v1/images/{cog}/tiles/4/11/0.png", 404, "tile_out_of_bounds"),
        ("/api/v1/images/{cog}/tiles/4/0/11.png", 404, "tile_out_of_bounds"),
        ("/api/v1/images/{cog}/tiles/WebMercatorQuad/3/9/0.png", 404, "tile_out_of_bounds"),
        ("/api/v1/images/{cog}/tiles/WebMercatorQuad/31/0/0.png", 404, "tile_out_of_bounds"),
        ("/api/v1/images/{cog}/tiles/0/0/0.gif", 404, "not_found"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?bands=2", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?bands=1,2", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?bands=x", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?rescale=5", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?rescale=9,1", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?rescale=nan,1", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?rescale=0,1&rescale=0,2", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?window=400", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?slice=3", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?plane=axial", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tiles/0/0/0.png?colour=red", 400, "bad_parameter"),
        ("/api/v1/images/{cog}/tilejson.json?tms=LINZ", 400, "bad_parameter"),
        ("/api/v1/nothing-here", 404, "not_found"),
    ],
)
def test_bad_requests_get_json_4xx(srv, path: str, status: int, code: str) -> None:
    r = srv.get(path.replace("{cog}", srv.image_id("cog.tif")))
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["message"]


def test_cache_buster_parameters_are_ignored(srv) -> None:
    r = srv.get(f"/api/v1/images/{srv.image_id('cog.tif')}/tiles/0/0/0.png?_=123")
    assert r.status_code == 200


TRAVERSALS = [
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..",
    "%2e%2e",
    "....%2F%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "cog.tif",
    "geo%2Fcog",
    "%00cog",
    "..%5C..%5Cwindows",
    "file:%2F%2F%2Fetc%2Fpasswd",
    "%252e%252e%252fetc",
]


@pytest.mark.parametrize("evil", TRAVERSALS)
def test_path_tricks_in_every_parameter_read_nothing(srv, evil: str, monkeypatch) -> None:
    opened: list[str] = []
    real_open = os.open

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    cog = srv.image_id("cog.tif")
    urls = [
        f"/api/v1/images/{evil}",
        f"/api/v1/images/{evil}/tiles/0/0/0.png",
        f"/api/v1/images/{evil}/tilejson.json",
        f"/api/v1/images/{cog}/tiles/{evil}/0/0.png",
        f"/api/v1/images/{cog}/tiles/0/{evil}/0.png",
        f"/api/v1/images/{cog}/tiles/0/0/{evil}.png",
        f"/api/v1/images/{cog}/tiles/0/0/0.{evil}",
        f"/api/v1/images/{cog}/tiles/0/0/0.png?bands={evil}",
        f"/api/v1/images/{cog}/tiles/0/0/0.png?rescale={evil}",
        f"/api/v1/images/{cog}/tiles/0/0/0.png?{evil}=1",
        f"/api/v1/images/{cog}/tilejson.json?tms={evil}",
        f"/api/v1/images/{cog}/tilejson.json?format={evil}",
        f"/assets/{evil}",
    ]
    host, port = srv.url.removeprefix("http://").split(":")
    for url in urls:
        # http.client sends the path as is (requests would resolve "..").
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", url, headers={"Authorization": f"Bearer {srv.token}"})
        status = conn.getresponse().status
        conn.close()
        assert 400 <= status < 500, (url, status)
    outside = [p for p in opened if "passwd" in p or "windows" in p]
    assert outside == []


def test_scan_never_leaves_the_data_folder(tmp_path: Path, make_raster, serve_dirs) -> None:
    secret_dir = tmp_path / "outside"
    secret = make_raster(np.full((1, 64, 64), 7, np.uint8), name="secret.tif", folder=secret_dir)
    data = tmp_path / "served"
    make_raster(np.full((1, 64, 64), 1, np.uint8), name="ok.tif", folder=data)
    (data / "link.tif").symlink_to(secret)
    (data / "linkdir").symlink_to(secret_dir, target_is_directory=True)
    # A GDAL VRT named .tif that points at a file outside the folder.
    (data / "vrt.tif").write_text(
        f'<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="Byte" band="1">'
        f"<SimpleSource><SourceFilename>{secret}</SourceFilename><SourceBand>1</SourceBand>"
        f"</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    srv = serve_dirs(data)
    names = {s.info.name for s in srv.catalog.images.values()}
    assert names == {"ok.tif"}
    skipped = {s.path: s.reason for s in srv.catalog.skipped}
    assert "not a TIFF" in skipped["vrt.tif"]
    listed = srv.get("/api/v1/images").json()
    assert [i["name"] for i in listed["images"]] == ["ok.tif"]
    assert {s["path"] for s in listed["skipped"]} == {"vrt.tif"}


def test_corrupt_and_truncated_files_are_reported_and_skipped(
    tmp_path: Path, make_raster, serve_dirs, geo_dir: Path
) -> None:
    data = tmp_path / "data"
    good = make_raster(np.full((1, 300, 300), 5, np.uint8), name="good.tif", folder=data)
    full = (geo_dir / "cog.tif").read_bytes()
    (data / "truncated.tif").write_bytes(full[: len(full) // 2])
    (data / "garbage.tif").write_bytes(b"II*\x00" + os.urandom(2000))
    (data / "empty.tif").write_bytes(b"")
    (data / "notes.txt").write_text("not an image")
    srv = serve_dirs(data)
    assert [s.info.name for s in srv.catalog.images.values()] == [good.name]
    reasons = {s.path: s.reason for s in srv.catalog.skipped}
    assert set(reasons) == {"truncated.tif", "garbage.tif", "empty.tif"}
    assert "truncated" in reasons["truncated.tif"]
    tile = decode_png(srv.get(f"/api/v1/images/{srv.image_id('good.tif')}/tiles/1/0/0.png").content)
    assert (tile[..., 0] == 5).all()


def test_signin_address_sets_a_session_cookie(srv) -> None:
    session = requests.Session()
    r = session.get(f"{srv.url}/?token={srv.token}", allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"] == "/"
    assert "tessera_session" in session.cookies
    assert session.get(f"{srv.url}/api/v1/images", timeout=10).status_code == 200
    me = session.get(f"{srv.url}/api/v1/session", timeout=10).json()
    assert me == {"name": "admin", "role": "admin"}
    bad = requests.get(f"{srv.url}/?token=wrong", allow_redirects=False, timeout=10)
    assert bad.status_code == 401 and "tessera_session" not in bad.cookies
    assert "text/html" in bad.headers["Content-Type"] and "tessera serve" in bad.text


def test_pixel_value_of_a_geotiff(srv, geo_dir: Path) -> None:
    import rasterio

    image_id = srv.image_id("cog_scale_epsg4326.tif")
    r = srv.get(f"/api/v1/images/{image_id}/pixel?col=100.7&row=50.2")
    assert r.status_code == 200, r.text
    body = r.json()
    with rasterio.open(geo_dir / "cog_scale_epsg4326.tif") as ds:
        raw = ds.read(window=((50, 51), (100, 101)))[:, 0, 0]
        expected = raw * np.asarray(ds.scales) + np.asarray(ds.offsets)
        x, y = ds.xy(50, 100)
    np.testing.assert_allclose(body["value"], expected, rtol=1e-6)
    np.testing.assert_allclose(body["crs"], [x, y], atol=1e-9)
    np.testing.assert_allclose(body["lonlat"], [x, y], atol=1e-9)  # EPSG:4326 file
    for bad in ("col=-1&row=0", "col=5000&row=0", "col=1&row=1&slice=2", "col=1",
                "col=1&row=1&plane=axial", "col=x&row=1"):
        r = srv.get(f"/api/v1/images/{image_id}/pixel?{bad}")
        assert 400 <= r.status_code < 500, (bad, r.status_code)


def test_pixel_value_nan_is_null(make_raster, serve_dirs) -> None:
    data = np.ones((1, 50, 60), np.float32)
    data[0, 5, 7] = np.nan
    path = make_raster(data, name="nan.tif")
    srv = serve_dirs(path.parent)
    body = srv.get(f"/api/v1/images/{srv.image_id('nan.tif')}/pixel?col=7.5&row=5.5").json()
    assert body["value"] == [None] and body["valid"] is False
    assert srv.get(f"/api/v1/images/{srv.image_id('nan.tif')}/pixel?col=8.5&row=5.5").json()["value"] == [1.0]
