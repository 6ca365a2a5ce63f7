"""The viewer on a real CT series (and a GeoTIFF next to it), end to end in headless Chromium.

Served: the 30-slice CT ``ct_lung_pet_ct_dx_A0002_B40f`` from ``/work/shared/data/dicom``
(``$TESSERA_CT_SERIES`` overrides it; the tests skip when it is missing) and ``a_utm.tif`` from
tests/test_viewer.py. Screenshots of the screens looked at are written under pytest's tmp_path
(the path is printed; run with ``-s`` to see it) and checked to be non-blank.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Page

from tests.test_viewer import (  # noqa: F401  (fixtures are used by name)
    MAP_BACKGROUND,
    Server,
    browser,
    map_picture,
    page,
    serve,
    sign_in,
    viewer_built,
    write_geotiff,
)

CT_SERIES = Path(
    os.environ.get(
        "TESSERA_CT_SERIES", "/work/shared/data/dicom/ct_lung_pet_ct_dx_A0002_B40f"
    )
)
CT_ID = "ct-lung-pet-ct-dx-a0002-b40f"
GEO_ID = "a-utm"


@pytest.fixture(scope="module")
def vserver(viewer_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not CT_SERIES.is_dir():
        pytest.fail(f"no CT series at {CT_SERIES}: the shared data folder must sit beside the repository")
    root = tmp_path_factory.mktemp("viewer-volume")
    data = root / "data"
    data.mkdir()
    shutil.copytree(CT_SERIES, data / CT_SERIES.name)
    write_geotiff(data / "a_utm.tif")
    with serve(data, root) as server:
        yield server


def api(page: Page, server: Server, path: str) -> Any:
    """GET under /api/v1 with the page's session cookie."""
    response = page.request.get(f"{server.base}api/v1{path}")
    assert response.ok, f"{path}: {response.status} {response.text()}"
    return response.json()


def shot(page: Page, folder: Path, name: str) -> np.ndarray:
    """Save a screenshot of the page, check it is not blank, return it as RGB."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    from PIL import Image

    pic = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert pic.std() > 10, f"{path} looks blank"
    return pic


def open_image(page: Page, server: Server, image_id: str) -> None:
    sign_in(page, server)
    page.goto(f"{server.base}#image={image_id}")
    wait_ready(page, image_id)


def wait_ready(page: Page, image_id: str) -> None:
    page.wait_for_selector(f'.image-item[data-image-id="{image_id}"][aria-selected="true"]')
    page.wait_for_selector('#map[data-state="ready"]')
    page.wait_for_function("!document.querySelector('#map').classList.contains('is-loading')")


def wait_slice(page: Page, plane: str, slice_: int) -> None:
    page.wait_for_selector(f'#map[data-plane="{plane}"][data-slice="{slice_}"][data-state="ready"]')
    page.wait_for_function("!document.querySelector('#map').classList.contains('is-loading')")


def image_region(pic: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of the map picture that differ from the map's grey background."""
    differs = (np.abs(pic - MAP_BACKGROUND) > 6).any(axis=-1)
    # Rows and columns mostly covered by the image (the map's controls and scale bar are small).
    ys = np.nonzero(differs.mean(axis=1) > 0.25)[0]
    xs = np.nonzero(differs.mean(axis=0) > 0.25)[0]
    assert xs.size > 0 and ys.size > 0, "nothing is drawn on the map"
    return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)


def status_value_at(page: Page, x: float, y: float) -> dict[str, Any]:
    """Hover (x, y) and wait for the status bar's value of that very pixel."""
    page.mouse.move(x - 1, y)
    page.mouse.move(x, y)
    pixel = page.locator("#status-pixel")
    col, row = pixel.get_attribute("data-col"), pixel.get_attribute("data-row")
    assert col is not None and row is not None
    page.wait_for_selector(
        f'#status-value[data-state="ok"][data-col="{col}"][data-row="{row}"]'
    )
    value = page.locator("#status-value")
    world = page.locator("#status-crs")
    return {
        "col": float(col),
        "row": float(row),
        "value": json.loads(value.get_attribute("data-value") or "null"),
        "slice": value.get_attribute("data-slice"),
        "text": value.inner_text(),
        "world": [float(world.get_attribute(f"data-{k}") or "nan") for k in ("x", "y", "z")],
        "col_text": col,
        "row_text": row,
    }


