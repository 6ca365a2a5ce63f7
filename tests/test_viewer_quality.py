"""The viewer's Quality panel, end to end: the real server and its checks route, the built
viewer, headless Chromium (fixtures and helpers of tests/test_viewer.py,
tests/test_viewer_volume.py and tests/test_viewer_annotate.py).

Served: ``a_utm.tif`` of tests/test_viewer.py (600 x 400). A reviewer bulk-creates a clean
square, a square and its near copy (a duplicate pair) and a 1 px² square (tiny); the panel's rows
are the checks route's answer (code, annotation id, in its order). A click on the duplicate's row
puts the finding's pixel centroid in the middle of the map, to within ``CENTRE_TOLERANCE_SCREEN_PX``
screen pixels (read back through the status bar's pointer position, which itself is exact to the
float), and selects the duplicate; Delete removes it and the open panel refreshes without it.
Annotators are not offered the panel (and the route answers them 403).
"""

# ruff: noqa: F811
# (fixtures imported by name; test arguments shadow them.)
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.test_viewer import (  # noqa: F401  (fixtures are used by name)
    UI_TIMEOUT_MS,
    VIEWPORT,
    browser,
    page,
    pointer_at,
    serve,
    viewer_built,
    write_geotiff,
    zoom_percent,
)
from tests.test_viewer_annotate import (
    GEO_ID,
    HEADERS,
    Setup,
    add_user,
    open_as,
    polygon,
    screens,
    square,
)
from tests.test_viewer_volume import api, shot, wait_ready

CENTRE_TOLERANCE_SCREEN_PX = 3.0


