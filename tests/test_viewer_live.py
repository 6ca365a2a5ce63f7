"""Live collaboration in the viewer, end to end: two browser pages signed in as two users on
the same image; a polygon drawn in one appears in the other (from the picture, and in its
annotation count) with the author's name shown, without reloading the page."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from playwright.sync_api import Browser, Page

from annot.storage import open_store
from annot.users import Role
from tests.test_viewer import (  # noqa: F401  (fixtures are used by name)
    TOKEN,
    UI_TIMEOUT_MS,
    VIEWPORT,
    Server,
    browser,
    map_picture,
    serve,
    viewer_built,
    write_geotiff,
)
from tests.test_viewer_volume import draw_polygon, image_region, wait_ready

GEO_ID = "a-utm"
BOB_TOKEN = "viewer-live-bob-token-0123456789"


@pytest.fixture(scope="module")
def lserver(viewer_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    root = tmp_path_factory.mktemp("viewer-live")
    data = root / "data"
    data.mkdir()
    write_geotiff(data / "a_utm.tif")
    with serve(data, root) as server:
        store = open_store(f"sqlite:///{root / 'state' / 'tessera.db'}")
        store.add_user("bob", Role.annotator, token=BOB_TOKEN)
        store.close()
        yield server


def signed_in_page(chromium: Browser, server: Server, token: str, errors: list[str]) -> Page:
    context = chromium.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{exc}\n{exc.stack}"))
    page.goto(f"{server.base}?token={token}")
    page.wait_for_url(re.compile(r"/#image="))
    page.goto(f"{server.base}#image={GEO_ID}")
    wait_ready(page, GEO_ID)
    return page


def test_a_polygon_drawn_in_one_page_appears_in_the_other(
    browser: Browser,  # noqa: F811
    lserver: Server,
) -> None:
    errors: list[str] = []
    alice = signed_in_page(browser, lserver, TOKEN, errors)
    bob = signed_in_page(browser, lserver, BOB_TOKEN, errors)
    try:
        bob.wait_for_selector('#annot-count[data-count="0"]')
        before, _ = map_picture(bob)
        pic, (mx, my) = map_picture(alice)
        rows, cols = image_region(pic)
        scale = (cols.stop - cols.start) / 600  # screen px per image px (a_utm is 600 wide)
        left, top = mx + cols.start, my + rows.start
        corners = [(100, 60), (420, 80), (380, 330), (140, 300)]  # image pixels
        draw_polygon(alice, [(round(left + c * scale), round(top + r * scale)) for c, r in corners])
        alice.wait_for_selector('#annot-count[data-count="1"]')

        # Bob's page gets it over the WebSocket: no reload, no pan.
        bob.wait_for_selector('#annot-count[data-count="1"]', timeout=5000)
        toast = bob.locator(".live-toast")
        toast.wait_for(state="visible", timeout=5000)
        assert toast.get_attribute("data-user") == "admin"
        assert toast.inner_text().startswith("admin added")
        bob.wait_for_timeout(300)  # the next frame has drawn it
        after, _ = map_picture(bob)
        brows, bcols = image_region(before)
        bscale = (bcols.stop - bcols.start) / 600
        changed = np.abs(after - before).sum(axis=-1) > 30
        inside = changed[
            round(brows.start + 150 * bscale) : round(brows.start + 250 * bscale),
            round(bcols.start + 200 * bscale) : round(bcols.start + 330 * bscale),
        ]
        outside = changed[
            round(brows.start + 350 * bscale) : round(brows.start + 395 * bscale),
            round(bcols.start + 450 * bscale) : round(bcols.start + 590 * bscale),
        ]
        assert inside.mean() > 0.9, "the polygon's fill is not drawn in the other page"
        assert outside.mean() < 0.01, "something else changed in the other page"

        # Alice's own page ignores the echo of her save: still one shape, no toast.
        alice.wait_for_timeout(1500)
        assert alice.locator('#annot-count[data-count="1"]').count() == 1
        assert alice.locator(".live-toast").is_hidden()
    finally:
        alice.context.close()
        bob.context.close()
    assert not errors, f"a page raised: {errors}"