def cursor_lps(seen: dict[str, Any], truth: dict[str, Any], plane: dict[str, Any]) -> np.ndarray:
    """LPS mm of the cursor itself: the API gives the centre of the pixel under it (DICOM's
    ImagePositionPatient convention, the contract's pixel centres at +0.5), so move from there by
    the cursor's offset from that centre along the plane's row and column directions."""
    spacing, direction = np.array(plane["spacing"]), np.array(plane["direction"])
    du = (seen["col"] - np.floor(seen["col"]) - 0.5) * spacing[0]
    dv = (seen["row"] - np.floor(seen["row"]) - 0.5) * spacing[1]
    return np.array(truth["patient"]) + du * direction[0] + dv * direction[1]


def test_ct_slices_window_planes_and_the_pixel_value(
    page: Page, vserver: Server, tmp_path: Path
) -> None:
    shots = tmp_path / "screens"
    print(f"\nscreenshots: {shots}")
    open_image(page, vserver, CT_ID)
    meta = api(page, vserver, f"/images/{CT_ID}")
    axial = meta["planes"]["axial"]
    start = axial["default_slice"]
    wait_slice(page, "axial", start)
    assert page.locator('#plane-buttons [data-plane="axial"]').get_attribute("aria-pressed") == "true"
    assert page.locator("#slice-text").inner_text() == f"{start + 1} / {axial['slices']}"
    # The scale bar is in millimetres (the in-plane spacing), not in pixels.
    scale = page.locator(".ol-scale-line-inner").inner_text()
    assert scale.endswith(" mm") or scale.endswith(" cm"), scale
    pic0, (mx, my) = map_picture(page)
    rows, cols = image_region(pic0)
    # The axial image is square (512 x 512 at equal spacing).
    assert abs((cols.stop - cols.start) / (rows.stop - rows.start) - 1.0) < 0.02
    shot(page, shots, "ct-axial")

    # The status bar: the value under the cursor is the API's, the world position its LPS mm.
    cx, cy = mx + (cols.start + cols.stop) / 2 + 0.3, my + (rows.start + rows.stop) / 2 + 0.3
    seen = status_value_at(page, cx, cy)
    truth = api(
        page,
        vserver,
        f"/images/{CT_ID}/pixel?col={seen['col_text']}&row={seen['row_text']}&slice={start}&plane=axial",
    )
    assert seen["slice"] == str(start)
    assert seen["value"] == truth["value"]
    assert "HU" in seen["text"]
    assert np.allclose(seen["world"], cursor_lps(seen, truth, axial), atol=1e-6)

    # PageUp three times: three slices up; the picture changes, and so does the value's slice.
    page.locator("#map").focus()
    for _ in range(3):
        page.keyboard.press("PageUp")
    wait_slice(page, "axial", start + 3)
    pic1, _ = map_picture(page)
    assert np.abs(pic1[rows, cols] - pic0[rows, cols]).mean() > 2, "the slice did not change"
    seen = status_value_at(page, cx + 1, cy)
    truth = api(
        page,
        vserver,
        f"/images/{CT_ID}/pixel?col={seen['col_text']}&row={seen['row_text']}&slice={start + 3}&plane=axial",
    )
    assert seen["slice"] == str(start + 3) and seen["value"] == truth["value"]
    # ArrowDown and Shift + wheel step one slice each; the slider jumps anywhere.
    page.keyboard.press("ArrowDown")
    wait_slice(page, "axial", start + 2)
    zoom = page.locator("#status-zoom").inner_text()
    page.keyboard.down("Shift")
    page.mouse.wheel(0, -100)
    page.keyboard.up("Shift")
    wait_slice(page, "axial", start + 3)
    page.wait_for_timeout(300)  # a wheel zoom would have animated by now
    assert page.locator("#status-zoom").inner_text() == zoom, "Shift + wheel also zoomed"
    page.locator("#slice-slider").fill("5")
    wait_slice(page, "axial", 5)

    # A window preset: the lung window shows air grey instead of black, so the picture brightens.
    before, _ = map_picture(page)
    with page.expect_request(lambda r: "/tiles/" in r.url and "preset=lung" in r.url):
        page.locator("#preset-select").select_option("lung")
    wait_slice(page, "axial", 5)
    lung, _ = map_picture(page)
    assert lung[rows, cols].mean() > before[rows, cols].mean() + 10
    shot(page, shots, "ct-axial-lung")

    # Right-drag: an explicit window and level reach the tiles; the picker says Custom.
    with page.expect_request(lambda r: "/tiles/" in r.url and "window=" in r.url and "level=" in r.url):
        page.mouse.move(cx, cy)
        page.mouse.down(button="right")
        page.mouse.move(cx + 60, cy + 30, steps=5)
        page.mouse.up(button="right")
    assert page.locator("#preset-select").input_value() == ""
    width = float(page.locator("#window-text").get_attribute("data-window") or "nan")
    assert width > 1500  # dragged right: wider than the lung preset's 1500

    # Coronal: its own grid (512 x 371 px at about equal spacing), its own slice count.
    page.locator("#preset-select").select_option("bone")  # air black, unlike the map grey
    coronal = meta["planes"]["coronal"]
    page.locator('#plane-buttons [data-plane="coronal"]').click()
    wait_slice(page, "coronal", coronal["default_slice"])
    assert page.locator("#slice-text").inner_text() == (
        f"{coronal['default_slice'] + 1} / {coronal['slices']}"
    )
    pic2, (mx, my) = map_picture(page)
    rows2, cols2 = image_region(pic2)
    aspect = (cols2.stop - cols2.start) / (rows2.stop - rows2.start)
    assert abs(aspect - coronal["width"] / coronal["height"]) < 0.03, aspect
    cx2, cy2 = mx + (cols2.start + cols2.stop) / 2 + 0.3, my + (rows2.start + rows2.stop) / 2 + 0.3
    seen = status_value_at(page, cx2, cy2)
    truth = api(
        page,
        vserver,
        f"/images/{CT_ID}/pixel?col={seen['col_text']}&row={seen['row_text']}"
        f"&slice={coronal['default_slice']}&plane=coronal",
    )
    assert seen["value"] == truth["value"]
    assert np.allclose(seen["world"], cursor_lps(seen, truth, coronal), atol=1e-6)
    shot(page, shots, "ct-coronal")


