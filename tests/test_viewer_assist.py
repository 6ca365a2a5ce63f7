"""The viewer's Assist (magic wand) tool end to end: the real server (`tessera serve`), the
built viewer, headless Chromium (fixtures of tests/test_viewer.py).

Served: the synthetic scene of tests/test_segment.py (a noisy 1024 x 1024 GeoTIFF with a bright
disc of radius 60 px at (300, 300), written with rasterio into tmp_path). A click inside the
disc with the tool on must show a proposal; Enter stores it with the label typed, and the stored
outline (read back from the API in pixels) has IoU >= 0.95 with the true disc. A click on the
flat noisy background shows the server's 422 message, keeps the prompt, and stores nothing. A
drag around the scene's rectangle is a box prompt (random walker, IoU >= 0.95 once accepted),
and Ctrl+Z undoes the accepted create as for a drawn polygon.

Screen positions are found from the status bar's pixel readout at two pointer positions (the
map's screen -> pixel transform is a scale and an offset).
"""

# ruff: noqa: F811
# (fixtures imported by name; test arguments shadow them.)
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rasterio
import shapely
from playwright.sync_api import Page
from rasterio.transform import Affine

from tests.test_segment import DISC, RECT, SIZE, circle, iou, scene
from tests.test_viewer import (  # noqa: F401  (fixtures are used by name)
    Server,
    browser,
    page,
    pointer_at,
    serve,
    sign_in,
    viewer_built,
)
from tests.test_viewer_volume import api, shot, wait_ready

LABEL = "blob"
BACKGROUND = (150.0, 600.0)  # noise only: the route answers 422 there (tests/test_segment.py)


