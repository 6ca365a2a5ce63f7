"""The viewer page, end to end: the real server, the built viewer, headless Chromium.

Needs the viewer built (``cd viewer && npm ci && npm run build``), the ``playwright`` Python
package (its bundled driver only: no ``playwright install``) and Chromium at
``/usr/bin/chromium`` (Debian's ``chromium`` package; ``$TESSERA_CHROMIUM`` overrides it).
Set ``$TESSERA_SCREENSHOT_DIR`` to keep screenshots of the pages the tests look at.

Two generated images are served:

* ``a_utm.tif``: 600 x 400, 3-band uint8, EPSG:32618 with 0.5 m pixels; blue, with a red
  rectangle over columns 0-300 and rows 0-200 (the top-left quadrant) and a green square over
  columns 450-550 and rows 300-380 (in the bottom-right tile of the full-resolution level, so a
  wrong tile y convention shows).
* ``b_counts.tif``: 300 x 200, 1-band uint16 without georeferencing; value = 10 * column.

Positions on screen are found from the picture itself (the coloured image against the grey map
background), never from the viewer's own state, so the status bar is checked independently.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

REPO = Path(__file__).resolve().parents[1]
VIEWER_BUILD = REPO / "tileserver" / "web" / "static" / "viewer"
CHROMIUM = os.environ.get("TESSERA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TOKEN = "viewer-test-token-0123456789"
LISTENING = re.compile(r"Tessera listening on (http://127\.0\.0\.1:\d+/)")
START_TIMEOUT = 60.0
UI_TIMEOUT_MS = 30_000

GEO_ID, GEO_W, GEO_H = "a-utm", 600, 400
GEO_ORIGIN, GEO_PIXEL = (500_000.0, 4_400_000.0), 0.5
RED_COLS, RED_ROWS = (0, 300), (0, 200)
GREEN_COLS, GREEN_ROWS = (450, 550), (300, 380)
COUNTS_ID, COUNTS_W, COUNTS_H = "b-counts", 300, 200

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 60), (30, 60, 220)
VIEWPORT = {"width": 1280, "height": 800}
MAP_BACKGROUND = np.array([46, 50, 56])  # --bg-map in viewer/src/style.css

# Edges are found on screen to within a screen pixel or so (the browser blends colours where a
# tile edge falls inside a screen pixel): positions are compared with this slack, in screen px.
SCREEN_TOLERANCE_PX = 2.0
# Tiles are PNG, so inside a region the drawn colour is exact; this slack is for the browser's
# blending only (and keeps apart the viewer's accent blue, 37,99,235, from the image's blue).
COLOUR_TOLERANCE = 20


# -- data and server --------------------------------------------------------------------------


def write_geotiff(path: Path) -> None:
    data = np.empty((3, GEO_H, GEO_W), dtype=np.uint8)
    data[:] = np.array(BLUE, dtype=np.uint8)[:, None, None]
    data[:, RED_ROWS[0] : RED_ROWS[1], RED_COLS[0] : RED_COLS[1]] = np.array(RED)[:, None, None]
    green = np.array(GREEN)[:, None, None]
    data[:, GREEN_ROWS[0] : GREEN_ROWS[1], GREEN_COLS[0] : GREEN_COLS[1]] = green
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=GEO_W,
        height=GEO_H,
        count=3,
        dtype="uint8",
        crs="EPSG:32618",
        transform=Affine(GEO_PIXEL, 0.0, GEO_ORIGIN[0], 0.0, -GEO_PIXEL, GEO_ORIGIN[1]),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        photometric="RGB",
    ) as dst:
        dst.write(data)


def write_counts_tiff(path: Path) -> None:
    cols = np.arange(COUNTS_W, dtype=np.uint16) * 10
    data = np.broadcast_to(cols, (COUNTS_H, COUNTS_W))[None].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=COUNTS_W,
            height=COUNTS_H,
            count=1,
            dtype="uint16",
        ) as dst:
            dst.write(data)


def tessera_command() -> list[str]:
    exe = Path(sys.executable).with_name("tessera")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("tessera")
    if found:
        return [found]
    return [sys.executable, "-m", "tileserver.cli"]


@dataclass
class Server:
    base: str  # http://127.0.0.1:PORT/
    log: Path


@pytest.fixture(scope="module")
def viewer_built() -> None:
    index = VIEWER_BUILD / "index.html"
    if not index.is_file():
        pytest.fail(
            f"the viewer is not built ({index} is missing): run `npm ci && npm run build` "
            "in viewer/",
            pytrace=False,
        )
    html = index.read_text()
    assets = re.findall(r'(?:src|href)="/assets/([^"]+)"', html)
    missing = [a for a in assets if not (VIEWER_BUILD / "assets" / a).is_file()]
    if not assets or missing:
        pytest.fail(
            f"the viewer build is incomplete (assets {missing or 'none referenced'}): run "
            "`npm ci && npm run build` in viewer/",
            pytrace=False,
        )


@contextlib.contextmanager
def serve(data: Path, root: Path, extra_args: Sequence[str] = ()) -> Iterator[Server]:
    """`tessera serve --data DATA [EXTRA_ARGS]` on a free port, state under ROOT, stopped on exit."""
    log = root / "server.log"
    env = {
        **os.environ,
        "TESSERA_ADMIN_TOKEN": TOKEN,
        "TESSERA_STATE_DIR": str(root / "state"),
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*tessera_command(), "serve", "--data", str(data), "--port", "0", *extra_args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=root,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    base = None
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while base is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(
                    "tessera serve did not print 'Tessera listening on ...'; stdout:\n"
                    + "".join(seen)
                    + "\nstderr:\n"
                    + log.read_text(),
                    pytrace=False,
                )
            seen.append(line)
            if m := LISTENING.search(line):
                base = m.group(1)
        yield Server(base, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()



@pytest.fixture(scope="module")
def server(viewer_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("viewer")
    data = root / "data"
    data.mkdir()
    write_geotiff(data / "a_utm.tif")
    write_counts_tiff(data / "b_counts.tif")
    with serve(data, root) as server:
        yield server


# -- browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium is not at {CHROMIUM}: apt-get install chromium", pytrace=False)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{exc}\n{exc.stack}"))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


def pointer_at(page: Page, x: float, y: float) -> tuple[float, float]:
    """The status bar's (col, row) with the mouse at page position (x, y).

    The status follows pointer moves, so make one; the page handles it before the move returns.
    """
    page.mouse.move(x - 1, y)
    page.mouse.move(x, y)
    pixel = page.locator("#status-pixel")
    col, row = pixel.get_attribute("data-col"), pixel.get_attribute("data-row")
    assert col is not None and row is not None, pixel.inner_text()
    return float(col), float(row)


def zoom_percent(page: Page) -> float:
    return float(page.locator("#status-zoom").inner_text().split()[0])


def keep_screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("TESSERA_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def sign_in(page: Page, server: Server) -> None:
    """The sign-in address sets the session cookie and redirects to /, which opens an image."""
    page.goto(f"{server.base}?token={TOKEN}")
    page.wait_for_url(re.compile(r"/#image="))
    assert "token" not in page.url


def wait_rendered(page: Page, image_id: str) -> None:
    """The image is selected in the list and every visible tile is drawn."""
    page.wait_for_selector(f'.image-item[data-image-id="{image_id}"][aria-selected="true"]')
    page.wait_for_selector('#map[data-state="ready"]')
    page.wait_for_function("!document.querySelector('#map').classList.contains('is-loading')")


def map_picture(page: Page) -> tuple[np.ndarray, tuple[float, float]]:
    """The map as an RGB array, and the map element's top-left corner in page pixels."""
    box = page.locator("#map").bounding_box()
    assert box is not None
    png = page.locator("#map").screenshot(animations="disabled")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int), (box["x"], box["y"])