def test_geotiff_status_shows_value_and_lonlat_and_a_metre_scale(
    page: Page, vserver: Server, tmp_path: Path
) -> None:
    open_image(page, vserver, GEO_ID)
    scale = page.locator(".ol-scale-line-inner").inner_text()
    assert scale.endswith(" m"), scale
    assert page.locator("#volume-controls").is_hidden()
    pic, (mx, my) = map_picture(page)
    rows, cols = image_region(pic)
    seen = status_value_at(page, mx + cols.start + 40.3, my + rows.start + 30.3)
    truth = api(page, vserver, f"/images/{GEO_ID}/pixel?col={seen['col_text']}&row={seen['row_text']}")
    assert seen["value"] == truth["value"]
    lon, lat = truth["lonlat"]
    assert f"lon {lon:.6f}, lat {lat:.6f}" in seen["text"]
    shot(page, tmp_path / "screens", "geotiff")


# -- annotations ------------------------------------------------------------------------------

# A clicked vertex lands where the picture says, to within this many screen pixels (the image
# edges are found to a pixel or so, and the click is at an integer screen position).
CLICK_TOLERANCE_SCREEN_PX = 2.0


def draw_polygon(page: Page, points: list[tuple[float, float]]) -> None:
    """Pick the polygon tool with its key, click the vertices, close on the first one."""
    page.locator("#map").focus()
    page.keyboard.press("p")
    assert page.locator("#tool-polygon").get_attribute("aria-pressed") == "true"
    for x, y in points:
        page.mouse.click(x, y)
    page.mouse.click(*points[0])


