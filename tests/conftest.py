"""Shared fixtures: the real test data folder, synthetic rasters and a live server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import requests
import tornado.httpserver
import tornado.netutil
from rasterio.transform import from_origin

from tileserver.catalog import scan
from tileserver.server import build_context, prepare_admin
from tileserver.web.app import make_app

REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (its MANIFEST.md says where each file is from)."""
    path = REPO_ROOT.parent / "shared" / "data"
    assert (path / "MANIFEST.md").is_file(), (
        f"test data not found at {path}: the shared data folder must sit beside the repository"
    )
    return path


@pytest.fixture(scope="session")
def geo_dir(shared_data: Path) -> Path:
    return shared_data / "geo"


RasterFactory = Callable[..., Path]


@pytest.fixture
def make_raster(tmp_path: Path) -> RasterFactory:
    """Write a small GeoTIFF from an array (bands, rows, cols); returns its path."""

    def factory(
        data: np.ndarray,
        name: str = "synthetic.tif",
        crs: str | None = "EPSG:32618",
        nodata: float | None = None,
        tiled: bool = True,
        block: int = 256,
        overviews: list[int] | None = None,
        folder: Path | None = None,
        transform: Any = None,
        mask: np.ndarray | None = None,
    ) -> Path:
        folder = folder or tmp_path / "data"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        bands, rows, cols = data.shape
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": cols,
            "height": rows,
            "count": bands,
            "dtype": data.dtype.name,
            "nodata": nodata,
        }
        if crs is not None:
            profile["crs"] = crs
            profile["transform"] = transform or from_origin(500_000.0, 2_800_000.0, 10.0, 10.0)
        if tiled:
            profile.update(tiled=True, blockxsize=block, blockysize=block)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data)
            if mask is not None:
                ds.write_mask(mask.astype(np.uint8) * 255)
            if overviews:
                ds.build_overviews(overviews, rasterio.enums.Resampling.nearest)
        return path

    return factory


@dataclass
class LiveServer:
    url: str
    token: str
    catalog: Any

    def get(self, path: str, token: str | None = "default", **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token == "default":
            token = self.token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(self.url + path, headers=headers, timeout=30, **kwargs)

    def image_id(self, name: str) -> str:
        for image_id, source in self.catalog.images.items():
            if source.info.name == name or Path(source.info.name).name == name:
                return str(image_id)
        raise KeyError(name)


@pytest.fixture
def serve_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., LiveServer]]:
    """Start the real tornado app on a free port, in a background thread."""
    started: list[tuple[asyncio.AbstractEventLoop, Any, Any]] = []
    monkeypatch.setenv("TESSERA_ADMIN_TOKEN", ADMIN_TOKEN)

    def start(*dirs: Path, tile_cache_mb: int = 0) -> LiveServer:
        state = tmp_path / f"state{len(started)}"
        state.mkdir()
        catalog = scan(list(dirs))
        db_url = f"sqlite:///{state / 'tessera.db'}"
        prepare_admin(db_url, demo_token=False)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        port = sockets[0].getsockname()[1]
        ready = threading.Event()
        holder: dict[str, Any] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            ctx = build_context(catalog, db_url, tile_cache_mb)
            server = tornado.httpserver.HTTPServer(make_app(ctx, "test-secret"))
            server.add_sockets(sockets)
            holder["loop"], holder["server"], holder["ctx"] = loop, server, ctx
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        ready.wait(10)
        started.append((holder["loop"], holder["server"], thread))
        return LiveServer(f"http://127.0.0.1:{port}", ADMIN_TOKEN, catalog)

    yield start
    for loop, server, thread in started:
        loop.call_soon_threadsafe(server.stop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def decode_png(body: bytes) -> np.ndarray:
    """PNG bytes to (rows, cols, channels) uint8."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(body))
    arr = np.asarray(img)
    return arr if arr.ndim == 3 else arr[:, :, None]