def colour_mask(
    pic: np.ndarray, colour: tuple[int, int, int], tol: int = COLOUR_TOLERANCE
) -> np.ndarray:
    return (np.abs(pic - np.array(colour)) <= tol).all(axis=-1)


@dataclass
class Placement:
    """Where the image is drawn in the map picture: screen x = left + col * scale."""

    left: float
    top: float
    scale: float

    def screen(self, col: float, row: float) -> tuple[float, float]:
        return self.left + col * self.scale, self.top + row * self.scale

    def pixel(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.left) / self.scale, (y - self.top) / self.scale


def find_image(
    pic: np.ndarray, colours: list[tuple[int, int, int]], width: int
) -> tuple[Placement, float]:
    """The image's placement and drawn height: where its colours are, against the grey map."""
    mask = np.zeros(pic.shape[:2], dtype=bool)
    for c in colours:
        mask |= colour_mask(pic, c)
    ys, xs = np.nonzero(mask)
    assert xs.size > 0, "the image is not drawn on the map"
    left, right = xs.min(), xs.max() + 1
    top, bottom = ys.min(), ys.max() + 1
    return Placement(float(left), float(top), (right - left) / width), float(bottom - top)


# -- tests ------------------------------------------------------------------------------------


def test_without_a_session_the_page_says_how_to_sign_in(page: Page, server: Server) -> None:
    statuses: list[int] = []
    page.on(
        "response",
        lambda r: statuses.append(r.status) if r.url.endswith("/api/v1/images") else None,
    )
    page.goto(server.base)
    notice = page.locator("#notice")
    notice.wait_for(state="visible")
    text = notice.inner_text()
    assert "Sign in with the address printed by" in text
    assert "tessera serve" in text
    assert f"{server.base}?token=" in text
    assert statuses == [401]
    assert page.locator(".image-item").count() == 0
    keep_screenshot(page, "signed-out")


