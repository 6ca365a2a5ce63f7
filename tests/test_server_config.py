"""``tessera serve --basemap URL`` and ``GET /api/v1/config`` (the viewer's WebMercator basemap).

The viewer drawing the basemap is tested end to end in tests/test_viewer_chrome.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LiveServer, RasterFactory
from tileserver.cli import build_parser
from tileserver.web.config import check_basemap_url


@pytest.mark.parametrize(
    "url",
    [
        "https://tile.example.org/{z}/{x}/{y}.png",
        "http://127.0.0.1:8080/basemap/{z}/{x}/{-y}.jpg?style=grey",
        "/api/v1/images/world/tiles/WebMercatorQuad/{z}/{x}/{y}.png",
    ],
)
def test_basemap_templates_that_the_viewer_can_use_are_kept(url: str) -> None:
    assert check_basemap_url(url) == url
    args = build_parser().parse_args(["serve", "--data", "d", "--basemap", url])
    assert args.basemap == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("ftp://tiles.example.org/{z}/{x}/{y}.png", "must start with http://, https:// or /"),
        ("https:///{z}/{x}/{y}.png", "no host"),
        ("https://tiles.example.org/{z}/{x}.png", "{y} missing"),
        ("tiles/{z}/{x}/{y}.png", "must start with"),
    ],
)
def test_bad_basemap_urls_are_refused_with_the_reason(
    url: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError) as err:
        check_basemap_url(url)
    assert reason in str(err.value)
    # The command line says the same and exits 2 (argparse's usage error), before serving.
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--data", "d", "--basemap", url])
    assert exited.value.code == 2
    assert reason in capsys.readouterr().err


def test_without_the_flag_there_is_no_basemap(
    make_raster: RasterFactory, serve_dirs: Callable[..., LiveServer], tmp_path: Path
) -> None:
    make_raster(np.zeros((1, 8, 8), dtype=np.uint8), name="a.tif")
    server = serve_dirs(tmp_path / "data")
    assert build_parser().parse_args(["serve", "--data", "d"]).basemap is None
    answer = server.get("/api/v1/config")
    assert answer.status_code == 200
    assert answer.json() == {"basemap": None}
    # Like every /api/v1 route but the OpenAPI document, it needs a token.
    anonymous = server.get("/api/v1/config", token=None)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]
    document = server.get("/api/v1/openapi.json").json()
    assert "/api/v1/config" in document["paths"]
