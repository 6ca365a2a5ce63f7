"""Starting the server: scan data, prepare auth, fork workers, bind sockets, run."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import secrets
import stat
import sys
import webbrowser
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.process
from threadpoolctl import threadpool_limits

from annot.storage import open_store
from annot.users import Role
from tileserver.catalog import Catalog, scan
from tileserver.tiles import TileCache
from tileserver.web.annotations import store_geometry_texts
from tileserver.web.app import make_app
from tileserver.web.handlers import MAX_BODY_BYTES, ServerContext

log = logging.getLogger("tessera")

VIEWER_DIR = Path(__file__).parent / "web" / "static" / "viewer"
ADMIN_TOKEN_ENV = "TESSERA_ADMIN_TOKEN"
COOKIE_SECRET_ENV = "TESSERA_COOKIE_SECRET"
STATE_DIR_ENV = "TESSERA_STATE_DIR"
THREADS_PER_WORKER = 4


@dataclass
class ServeConfig:
    data: list[Path]
    db: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    tile_cache_mb: int = 256
    basemap: str | None = None  # XYZ URL template for the viewer's WebMercator mode
    open_browser: bool = False
    demo_token: bool = False  # mint a fresh admin token for the demo user and print it


def state_dir(first_root: Path) -> Path:
    """Where the database, index and cookie secret live.

    ``$TESSERA_STATE_DIR`` if set, else ``.tessera/`` in the first data folder, or a per-user
    folder when the data folder is read-only (judged by its mode bits, so that root, who may
    write anywhere, still leaves a read-only data folder untouched).
    """
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        path = Path(env)
        path.mkdir(parents=True, exist_ok=True)
        return path
    preferred = first_root / ".tessera"
    if first_root.stat().st_mode & stat.S_IWUSR:
        try:
            preferred.mkdir(exist_ok=True)
            return preferred
        except OSError:
            pass
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    digest = hashlib.sha1(str(first_root.resolve()).encode()).hexdigest()[:12]
    fallback = base / "tessera" / f"{first_root.name}-{digest}"
    fallback.mkdir(parents=True, exist_ok=True)
    log.info("%s is read-only: keeping state in %s", first_root, fallback)
    return fallback


def cookie_secret(state: Path) -> str:
    env = os.environ.get(COOKIE_SECRET_ENV)
    if env:
        return env
    path = state / "cookie_secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def default_db_url(state: Path) -> str:
    return f"sqlite:///{state / 'tessera.db'}"


def prepare_admin(db_url: str, demo_token: bool) -> str | None:
    """Apply the admin token rules; returns a token to print in the sign-in address, if any."""
    store = open_store(db_url)
    try:
        env = os.environ.get(ADMIN_TOKEN_ENV)
        if env:
            store.add_user("admin", Role.admin, token=env)
            return env
        if demo_token:
            return store.add_user("demo", Role.admin)[1]
        if store.count_users(Role.admin) == 0:
            _, token = store.add_user("admin", Role.admin)
            print(
                f"Created the admin user. Its token is shown once; keep it:\n  {token}", flush=True
            )
            return token
        return None
    finally:
        store.close()


def build_context(
    catalog: Catalog, db_url: str, tile_cache_mb: int, basemap_url: str | None = None
) -> ServerContext:
    store = open_store(db_url)
    store.geometry_texts = store_geometry_texts(catalog)
    return ServerContext(
        catalog=catalog,
        store=store,
        tile_cache=TileCache(tile_cache_mb * 1024 * 1024),
        executor=ThreadPoolExecutor(THREADS_PER_WORKER, thread_name_prefix="tiles"),
        viewer_dir=VIEWER_DIR,
        basemap_url=basemap_url,
    )


def serve(cfg: ServeConfig) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One log line per tile costs a tenth of a tile's CPU: only failed requests are logged.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    if cfg.workers < 1:
        raise SystemExit("--workers must be at least 1")
    if cfg.workers > 1 and cfg.port == 0:
        raise SystemExit(
            "--workers > 1 needs a fixed --port (each worker binds it with SO_REUSEPORT)"
        )
    catalog = scan(cfg.data, progress=sys.stderr.isatty())
    for skipped in catalog.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    state = state_dir(catalog.roots[0])
    db_url = cfg.db or default_db_url(state)
    token = prepare_admin(db_url, cfg.demo_token)
    secret = cookie_secret(state)
    print(
        f"Serving {len(catalog.images)} image(s) from {', '.join(map(str, catalog.roots))}",
        flush=True,
    )

    if cfg.workers > 1:
        # Each worker binds its own SO_REUSEPORT socket after the fork so that the kernel spreads
        # connections across workers (one shared socket sends most to one process).
        tornado.process.fork_processes(cfg.workers, max_restarts=100)
    # Tile threads run small matrix products (WebMercator maps); BLAS's own threads would fight
    # them for the cores (measured: 26 ms instead of 2 ms of CPU per tile).
    threadpool_limits(1)
    sockets = tornado.netutil.bind_sockets(cfg.port, cfg.host, reuse_port=cfg.workers > 1)
    port = sockets[0].getsockname()[1]
    ctx = build_context(catalog, db_url, cfg.tile_cache_mb, cfg.basemap)
    app = make_app(ctx, secret)
    server = tornado.httpserver.HTTPServer(app, max_body_size=MAX_BODY_BYTES, xheaders=False)
    server.add_sockets(sockets)
    if tornado.process.task_id() in (None, 0):
        base = f"http://{cfg.host}:{port}/"
        print(f"Tessera listening on {base}", flush=True)
        if token:
            print(f"Sign in: {base}?token={token}", flush=True)
        else:
            print(
                f"Sign in: {base}?token=TOKEN (the admin token from the first start, or one "
                "from 'tessera user add NAME --role admin')",
                flush=True,
            )
        if cfg.open_browser and token and _has_display():
            webbrowser.open(f"{base}?token={token}")
    # Everything loaded so far lives for the whole process: keep it out of the collector's
    # full passes (measured: ~20 ms pauses under load without this).
    gc.freeze()
    try:
        tornado.ioloop.IOLoop.current().start()
    finally:
        catalog.close()


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
