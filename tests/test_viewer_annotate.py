"""Editing tools and review in the viewer, end to end: the real server, the built viewer,
headless Chromium (fixtures and helpers of tests/test_viewer.py and tests/test_viewer_volume.py).

Served: ``a_utm.tif`` of tests/test_viewer.py (600 x 400, EPSG:32618, 0.5 m pixels), and for
the list on a volume the real CT of tests/test_viewer_volume.py (its ``vserver``). Shapes are
drawn at screen positions computed from where the picture shows the image, and read back from
the API in pixel and in EPSG:32618 coordinates.

Tolerances: a vertex lands where the pointer was to within ``CLICK_TOLERANCE_SCREEN_PX`` (2)
screen pixels, i.e. 2 / scale image pixels (scale = screen px per image px, about 1.6 here) or
that times 0.5 m in the image CRS; the CRS coordinates are the GeoTIFF's affine transform of the
stored pixel coordinates to 1e-6 m.

Screenshots of the screens looked at are checked to be non-blank and kept in
``$TESSERA_SCREENSHOT_DIR`` when it is set (else under pytest's tmp_path).
"""

# ruff: noqa: F811
# (fixtures imported by name; test arguments shadow them.)
from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, Route

from tests.test_viewer import (  # noqa: F401  (fixtures are used by name)
    TOKEN,
    UI_TIMEOUT_MS,
    VIEWPORT,
    Server,
    browser,
    map_picture,
    page,
    serve,
    tessera_command,
    viewer_built,
    write_geotiff,
    zoom_percent,
)
from tests.test_viewer_volume import (
    CLICK_TOLERANCE_SCREEN_PX,
    CT_ID,
    api,
    image_region,
    same_ring,
    shot,
    vserver,  # noqa: F401  (a fixture, used by name)
    wait_count,
    wait_ready,
    wait_slice,
)
from tests.test_viewer_volume import open_image as open_as_image

GEO_ID = "a-utm"
GEO_W, GEO_H = 600, 400
HEADERS = {"X-Tessera-Request": "1", "Content-Type": "application/json"}


@dataclass
class Setup:
    server: Server
    data: Path
    state: Path


