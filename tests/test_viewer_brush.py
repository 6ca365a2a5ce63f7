"""The mask brush and eraser in the viewer, end to end: the real server, the built viewer,
headless Chromium (fixtures and helpers of tests/test_viewer.py, tests/test_viewer_annotate.py
and tests/test_viewer_volume.py).

Strokes are painted with the mouse; where each pointer sample lands on the image's pixel grid
is read from the status bar (the map's own screen→pixel mapping) by hovering it first. The
expected mask is recomputed here in numpy: the pixels whose centre (col+0.5, row+0.5) lies
within the brush radius of the polyline through the samples. Tolerance: a pixel whose centre
is within 1 image pixel of the stroke's boundary (| distance - radius | <= 1) may differ; every
other pixel must match exactly.
"""

# ruff: noqa: F811
# (fixtures imported by name; test arguments shadow them.)
from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from playwright.sync_api import Page, Route

from tests.test_viewer import (  # noqa: F401  (fixtures are used by name)
    TOKEN,
    Server,
    browser,
    map_picture,
    page,
    pointer_at,
    viewer_built,
)
from tests.test_viewer_annotate import (  # noqa: F401  (fixtures are used by name)
    GEO_H,
    GEO_ID,
    GEO_W,
    HEADERS,
    Setup,
    aserver,
    clear_annotations,
    features,
    open_as,
    placement,
    screens,
)
from tests.test_viewer_volume import (
    CT_ID,
    api,
    image_region,
    shot,
    vserver,  # noqa: F401  (a fixture, used by name)
    wait_ready,
)
from tests.test_viewer_volume import open_image as open_as_image

BOUNDARY_TOLERANCE_PX = 1.0


def full_mask(props: dict[str, Any], width: int, height: int) -> np.ndarray:
    """A stored `properties.mask` decoded onto the whole image (rows, cols)."""
    mask = props["mask"]
    col, row = mask["origin"]
    w, h = mask["size"]
    values = np.zeros(len(mask["counts"]), dtype=bool)
    values[1::2] = True
    local = np.repeat(values, mask["counts"]).reshape(h, w)
    out = np.zeros((height, width), dtype=bool)
    out[row : row + h, col : col + w] = local
    return out


def encode_mask(full: np.ndarray) -> dict[str, Any]:
    """A whole-image bool array as `properties.mask` (row-major runs, starting with 0s)."""
    flat = full.astype(np.int8).ravel()
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    counts = runs if flat[0] == 0 else [0, *runs]
    return {"origin": [0, 0], "size": [full.shape[1], full.shape[0]], "counts": counts}