def test_geotiff_is_drawn_in_place_and_the_status_bar_follows_the_cursor(
    page: Page, server: Server
) -> None:
    tiles: list[tuple[int, int, int, int]] = []

    def on_response(response) -> None:
        m = re.search(r"/api/v1/images/[^/]+/tiles/(\d+)/(\d+)/(\d+)\.png", response.url)
        if m:
            z, x, y = map(int, m.groups())
            tiles.append((z, x, y, response.status))

    page.on("response", on_response)
    sign_in(page, server)
    assert page.url == f"{server.base}#image={GEO_ID}", "the first image opens by default"
    wait_rendered(page, GEO_ID)

    items = page.locator(".image-item")
    assert items.count() == 2
    assert items.nth(0).inner_text().splitlines()[0] == "a_utm.tif"
    assert items.nth(1).inner_text().splitlines()[0] == "b_counts.tif"

    # Tiles: only ones inside the image are asked for, and all answer 200.
    assert tiles, "no tile was requested"
    assert all(status == 200 for *_, status in tiles), tiles
    counts = {0: (1, 1), 1: (2, 1), 2: (3, 2)}  # tiles per level of a 600 x 400 image
    for z, x, y, _ in tiles:
        assert z in counts and x < counts[z][0] and y < counts[z][1], (z, x, y)

    # The server's tile y counts down from the top: the green square is in tile 2/1/1.
    tile = page.request.get(f"{server.base}api/v1/images/{GEO_ID}/tiles/2/1/1.png")
    assert tile.status == 200
    arr = np.asarray(Image.open(io.BytesIO(tile.body())).convert("RGB")).astype(int)
    tile_green = colour_mask(arr, GREEN, tol=5)
    ys, xs = np.nonzero(tile_green)
    # columns 450-549 are cut at the tile's right edge (column 511); rows 300-379 are inside it
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (450 - 256, 255, 300 - 256, 379 - 256)

    # The picture: red top-left quadrant, green square bottom right, blue elsewhere.
    pic, (map_x, map_y) = map_picture(page)
    keep_screenshot(page, "geotiff")
    place, drawn_h = find_image(pic, [RED, GREEN, BLUE], GEO_W)
    assert abs(drawn_h - GEO_H * place.scale) <= SCREEN_TOLERANCE_PX, "aspect ratio is wrong"
    assert place.scale > 1.0, "a 600 x 400 image fills most of a 992 x 770 map"

    def colour_at(col: float, row: float) -> np.ndarray:
        x, y = place.screen(col, row)
        return pic[round(y), round(x)]

    expectations = {
        RED: [(20, 20), (150, 100), (280, 180)],
        BLUE: [(320, 20), (580, 100), (20, 220), (280, 380), (420, 340), (590, 390)],
        GREEN: [(460, 310), (500, 340), (540, 370)],
    }
    for colour, points in expectations.items():
        for col, row in points:
            got = colour_at(col, row)
            assert (np.abs(got - np.array(colour)) <= COLOUR_TOLERANCE).all(), (col, row, got)

    # Edges land where the pixels say (the red/blue border at column 300 and row 200).
    red = colour_mask(pic, RED)
    ys, xs = np.nonzero(red)
    assert abs(xs.max() + 1 - place.screen(300, 0)[0]) <= SCREEN_TOLERANCE_PX
    assert abs(ys.max() + 1 - place.screen(0, 200)[1]) <= SCREEN_TOLERANCE_PX

    # The status bar: cursor in pixels from the top-left corner, and in EPSG:32618.
    tolerance = SCREEN_TOLERANCE_PX / place.scale  # in image pixels
    for target_col, target_row in [(100.0, 50.0), (300.0, 200.0), (512.25, 377.5)]:
        # Whole page pixels: browsers report pointer positions in whole CSS pixels.
        sx, sy = (round(v) for v in place.screen(target_col, target_row))
        col, row = place.pixel(sx, sy)
        page.mouse.move(map_x + sx, map_y + sy)  # handled by the page before this returns
        pixel = page.locator("#status-pixel")
        m = re.fullmatch(r"col (-?\d+\.\d+), row (-?\d+\.\d+)", pixel.inner_text().strip())
        assert m, pixel.inner_text()
        shown_col, shown_row = float(m.group(1)), float(m.group(2))
        assert abs(shown_col - col) <= tolerance, (shown_col, col, tolerance)
        assert abs(shown_row - row) <= tolerance, (shown_row, row, tolerance)

        crs = page.locator("#status-crs")
        assert crs.is_visible()
        m = re.fullmatch(r"EPSG:32618\s+x (\d+\.\d+), y (\d+\.\d+)", crs.inner_text().strip())
        assert m, crs.inner_text()
        x, y = float(m.group(1)), float(m.group(2))
        # Exactly the transform of the shown pixel position (to the 2 decimals shown) ...
        assert abs(x - (GEO_ORIGIN[0] + GEO_PIXEL * shown_col)) <= 0.01
        assert abs(y - (GEO_ORIGIN[1] - GEO_PIXEL * shown_row)) <= 0.01
        # ... and so within the tolerance of where the cursor really is.
        assert abs(x - (GEO_ORIGIN[0] + GEO_PIXEL * col)) <= GEO_PIXEL * tolerance
        assert abs(y - (GEO_ORIGIN[1] - GEO_PIXEL * row)) <= GEO_PIXEL * tolerance
    keep_screenshot(page, "geotiff-cursor")

    # The wheel zooms about the cursor: the pixel under it stays under it.
    sx, sy = map_x + round(place.screen(150, 100)[0]), map_y + round(place.screen(150, 100)[1])
    before = pointer_at(page, sx, sy)
    zoom_before = zoom_percent(page)
    for _ in range(3):
        page.mouse.wheel(0, -200)
        page.wait_for_timeout(120)
    page.wait_for_function(
        f"parseFloat(document.querySelector('#status-zoom').textContent) > {zoom_before}"
    )
    wait_rendered(page, GEO_ID)
    assert zoom_percent(page) > zoom_before * 1.5
    after = pointer_at(page, sx, sy)
    assert abs(after[0] - before[0]) <= 0.5 and abs(after[1] - before[1]) <= 0.5, (before, after)
    keep_screenshot(page, "geotiff-zoomed")

    # Dragging moves the image with the cursor. OpenLayers starts a drag with the first move of
    # more than a pixel and pans from there on, so make that first move 2 px (which does not
    # pan) and count it; a pause before the release avoids the kinetic glide.
    resolution = 100 / zoom_percent(page)  # image pixels per screen pixel
    page.mouse.down()
    page.mouse.move(sx + 2, sy)
    page.mouse.move(sx + 120, sy + 70, steps=8)
    page.wait_for_timeout(250)
    page.mouse.up()
    wait_rendered(page, GEO_ID)
    dragged = pointer_at(page, sx + 120, sy + 70)
    expected = (before[0] + 2 * resolution, before[1])
    assert abs(dragged[0] - expected[0]) <= 0.1, (dragged, expected)
    assert abs(dragged[1] - expected[1]) <= 0.1, (dragged, expected)

    # The fit button brings back the whole image, where it was.
    page.locator(".ol-zoom-extent button").click()
    page.wait_for_function(
        f"parseFloat(document.querySelector('#status-zoom').textContent) < {zoom_before + 1}"
    )
    wait_rendered(page, GEO_ID)
    page.mouse.move(map_x + 5, map_y + 5)
    page.wait_for_timeout(300)  # the view animation and tile fade-in
    refit, _ = find_image(map_picture(page)[0], [RED, GREEN, BLUE], GEO_W)
    assert abs(refit.left - place.left) <= 1 and abs(refit.top - place.top) <= 1
    assert abs(refit.scale - place.scale) <= 0.01

    # 3-band uint8: a band selector and no rescale control.
    assert page.locator("#band-selector").is_visible()
    assert page.locator("#rescale-form").count() == 0
    assert page.locator(".ol-scale-line").is_visible()

    # Bands 3,2,1 swap red and blue.
    page.select_option('select[name="band-r"]', "3")
    page.select_option('select[name="band-b"]', "1")
    page.wait_for_function(
        "() => performance.getEntriesByType('resource')"
        ".some(e => e.name.includes('/tiles/') && e.name.includes('bands=3,2,1'))"
    )
    wait_rendered(page, GEO_ID)
    page.mouse.move(map_x + 5, map_y + 5)  # out of the image, for a clean picture
    page.wait_for_timeout(300)  # the tile fade-in transition
    pic, _ = map_picture(page)
    swapped_red, swapped_blue = RED[::-1], BLUE[::-1]
    for col, row in expectations[RED]:
        got = colour_at(col, row)
        assert (np.abs(got - np.array(swapped_red)) <= COLOUR_TOLERANCE).all(), (col, row, got)
    for col, row in expectations[BLUE]:
        got = colour_at(col, row)
        assert (np.abs(got - np.array(swapped_blue)) <= COLOUR_TOLERANCE).all(), (col, row, got)


