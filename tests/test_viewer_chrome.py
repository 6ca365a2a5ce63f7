"""The viewer's chrome, end to end in headless Chromium: the image list (thumbnails, project
groups, kind badges, search), the scale bar, the WebMercator mode and the status bar.

Served (next to fixtures of tests/test_viewer.py, whose helpers this reuses):

* ``a_utm.tif`` and ``b_counts.tif`` from tests/test_viewer.py (0.5 m UTM pixels; no georef);
* ``c_geographic.tif``: 360 x 240 RGB, EPSG:4326, 0.001 degree pixels from (10 E, 46 N); orange,
  with a purple top-left quadrant;
* ``z_basemap.tif``: an EPSG:3857 raster around ``a_utm.tif`` (2 m pixels, 3 x 2.4 km): yellow
  with cyan lines at known EPSG:3857 positions. The server is started with
  ``--basemap /api/v1/images/z-basemap/tiles/WebMercatorQuad/{z}/{x}/{y}.png``, so the basemap
  comes from this server and the test needs no network;
* the real 30-slice CT series of the shared data (for the kind badge and the mm scale bar on
  two planes).

Distances are read from the picture: the scale bar's label and drawn width, against the image's
drawn size found from its colours (never from the viewer's state). Set
``$TESSERA_SCREENSHOT_DIR`` to keep screenshots.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from PIL import Image
from playwright.sync_api import Page
from pyproj import Geod, Transformer
from rasterio.transform import Affine

from tests import test_viewer as tv
from tests.test_viewer import (
    BLUE,
    GEO_H,
    GEO_ID,
    GEO_ORIGIN,
    GEO_PIXEL,
    GEO_W,
    GREEN,
    RED,
    TOKEN,
    Server,
    colour_mask,
    find_image,
    keep_screenshot,
    map_picture,
    serve,
    wait_rendered,
    write_counts_tiff,
    write_geotiff,
)
from tests.test_viewer_volume import CT_ID, CT_SERIES, image_region, wait_slice

GEOG_ID, GEOG_W, GEOG_H = "c-geographic", 360, 240
GEOG_ORIGIN, GEOG_RES = (10.0, 46.0), 0.001
ORANGE, PURPLE = (240, 140, 20), (120, 40, 160)
BASEMAP_ID = "z-basemap"
BASEMAP_URL = f"/api/v1/images/{BASEMAP_ID}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}.png"
YELLOW, CYAN = (250, 215, 0), (0, 200, 220)
BASEMAP_PIXEL = 2.0  # EPSG:3857 metres
LINE_PX = 3  # basemap pixels per line
# The cyan lines' centres, relative to the centre of a_utm.tif in EPSG:3857 (metres).
LINE_DX, LINE_DY = (-500.0, 500.0), (-400.0, 400.0)

# The viewer fixtures of tests/test_viewer.py, by name (pytest looks fixtures up by name here).
browser, page, viewer_built = tv.browser, tv.page, tv.viewer_built

TIMES = "\N{MULTIPLICATION SIGN}"
UNIT_METRES = {"nm": 1e-9, "μm": 1e-6, "mm": 1e-3, "m": 1.0, "km": 1e3}
# The bar's width is rounded to a whole screen pixel (>= 80 px wide) and the image's drawn size
# is found to a pixel or two: 1.5 % covers both.
SCALE_TOLERANCE = 0.015

UTM_TO_3857 = Transformer.from_crs("EPSG:32618", "EPSG:3857", always_xy=True)


def utm_pixel_to_3857(col: float, row: float) -> tuple[float, float]:
    x, y = UTM_TO_3857.transform(GEO_ORIGIN[0] + GEO_PIXEL * col, GEO_ORIGIN[1] - GEO_PIXEL * row)
    return float(x), float(y)


def image_centre_3857() -> tuple[float, float]:
    return utm_pixel_to_3857(GEO_W / 2, GEO_H / 2)


# -- data and server --------------------------------------------------------------------------


def write_geographic(path: Path) -> None:
    data = np.empty((3, GEOG_H, GEOG_W), dtype=np.uint8)
    data[:] = np.array(ORANGE, dtype=np.uint8)[:, None, None]
    data[:, : GEOG_H // 2, : GEOG_W // 2] = np.array(PURPLE, dtype=np.uint8)[:, None, None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=GEOG_W,
        height=GEOG_H,
        count=3,
        dtype="uint8",
        crs="EPSG:4326",
        transform=Affine(GEOG_RES, 0.0, GEOG_ORIGIN[0], 0.0, -GEOG_RES, GEOG_ORIGIN[1]),
        photometric="RGB",
    ) as dst:
        dst.write(data)


def write_basemap(path: Path) -> None:
    """Yellow with cyan lines at the EPSG:3857 positions LINE_DX / LINE_DY around a_utm.tif."""
    cx, cy = image_centre_3857()
    half_w, half_h = 1500.0, 1200.0
    width, height = int(2 * half_w / BASEMAP_PIXEL), int(2 * half_h / BASEMAP_PIXEL)
    left, top = cx - half_w, cy + half_h
    data = np.empty((3, height, width), dtype=np.uint8)
    data[:] = np.array(YELLOW, dtype=np.uint8)[:, None, None]
    cyan = np.array(CYAN, dtype=np.uint8)[:, None, None]
    for dx in LINE_DX:
        c0 = round((cx + dx - left) / BASEMAP_PIXEL - LINE_PX / 2)
        data[:, :, c0 : c0 + LINE_PX] = cyan
    for dy in LINE_DY:
        r0 = round((top - (cy + dy)) / BASEMAP_PIXEL - LINE_PX / 2)
        data[:, r0 : r0 + LINE_PX, :] = cyan
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        crs="EPSG:3857",
        transform=Affine(BASEMAP_PIXEL, 0.0, left, 0.0, -BASEMAP_PIXEL, top),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        photometric="RGB",
    ) as dst:
        dst.write(data)


@pytest.fixture(scope="module")
def cserver(viewer_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not CT_SERIES.is_dir():
        pytest.fail(
            f"no CT series at {CT_SERIES}: the shared data folder must sit beside the repository"
        )
    root = tmp_path_factory.mktemp("viewer-chrome")
    data = root / "data"
    data.mkdir()
    write_geotiff(data / "a_utm.tif")
    write_counts_tiff(data / "b_counts.tif")
    write_geographic(data / "c_geographic.tif")
    write_basemap(data / "z_basemap.tif")
    shutil.copytree(CT_SERIES, data / CT_SERIES.name)
    with serve(data, root, ["--basemap", BASEMAP_URL]) as server:
        yield server


def api(server: Server, path: str, method: str = "GET", body: Any = None) -> Any:
    """The API with the admin's bearer token (no browser involved)."""
    request = urllib.request.Request(
        f"{server.base}api/v1{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def open_image(page: Page, server: Server, image_id: str) -> None:
    """Sign in (the address with the token sets the cookie) and open the image."""
    # Not waiting for the page's load event, which waits for the thumbnails in view too.
    page.goto(f"{server.base}?token={TOKEN}", wait_until="domcontentloaded")
    page.wait_for_function("location.hash.startsWith('#image=')")
    assert "token" not in page.url
    if not page.url.endswith(f"#image={image_id}"):
        page.locator(f'.image-item[data-image-id="{image_id}"]').click()
    wait_rendered(page, image_id)


def settle(page: Page) -> None:
    """Out of the image, and past the tiles' fade-in, for a clean picture."""
    box = page.locator("#map").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 3, box["y"] + 3)
    page.wait_for_timeout(300)