def stroke_distance(samples: np.ndarray, width: int, height: int) -> np.ndarray:
    """Distance from every pixel centre to the polyline through `samples` ((col, row) rows)."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    best = np.full((height, width), np.inf)
    segments = list(pairwise(samples)) or [(samples[0], samples[0])]
    for a, b in segments:
        d = b - a
        length = float(d @ d)
        t = (
            np.zeros_like(cols)
            if length == 0
            else ((cols - a[0]) * d[0] + (rows - a[1]) * d[1]) / length
        )
        t = np.clip(t, 0.0, 1.0)
        best = np.minimum(best, np.hypot(cols - (a[0] + t * d[0]), rows - (a[1] + t * d[1])))
    return best


def assert_mask_close(
    stored: np.ndarray, expected: np.ndarray, distance: np.ndarray, radius: float
) -> None:
    differs = stored != expected
    print("BRUSHDIFF", int(differs.sum()), int(expected.sum()))
    near_edge = np.abs(distance - radius) <= BOUNDARY_TOLERANCE_PX
    far = differs & ~near_edge
    assert not far.any(), f"{far.sum()} pixels differ away from the stroke's boundary"
    assert differs.sum() <= 0.05 * expected.sum(), (differs.sum(), expected.sum())


def hover_samples(page: Page, screen: list[tuple[int, int]]) -> np.ndarray:
    """Pixel coordinates of each screen point, from the status bar."""
    return np.array([pointer_at(page, x, y) for x, y in screen], dtype=float)


def drag(page: Page, screen: list[tuple[int, int]], shift: bool = False) -> None:
    """One stroke: press at the first point, one move event per further point, release."""
    page.mouse.move(*screen[0])
    if shift:
        page.keyboard.down("Shift")
    page.mouse.down()
    for x, y in screen[1:]:
        page.mouse.move(x, y)
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")


def brush_radius(page: Page) -> float:
    return float(page.locator("#brush-size").get_attribute("data-radius") or "nan")


def saved(page: Page, method: str):  # type: ignore[no-untyped-def]
    return page.expect_response(
        lambda r: r.request.method == method and "/annotations" in r.url and "bbox" not in r.url
    )


def test_brush_paints_merges_erases_and_undoes_on_a_geotiff(
    page: Page, aserver: Setup, tmp_path: Path
) -> None:
    server = aserver.server
    place = open_as(page, server)
    clear_annotations(page, server)
    assert "(K)" in (page.locator("#tool-brush").get_attribute("title") or "")
    assert "(E)" in (page.locator("#tool-eraser").get_attribute("title") or "")
    help_text = page.locator("#instructions").text_content() or ""  # (a collapsed section)
    assert "K / E" in help_text and "[ / ]" in help_text

    page.locator("#map").focus()
    page.keyboard.press("k")
    assert page.locator("#tool-brush").get_attribute("aria-pressed") == "true"
    small = brush_radius(page)
    page.keyboard.press("]")
    page.keyboard.press("]")
    radius = brush_radius(page)
    assert radius > small

    # A fast drag: four samples 60-90 image px apart; the stroke must have no gaps.
    screen = [place.at(c, r) for c, r in [(120, 100), (210, 130), (300, 110), (360, 190)]]
    samples = hover_samples(page, screen)
    with saved(page, "POST") as post:
        drag(page, screen)
    assert post.value.status == 201, post.value.text()
    (feature,) = features(page, server)
    props = feature["properties"]
    assert props["kind"] == "mask"
    stored = full_mask(props, GEO_W, GEO_H)
    distance = stroke_distance(samples, GEO_W, GEO_H)
    expected = distance <= radius
    assert_mask_close(stored, expected, distance, radius)
    # The footprint sent back is the mask's box.
    col, row = props["mask"]["origin"]
    w, h = props["mask"]["size"]
    ring = np.array(feature["geometry"]["coordinates"][0], dtype=float)
    assert ring[:, 0].min() == col and ring[:, 0].max() == col + w
    assert ring[:, 1].min() == row and ring[:, 1].max() == row + h
    shot(page, screens(tmp_path), "brush-stroke")

    # Eraser (E) across the middle of the stroke: those pixels are gone, the rest stays.
    page.keyboard.press("e")
    assert page.locator("#tool-eraser").get_attribute("aria-pressed") == "true"
    erase_screen = [place.at(c, r) for c, r in [(210, 80), (210, 170)]]
    erase_samples = hover_samples(page, erase_screen)
    with saved(page, "PUT") as put:
        drag(page, erase_screen)
    assert put.value.status == 200, put.value.text()
    (erased,) = features(page, server)
    assert erased["id"] == feature["id"]
    after = full_mask(erased["properties"], GEO_W, GEO_H)
    erase_distance = stroke_distance(erase_samples, GEO_W, GEO_H)
    assert not (after & (erase_distance <= radius - BOUNDARY_TOLERANCE_PX)).any()
    kept = erase_distance > radius + BOUNDARY_TOLERANCE_PX
    assert np.array_equal(after[kept], stored[kept])
    assert after.sum() < stored.sum()

    # Leave the tool, select the mask by clicking it, brush again: the stroke is merged (PUT).
    page.keyboard.press("Escape")
    assert page.locator("#tool-eraser").get_attribute("aria-pressed") == "false"
    page.mouse.click(*place.at(300, 112))
    page.wait_for_selector(f'#map[data-selected="{feature["id"]}"]')
    page.keyboard.press("k")
    page.wait_for_selector(f'#map[data-brush-target="{feature["id"]}"]')
    more_screen = [place.at(c, r) for c, r in [(360, 190), (420, 260)]]
    more_samples = hover_samples(page, more_screen)
    with saved(page, "PUT") as put:
        drag(page, more_screen)
    assert put.value.status == 200, put.value.text()
    (merged,) = features(page, server)
    assert merged["id"] == feature["id"]
    union = full_mask(merged["properties"], GEO_W, GEO_H)
    more_distance = stroke_distance(more_samples, GEO_W, GEO_H)
    assert_mask_close(union, after | (more_distance <= radius), more_distance, radius)

    # Undo (Ctrl+Z) with the brush on takes the merged stroke out again; redo puts it back.
    with saved(page, "PUT"):
        page.keyboard.press("Control+z")
    assert np.array_equal(full_mask(features(page, server)[0]["properties"], GEO_W, GEO_H), after)
    with saved(page, "PUT"):
        page.keyboard.press("Control+Shift+Z")
    assert np.array_equal(full_mask(features(page, server)[0]["properties"], GEO_W, GEO_H), union)

    # Off the brush, the selected mask's footprint is not dragged (it would become a polygon).
    page.keyboard.press("Escape")
    assert page.locator("#map").get_attribute("data-selected") == str(feature["id"])
    puts: list[str] = []
    page.on("request", lambda r: puts.append(r.post_data or "") if r.method == "PUT" else None)
    sx, sy = place.at(300, 112)
    page.mouse.move(sx, sy)
    page.mouse.down()
    page.mouse.move(sx + 20, sy + 10, steps=3)
    page.mouse.move(sx + 60, sy + 30, steps=3)
    page.mouse.up()
    page.wait_for_timeout(500)
    assert puts == []
    (unmoved,) = features(page, server)
    assert unmoved["properties"]["kind"] == "mask"
    assert np.array_equal(full_mask(unmoved["properties"], GEO_W, GEO_H), union)
    # That drag panned the map: fit the image again and find it on the screen again.
    page.locator(".ol-zoom-extent button").click()
    page.wait_for_timeout(600)
    place = placement(page)

    # Shift-drag with the brush erases; erasing everything deletes the annotation.
    page.keyboard.press("k")
    page.wait_for_selector(f'#map[data-brush-target="{feature["id"]}"]')
    page.keyboard.press("]")
    page.keyboard.press("]")
    big = brush_radius(page)
    ys, xs = np.nonzero(union)
    # Back and forth across the mask's box, rows `big` apart: the swept discs cover it all.
    passes: list[tuple[int, int]] = []
    for r in np.arange(ys.min(), ys.max() + big, big):
        passes += [place.at(xs.min() - big, r), place.at(xs.max() + big, r)]
    with saved(page, "DELETE") as deleted:
        drag(page, passes, shift=True)
    assert deleted.value.status == 204
    assert features(page, server) == []


def test_brush_on_a_ct_slice_stores_the_mask_on_that_slice(
    page: Page, vserver: Server, tmp_path: Path
) -> None:
    open_as_image(page, vserver, CT_ID)
    for f in api(page, vserver, f"/images/{CT_ID}/annotations?crs=pixel")["features"]:
        page.request.delete(f"{vserver.base}api/v1/annotations/{f['id']}", headers=HEADERS)
    page.locator("#slice-slider").fill("7")
    page.wait_for_selector('#map[data-slice="7"][data-state="ready"]')
    plane = page.locator("#map").get_attribute("data-plane")
    meta = api(page, vserver, f"/images/{CT_ID}")
    width, height = meta["planes"][plane]["width"], meta["planes"][plane]["height"]
    pic, (mx, my) = map_picture(page)
    rows, cols = image_region(pic)
    cx, cy = mx + (cols.start + cols.stop) / 2, my + (rows.start + rows.stop) / 2
    screen = [(round(cx - 40), round(cy - 10)), (round(cx + 30), round(cy + 25))]
    page.locator("#map").focus()
    page.keyboard.press("k")
    radius = brush_radius(page)
    samples = hover_samples(page, screen)
    with saved(page, "POST") as post:
        drag(page, screen)
    assert post.value.status == 201, post.value.text()
    (feature,) = api(page, vserver, f"/images/{CT_ID}/annotations?crs=pixel&slice=7&plane={plane}")[
        "features"
    ]
    props = feature["properties"]
    assert (props["slice"], props["plane"], props["kind"]) == (7, plane, "mask")
    distance = stroke_distance(samples, width, height)
    assert_mask_close(full_mask(props, width, height), distance <= radius, distance, radius)
    other = api(page, vserver, f"/images/{CT_ID}/annotations?crs=pixel&slice=8&plane={plane}")
    assert other["features"] == []
    shot(page, screens(tmp_path), "brush-ct")


def kept_saves(page: Page) -> list[dict[str, Any]]:
    return list(json.loads(page.evaluate(f"localStorage.getItem('tessera.pending.{GEO_ID}')")))


def unavailable(route: Route) -> None:
    route.fulfill(
        status=503,
        content_type="application/json",
        body='{"error": "unavailable", "message": "down for a moment"}',
    )


def test_a_failed_brush_save_is_kept_and_retried(
    page: Page, aserver: Setup, tmp_path: Path
) -> None:
    """The server answers 503 to brush saves: a new mask is kept as a create (a second stroke
    merged into it), survives a reload and is stored when the server is back; a merge is kept as
    an update with its If-Match version, and as the mask changed meanwhile (412) the stroke is
    replayed onto the new version rather than dropped."""
    server = aserver.server
    place = open_as(page, server)
    clear_annotations(page, server)
    creates = lambda url: url.endswith(f"/api/v1/images/{GEO_ID}/annotations?crs=pixel")  # noqa: E731
    page.route(
        creates,
        lambda route: unavailable(route) if route.request.method == "POST" else route.continue_(),
    )
    page.locator("#map").focus()
    page.keyboard.press("k")
    radius = brush_radius(page)
    first = [place.at(c, r) for c, r in [(120, 100), (200, 130)]]
    second = [place.at(c, r) for c, r in [(200, 130), (260, 200)]]
    d1 = stroke_distance(hover_samples(page, first), GEO_W, GEO_H)
    d2 = stroke_distance(hover_samples(page, second), GEO_W, GEO_H)
    with page.expect_response(lambda r: r.request.method == "POST" and r.status == 503):
        drag(page, first)
    page.wait_for_selector('#annotation-unsaved .annot-item[data-op="create"]')
    assert "Not saved yet" in page.locator("#toast").inner_text()
    # The next stroke goes into the kept mask: still one kept create, holding both strokes.
    with page.expect_response(lambda r: r.request.method == "POST" and r.status == 503):
        drag(page, second)
    page.wait_for_function(
        f"JSON.parse(localStorage.getItem('tessera.pending.{GEO_ID}'))[0].attempts >= 2"
    )
    (kept,) = kept_saves(page)
    assert (kept["op"], kept["feature"]["properties"]["kind"]) == ("create", "mask")
    painted = (d1 <= radius) | (d2 <= radius)
    distance = np.minimum(d1, d2)
    assert_mask_close(
        full_mask(kept["feature"]["properties"], GEO_W, GEO_H), painted, distance, radius
    )
    shot(page, screens(tmp_path), "brush-unsaved")

    # A reload keeps it (listed as unsaved, nothing on the server); back online, it is stored.
    page.reload()
    wait_ready(page, GEO_ID)
    page.wait_for_selector('#annotation-unsaved .annot-item[data-op="create"]')
    assert features(page, server) == []
    page.unroute(creates)
    with page.expect_response(lambda r: r.request.method == "POST" and r.status == 201):
        page.evaluate("window.dispatchEvent(new Event('online'))")
    page.wait_for_selector("#annotation-unsaved .annot-item", state="detached")
    assert page.evaluate(f"localStorage.getItem('tessera.pending.{GEO_ID}')") is None
    (stored,) = features(page, server)
    assert stored["properties"]["version"] == 1
    saved = full_mask(stored["properties"], GEO_W, GEO_H)
    assert_mask_close(saved, painted, distance, radius)

    # Select it, brush again while PUTs answer 503: kept as an update against version 1.
    mid = place.at(200, 130)
    page.mouse.click(*mid)
    page.wait_for_selector(f'#map[data-selected="{stored["id"]}"]')
    page.locator("#map").focus()
    page.keyboard.press("k")
    page.wait_for_selector(f'#map[data-brush-target="{stored["id"]}"]')
    edits = lambda url: url.split("?")[0].endswith(f"/api/v1/annotations/{stored['id']}")  # noqa: E731
    page.route(
        edits,
        lambda route: unavailable(route) if route.request.method == "PUT" else route.continue_(),
    )
    third = [place.at(c, r) for c, r in [(260, 200), (330, 230)]]
    d3 = stroke_distance(hover_samples(page, third), GEO_W, GEO_H)
    with page.expect_response(lambda r: r.request.method == "PUT" and r.status == 503):
        drag(page, third)
    page.wait_for_selector('#annotation-unsaved .annot-item[data-op="update"]')
    (kept,) = kept_saves(page)
    assert (kept["op"], kept["id"], kept["version"]) == ("update", stored["id"], 1)
    assert np.array_equal(full_mask({"mask": kept["base"]}, GEO_W, GEO_H), saved)

    # Meanwhile someone adds a block to the mask (version 2).
    block = np.zeros((GEO_H, GEO_W), dtype=bool)
    block[300:330, 500:540] = True
    theirs = {
        "type": "Feature",
        "geometry": None,
        "properties": {
            "label": stored["properties"]["label"],
            "kind": "mask",
            "mask": encode_mask(saved | block),
        },
    }
    r = page.request.put(
        f"{server.base}api/v1/annotations/{stored['id']}?crs=pixel",
        data=json.dumps(theirs),
        headers={**HEADERS, "Authorization": f"Bearer {TOKEN}", "If-Match": '"1"'},
    )
    assert r.status == 200, r.text()
    # Back online: the kept PUT meets 412, the stroke is replayed onto version 2.
    page.unroute(edits)
    answers: list[tuple[str, str | None, int]] = []
    page.on(
        "response",
        lambda res: (
            answers.append((res.request.method, res.request.headers.get("if-match"), res.status))
            if res.url.split("?")[0].endswith(f"/api/v1/annotations/{stored['id']}")
            else None
        ),
    )
    with page.expect_response(lambda r: r.request.method == "PUT" and r.status == 200):
        page.evaluate("window.dispatchEvent(new Event('online'))")
    page.wait_for_selector("#annotation-unsaved .annot-item", state="detached")
    assert answers[:3] == [("PUT", '"1"', 412), ("GET", None, 200), ("PUT", '"2"', 200)], answers
    page.wait_for_function(
        "document.querySelector('#toast').innerText.includes('changed this mask meanwhile')"
    )
    (merged,) = features(page, server)
    assert merged["id"] == stored["id"] and merged["properties"]["version"] == 3
    got = full_mask(merged["properties"], GEO_W, GEO_H)
    assert (got & block).sum() == block.sum()  # their block is kept
    assert_mask_close(got & ~block, painted | (d3 <= radius), np.minimum(distance, d3), radius)
    assert page.evaluate(f"localStorage.getItem('tessera.pending.{GEO_ID}')") is None
    shot(page, screens(tmp_path), "brush-replayed")