def test_a_link_opens_an_image_and_rescale_reaches_the_tiles(page: Page, server: Server) -> None:
    sign_in(page, server)
    wait_rendered(page, GEO_ID)
    page.goto(f"{server.base}#image={COUNTS_ID}")
    page.reload()  # a fresh page load from the link, with the session cookie
    wait_rendered(page, COUNTS_ID)
    assert page.locator(".image-item[aria-selected='true']").count() == 1
    assert "b_counts.tif" in page.locator("#status-image").inner_text()

    # Not georeferenced: no CRS coordinates and no scale line; uint16: rescale, no bands.
    assert page.locator("#status-crs").is_hidden()
    assert page.locator(".ol-scale-line").count() == 0
    assert page.locator("#band-selector").count() == 0
    form = page.locator("#rescale-form")
    assert form.is_visible()

    # Values are 10 * column (0..2990); stretching 0..1000 makes columns past 100 white.
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url) if "/tiles/" in r.url else None)
    form.locator('input[name="rescale-min"]').fill("0")
    form.locator('input[name="rescale-max"]').fill("1000")
    form.locator('button[type="submit"]').click()
    page.wait_for_function(
        "() => performance.getEntriesByType('resource')"
        ".some(e => e.name.includes('/tiles/') && e.name.endsWith('?rescale=0,1000'))"
    )
    wait_rendered(page, COUNTS_ID)
    page.mouse.move(1, 1)
    page.wait_for_timeout(300)
    assert requested and all(u.endswith("?rescale=0,1000") for u in requested), requested
    pic, _ = map_picture(page)
    keep_screenshot(page, "counts-rescaled")
    # Along the map's middle row (clear of the zoom buttons), the image is what differs from
    # the map background.
    row_y = pic.shape[0] // 2
    line = pic[row_y]
    inside = np.nonzero((np.abs(line - MAP_BACKGROUND) > 12).any(axis=-1))[0]
    left, right = float(inside.min()), float(inside.max() + 1)
    scale = (right - left) / COUNTS_W
    assert scale > 1.0
    # Value 1000 (column 100) is the first white one.
    white = np.nonzero((line >= 250).all(axis=-1))[0]
    first_white_col = (white.min() - left) / scale
    assert abs(first_white_col - 100) <= SCREEN_TOLERANCE_PX / scale + 1, first_white_col
    assert (line[round(left + 110 * scale) : round(left + 290 * scale)] >= 250).all()
    grey = line[round(left + 50 * scale)]  # value 500: half way
    assert np.all(np.abs(grey - 127) <= 6), grey

    # The hash follows the list.
    page.locator(f'.image-item[data-image-id="{GEO_ID}"]').click()
    wait_rendered(page, GEO_ID)
    assert page.url.endswith(f"#image={GEO_ID}")
    page.go_back()
    wait_rendered(page, COUNTS_ID)

    # A link to an image that is not there says so; the list still works.
    page.goto(f"{server.base}#image=no-such-image")
    notice = page.locator("#notice")
    notice.wait_for(state="visible")
    assert "no-such-image" in notice.inner_text()
    assert page.locator(".image-item[aria-selected='true']").count() == 0
    page.locator(f'.image-item[data-image-id="{GEO_ID}"]').click()
    wait_rendered(page, GEO_ID)
    assert notice.is_hidden()
