"""Thin tornado handlers: check auth, parse, call one library function, write the answer."""

from __future__ import annotations

import json
import logging
import re
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.httputil
import tornado.web
from tornado.ioloop import IOLoop

from annot.errors import BadRequest, PermissionDenied
from annot.storage import Store
from annot.taxonomy import DEFAULT_PROJECT, effective_role
from annot.users import User
from tileserver.catalog import Catalog
from tileserver.errors import BadParameter
from tileserver.readers.base import ImageSource
from tileserver.render import TileFormat
from tileserver.tiles import NATIVE, WEB_MERCATOR_QUAD, TileCache, TileRequest, render_tile
from tileserver.web.errors import status_for
from tileserver.web.openapi import openapi_document
from tileserver.web.params import parse_tile_coords, parse_tile_options

log = logging.getLogger(__name__)

SESSION_COOKIE = "tessera_session"
SIGNIN_FAILED_PAGE = (
    "<!doctype html><title>Tessera: sign-in failed</title>"
    "<p>This sign-in address has an unknown or expired token. Use the address printed by "
    "<code>tessera serve</code>, or ask an admin for a token "
    "(<code>tessera user add NAME</code>).</p>"
)
TOKEN_CACHE_SECONDS = 30.0
ACCESS_CACHE_SECONDS = 5.0  # how long a process trusts its "may see this image" answers
TILE_CACHE_CONTROL = "private, max-age=3600"


@dataclass
class ServerContext:
    """Everything handlers need, built once per process."""

    catalog: Catalog
    store: Store
    tile_cache: TileCache
    executor: Executor
    viewer_dir: Path
    basemap_url: str | None = None  # `tessera serve --basemap`: shown by /api/v1/config
    _tokens: dict[str, tuple[User | None, float]] = field(default_factory=dict)
    _access: dict[tuple[int, str], tuple[str | None, float]] = field(default_factory=dict)

    def forget_access(self, image_id: str | None = None) -> None:
        """Drop this process's cached access decisions for an image that changed project, or
        all of them after a membership change (other processes follow within
        ACCESS_CACHE_SECONDS)."""
        if image_id is None:
            self._access.clear()
        for key in [k for k in self._access if k[1] == image_id]:
            del self._access[key]

    def image_denial(self, user: User, image_id: str) -> str | None:
        """Why ``user`` may not see the image (None: they may): they must have a role in its
        project. Cached briefly like tokens, for the same reason (tiles)."""
        now = time.monotonic()
        hit = self._access.get((user.id, image_id))
        if hit is not None and hit[1] > now:
            return hit[0]
        project = self.store.image_project(image_id)
        membership = None if user.is_admin else self.store.membership(project, user.id)
        denial = None
        if effective_role(user, project, membership) is None:
            denial = f"image {image_id!r} is in project {project!r}, which you are not a member of"
        if len(self._access) > 100_000:
            self._access.clear()
        self._access[(user.id, image_id)] = (denial, now + ACCESS_CACHE_SECONDS)
        return denial

    def user_for_token(self, token: str) -> User | None:
        """Token lookups are cached briefly: every tile request is authenticated."""
        now = time.monotonic()
        hit = self._tokens.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        user = self.store.user_for_token(token)
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[token] = (user, now + TOKEN_CACHE_SECONDS)
        return user