def stored_ring(page: Page, server: Server, image_id: str, query: str) -> tuple[Any, np.ndarray]:
    """The one annotation of the image, and its exterior ring without the closing vertex."""
    answer = api(page, server, f"/images/{image_id}/annotations?{query}")
    assert len(answer["features"]) == 1, answer
    feature = answer["features"][0]
    assert feature["geometry"]["type"] == "Polygon"
    return feature, np.array(feature["geometry"]["coordinates"][0][:-1], dtype=float)


def same_ring(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Same vertices in the same cyclic order, either direction, from any start."""
    if a.shape != b.shape:
        return False
    for ring in (b, b[::-1]):
        for k in range(len(ring)):
            if np.abs(np.roll(ring, k, axis=0) - a).max() <= tol:
                return True
    return False


def wait_count(page: Page, count: int) -> None:
    page.wait_for_selector(f'#annot-count[data-count="{count}"]')


def test_polygon_on_the_geotiff_round_trips_edits_and_undoes(
    page: Page, vserver: Server, tmp_path: Path
) -> None:
    open_image(page, vserver, GEO_ID)
    meta = api(page, vserver, f"/images/{GEO_ID}")
    pic, (mx, my) = map_picture(page)
    rows, cols = image_region(pic)
    scale = (cols.stop - cols.start) / meta["width"]  # screen px per image px
    assert abs((rows.stop - rows.start) / meta["height"] - scale) < 0.02 * scale
    left, top = mx + cols.start, my + rows.start
    screen = [(left + 100 * scale, top + 80 * scale), (left + 400 * scale, top + 90 * scale),
              (left + 300 * scale, top + 300 * scale)]
    screen = [(round(x), round(y)) for x, y in screen]
    draw_polygon(page, screen)
    wait_count(page, 1)
    expected = np.array([((x - left) / scale, (y - top) / scale) for x, y in screen])
    tol = CLICK_TOLERANCE_SCREEN_PX / scale
    feature, ring = stored_ring(page, vserver, GEO_ID, f"crs=pixel&bbox=0,0,{meta['width']},{meta['height']}")
    assert same_ring(ring, expected, tol), (ring, expected)
    # In the image CRS the same vertices are the affine transform of the pixel ones (1e-6 m).
    a, b, c, d, e, f = meta["transform"]
    world = api(page, vserver, f"/annotations/{feature['id']}?crs=EPSG:32618")
    wring = np.array(world["geometry"]["coordinates"][0][:-1], dtype=float)
    assert same_ring(wring, np.c_[a * ring[:, 0] + b * ring[:, 1] + c, d * ring[:, 0] + e * ring[:, 1] + f], 1e-6)
    page.keyboard.press("Escape")  # leave the tool
    shot(page, tmp_path / "screens", "geotiff-polygon")

    # Select it, drag its second vertex 20 screen px right: a PUT with If-Match stores the move.
    cx = sum(x for x, _ in screen) / 3
    cy = sum(y for _, y in screen) / 3
    page.mouse.click(cx, cy)
    page.wait_for_timeout(400)  # a single click is told from a double one after 250 ms
    vx, vy = screen[1]
    with page.expect_response(lambda r: r.request.method == "PUT" and "/annotations/" in r.url) as put:
        page.mouse.move(vx, vy)
        page.mouse.down()
        page.mouse.move(vx + 10, vy, steps=3)
        page.mouse.move(vx + 20, vy, steps=3)
        page.mouse.up()
    assert put.value.status == 200
    assert put.value.request.headers.get("if-match") == '"1"'
    _, moved = stored_ring(page, vserver, GEO_ID, f"crs=pixel&bbox=0,0,{meta['width']},{meta['height']}")
    edited = expected.copy()
    edited[1, 0] += 20 / scale
    assert same_ring(moved, edited, tol), (moved, edited)
    shot(page, tmp_path / "screens", "geotiff-polygon-edited")

    # Ctrl+Z puts the vertex back (another PUT); the stored ring is the drawn one again.
    with page.expect_response(lambda r: r.request.method == "PUT" and "/annotations/" in r.url) as put:
        page.keyboard.press("Control+z")
    assert put.value.status == 200
    _, back = stored_ring(page, vserver, GEO_ID, f"crs=pixel&bbox=0,0,{meta['width']},{meta['height']}")
    assert same_ring(back, ring, 1e-6)
    # Undo again: the creation goes (DELETE), nothing is left.
    with page.expect_response(lambda r: r.request.method == "DELETE") as gone:
        page.keyboard.press("Control+z")
    assert gone.value.status == 204
    assert api(page, vserver, f"/images/{GEO_ID}/annotations?crs=pixel")["features"] == []


def test_polygon_on_a_ct_slice_is_stored_on_that_slice(
    page: Page, vserver: Server, tmp_path: Path
) -> None:
    open_image(page, vserver, CT_ID)
    meta = api(page, vserver, f"/images/{CT_ID}")
    axial = meta["planes"]["axial"]
    page.locator("#slice-slider").fill("12")
    wait_slice(page, "axial", 12)
    pic, (mx, my) = map_picture(page)
    rows, cols = image_region(pic)
    scale = (cols.stop - cols.start) / axial["width"]
    left, top = mx + cols.start, my + rows.start
    screen = [(round(left + 150 * scale), round(top + 200 * scale)),
              (round(left + 300 * scale), round(top + 180 * scale)),
              (round(left + 260 * scale), round(top + 350 * scale))]
    draw_polygon(page, screen)
    wait_count(page, 1)
    page.keyboard.press("Escape")
    expected = np.array([((x - left) / scale, (y - top) / scale) for x, y in screen])
    feature, ring = stored_ring(page, vserver, CT_ID, "crs=pixel&slice=12&plane=axial")
    assert same_ring(ring, expected, CLICK_TOLERANCE_SCREEN_PX / scale), (ring, expected)
    # In patient coordinates: LPS mm from the plane's origin, spacing and direction (1e-6 mm).
    world = api(page, vserver, f"/annotations/{feature['id']}?crs=world")
    wring = np.array(world["geometry"]["coordinates"][0][:-1], dtype=float)
    o, sp, dr = (np.array(axial[k], dtype=float) for k in ("origin", "spacing", "direction"))
    lps = o + np.outer((ring[:, 0] - 0.5) * sp[0], dr[0]) + np.outer((ring[:, 1] - 0.5) * sp[1], dr[1]) + 12 * sp[2] * dr[2]
    assert same_ring(wring, lps, 1e-6), (wring, lps)
    shot(page, tmp_path / "screens", "ct-polygon")
    # Another slice does not show it; coming back does.
    page.keyboard.press("PageUp")
    wait_slice(page, "axial", 13)
    wait_count(page, 0)
    page.keyboard.press("PageDown")
    wait_slice(page, "axial", 12)
    wait_count(page, 1)

    # Someone else edits it (version 2); dragging our stale copy answers 412, which is shown,
    # and the viewer reloads the current shape.
    changed = json.loads(json.dumps(feature))
    changed["geometry"]["coordinates"][0] = [[c + 5, r] for c, r in feature["geometry"]["coordinates"][0]]
    changed["properties"] = {"label": feature["properties"]["label"], "slice": 12, "plane": "axial"}
    put = page.request.put(
        f"{vserver.base}api/v1/annotations/{feature['id']}?crs=pixel",
        data=json.dumps(changed),
        headers={"X-Tessera-Request": "1", "If-Match": '"1"', "Content-Type": "application/json"},
    )
    assert put.status == 200, put.text()
    cx = sum(x for x, _ in screen) / 3
    cy = sum(y for _, y in screen) / 3
    page.mouse.click(cx, cy)
    page.wait_for_timeout(400)
    vx, vy = screen[1]
    with page.expect_response(lambda r: r.request.method == "PUT") as stale:
        page.mouse.move(vx, vy)
        page.mouse.down()
        page.mouse.move(vx + 10, vy + 10, steps=4)
        page.mouse.up()
    assert stale.value.status == 412
    page.locator("#toast").wait_for(state="visible")
    assert "Someone else changed" in page.locator("#toast").inner_text()
    _, now = stored_ring(page, vserver, CT_ID, "crs=pixel&slice=12&plane=axial")
    assert same_ring(now, ring + np.array([5.0, 0.0]), 1e-6)  # moved 5 px right


def test_box_point_line_delete_and_a_server_error_on_the_geotiff(
    page: Page, vserver: Server, tmp_path: Path
) -> None:
    open_image(page, vserver, GEO_ID)
    meta = api(page, vserver, f"/images/{GEO_ID}")
    before = len(api(page, vserver, f"/images/{GEO_ID}/annotations?crs=pixel")["features"])
    pic, (mx, my) = map_picture(page)
    rows, cols = image_region(pic)
    scale = (cols.stop - cols.start) / meta["width"]
    left, top = mx + cols.start, my + rows.start

    def at(col: float, row: float) -> tuple[float, float]:
        return round(left + col * scale), round(top + row * scale)

    page.locator("#map").focus()
    page.keyboard.press("b")  # box: two clicks at opposite corners
    page.mouse.click(*at(40, 40))
    page.mouse.move(*at(80, 60), steps=3)
    page.mouse.click(*at(120, 100))
    wait_count(page, before + 1)
    page.keyboard.press("o")  # point
    assert page.locator("#tool-point").get_attribute("aria-pressed") == "true"
    page.mouse.click(*at(500, 100))
    wait_count(page, before + 2)
    page.keyboard.press("l")  # polyline: double-click ends it
    page.mouse.click(*at(200, 300))
    page.mouse.click(*at(300, 350))
    page.mouse.dblclick(*at(400, 320))
    wait_count(page, before + 3)
    page.keyboard.press("Escape")
    features = api(page, vserver, f"/images/{GEO_ID}/annotations?crs=pixel")["features"]
    kinds = sorted(f["geometry"]["type"] for f in features)
    assert kinds.count("Point") == 1 and kinds.count("LineString") == 1 and kinds.count("Polygon") >= 1
    box = next(f for f in features if f["geometry"]["type"] == "Polygon")
    xs, ys = zip(*box["geometry"]["coordinates"][0], strict=False)
    tol = CLICK_TOLERANCE_SCREEN_PX / scale
    assert abs(min(xs) - 40) <= tol and abs(max(xs) - 120) <= tol
    assert abs(min(ys) - 40) <= tol and abs(max(ys) - 100) <= tol
    line = next(f for f in features if f["geometry"]["type"] == "LineString")
    assert len(line["geometry"]["coordinates"]) == 3
    shot(page, tmp_path / "screens", "geotiff-tools")

    # Select the point and press Delete: a DELETE with If-Match, one fewer on the server.
    page.mouse.click(*at(500, 100))
    page.wait_for_timeout(400)
    with page.expect_response(lambda r: r.request.method == "DELETE") as gone:
        page.keyboard.press("Delete")
    assert gone.value.status == 204 and gone.value.request.headers.get("if-match") == '"1"'
    wait_count(page, before + 2)

    # A self-crossing polygon: the server's 4xx message is shown, nothing is kept.
    draw_polygon(page, [at(450, 250), at(550, 350), at(550, 250), at(450, 350)])
    toast = page.locator("#toast")
    toast.wait_for(state="visible")
    assert "not saved" in toast.inner_text() and "invalid geometry" in toast.inner_text()
    wait_count(page, before + 2)
    shot(page, tmp_path / "screens", "geotiff-error")
    page.keyboard.press("Escape")