def zoom_by(page: Page, button: str, factor: float) -> None:
    """Click a zoom button and wait for the end of its animation: the status bar's zoom has moved
    by `factor` (it changes at the end of a move) and the tiles are drawn."""
    zoom = page.locator("#status-zoom")
    before = float(zoom.inner_text().split()[0])
    page.locator(button).click()
    page.wait_for_function(
        "([before, factor]) => {"
        " const now = parseFloat(document.querySelector('#status-zoom').textContent);"
        " return Math.abs(now / (before * factor) - 1) < 0.03; }",
        arg=[before, factor],
    )
    page.wait_for_function("!document.querySelector('#map').classList.contains('is-loading')")


def scale_bar_metres_per_px(page: Page) -> tuple[float, str]:
    """What the scale bar says one screen pixel is, in metres: its label over its drawn width."""
    inner = page.locator(".ol-scale-line-inner")
    text = inner.inner_text().strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(nm|μm|mm|m|km)", text)
    assert m, f"unexpected scale bar label {text!r}"
    box = inner.bounding_box()
    assert box is not None and box["width"] >= 80, box
    return float(m.group(1)) * UNIT_METRES[m.group(2)] / box["width"], text


def assert_close(got: float, expected: float, rel: float, what: str) -> None:
    assert abs(got / expected - 1) <= rel, f"{what}: {got} vs {expected} (tolerance {rel:.1%})"