# The HTTP server's limit on request bodies (annotation routes answer a JSON 413 beyond it).
MAX_BODY_BYTES = 64 * 1024 * 1024
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def bearer_token(headers: tornado.httputil.HTTPHeaders) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None without the header, "" when the
    header is there but is not a bearer token (refused, never read as no header)."""
    header = headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class BaseHandler(tornado.web.RequestHandler):
    """JSON errors everywhere; bearer-token or session-cookie auth on /api/v1."""

    ctx: ServerContext
    require_auth = True

    def initialize(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def compute_etag(self) -> str | None:
        return None  # only tiles carry ETags, computed from the request, not the body

    def get_current_user(self) -> User | None:
        token = bearer_token(self.request.headers)
        if token is not None:
            return self.ctx.user_for_token(token) if token else None
        cookie = self.get_signed_cookie(SESSION_COOKIE, max_age_days=30)
        if cookie is None:
            return None
        # A cookie is sent by the browser on its own: state-changing requests must also carry
        # a header that a cross-site form cannot set.
        if self.request.method not in ("GET", "HEAD") and not self.request.headers.get(
            "X-Tessera-Request"
        ):
            return None
        return self.ctx.user_for_token(cookie.decode())

    def prepare(self) -> None:
        if self.require_auth and self.current_user is None:
            raise tornado.web.HTTPError(401, reason="Unauthorized")
        # %00 and friends decode into names and ids that no store holds (PostgreSQL's text
        # cannot even carry NUL): refuse them before any lookup.
        if any(CONTROL_CHARS.search(arg) for arg in self.path_args if isinstance(arg, str)):
            raise BadRequest("the path must not contain control characters")

    def image_source(self, image_id: str) -> ImageSource:
        """The image, if the user may see it (404 unknown, 403 not in its project)."""
        source = self.ctx.catalog.get(image_id)
        denial = self.ctx.image_denial(self.current_user, image_id)
        if denial is not None:
            raise PermissionDenied(denial)
        return source

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(payload, allow_nan=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        code, message = "http_error", self._reason
        exc_info = kwargs.get("exc_info")
        if exc_info is not None:
            exc = exc_info[1]
            mapped = status_for(exc)
            if mapped is not None:
                status_code, code = mapped
                message = str(exc)
                self.set_status(status_code)
            elif isinstance(exc, tornado.web.HTTPError):
                message = exc.log_message or self._reason
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="tessera"')
            code, message = (
                "unauthorized",
                (
                    "a valid bearer token is required: send 'Authorization: Bearer TOKEN' "
                    "(tokens come from the first start or 'tessera user add')"
                ),
            )
        elif status_code == 404 and code == "http_error":
            code = "not_found"
        elif status_code == 405:
            code = "method_not_allowed"
        elif status_code == 413:
            code = "too_large"
        elif status_code >= 500:
            code, message = "internal", "internal error; the server log has the details"
        self.clear_header("ETag")
        self.clear_header("Cache-Control")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": code, "message": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if value is not None and status_for(value) is not None:
            log.info("%s %s: %s", self.request.method, self.request.uri, value)
            return
        super().log_exception(typ, value, tb)


class NotFoundHandler(BaseHandler):
    require_auth = False

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404, "no such route: see /api/v1/openapi.json")


class HealthHandler(BaseHandler):
    require_auth = False

    def get(self) -> None:
        self.write_json({"status": "ok"})


class OpenAPIHandler(BaseHandler):
    require_auth = False

    def get(self) -> None:
        self.write_json(openapi_document())


class ImagesHandler(BaseHandler):
    def get(self) -> None:
        user = self.current_user
        projects = self.ctx.store.image_projects()
        images = [
            {
                "id": s.info.id,
                "name": s.info.name,
                "kind": s.info.kind,
                "width": s.info.width,
                "height": s.info.height,
                "project": projects.get(s.info.id, DEFAULT_PROJECT),
                "modality": s.info.extra.get("modality"),
            }
            for s in self.ctx.catalog.images.values()
            if self.ctx.image_denial(user, s.info.id) is None
        ]
        self.write_json(
            {
                "images": images,
                "skipped": [{"path": f.path, "reason": f.reason} for f in self.ctx.catalog.skipped]
                if self.current_user.is_admin
                else [],
            }
        )


class ImageHandler(BaseHandler):
    def get(self, image_id: str) -> None:
        self.write_json(self.image_source(image_id).info.to_json())


class TileJSONHandler(BaseHandler):
    """TileJSON 3.0 for the native pyramid, or for WebMercatorQuad (?tms=WebMercatorQuad)."""

    def get(self, image_id: str) -> None:
        info = self.image_source(image_id).info
        tms = self.get_query_argument("tms", NATIVE)
        fmt = self.get_query_argument("format", "png")
        if fmt not in TileFormat.__members__:
            raise BadParameter("format must be png, jpg or webp")
        base = f"{self.request.protocol}://{self.request.host}/api/v1/images/{image_id}/tiles"
        doc: dict[str, Any] = {"tilejson": "3.0.0", "name": info.name, "scheme": "xyz"}
        if tms == NATIVE:
            doc.update(
                tiles=[f"{base}/{{z}}/{{x}}/{{y}}.{fmt}"],
                minzoom=0,
                maxzoom=info.pyramid.max_z,
                tile_size=info.tile_size,
                width=info.width,
                height=info.height,
            )
        elif tms == WEB_MERCATOR_QUAD:
            bounds = info.extra.get("bounds_wgs84")
            if bounds is None:
                raise BadParameter("this image is not georeferenced: use tms=native")
            maxzoom = info.extra["webmercator_maxzoom"]
            doc.update(
                tiles=[f"{base}/WebMercatorQuad/{{z}}/{{x}}/{{y}}.{fmt}"],
                bounds=bounds,
                minzoom=max(0, maxzoom - info.pyramid.max_z - 2),
                maxzoom=maxzoom,
                tile_size=info.tile_size,
                center=[(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, maxzoom - 2],
            )
        else:
            raise BadParameter("tms must be native or WebMercatorQuad")
        self.write_json(doc)


class TileHandler(BaseHandler):
    grid = NATIVE

    async def get(self, image_id: str, z: str, x: str, y: str, ext: str) -> None:
        source = self.image_source(image_id)
        fmt = TileFormat("jpg" if ext == "jpeg" else ext)
        options = parse_tile_options(self.request.query_arguments, source.supported_options)
        zi, xi, yi = parse_tile_coords(z, x, y)
        if self.grid == NATIVE:
            source.info.pyramid.check(zi, xi, yi)
        req = TileRequest(image_id, self.grid, zi, xi, yi, fmt, options)
        version = source.info.version
        self.set_header("ETag", req.etag(version))
        self.set_header("Cache-Control", TILE_CACHE_CONTROL)
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        key = req.key(version)
        body = self.ctx.tile_cache.get(key)
        if body is None:
            body = await IOLoop.current().run_in_executor(
                self.ctx.executor, render_tile, source, req
            )
            self.ctx.tile_cache.put(key, body)
        self.set_header("Content-Type", fmt.media_type)
        self.finish(body)


class MercatorTileHandler(TileHandler):
    grid = WEB_MERCATOR_QUAD


class ViewerHandler(BaseHandler):
    """The viewer app at /; ``/?token=T`` trades a token for a session cookie."""

    require_auth = False

    def get(self) -> None:
        token = self.get_query_argument("token", None)
        if token is not None:
            if self.ctx.user_for_token(token) is None:
                self.set_status(401)
                self.set_header("Content-Type", "text/html; charset=utf-8")
                self.finish(SIGNIN_FAILED_PAGE)
                return
            self.set_signed_cookie(
                SESSION_COOKIE, token, expires_days=30, httponly=True, samesite="Strict"
            )
            self.redirect("/")  # drops the token from the address bar and the history
            return
        index = self.ctx.viewer_dir / "index.html"
        if not index.is_file():
            raise tornado.web.HTTPError(
                404, "the viewer is not built: run 'cd viewer && npm ci && npm run build'"
            )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(index.read_bytes())


class SessionHandler(BaseHandler):
    """Who am I (GET) and sign out (DELETE) for the viewer."""

    def get(self) -> None:
        user = self.current_user
        self.write_json({"name": user.name, "role": user.role.value})

    def delete(self) -> None:
        self.clear_cookie(SESSION_COOKIE)
        self.set_status(204)
        self.finish()


class AssetsHandler(tornado.web.StaticFileHandler):
    """The viewer's built assets; odd paths answer 404, never 500.

    Asset names carry a content hash, so they are cached for good.
    """

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "public, max-age=31536000, immutable")

    async def get(self, path: str, include_body: bool = True) -> None:
        if "\x00" in path or "\\" in path or any(p in ("", ".", "..") for p in path.split("/")):
            raise tornado.web.HTTPError(404)
        await super().get(path, include_body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(
            json.dumps(
                {
                    "error": "not_found" if status_code == 404 else "http_error",
                    "message": self._reason,
                }
            )
        )