@pytest.fixture(scope="module")
def qserver(viewer_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("viewer-quality")
    data = root / "data"
    data.mkdir()
    write_geotiff(data / "a_utm.tif")
    with serve(data, root) as server:
        yield Setup(server, data, root / "state")


@pytest.fixture(scope="module")
def users(qserver: Setup) -> dict[str, str]:
    return {
        "ann": add_user(qserver, "ann", "annotator"),
        "rev": add_user(qserver, "rev", "reviewer"),
    }


def checks(page: Page, setup: Setup) -> dict[str, Any]:
    return dict(api(page, setup.server, f"/projects/default/checks?image={GEO_ID}&limit=200"))


def rows(page: Page) -> list[tuple[str, int | None]]:
    got = page.locator("#quality-items .quality-item").evaluate_all(
        "(n) => n.map((e) => [e.dataset.code, e.dataset.annotation])"
    )
    return [(str(code), int(a) if a else None) for code, a in got]


def expected_rows(answer: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(f["code"], f["annotation"]) for f in answer["findings"]]


def test_quality_panel_lists_zooms_selects_and_rechecks(
    browser: Browser, qserver: Setup, users: dict[str, str], tmp_path: Path
) -> None:
    server = qserver.server
    contexts = []

    def new_page() -> Page:
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        context.set_default_timeout(UI_TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    try:
        reviewer = new_page()
        errors: list[str] = []
        reviewer.on("pageerror", lambda exc: errors.append(str(exc)))
        open_as(reviewer, server, users["rev"])
        bulk = {
            "type": "FeatureCollection",
            "features": [
                polygon("field", square(100, 300, 20)),  # clean
                polygon("field", square(200, 150, 20)),  # the original
                polygon("field", [(180, 130), (220, 130), (220, 170.2), (180, 170.2)]),  # its copy
                polygon("field", square(450, 100, 0.5)),  # 1 px²: tiny
            ],
        }
        r = reviewer.request.post(
            f"{server.base}api/v1/images/{GEO_ID}/annotations/bulk?crs=pixel",
            data=json.dumps(bulk),
            headers=HEADERS,
        )
        assert r.status == 201, r.text()
        clean, original, copy, tiny = r.json()["ids"]

        answer = checks(reviewer, qserver)
        found = {(f["annotation"], f["code"]): f for f in answer["findings"]}
        assert (copy, "duplicate") in found and (tiny, "tiny") in found, answer
        assert found[(copy, "duplicate")]["details"]["duplicate_of"] == original
        assert not any(a == clean for a, _ in found), "the clean square has no finding"

        reviewer.reload()
        wait_ready(reviewer, GEO_ID)
        reviewer.wait_for_selector("#quality:not([hidden])")
        assert "(Q)" in (reviewer.locator("#quality-toggle").get_attribute("title") or "")
        shortcuts = reviewer.locator("#shortcut-list").text_content() or ""
        assert "Quality" in shortcuts
        # Q opens the panel: it reads the image's findings.
        reviewer.locator("#map").focus()
        with reviewer.expect_response(lambda q: "/projects/default/checks?" in q.url) as first:
            reviewer.keyboard.press("q")
        assert first.value.status == 200
        assert f"image={GEO_ID}" in first.value.url
        reviewer.wait_for_selector('#quality[data-open="true"][data-state="ready"]')
        assert rows(reviewer) == expected_rows(answer)
        assert reviewer.locator("#quality").get_attribute("data-total") == str(answer["total"])
        assert reviewer.locator('#quality-counts li[data-code="duplicate"]').get_attribute(
            "data-count"
        ) == str(answer["counts"]["duplicate"])

        # The code filter is sent to the server.
        with reviewer.expect_request(lambda q: "code=tiny" in q.url and "/checks?" in q.url):
            reviewer.select_option("#quality-code", "tiny")
        reviewer.wait_for_function(
            "[...document.querySelectorAll('#quality-items .quality-item')]"
            ".every((e) => e.dataset.code === 'tiny')"
        )
        assert rows(reviewer) == [("tiny", tiny)]
        with reviewer.expect_request(lambda q: "severity=error" in q.url and "code=" not in q.url):
            reviewer.select_option("#quality-code", "")
            reviewer.select_option("#quality-severity", "error")
        reviewer.wait_for_function(
            "!document.querySelector('#quality-items .quality-item[data-code=\"tiny\"]')"
        )
        reviewer.select_option("#quality-severity", "")
        reviewer.wait_for_selector(f'#quality-items .quality-item[data-annotation="{tiny}"]')

        # The duplicate's row: the map centres on the finding and selects the copy; the
        # original is outlined.
        duplicate = found[(copy, "duplicate")]
        cx_img, cy_img = duplicate["location"]["pixel_centroid"]
        zoom_before = zoom_percent(reviewer)
        reviewer.locator(
            f'#quality-items .quality-item[data-code="duplicate"][data-annotation="{copy}"]'
        ).click()
        reviewer.wait_for_selector(f'#map[data-selected="{copy}"]')
        assert reviewer.locator("#map").get_attribute("data-highlighted") == str(original)
        wait_ready(reviewer, GEO_ID)
        zoom = zoom_percent(reviewer)
        assert zoom > zoom_before, (zoom, zoom_before)
        box = reviewer.locator("#map").bounding_box()
        assert box is not None
        col, row = pointer_at(reviewer, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        scale = zoom / 100  # screen px per image px
        off = max(abs(col - cx_img), abs(row - cy_img)) * scale
        # the pointer sits on a whole screen pixel: half a pixel either way of the true centre
        assert off <= CENTRE_TOLERANCE_SCREEN_PX, (col, row, cx_img, cy_img, scale)
        shot(reviewer, screens(tmp_path), "quality-duplicate")

        # Delete the copy in the viewer: the open panel refreshes and its rows are gone.
        with reviewer.expect_response(lambda q: q.request.method == "DELETE") as gone:
            reviewer.keyboard.press("Delete")
        assert gone.value.status == 204, gone.value.text()
        reviewer.wait_for_function(
            f"!document.querySelector('#quality-items .quality-item[data-annotation=\"{copy}\"]')"
        )
        after = checks(reviewer, qserver)
        assert not any(f["annotation"] == copy for f in after["findings"])
        with reviewer.expect_response(lambda q: "/checks?" in q.url) as again:
            reviewer.locator("#quality-recheck").click()
        assert again.value.status == 200
        reviewer.wait_for_selector('#quality[data-state="ready"]')
        assert rows(reviewer) == expected_rows(after)
        assert ("tiny", tiny) in rows(reviewer)
        assert not errors, errors

        # Annotators: no panel, Q does nothing, and the route says 403.
        annotator = new_page()
        with annotator.expect_response(lambda q: q.url.endswith("/api/v1/projects/default")) as p:
            open_as(annotator, server, users["ann"])
        assert p.value.json()["role"] == "annotator"
        annotator.wait_for_timeout(200)  # the project's answer is handled
        assert annotator.locator("#quality").is_hidden()
        asked: list[str] = []
        annotator.on("request", lambda q: asked.append(q.url) if "/checks" in q.url else None)
        annotator.locator("#map").focus()
        annotator.keyboard.press("q")
        annotator.wait_for_timeout(300)
        assert asked == [] and annotator.locator("#quality").is_hidden()
        r = annotator.request.get(f"{server.base}api/v1/projects/default/checks?image={GEO_ID}")
        assert r.status == 403, r.text()
    finally:
        for context in contexts:
            context.close()