# -- tests ------------------------------------------------------------------------------------


def test_image_list_thumbnails_groups_kinds_and_search(page: Page, cserver: Server) -> None:
    open_image(page, cserver, GEO_ID)
    images = api(cserver, "/images")["images"]
    assert len(images) == 5

    # One group per project: everything is in "default" today, and it is shown as a group.
    groups = page.locator(".image-group")
    assert groups.count() == 1
    assert groups.nth(0).get_attribute("data-project") == "default"
    assert groups.nth(0).locator(".image-group-name").inner_text() == "default"
    assert groups.nth(0).locator(".image-group-count").inner_text() == "5"
    assert page.locator("#image-count").inner_text() == "5"

    # Kind badges and sizes.
    expected = {
        GEO_ID: ("GEO", f"600 {TIMES} 400 px"),
        "b-counts": ("TIFF", f"300 {TIMES} 200 px"),
        GEOG_ID: ("GEO", f"360 {TIMES} 240 px"),
        CT_ID: ("CT", None),
    }
    for image_id, (badge, size) in expected.items():
        item = page.locator(f'.image-item[data-image-id="{image_id}"]')
        assert item.locator(".kind-badge").inner_text() == badge, image_id
        if size is not None:
            assert item.locator(".image-item-size").inner_text() == size

    # Thumbnails: the z = 0 tile, lazy, loaded, and showing the image (not a blank square).
    thumbs = page.locator(".image-thumb-img")
    assert thumbs.count() == 5
    for i in range(5):
        assert thumbs.nth(i).get_attribute("loading") == "lazy"
        assert re.fullmatch(
            r"/api/v1/images/[^/]+/tiles/0/0/0\.png", thumbs.nth(i).get_attribute("src") or ""
        )
    page.wait_for_function(
        "[...document.querySelectorAll('.image-thumb-img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    thumb = page.locator(f'.image-item[data-image-id="{GEO_ID}"] .image-thumb')
    page.wait_for_selector(
        f'.image-item[data-image-id="{GEO_ID}"] .image-thumb[data-state="loaded"]'
    )
    pic = np.asarray(Image.open(io.BytesIO(thumb.screenshot())).convert("RGB")).astype(int)
    h, w = pic.shape[:2]
    red, blue = colour_mask(pic, RED), colour_mask(pic, BLUE)
    # The red quadrant is top-left and blue fills the rest; the padding of the tile is cropped
    # off, so the whole box (3:2 image in a square box: a band above and below) is the image's.
    assert red[: h // 2, : w // 2].mean() > 0.3 and blue[:, w // 2 + 2 :].mean() > 0.4, pic.mean(
        axis=(0, 1)
    )
    assert red[:, w // 2 + 2 :].sum() == 0
    ct_thumb = page.locator(f'.image-item[data-image-id="{CT_ID}"] .image-thumb')
    ct_pic = np.asarray(Image.open(io.BytesIO(ct_thumb.screenshot())).convert("RGB")).astype(int)
    assert ct_pic.std() > 20, "the CT thumbnail is blank"
    keep_screenshot(page, "chrome-list")

    # Search: by name, ignoring case; the count says how many match; Escape clears it.
    search = page.locator("#image-search")
    search.fill("COUNTS")
    assert [e.get_attribute("data-image-id") for e in page.locator(".image-item").all()] == [
        "b-counts"
    ]
    assert page.locator("#image-count").inner_text() == "1 / 5"
    search.fill("utm tif")
    assert [e.get_attribute("data-image-id") for e in page.locator(".image-item").all()] == [GEO_ID]
    search.fill("no such image")
    assert page.locator(".image-item").count() == 0
    assert "no such image" in page.locator(".image-list-empty").inner_text()
    keep_screenshot(page, "chrome-search-empty")
    search.press("Escape")
    assert page.locator(".image-item").count() == 5
    # The selection survives filtering.
    assert (
        page.locator(f'.image-item[data-image-id="{GEO_ID}"]').get_attribute("aria-selected")
        == "true"
    )

    # A second project: its images make their own group, in the server's order of projects, and
    # a group without a match for the search goes away.
    api(cserver, "/projects", "POST", {"name": "survey"})
    api(cserver, f"/images/{GEOG_ID}/project", "PUT", {"project": "survey"})
    order = [p["name"] for p in api(cserver, "/projects")["projects"]]
    page.reload()
    page.wait_for_selector('.image-group[data-project="survey"]')
    shown = [g.get_attribute("data-project") for g in page.locator(".image-group").all()]
    assert shown == [name for name in order if name in ("default", "survey")]
    survey = page.locator('.image-group[data-project="survey"]')
    assert [e.get_attribute("data-image-id") for e in survey.locator(".image-item").all()] == [
        GEOG_ID
    ]
    assert survey.locator(".image-group-count").inner_text() == "1"
    assert (
        page.locator('.image-group[data-project="default"] .image-group-count').inner_text() == "4"
    )
    page.locator("#image-search").fill("geographic")
    assert [g.get_attribute("data-project") for g in page.locator(".image-group").all()] == [
        "survey"
    ]
    keep_screenshot(page, "chrome-list-projects")


def test_scale_bar_reads_the_ground_distance(page: Page, cserver: Server) -> None:
    # UTM, 0.5 m pixels: at the fitted zoom and after zooming in once.
    open_image(page, cserver, GEO_ID)
    settle(page)
    keep_screenshot(page, "chrome-scale-utm-fitted")
    place, _ = find_image(map_picture(page)[0], [RED, GREEN, BLUE], GEO_W)
    screen_per_pixel = place.scale
    for step in range(2):
        if step == 1:
            # A click on + halves the resolution: twice the drawn size (the viewer stops at 400 %).
            zoom_by(page, ".ol-zoom-in", 2)
            settle(page)
            screen_per_pixel *= 2
        metres, text = scale_bar_metres_per_px(page)
        assert text.endswith(" m"), text
        assert_close(metres, GEO_PIXEL / screen_per_pixel, SCALE_TOLERANCE, f"UTM scale bar {text}")
        keep_screenshot(page, f"chrome-scale-utm-{step}")

    # EPSG:4326: degrees times the length of a degree of longitude at the view's latitude (the
    # image's centre once fitted), from pyproj's geodesic on the WGS84 ellipsoid.
    page.locator(f'.image-item[data-image-id="{GEOG_ID}"]').click()
    wait_rendered(page, GEOG_ID)
    settle(page)
    pic, _ = map_picture(page)
    place, drawn_h = find_image(pic, [ORANGE, PURPLE], GEOG_W)
    assert abs(drawn_h - GEOG_H * place.scale) <= 2
    lat = GEOG_ORIGIN[1] - GEOG_RES * GEOG_H / 2
    lon = GEOG_ORIGIN[0] + GEOG_RES * GEOG_W / 2
    _, _, pixel_m = Geod(ellps="WGS84").inv(lon, lat, lon + GEOG_RES, lat)
    assert 77.0 < pixel_m < 78.0  # about 77.6 m at 45.9 N (111 m at the equator)
    metres, text = scale_bar_metres_per_px(page)
    assert_close(metres, pixel_m / place.scale, SCALE_TOLERANCE, f"EPSG:4326 scale bar {text}")
    keep_screenshot(page, "chrome-scale-4326")

    # The status bar gives the cursor in lon/lat for this CRS.
    box = page.locator("#map").bounding_box()
    assert box is not None
    x, y = place.screen(90.5, 60.5)
    page.mouse.move(box["x"] + round(x), box["y"] + round(y))
    crs = page.locator("#status-crs").inner_text()
    m = re.fullmatch(r"EPSG:4326\s+lon (-?\d+\.\d+), lat (-?\d+\.\d+)", crs.strip())
    assert m, crs
    col = float(page.locator("#status-pixel").get_attribute("data-col") or "nan")
    row = float(page.locator("#status-pixel").get_attribute("data-row") or "nan")
    assert abs(float(m.group(1)) - (GEOG_ORIGIN[0] + GEOG_RES * col)) < 1e-7
    assert abs(float(m.group(2)) - (GEOG_ORIGIN[1] - GEOG_RES * row)) < 1e-7
    page.wait_for_selector('#status-value[data-state="ok"]')
    assert json.loads(page.locator("#status-value").get_attribute("data-value") or "null") == list(
        PURPLE
    )

    # The CT: millimetres from the spacing of the plane shown (coronal has its own).
    meta = api(cserver, f"/images/{CT_ID}")
    page.locator(f'.image-item[data-image-id="{CT_ID}"]').click()
    for plane in ("axial", "coronal"):
        info = meta["planes"][plane]
        if plane != "axial":
            page.locator(f'#plane-buttons [data-plane="{plane}"]').click()
        wait_slice(page, plane, info["default_slice"])
        settle(page)
        pic, _ = map_picture(page)
        rows, cols = image_region(pic)
        drawn_w, drawn_h = cols.stop - cols.start, rows.stop - rows.start
        scale = drawn_w / info["width"]  # screen px per image px
        assert abs(drawn_h - info["height"] * scale) <= 3, (plane, drawn_w, drawn_h)
        metres, text = scale_bar_metres_per_px(page)
        assert text.endswith(" mm"), text
        assert_close(metres, info["spacing"][0] / 1000 / scale, SCALE_TOLERANCE, f"{plane} {text}")
        keep_screenshot(page, f"chrome-scale-ct-{plane}")


def bands_of(mask: np.ndarray, axis: int) -> list[float]:
    """Centres of the runs of True in a profile (mask collapsed along `axis`)."""
    profile = mask.mean(axis=axis) > 0.5
    centres, start = [], None
    for i, on in enumerate([*profile, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            centres.append((start + i) / 2)
            start = None
    return centres


def test_webmercator_mode_over_the_basemap(page: Page, cserver: Server) -> None:
    assert api(cserver, "/config") == {"basemap": {"url": BASEMAP_URL}}
    # An annotation around the green square, stored in pixels, with a colour to find it by.
    api(cserver, "/projects/default/labels/roof", "PUT", {"color": "#ff00ff"})
    ring = [[440, 290], [560, 290], [560, 390], [440, 390], [440, 290]]
    api(
        cserver,
        f"/images/{GEO_ID}/annotations?crs=pixel",
        "POST",
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"label": "roof"},
        },
    )
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    open_image(page, cserver, GEO_ID)
    assert page.locator("#map").get_attribute("data-mode") == "pixels"
    page.locator('#map-mode [data-mode="webmercator"]').click()
    page.wait_for_selector('#map[data-mode="webmercator"][data-state="ready"]')
    page.wait_for_function("!document.querySelector('#map').classList.contains('is-loading')")
    assert any(f"/images/{GEO_ID}/tiles/WebMercatorQuad/" in u for u in requested)
    assert any(f"/images/{BASEMAP_ID}/tiles/WebMercatorQuad/" in u for u in requested)
    assert any(f"/images/{GEO_ID}/annotations?" in u and "crs=EPSG%3A3857" in u for u in requested)
    # Editing is for the pixel mode: the panel goes away here.
    assert page.locator("#annotate").is_hidden()

    # Zoom out twice so that the basemap's lines are in view.
    for _ in range(2):
        zoom_by(page, ".ol-zoom-out", 0.5)
    settle(page)
    pic, (map_x, map_y) = map_picture(page)
    keep_screenshot(page, "chrome-webmercator")
    assert colour_mask(pic, YELLOW).mean() > 0.2, "the basemap is not drawn"

    # The basemap's lines give the screen position of EPSG:3857 coordinates ...
    cyan = colour_mask(pic, CYAN, tol=40)
    xs, ys = bands_of(cyan, 0), bands_of(cyan, 1)
    assert len(xs) == 2 and len(ys) == 2, (xs, ys)
    cx, cy = image_centre_3857()
    ax = (xs[1] - xs[0]) / (LINE_DX[1] - LINE_DX[0])
    ay = (ys[1] - ys[0]) / (LINE_DY[0] - LINE_DY[1])  # screen y grows down, northing up

    def screen(x3857: float, y3857: float) -> tuple[float, float]:
        return xs[0] + ax * (x3857 - (cx + LINE_DX[0])), ys[0] + ay * (y3857 - (cy + LINE_DY[1]))

    assert abs(ax / -ay - 1) < 0.01, "EPSG:3857 is conformal: the same scale along x and y"

    # ... and the image is drawn where its projected corners fall.
    image = np.zeros(pic.shape[:2], dtype=bool)
    for colour in (RED, GREEN, BLUE):
        image |= colour_mask(pic, colour)
    rows_, cols_ = np.nonzero(image)
    corners = [
        screen(*utm_pixel_to_3857(c, r))
        for c, r in [(0, 0), (GEO_W, 0), (0, GEO_H), (GEO_W, GEO_H)]
    ]
    tolerance = 3.0
    assert abs(cols_.min() - min(p[0] for p in corners)) <= tolerance
    assert abs(cols_.max() + 1 - max(p[0] for p in corners)) <= tolerance
    assert abs(rows_.min() - min(p[1] for p in corners)) <= tolerance
    assert abs(rows_.max() + 1 - max(p[1] for p in corners)) <= tolerance
    # The red quadrant ends at the projected column 300 / row 200.
    red = colour_mask(pic, RED)
    ry, rx = np.nonzero(red)
    edge = screen(*utm_pixel_to_3857(300, 200))
    assert abs(rx.max() + 1 - edge[0]) <= tolerance and abs(ry.max() + 1 - edge[1]) <= tolerance

    # The annotation is drawn on its projected outline, in its label's colour.
    magenta = colour_mask(pic, (255, 0, 255), tol=40)
    my, mx = np.nonzero(magenta)
    assert mx.size > 0, "the annotation is not drawn"
    a0, a1 = screen(*utm_pixel_to_3857(440, 290)), screen(*utm_pixel_to_3857(560, 390))
    assert abs(mx.min() - a0[0]) <= tolerance + 1 and abs(mx.max() + 1 - a1[0]) <= tolerance + 1
    assert abs(my.min() - a0[1]) <= tolerance + 1 and abs(my.max() + 1 - a1[1]) <= tolerance + 1

    # The status bar still speaks image pixels (through EPSG:3857 and the image's CRS) ...
    sx, sy = screen(*utm_pixel_to_3857(150, 100))
    page.mouse.move(map_x + round(sx) - 1, map_y + round(sy))
    page.mouse.move(map_x + round(sx), map_y + round(sy))
    pixel = page.locator("#status-pixel")
    col, row = (
        float(pixel.get_attribute("data-col") or "nan"),
        float(pixel.get_attribute("data-row") or "nan"),
    )
    image_px = GEO_W / (max(p[0] for p in corners) - min(p[0] for p in corners))  # per screen px
    assert abs(col - 150) <= 2 * image_px and abs(row - 100) <= 2 * image_px, (col, row, image_px)
    # ... and the scale bar is in ground metres (EPSG:3857's scale at the latitude).
    metres, text = scale_bar_metres_per_px(page)
    ground = GEO_PIXEL * GEO_W / (max(p[0] for p in corners) - min(p[0] for p in corners))
    assert_close(metres, ground, 0.02, f"WebMercator scale bar {text}")

    # A basemap chosen in this browser replaces the server's (and is checked first).
    form = page.locator("#basemap-form")
    assert form.locator('input[name="basemap"]').input_value() == BASEMAP_URL
    form.locator('input[name="basemap"]').fill("https://tiles.example.org/{z}/{x}.png")
    form.locator('button[type="submit"]').click()
    assert form.locator(".field-error").inner_text() == "Missing {y}."
    other = BASEMAP_URL.replace(BASEMAP_ID, GEOG_ID)  # far away: nothing under a_utm.tif
    form.locator('input[name="basemap"]').fill(other)
    form.locator('button[type="submit"]').click()
    page.wait_for_function(
        "() => performance.getEntriesByType('resource')"
        f".some(e => e.name.includes('/images/{GEOG_ID}/tiles/WebMercatorQuad/'))"
    )
    page.wait_for_selector('#map[data-state="ready"]')
    settle(page)
    assert page.evaluate("localStorage.getItem('tessera.basemap')") == other
    assert colour_mask(map_picture(page)[0], YELLOW).mean() < 0.01, (
        "the server's basemap is still drawn"
    )
    page.locator("#basemap-form button", has_text="Server").click()
    page.wait_for_selector('#map[data-state="ready"]')
    page.wait_for_function("!document.querySelector('#map').classList.contains('is-loading')")
    settle(page)
    assert page.evaluate("localStorage.getItem('tessera.basemap')") is None
    pic = map_picture(page)[0]
    assert colour_mask(pic, YELLOW).mean() > 0.2
    # Changing the basemap leaves the view where it was: the lines are back in their place.
    again = colour_mask(pic, CYAN, tol=40)
    assert np.allclose(bands_of(again, 0), xs, atol=1)
    assert np.allclose(bands_of(again, 1), ys, atol=1)

    # Back to pixels: the editor's layer returns, and the image fills the map again.
    page.locator('#map-mode [data-mode="pixels"]').click()
    page.wait_for_selector('#map[data-mode="pixels"][data-state="ready"]')
    assert page.locator("#annotate").is_visible()