@pytest.fixture(scope="module")
def sserver(viewer_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("viewer-assist")
    data = root / "data"
    data.mkdir()
    with rasterio.open(
        data / "scene.tif",
        "w",
        driver="GTiff",
        width=SIZE,
        height=SIZE,
        count=1,
        dtype="uint8",
        crs="EPSG:32618",
        transform=Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_000_000.0),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as dst:
        dst.write(scene())
    with serve(data, root) as server:
        yield server


def scene_id(page: Page, server: Server) -> str:
    images = api(page, server, "/images")["images"]
    (image,) = [i for i in images if i["name"] == "scene.tif"]
    return str(image["id"])


def screen_of(page: Page) -> Any:
    """A function from image pixel (col, row) to the page position showing it."""
    box = page.locator("#map").bounding_box()
    assert box is not None
    a = (box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
    b = (box["x"] + 0.7 * box["width"], box["y"] + 0.7 * box["height"])
    pa, pb = pointer_at(page, *a), pointer_at(page, *b)
    sx = (b[0] - a[0]) / (pb[0] - pa[0])
    sy = (b[1] - a[1]) / (pb[1] - pa[1])
    assert abs(sx - sy) < 0.01 * sx, (sx, sy)

    def at(col: float, row: float) -> tuple[float, float]:
        return a[0] + (col - pa[0]) * sx, a[1] + (row - pa[1]) * sy

    return at


def stored(page: Page, server: Server, image: str) -> list[dict[str, Any]]:
    return list(api(page, server, f"/images/{image}/annotations?crs=pixel")["features"])


def test_assist_click_proposes_the_disc_and_enter_stores_it(
    page: Page, sserver: Server, tmp_path: Path
) -> None:
    sign_in(page, sserver)
    image = scene_id(page, sserver)
    page.goto(f"{sserver.base}#image={image}")
    wait_ready(page, image)
    assert stored(page, sserver, image) == []
    page.fill("#label-input", LABEL)
    at = screen_of(page)

    # The tool: its key is in the button's tooltip and the shortcut list; W turns it on.
    assert "(W)" in (page.locator("#tool-assist").get_attribute("title") or "")
    page.locator("#map").focus()
    page.keyboard.press("w")
    assert page.locator("#tool-assist").get_attribute("aria-pressed") == "true"
    assert page.locator("#assist-accept").is_disabled()

    # A click inside the disc: a proposal (flood from a point), shown with its score.
    with page.expect_response(lambda r: "/segment" in r.url) as answer:
        page.mouse.click(*at(DISC[0] + 10, DISC[1] - 10))
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_selector('#map[data-assist="proposed"]')
    status = page.locator("#assist-status").inner_text()
    assert "score" in status and "flood" in status, status
    assert not page.locator("#assist-accept").is_disabled()
    shot(page, tmp_path / "screens", "assist-proposal")

    # Enter stores it through the editor's save path, with the label typed.
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.split("?")[0].endswith("/annotations")
    ) as post:
        page.keyboard.press("Enter")
    assert post.value.status == 201, post.value.text()
    page.wait_for_selector('#map[data-assist="idle"]')
    (feature,) = stored(page, sserver, image)
    assert feature["properties"]["label"] == LABEL
    assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    got = shapely.geometry.shape(feature["geometry"])
    assert iou(got, circle(*DISC)) >= 0.95, iou(got, circle(*DISC))

    # A click on the background: the server's 422 message; the prompt is kept, nothing stored.
    with page.expect_response(lambda r: "/segment" in r.url) as answer:
        page.mouse.click(*at(*BACKGROUND))
    assert answer.value.status == 422, answer.value.text()
    page.wait_for_selector('#map[data-assist="error"]')
    status = page.locator("#assist-status").inner_text()
    assert status.startswith("Nothing found here: "), status
    assert answer.value.json()["message"] in status
    assert not page.locator("#assist-clear").is_disabled()  # the point is still there
    assert page.locator("#assist-accept").is_disabled()
    page.keyboard.press("Enter")  # nothing to accept
    page.wait_for_timeout(300)
    assert len(stored(page, sserver, image)) == 1
    # Esc clears the prompt, a second Esc leaves the tool.
    page.keyboard.press("Escape")
    page.wait_for_selector('#map[data-assist="idle"]')
    assert page.locator("#assist-clear").is_disabled()
    page.keyboard.press("Escape")
    page.wait_for_selector('#map[data-assist="off"]')
    assert page.locator("#tool-assist").get_attribute("aria-pressed") == "false"


def test_assist_box_drag_proposes_the_rectangle_and_undo_removes_it(
    page: Page, sserver: Server
) -> None:
    sign_in(page, sserver)
    image = scene_id(page, sserver)
    page.goto(f"{sserver.base}#image={image}")
    wait_ready(page, image)
    before = {f["id"] for f in stored(page, sserver, image)}
    at = screen_of(page)
    page.locator("#tool-assist").click()
    assert page.locator("#tool-assist").get_attribute("aria-pressed") == "true"

    # A drag around the rectangle is a box prompt: the random walker answers.
    x0, y0, x1, y1 = RECT
    with page.expect_response(lambda r: "/segment" in r.url) as answer:
        page.mouse.move(*at(x0 - 15, y0 - 15))
        page.mouse.down()
        page.mouse.move(*at((x0 + x1) / 2, (y0 + y1) / 2))
        page.mouse.move(*at(x1 + 15, y1 + 15))
        page.mouse.up()
    assert answer.value.status == 200, answer.value.text()
    assert answer.value.request.post_data_json["box"] is not None
    page.wait_for_selector('#map[data-assist="proposed"]')
    assert "random walker" in page.locator("#assist-status").inner_text()

    # Accept (the button), then Ctrl+Z undoes the create like a drawn polygon's.
    with page.expect_response(lambda r: r.request.method == "POST" and "/annotations" in r.url):
        page.locator("#assist-accept").click()
    (new,) = [f for f in stored(page, sserver, image) if f["id"] not in before]
    truth = shapely.box(x0, y0, x1, y1)
    assert iou(shapely.geometry.shape(new["geometry"]), truth) >= 0.95
    with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        page.keyboard.press("Control+z")
    assert deleted.value.status == 204, deleted.value.text()
    assert {f["id"] for f in stored(page, sserver, image)} == before