@pytest.fixture(scope="module")
def aserver(viewer_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("viewer-annotate")
    data = root / "data"
    data.mkdir()
    write_geotiff(data / "a_utm.tif")
    with serve(data, root) as server:
        yield Setup(server, data, root / "state")


def add_user(setup: Setup, name: str, role: str) -> str:
    """`tessera user add` on the served folder; the new user's token."""
    out = subprocess.run(
        [*tessera_command(), "user", "add", name, "--role", role, "--data", str(setup.data)],
        capture_output=True,
        text=True,
        env={**os.environ, "TESSERA_STATE_DIR": str(setup.state)},
        check=True,
        timeout=60,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def users(aserver: Setup) -> dict[str, str]:
    return {
        "ann": add_user(aserver, "ann", "annotator"),
        "rev": add_user(aserver, "rev", "reviewer"),
    }


def screens(tmp_path: Path) -> Path:
    folder = os.environ.get("TESSERA_SCREENSHOT_DIR")
    return Path(folder) if folder else tmp_path / "screens"


@dataclass
class Placement:
    """Where the image is on the page: page x = left + col * scale."""

    left: float
    top: float
    scale: float

    def at(self, col: float, row: float) -> tuple[int, int]:
        return round(self.left + col * self.scale), round(self.top + row * self.scale)

    def pixel(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.left) / self.scale, (y - self.top) / self.scale

    @property
    def tol(self) -> float:
        """The click tolerance in image pixels."""
        return CLICK_TOLERANCE_SCREEN_PX / self.scale


def placement(page: Page) -> Placement:
    pic, (mx, my) = map_picture(page)
    rows, cols = image_region(pic)
    scale = (cols.stop - cols.start) / GEO_W
    assert abs((rows.stop - rows.start) / GEO_H - scale) < 0.02 * scale
    return Placement(mx + cols.start, my + rows.start, scale)


def open_as(page: Page, server: Server, token: str = TOKEN) -> Placement:
    page.goto(f"{server.base}?token={token}")
    page.wait_for_url(re.compile(r"/#image="))
    page.goto(f"{server.base}#image={GEO_ID}")
    wait_ready(page, GEO_ID)
    page.mouse.move(1, 1)
    page.wait_for_timeout(300)  # tile fade-in
    return placement(page)


def features(page: Page, server: Server, query: str = "crs=pixel") -> list[dict[str, Any]]:
    return list(api(page, server, f"/images/{GEO_ID}/annotations?{query}")["features"])


def clear_annotations(page: Page, server: Server) -> None:
    """Delete every annotation of the image (as the admin)."""
    admin = {**HEADERS, "Authorization": f"Bearer {TOKEN}"}
    for f in features(page, server):
        r = page.request.delete(f"{server.base}api/v1/annotations/{f['id']}", headers=admin)
        assert r.status == 204, r.text()


def post(
    page: Page, server: Server, body: dict[str, Any], token: str | None = None
) -> dict[str, Any]:
    headers = dict(HEADERS)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    r = page.request.post(
        f"{server.base}api/v1/images/{GEO_ID}/annotations?crs=pixel",
        data=json.dumps(body),
        headers=headers,
    )
    assert r.status == 201, r.text()
    return dict(r.json())


def polygon(label: str, ring: list[tuple[float, float]]) -> dict[str, Any]:
    closed = [list(p) for p in [*ring, ring[0]]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [closed]},
        "properties": {"label": label},
    }


def square(c: float, r: float, half: float) -> list[tuple[float, float]]:
    return [(c - half, r - half), (c + half, r - half), (c + half, r + half), (c - half, r + half)]


def put_expected(page: Page):  # type: ignore[no-untyped-def]
    return page.expect_response(lambda r: r.request.method == "PUT" and "/annotations/" in r.url)


# -- tests ------------------------------------------------------------------------------------


def test_freehand_hole_undo_redo_and_move(page: Page, aserver: Setup, tmp_path: Path) -> None:
    server = aserver.server
    place = open_as(page, server)
    clear_annotations(page, server)
    meta = api(page, server, f"/images/{GEO_ID}")
    assert page.locator("#tool-freehand").get_attribute("title").startswith("Freehand (F)")
    for tool, key in [("polygon", "P"), ("box", "B"), ("point", "O"), ("line", "L"), ("hole", "H")]:
        assert f"({key})" in (page.locator(f"#tool-{tool}").get_attribute("title") or ""), tool
    assert "(S)" in (page.locator("#annot-snap").get_attribute("title") or "")
    assert page.locator("#annot-snap").get_attribute("aria-pressed") == "false"
    assert "Ctrl+Y" in (page.locator("#annot-redo").get_attribute("title") or "")

    # Freehand (F): press, drag round a circle of radius 60 image px about (200, 150), release.
    centre, radius = np.array([200.0, 150.0]), 60.0
    path = [
        place.at(*(centre + radius * np.array([np.cos(t), np.sin(t)])))
        for t in np.linspace(0, 2 * np.pi * 0.97, 48)
    ]
    page.locator("#map").focus()
    page.keyboard.press("f")
    assert page.locator("#tool-freehand").get_attribute("aria-pressed") == "true"
    page.mouse.move(*path[0])
    page.mouse.down()
    for x, y in path[1:]:
        page.mouse.move(x, y)
    page.mouse.up()
    wait_count(page, 1)
    page.keyboard.press("Escape")
    (feature,) = features(page, server)
    ring = np.array(feature["geometry"]["coordinates"][0][:-1], dtype=float)
    assert len(ring) >= 24, f"a freehand outline keeps the dragged path ({len(ring)} vertices)"
    # Every vertex is where the pointer went: on the circle, to the click tolerance.
    drawn = np.array([place.pixel(x, y) for x, y in path])
    assert np.abs(np.hypot(*(ring - centre).T) - radius).max() <= place.tol
    nearest = np.min(np.hypot(*(ring[:, None, :] - drawn[None, :, :]).transpose(2, 0, 1)), axis=1)
    assert nearest.max() <= place.tol, nearest.max()
    # World: the GeoTIFF's transform of the pixel vertices (1e-6 m), so on the circle in metres.
    a, b, c, d, e, f = meta["transform"]
    world = api(page, server, f"/annotations/{feature['id']}?crs=EPSG:32618")
    wring = np.array(world["geometry"]["coordinates"][0][:-1], dtype=float)
    expected_world = np.c_[a * ring[:, 0] + b * ring[:, 1] + c, d * ring[:, 0] + e * ring[:, 1] + f]
    assert same_ring(wring, expected_world, 1e-6)
    wcentre = np.array([a * centre[0] + b * centre[1] + c, d * centre[0] + e * centre[1] + f])
    wtol = place.tol * abs(a)  # the click tolerance in metres
    assert np.abs(np.hypot(*(wring - wcentre).T) - radius * abs(a)).max() <= wtol
    shot(page, screens(tmp_path), "freehand")

    # Hole (H): select the polygon, draw a square inside it: the polygon gains an interior ring.
    page.mouse.click(*place.at(200, 195))
    page.wait_for_timeout(400)  # a single click is told from a double one after 250 ms
    assert page.locator("#map").get_attribute("data-selected") == str(feature["id"])
    page.keyboard.press("h")
    assert page.locator("#tool-hole").get_attribute("aria-pressed") == "true"
    hole_screen = [place.at(col, row) for col, row in square(200, 150, 15)]
    with put_expected(page) as put:
        for x, y in hole_screen:
            page.mouse.click(x, y)
        page.mouse.click(*hole_screen[0])
    assert put.value.status == 200, put.value.text()
    page.keyboard.press("Escape")
    (holed,) = features(page, server)
    rings = holed["geometry"]["coordinates"]
    assert len(rings) == 2
    hole = np.array(rings[1][:-1], dtype=float)
    assert same_ring(hole, np.array([place.pixel(x, y) for x, y in hole_screen]), place.tol)
    assert same_ring(np.array(rings[0][:-1], dtype=float), ring, 1e-6)
    shot(page, screens(tmp_path), "hole")

    # Undo takes the hole out, redo (Ctrl+Shift+Z, then Ctrl+Y) puts it back.
    with put_expected(page) as put:
        page.keyboard.press("Control+z")
    assert put.value.status == 200
    assert len(features(page, server)[0]["geometry"]["coordinates"]) == 1
    with put_expected(page) as put:
        page.keyboard.press("Control+Shift+Z")
    assert put.value.status == 200
    assert len(features(page, server)[0]["geometry"]["coordinates"]) == 2
    with put_expected(page) as put:
        page.keyboard.press("Control+z")
    assert put.value.status == 200
    with put_expected(page) as put:
        page.keyboard.press("Control+y")
    assert put.value.status == 200
    after_redo = features(page, server)[0]["geometry"]["coordinates"]
    assert len(after_redo) == 2 and same_ring(np.array(after_redo[1][:-1], dtype=float), hole, 1e-6)

    # Move: drag the selected shape from inside it; every vertex moves by the drag.
    page.mouse.click(*place.at(200, 195))
    page.wait_for_timeout(400)
    sx, sy = place.at(200, 195)
    with put_expected(page) as put:
        page.mouse.move(sx, sy)
        page.mouse.down()
        page.mouse.move(sx + 10, sy + 5, steps=2)
        page.mouse.move(sx + 40, sy + 20, steps=4)
        page.mouse.up()
    assert put.value.status == 200
    moved = features(page, server)[0]["geometry"]["coordinates"]
    shift = np.array([40.0, 20.0]) / place.scale
    assert same_ring(np.array(moved[0][:-1], dtype=float), ring + shift, place.tol / 4)
    assert same_ring(np.array(moved[1][:-1], dtype=float), hole + shift, place.tol / 4)
    shot(page, screens(tmp_path), "moved")


def test_tags_list_filters_and_zoom_to_a_shape(
    page: Page, aserver: Setup, users: dict[str, str], tmp_path: Path
) -> None:
    server = aserver.server
    open_as(page, server)
    clear_annotations(page, server)
    r = page.request.post(
        f"{server.base}api/v1/projects/default/labels",
        data=json.dumps({"name": "cloudy", "kinds": ["tag"], "color": "#888888"}),
        headers=HEADERS,
    )
    assert r.status == 201, r.text()
    post(page, server, polygon("field", square(100, 100, 30)))
    road = post(page, server, polygon("road", square(480, 320, 10)))
    post(page, server, polygon("field", square(300, 250, 20)), token=users["ann"])
    page.reload()
    wait_ready(page, GEO_ID)

    # Tags: the tag label is offered; ticking stores a tag annotation, unticking deletes it.
    box = page.locator('#tag-list input[data-label="cloudy"]')
    box.wait_for()
    assert page.locator("#tag-list input").count() == 1  # only labels allowed as tags
    with page.expect_response(lambda r: r.request.method == "POST") as created:
        box.check()
    assert created.value.status == 201
    tags = [f for f in features(page, server) if f["properties"]["kind"] == "tag"]
    assert [(t["properties"]["label"], t["geometry"]) for t in tags] == [("cloudy", None)]
    with page.expect_response(lambda r: r.request.method == "DELETE") as gone:
        box.uncheck()
    assert gone.value.status == 204
    assert not [f for f in features(page, server) if f["properties"]["kind"] == "tag"]
    box.check()
    page.wait_for_function("document.querySelector('#tag-list input').checked")
    page.wait_for_selector("#tag-list input:not([disabled])")

    # The list: the three shapes (not the tag); filters by label, author and status.
    items = page.locator("#annotation-list-items .annot-item")
    page.wait_for_selector('#annotation-list-count[data-count="3"]')
    page.select_option("#filter-label", "field")
    page.wait_for_selector('#annotation-list-count[data-count="2"]')
    page.select_option("#filter-author", "ann")
    page.wait_for_selector('#annotation-list-count[data-count="1"]')
    assert items.first.get_attribute("data-author") == "ann"
    page.select_option("#filter-status", "submitted")
    page.wait_for_selector('#annotation-list-count[data-count="0"]')
    page.select_option("#filter-status", "")
    page.select_option("#filter-author", "")
    page.select_option("#filter-label", "road")
    page.wait_for_selector('#annotation-list-count[data-count="1"]')
    shot(page, screens(tmp_path), "list-filtered")

    # A click zooms to the shape (its centre in the middle of the map) and selects it.
    zoom_before = zoom_percent(page)
    items.first.click()
    page.wait_for_selector(f'#map[data-selected="{road["id"]}"]')
    # (the view stops at 4 screen px per image px, so this zoom is capped there)
    page.wait_for_function(
        f"parseFloat(document.querySelector('#status-zoom').textContent) > {zoom_before * 2}"
    )
    wait_ready(page, GEO_ID)
    box_ = page.locator("#map").bounding_box()
    assert box_ is not None
    cx, cy = box_["x"] + box_["width"] / 2, box_["y"] + box_["height"] / 2
    page.mouse.move(cx - 1, cy)
    page.mouse.move(cx, cy)
    col = float(page.locator("#status-pixel").get_attribute("data-col") or "nan")
    row = float(page.locator("#status-pixel").get_attribute("data-row") or "nan")
    assert abs(col - 480) <= 1.0 and abs(row - 320) <= 1.0, (col, row)
    assert (
        page.locator("#annotation-list-items .annot-item").first.get_attribute("aria-selected")
        == "true"
    )
    shot(page, screens(tmp_path), "list-zoomed")


def test_submit_then_review_accept_and_reject(
    browser: Browser, aserver: Setup, users: dict[str, str], tmp_path: Path
) -> None:
    server = aserver.server
    contexts = []

    def new_page() -> Page:
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        context.set_default_timeout(UI_TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    try:
        annotator = new_page()
        open_as(annotator, server, users["ann"])
        clear_annotations(annotator, server)  # the annotator's own ones
        first = post(annotator, server, polygon("field", square(150, 120, 20)))
        second = post(annotator, server, polygon("field", square(420, 300, 20)))
        annotator.reload()
        wait_ready(annotator, GEO_ID)
        assert annotator.locator("#review").is_hidden(), "annotators do not review"
        annotator.wait_for_selector('#annotation-list-count[data-count="2"]')
        with annotator.expect_response(lambda r: r.request.method == "PUT") as put:
            annotator.locator("#annot-submit").click()
        assert put.value.status == 200
        annotator.wait_for_selector(
            '#annotation-list-items .annot-item[data-status="submitted"] >> nth=1'
        )
        statuses = {f["id"]: f["properties"]["status"] for f in features(annotator, server)}
        assert statuses == {first["id"]: "submitted", second["id"]: "submitted"}

        reviewer = new_page()
        open_as(reviewer, server, users["rev"])
        reviewer.locator("#review").wait_for(state="visible")
        reviewer.locator("#review-toggle").click()
        reviewer.wait_for_selector('#review-position[data-count="2"]')
        reviewer.wait_for_selector(f'#map[data-selected="{first["id"]}"]')  # zoomed to the first
        reviewer.locator("#map").focus()
        reviewer.keyboard.press("n")
        reviewer.wait_for_selector(f'#map[data-selected="{second["id"]}"]')
        reviewer.keyboard.press("Shift+N")
        reviewer.wait_for_selector(f'#map[data-selected="{first["id"]}"]')
        shot(reviewer, screens(tmp_path), "review")

        # A: accept the first (no comment needed); the queue moves on to the second.
        with reviewer.expect_response(
            lambda r: r.request.method == "POST" and r.url.split("?")[0].endswith("/review")
        ) as res:
            reviewer.keyboard.press("a")
        assert res.value.status == 200 and res.value.request.headers.get("if-match") == '"2"'
        reviewer.wait_for_selector('#review-position[data-count="1"]')
        reviewer.wait_for_selector(f'#map[data-selected="{second["id"]}"]')

        # R without a comment says so and stores nothing; with one, it rejects.
        reviewer.keyboard.press("r")
        reviewer.locator("#toast").wait_for(state="visible")
        assert "comment" in reviewer.locator("#toast").inner_text()
        reviewer.locator("#review-comment").fill("The east edge cuts the hedge; follow it.")
        reviewer.locator("#map").focus()
        with reviewer.expect_response(
            lambda r: r.request.method == "POST" and "/review" in r.url
        ) as res:
            reviewer.keyboard.press("r")
        assert res.value.status == 200
        reviewer.wait_for_selector('#review-position[data-count="0"]')

        got = {f["id"]: f["properties"] for f in features(reviewer, server)}
        assert got[first["id"]]["status"] == "accepted"
        assert got[first["id"]]["review"]["reviewer"] == "rev"
        assert got[second["id"]]["status"] == "rejected"
        assert got[second["id"]]["review"] == {
            **got[second["id"]]["review"],
            "decision": "reject",
            "comment": "The east edge cuts the hedge; follow it.",
            "reviewer": "rev",
        }
        history = api(reviewer, server, f"/annotations/{second['id']}/history")["changes"]
        assert [(c["action"], c["user"]) for c in history][-1] == ("update", "rev")
        # The list shows the decision and its comment.
        reviewer.wait_for_selector(
            f'#annotation-list-items .annot-item[data-id="{second["id"]}"][data-status="rejected"]'
        )
        assert (
            "follow it" in reviewer.locator(f'.annot-item[data-id="{second["id"]}"]').inner_text()
        )
        shot(reviewer, screens(tmp_path), "reviewed")
        # The annotator's review route answers 403.
        denied = annotator.request.post(
            f"{server.base}api/v1/annotations/{second['id']}/review",
            data=json.dumps({"decision": "accept"}),
            headers=HEADERS,
        )
        assert denied.status == 403
    finally:
        for context in contexts:
            context.close()


def test_a_failed_save_is_kept_and_retried(page: Page, aserver: Setup, tmp_path: Path) -> None:
    server = aserver.server
    place = open_as(page, server)
    clear_annotations(page, server)
    page.wait_for_selector('#annot-count[data-count="0"]')
    refused: list[int] = []

    def refuse_once(route: Route) -> None:
        if route.request.method == "POST" and not refused:
            refused.append(503)
            route.fulfill(
                status=503,
                content_type="application/json",
                body='{"error": "unavailable", "message": "down for a moment"}',
            )
        else:
            route.continue_()

    creates = lambda url: url.endswith(f"/api/v1/images/{GEO_ID}/annotations?crs=pixel")  # noqa: E731
    page.route(creates, refuse_once)
    page.locator("#map").focus()
    page.keyboard.press("b")
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.status == 201, timeout=15_000
    ) as stored:
        page.mouse.click(*place.at(60, 60))
        page.mouse.move(*place.at(90, 80), steps=3)
        page.mouse.click(*place.at(120, 100))
        # Refused once: kept (in localStorage and the list, marked unsaved), shown as not saved.
        page.locator("#toast").wait_for(state="visible")
        assert "Not saved yet" in page.locator("#toast").inner_text()
    # ... and saved by the automatic retry a second later.
    assert refused == [503]
    page.wait_for_selector("#annotation-unsaved .annot-item", state="detached")
    assert page.evaluate(f"localStorage.getItem('tessera.pending.{GEO_ID}')") is None
    (box,) = features(page, server)
    xs, ys = zip(*box["geometry"]["coordinates"][0], strict=True)
    assert abs(min(xs) - 60) <= place.tol and abs(max(xs) - 120) <= place.tol
    assert abs(min(ys) - 60) <= place.tol and abs(max(ys) - 100) <= place.tol
    assert stored.value.json()["id"] == box["id"]
    page.unroute(creates)

    # The server cannot be reached at all: the point is kept across a reload, then saved.
    page.route(
        creates,
        lambda route: route.abort() if route.request.method == "POST" else route.continue_(),
    )
    page.keyboard.press("o")
    page.mouse.click(*place.at(500, 100))
    page.wait_for_selector('#annotation-unsaved .annot-item[data-op="create"]')
    kept = json.loads(page.evaluate(f"localStorage.getItem('tessera.pending.{GEO_ID}')"))
    assert [k["op"] for k in kept] == ["create"]
    assert kept[0]["feature"]["geometry"]["type"] == "Point"
    shot(page, screens(tmp_path), "unsaved")
    page.reload()
    wait_ready(page, GEO_ID)
    page.wait_for_selector('#annotation-unsaved .annot-item[data-op="create"]')
    assert len(features(page, server)) == 1  # still only the box on the server
    page.unroute(creates)
    with page.expect_response(lambda r: r.request.method == "POST" and r.status == 201) as stored:
        page.locator("#annotation-unsaved .annot-retry").first.click()
    page.wait_for_selector("#annotation-unsaved .annot-item", state="detached")
    point = next(f for f in features(page, server) if f["geometry"]["type"] == "Point")
    px, py = point["geometry"]["coordinates"]
    assert abs(px - 500) <= place.tol and abs(py - 100) <= place.tol
    assert page.evaluate(f"localStorage.getItem('tessera.pending.{GEO_ID}')") is None

    # A 4xx is the server saying no: its message is shown and nothing is kept.
    page.route(
        creates,
        lambda route: (
            route.fulfill(
                status=422,
                content_type="application/json",
                body='{"error": "invalid", "message": "the label is locked out"}',
            )
            if route.request.method == "POST"
            else route.continue_()
        ),
    )
    page.keyboard.press("o")
    page.mouse.click(*place.at(520, 300))
    page.wait_for_function(
        "document.querySelector('#toast').innerText.includes('the label is locked out')"
    )
    assert page.locator("#annotation-unsaved .annot-item").count() == 0
    assert page.evaluate(f"localStorage.getItem('tessera.pending.{GEO_ID}')") is None
    page.unroute(creates)
    page.keyboard.press("Escape")


def test_instructions_are_rendered_as_text_only(page: Page, aserver: Setup, tmp_path: Path) -> None:
    server = aserver.server
    markdown = (
        "## Fields\n\nOutline **every** field; see [the guide](https://example.org/guide).\n\n"
        '- hedges are *not* fields\n- <img src=x onerror="window.__xss=1">\n\n'
        "[bad](javascript:window.__xss=2)"
    )
    open_as(page, server)
    r = page.request.patch(
        f"{server.base}api/v1/projects/default",
        data=json.dumps({"instructions": markdown}),
        headers=HEADERS,
    )
    assert r.status == 200, r.text()
    page.reload()
    wait_ready(page, GEO_ID)
    body = page.locator("#instructions-body")
    body.wait_for()
    page.wait_for_selector("#instructions-body strong")
    assert body.locator("h5").inner_text() == "Fields"
    assert body.locator("strong").inner_text() == "every"
    link = body.locator("a")
    assert link.count() == 1 and link.get_attribute("href") == "https://example.org/guide"
    assert body.locator("img").count() == 0 and "<img src=x" in body.inner_text()
    assert page.evaluate("window.__xss") is None
    # The shortcuts section lists every key, the new ones included.
    page.locator("#shortcuts-details summary").click()
    shortcuts = page.locator("#shortcut-list").inner_text()
    for key in ("F", "H", "S", "Ctrl+Shift+Z / Ctrl+Y", "N / Shift+N", "A / R"):
        assert key in shortcuts, key
    page.locator("#instructions-details summary").click()  # collapses
    assert body.is_hidden()
    shot(page, screens(tmp_path), "instructions")


def test_snapping_to_a_neighbours_vertex(page: Page, aserver: Setup, tmp_path: Path) -> None:
    server = aserver.server
    place = open_as(page, server)
    clear_annotations(page, server)
    post(page, server, polygon("field", square(100, 300, 30)))  # a corner at (70, 270)
    page.reload()
    wait_ready(page, GEO_ID)
    wait_count(page, 1)
    corner_x, corner_y = place.at(70, 270)
    near = (corner_x + 4, corner_y + 3)  # 5 screen px away: inside the 10 px snap tolerance
    rest = [place.at(200, 250), place.at(160, 350)]

    def draw(points: list[tuple[int, int]]) -> dict[str, Any]:
        before = {f["id"] for f in features(page, server)}
        page.locator("#map").focus()
        page.keyboard.press("p")
        for x, y in points:
            page.mouse.click(x, y)
        with page.expect_response(lambda r: r.request.method == "POST") as created:
            page.mouse.click(*points[0])
        assert created.value.status == 201, created.value.text()
        page.keyboard.press("Escape")
        (new,) = [f for f in features(page, server) if f["id"] not in before]
        return new

    # S turns snapping on: the first vertex is the neighbour's corner itself.
    page.keyboard.press("s")
    assert page.locator("#annot-snap").get_attribute("aria-pressed") == "true"
    snapped = np.array(draw([near, *rest])["geometry"]["coordinates"][0][:-1], dtype=float)
    assert np.abs(snapped - np.array([70.0, 270.0])).sum(axis=1).min() <= 1e-6, snapped
    shot(page, screens(tmp_path), "snapped")
    # Off again: the vertex stays where it was clicked, about 5 screen px from the corner.
    page.keyboard.press("s")
    assert page.locator("#annot-snap").get_attribute("aria-pressed") == "false"
    free = np.array(draw([near, *rest])["geometry"]["coordinates"][0][:-1], dtype=float)
    gap = np.hypot(*(free - np.array([70.0, 270.0])).T).min() * place.scale
    assert 5 - CLICK_TOLERANCE_SCREEN_PX <= gap <= 5 + CLICK_TOLERANCE_SCREEN_PX, gap


def test_volume_list_by_slice_and_all_slices(page: Page, vserver: Server, tmp_path: Path) -> None:
    open_as_image(page, vserver, CT_ID)
    for f in api(page, vserver, f"/images/{CT_ID}/annotations?crs=pixel")["features"]:
        page.request.delete(f"{vserver.base}api/v1/annotations/{f['id']}", headers=HEADERS)
    made = {}
    for k, col in ((5, 150.0), (20, 300.0)):
        body = polygon("nodule", square(col, 200, 15))
        body["properties"].update(slice=k, plane="axial")
        r = page.request.post(
            f"{vserver.base}api/v1/images/{CT_ID}/annotations?crs=pixel",
            data=json.dumps(body),
            headers=HEADERS,
        )
        assert r.status == 201, r.text()
        made[k] = r.json()["id"]
    page.reload()
    wait_ready(page, CT_ID)
    page.locator("#slice-slider").fill("5")
    wait_slice(page, "axial", 5)
    # This slice: only its own annotation.
    page.wait_for_selector('#annotation-list-count[data-count="1"]')
    items = page.locator("#annotation-list-items .annot-item")
    assert items.first.get_attribute("data-id") == str(made[5])
    # All slices: both; a click on the other one goes to its slice and selects it there.
    page.locator("#list-all").check()
    page.wait_for_selector('#annotation-list-count[data-count="2"]')
    page.locator(f'#annotation-list-items .annot-item[data-id="{made[20]}"]').click()
    wait_slice(page, "axial", 20)
    page.wait_for_selector(f'#map[data-selected="{made[20]}"]')
    shot(page, screens(tmp_path), "ct-list-all-slices")
    page.locator("#list-all").uncheck()
    page.wait_for_selector('#annotation-list-count[data-count="1"]')
    assert items.first.get_attribute("data-id") == str(made[20])


def test_shift_drag_draws_freehand_with_the_polygon_tool(
    page: Page, aserver: Setup, tmp_path: Path
) -> None:
    server = aserver.server
    place = open_as(page, server)
    clear_annotations(page, server)
    # A square outline dragged with Shift held, 10 screen px between pointer moves.
    corners = [(380.0, 60.0), (480.0, 60.0), (480.0, 160.0), (380.0, 160.0)]
    path: list[tuple[int, int]] = []
    for (c0, r0), (c1, r1) in zip(corners, corners[1:] + corners[:1], strict=True):
        for t in np.linspace(0, 1, 8, endpoint=False):
            path.append(place.at(c0 + (c1 - c0) * t, r0 + (r1 - r0) * t))
    page.locator("#map").focus()
    page.keyboard.press("p")
    page.mouse.move(*path[0])
    page.keyboard.down("Shift")
    page.mouse.down()
    for x, y in path[1:]:
        page.mouse.move(x, y)
    page.mouse.up()
    page.keyboard.up("Shift")
    wait_count(page, 1)
    page.keyboard.press("Escape")
    (feature,) = features(page, server)
    ring = np.array(feature["geometry"]["coordinates"][0][:-1], dtype=float)
    assert len(ring) >= 16, len(ring)
    # Every vertex on the dragged square's outline (to the click tolerance).
    dx = np.minimum(np.abs(ring[:, 0] - 380), np.abs(ring[:, 0] - 480))
    dy = np.minimum(np.abs(ring[:, 1] - 60), np.abs(ring[:, 1] - 160))
    assert (np.minimum(dx, dy) <= place.tol).all(), ring
    assert ring[:, 0].min() >= 380 - place.tol and ring[:, 0].max() <= 480 + place.tol
    assert ring[:, 1].min() >= 60 - place.tol and ring[:, 1].max() <= 160 + place.tol


def test_a_failed_edit_is_kept_and_retried(page: Page, aserver: Setup, tmp_path: Path) -> None:
    server = aserver.server
    place = open_as(page, server)
    clear_annotations(page, server)
    stored = post(page, server, polygon("field", square(300, 200, 40)))
    page.reload()
    wait_ready(page, GEO_ID)
    wait_count(page, 1)
    edits = lambda url: url.split("?")[0].endswith(f"/api/v1/annotations/{stored['id']}")  # noqa: E731
    page.route(
        edits, lambda route: route.abort() if route.request.method == "PUT" else route.continue_()
    )
    page.mouse.click(*place.at(300, 200))
    page.wait_for_timeout(400)
    vx, vy = place.at(340, 240)  # the bottom-right corner
    page.mouse.move(vx, vy)
    page.mouse.down()
    page.mouse.move(vx + 10, vy, steps=3)
    page.mouse.move(vx + 24, vy, steps=3)
    page.mouse.up()
    # The server was not reached: the edit is kept (listed, in localStorage), the shape stays moved.
    page.wait_for_selector('#annotation-unsaved .annot-item[data-op="update"]')
    kept = json.loads(page.evaluate(f"localStorage.getItem('tessera.pending.{GEO_ID}')"))
    assert [(k["op"], k["id"], k["version"]) for k in kept] == [("update", stored["id"], 1)]
    (on_server,) = features(page, server)
    assert on_server["properties"]["version"] == 1
    page.unroute(edits)
    with page.expect_response(lambda r: r.request.method == "PUT") as put:
        page.locator("#annotation-unsaved .annot-retry").first.click()
    assert put.value.status == 200 and put.value.request.headers.get("if-match") == '"1"'
    page.wait_for_selector("#annotation-unsaved .annot-item", state="detached")
    (saved,) = features(page, server)
    ring = np.array(saved["geometry"]["coordinates"][0][:-1], dtype=float)
    moved = np.array([(260, 160), (340, 160), (340 + 24 / place.scale, 240), (260, 240)])
    assert same_ring(ring, moved, place.tol), ring
    assert page.evaluate(f"localStorage.getItem('tessera.pending.{GEO_ID}')") is None


def test_a_crowded_list_draws_200_rows_and_pages_on_demand(
    page: Page, aserver: Setup, tmp_path: Path
) -> None:
    """1,184 shapes: the list in view is one page of 1,000 with 200 rows drawn; "More" draws
    the next rows, and with "All" loads the server's next page. A filter reloads the list with
    the listing's parameters: every page holds only matches (also those past the first 1,000),
    and "More" goes on with the filtered cursor. The review queue asks for status=submitted."""
    server = aserver.server
    open_as(page, server)
    clear_annotations(page, server)
    grid = [(8 + 16 * i, 8 + 12 * j) for i in range(37) for j in range(32)]  # 1,184 in view
    # Every 8th a submitted "field" (148, 23 of them created after the first 1,000); the others
    # "road" or its sub-label "road/bridge" (1,036: more than a page).
    labels = ["field" if n % 8 == 0 else "road" if n % 2 else "road/bridge" for n in range(1184)]
    bulk = {
        "type": "FeatureCollection",
        "features": [
            {
                **polygon(label, square(c, r, 3)),
                "properties": {
                    "label": label,
                    "status": "submitted" if label == "field" else "draft",
                },
            }
            for label, (c, r) in zip(labels, grid, strict=True)
        ],
    }
    r = page.request.post(
        f"{server.base}api/v1/images/{GEO_ID}/annotations/bulk?crs=pixel",
        data=json.dumps(bulk),
        headers=HEADERS,
    )
    assert r.status == 201, r.text()
    ids = r.json()["ids"]
    fields = {i for i, label in zip(ids, labels, strict=True) if label == "field"}
    roads = {i for i, label in zip(ids, labels, strict=True) if label != "field"}
    assert len(fields) == 148 and len(fields - set(ids[:1000])) == 23 and len(roads) == 1036

    def listing(*parts: str):  # type: ignore[no-untyped-def]
        """The list's next listing request, whose URL has every one of `parts`."""
        return page.expect_request(
            lambda q: f"/images/{GEO_ID}/annotations?" in q.url and all(p in q.url for p in parts)
        )

    try:
        page.reload()
        wait_ready(page, GEO_ID)
        rows = page.locator("#annotation-list-items .annot-item")
        summary = page.locator("#annotation-list-summary")
        more = page.locator("#annotation-list-more")

        def shown() -> list[tuple[int, str]]:
            got = rows.evaluate_all("(n) => n.map((e) => [e.dataset.id, e.dataset.label])")
            return [(int(i), str(label)) for i, label in got]

        page.wait_for_selector('#annotation-list-count[data-count="1000"]')  # one bbox page
        assert rows.count() == 200
        assert summary.inner_text() == "Showing 200 of 1,000 · more on the server"
        more.click()
        page.wait_for_function(
            "document.querySelectorAll('#annotation-list-items .annot-item').length === 400"
        )

        # A label filter asks the server: all 148 fields, 23 of them past the first page of
        # 1,000 (filtering the rows loaded would have found 125 and more on the server).
        with listing("bbox=", "label=field") as asked:
            page.select_option("#filter-label", "field")
        assert "status=" not in asked.value.url and "cursor=" not in asked.value.url
        page.wait_for_selector('#annotation-list-count[data-count="148"]')
        assert summary.inner_text() == "148 shown"
        assert more.is_hidden()
        assert {i for i, _ in shown()} == fields and {lab for _, lab in shown()} == {"field"}
        # The same ones by status.
        page.select_option("#filter-label", "")
        with listing("bbox=", "status=submitted") as asked:
            page.select_option("#filter-status", "submitted")
        assert "label=" not in asked.value.url
        page.wait_for_function(
            "document.querySelector('#annotation-list-items .annot-item[data-label=\"road\"]')"
            " === null && document.querySelector('#annotation-list-count').dataset.count === '148'"
        )
        assert {i for i, _ in shown()} == fields

        # "road" keeps its sub-label: 1,036 matches, a full page then the rest by the cursor.
        page.select_option("#filter-status", "")
        with listing("label=road"):
            page.select_option("#filter-label", "road")
        page.wait_for_function(
            "document.querySelector('#annotation-list-count').textContent === '1000+'"
            " && !document.querySelector('#annotation-list-items .annot-item[data-label=field]')"
        )
        assert summary.inner_text() == "Showing 200 of 1,000 · more on the server"
        for drawn in (400, 600, 800, 1000):
            more.click()
            page.wait_for_function(
                "document.querySelectorAll('#annotation-list-items .annot-item').length"
                f" === {drawn}"
            )
        with listing("label=road", "cursor=") as nxt:
            more.click()
        assert "label=road%2F" not in nxt.value.url
        page.wait_for_selector('#annotation-list-count[data-count="1036"]')
        assert summary.inner_text() == "1,036 shown"
        assert more.is_hidden()
        assert {i for i, _ in shown()} == roads
        assert {lab for _, lab in shown()} == {"road", "road/bridge"}
        shot(page, screens(tmp_path), "list-filtered-server")

        with listing("bbox="):
            page.select_option("#filter-label", "")
        page.wait_for_selector('#annotation-list-count[data-count="1000"]')
        page.locator("#list-all").check()
        page.wait_for_function(
            "document.querySelectorAll('#annotation-list-items .annot-item').length === 200"
        )
        for drawn in (400, 600, 800, 1000):  # the rows loaded first, 200 at a time
            more.click()
            page.wait_for_function(
                "document.querySelectorAll('#annotation-list-items .annot-item').length"
                f" === {drawn}"
            )
        assert summary.inner_text() == "1,000 shown · more on the server"
        with page.expect_response(lambda r: "cursor=" in r.url and "bbox" not in r.url) as nxt:
            more.click()  # then the server's next page
        assert nxt.value.status == 200
        page.wait_for_selector('#annotation-list-count[data-count="1184"]')
        assert summary.inner_text() == "1,184 shown"
        assert more.is_hidden()
        listed = [i for i, _ in shown()]
        assert listed == sorted(listed) and set(listed) == set(ids)
        shot(page, screens(tmp_path), "list-crowded")

        # The review queue is the server's status=submitted listing: all 148 in one page (read
        # from unfiltered pages it would have stopped at 125 of the first, with more to come).
        with listing("status=submitted") as asked:
            page.locator("#review-toggle").click()
        assert "bbox=" not in asked.value.url
        page.wait_for_selector('#review-position[data-count="148"]')
        assert page.locator("#review-position").inner_text() == "1 of 148"
        assert int(page.locator("#review-current").get_attribute("data-id") or 0) == min(fields)
        page.locator("#review-toggle").click()
    finally:
        admin = {**HEADERS, "Authorization": f"Bearer {TOKEN}"}
        while found := features(page, server, "crs=pixel&limit=1000"):
            for f in found:
                page.request.delete(f"{server.base}api/v1/annotations/{f['id']}", headers=admin)
