"""The tornado application factory."""

from __future__ import annotations

from typing import Any

import tornado.routing
import tornado.web

from tileserver.web.agreement import AgreementHandler
from tileserver.web.annotations import (
    AnnotationHandler,
    BulkAnnotationsHandler,
    HistoryHandler,
    ImageAnnotationsHandler,
    ImageProjectHandler,
    LabelHandler,
    LabelsHandler,
    MemberHandler,
    MembersHandler,
    ProjectHandler,
    ProjectsHandler,
    SnapshotHandler,
    SnapshotsHandler,
    UndoHandler,
)
from tileserver.web.checks import ChecksHandler
from tileserver.web.config import config_routes
from tileserver.web.export import export_routes
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
from tileserver.web.live import live_routes
from tileserver.web.pixel import pixel_routes
from tileserver.web.review import review_routes
from tileserver.web.segment import segment_routes
from tileserver.web.vector_tiles import vector_tile_routes

MAX_BODY_BYTES = 64 * 1024 * 1024
IMAGE = r"/api/v1/images/([^/]+)"
TILE = r"/(\d+)/(\d+)/(\d+)\.(png|jpg|jpeg|webp)"
ANNOTATION = r"/api/v1/annotations/(\d+)"
PROJECT = r"/api/v1/projects/([^/]+)"


def annotation_routes(deps: dict[str, Any]) -> list[tornado.routing.URLSpec]:
    """Annotations, their history, projects, taxonomies, members and snapshots."""
    url = tornado.web.url
    return [
        url(IMAGE + r"/annotations", ImageAnnotationsHandler, deps, name="annotations"),
        url(IMAGE + r"/annotations/bulk", BulkAnnotationsHandler, deps, name="annotations_bulk"),
        url(ANNOTATION, AnnotationHandler, deps, name="annotation"),
        url(ANNOTATION + r"/history", HistoryHandler, deps, name="annotation_history"),
        url(ANNOTATION + r"/history/(\d+)/undo", UndoHandler, deps, name="annotation_undo"),
        url(r"/api/v1/projects", ProjectsHandler, deps, name="projects"),
        url(IMAGE + r"/project", ImageProjectHandler, deps, name="image_project"),
        url(PROJECT, ProjectHandler, deps, name="project"),
        url(PROJECT + r"/labels", LabelsHandler, deps, name="labels"),
        url(PROJECT + r"/labels/(.+)", LabelHandler, deps, name="label"),
        url(PROJECT + r"/members", MembersHandler, deps, name="members"),
        url(PROJECT + r"/members/([^/]+)", MemberHandler, deps, name="member"),
        url(PROJECT + r"/snapshots", SnapshotsHandler, deps, name="snapshots"),
        url(PROJECT + r"/snapshots/([^/]+)", SnapshotHandler, deps, name="snapshot"),
        url(PROJECT + r"/checks", ChecksHandler, deps, name="checks"),
        url(PROJECT + r"/agreement", AgreementHandler, deps, name="agreement"),
    ]


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
        *annotation_routes(deps),
        *pixel_routes(deps),
        *config_routes(deps),
        *export_routes(deps),
        *vector_tile_routes(deps),
        *live_routes(deps),
        *review_routes(deps),
        *segment_routes(deps),
    ]
    return tornado.web.Application(
        routes,
        cookie_secret=cookie_secret,
        default_handler_class=NotFoundHandler,
        default_handler_args=deps,
        compress_response=False,
        xheaders=False,
    )
