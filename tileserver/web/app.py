"""The tornado application factory."""

from __future__ import annotations

import tornado.web

from tileserver.web.handlers import (
    AssetsHandler,
    HealthHandler,
    ImageHandler,
    ImagesHandler,
    MercatorTileHandler,
    NotFoundHandler,
    OpenAPIHandler,
    ServerContext,
    SessionHandler,
    TileHandler,
    TileJSONHandler,
    ViewerHandler,
)

MAX_BODY_BYTES = 64 * 1024 * 1024
IMAGE = r"/api/v1/images/([^/]+)"
TILE = r"/(\d+)/(\d+)/(\d+)\.(png|jpg|jpeg|webp)"


def make_app(ctx: ServerContext, cookie_secret: str) -> tornado.web.Application:
    deps = {"ctx": ctx}
    routes = [
        tornado.web.url(r"/", ViewerHandler, deps, name="viewer"),
        tornado.web.url(r"/healthz", HealthHandler, deps, name="health"),
        tornado.web.url(r"/api/v1/openapi\.json", OpenAPIHandler, deps, name="openapi"),
        tornado.web.url(r"/api/v1/session", SessionHandler, deps, name="session"),
        tornado.web.url(r"/api/v1/images", ImagesHandler, deps, name="images"),
        tornado.web.url(IMAGE, ImageHandler, deps, name="image"),
        tornado.web.url(IMAGE + r"/tilejson\.json", TileJSONHandler, deps, name="tilejson"),
        tornado.web.url(
            IMAGE + r"/tiles/WebMercatorQuad" + TILE,
            MercatorTileHandler,
            deps,
            name="tile_mercator",
        ),
        tornado.web.url(IMAGE + r"/tiles" + TILE, TileHandler, deps, name="tile"),
        tornado.web.url(
            r"/assets/(.*)",
            AssetsHandler,
            {"path": str(ctx.viewer_dir / "assets")},
            name="assets",
        ),
    ]
    return tornado.web.Application(
        routes,
        cookie_secret=cookie_secret,
        default_handler_class=NotFoundHandler,
        default_handler_args=deps,
        compress_response=False,
        xheaders=False,
    )
