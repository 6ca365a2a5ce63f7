"""Annotations of an image as Mapbox Vector Tiles on its native pixel pyramid.

``GET /api/v1/images/{id}/annotations/tiles/{z}/{x}/{y}.mvt[?slice=&plane=]``: the same
``z/x/y`` as the raster tiles (``annot.vector_tiles`` does the geometry). The ETag comes from the
image's change counter (the id of its latest annotation change, shared by every process and
server on one store), so an unchanged tile answers 304 without touching a geometry, and a
rendered tile is cached per process under that ETag.
"""

from __future__ import annotations

import hashlib
from typing import Any

import tornado.routing
import tornado.web

from annot.errors import BadRequest
from annot.frames import VolumeFrame
from annot.model import Plane
from annot.users import Role
from annot.vector_tiles import encode_tile, tile_address, tile_shapes
from tileserver.web.annotations import AnnotBaseHandler

MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"
# Revalidate every time: a 304 costs one indexed lookup of the change counter.
MVT_CACHE_CONTROL = "private, no-cache"
RENDERING = "mvt-1"  # bump when the tiles' content changes for the same annotations
QUERY_PARAMS = {"slice", "plane"}
IMAGE = r"/api/v1/images/([^/]+)"


def _coordinate(name: str, text: str) -> int:
    if not text.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, not {text[:20]!r}")
    return int(text)


class AnnotationTileHandler(AnnotBaseHandler):
    """GET one vector tile of an image's annotations (layer ``annotations``)."""

    async def get(self, image_id: str, z: str, x: str, y: str) -> None:
        self.require(self.project_of_image(image_id), Role.annotator)
        frame = self.frame(image_id)
        info = self.ctx.catalog.get(image_id).info
        unknown = sorted(k for k in self.request.query_arguments if k not in QUERY_PARAMS)
        unknown = [k for k in unknown if not k.startswith("_")]  # cache busters
        if unknown:
            raise BadRequest(f"unknown parameter(s) {', '.join(unknown)}; use slice and plane")
        slice_arg = self.get_query_argument("slice", None)
        plane_arg = self.get_query_argument("plane", None)
        slice_plane: tuple[int, Plane] | None = None
        if isinstance(frame, VolumeFrame):
            try:
                plane = Plane(plane_arg) if plane_arg else frame.default_plane
            except ValueError:
                raise BadRequest("plane must be axial, coronal or sagittal") from None
            if slice_arg is None:
                raise BadRequest("a volume's annotation tiles need slice (and plane)")
            slice_plane = (_coordinate("slice", slice_arg), plane)
            width, height, _ = frame.size(plane)
        else:
            if slice_arg is not None or plane_arg is not None:
                raise BadRequest("slice and plane apply to volumes only")
            width, height = info.width, info.height
        tile = tile_address(
            _coordinate("z", z),
            _coordinate("x", x),
            _coordinate("y", y),
            width,
            height,
            info.tile_size,
        )
        counter = await self.call(self.ctx.store.last_change, image_id)
        key = f"{RENDERING}|{image_id}|{info.version}|{counter}|{z}/{x}/{y}|{slice_plane}"
        etag = '"' + hashlib.sha1(key.encode()).hexdigest()[:24] + '"'
        self.set_header("ETag", etag)
        self.set_header("Cache-Control", MVT_CACHE_CONTROL)
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        cache_key = "mvt|" + key
        body = self.ctx.tile_cache.get(cache_key)
        if body is None:
            store = self.ctx.store

            def render() -> bytes:
                return encode_tile(tile, tile_shapes(store, image_id, frame, tile, slice_plane))

            body = await self.call(render)
            self.ctx.tile_cache.put(cache_key, body)
        self.set_header("Content-Type", MVT_MEDIA_TYPE)
        self.finish(body)


def vector_tile_routes(deps: dict[str, Any]) -> list[tornado.routing.URLSpec]:
    # Any path segment reaches the handler, so that a bad z/x/y answers a JSON 400.
    return [
        tornado.web.url(
            IMAGE + r"/annotations/tiles/([^/]+)/([^/]+)/([^/]+)\.mvt",
            AnnotationTileHandler,
            deps,
            name="annotation_tiles",
        )
    ]


def openapi_paths() -> dict[str, Any]:
    """OpenAPI path item of the annotation tiles (for ``tileserver.web.openapi``)."""

    def path(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer"},
            "description": description,
        }

    return {
        "/api/v1/images/{id}/annotations/tiles/{z}/{x}/{y}.mvt": {
            "get": {
                "summary": "Annotations as a Mapbox Vector Tile on the native pixel pyramid",
                "description": (
                    "Layer `annotations`, extent 4096, y down; the same z/x/y as the image "
                    "tiles. Shapes are clipped to the tile and simplified to half a screen "
                    "pixel; shapes under 4 screen pixels are points, and points sharing an 8 px "
                    "cell are one point with `count`. Properties: id, label, status, author. "
                    "ETag from the image's change counter (If-None-Match answers 304). "
                    "Errors: 400 bad z/x/y or parameter, 401, 403, 404 unknown image."
                ),
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    path("z", "zoom level: 0 is the whole image in one tile"),
                    path("x", "column of tiles, from the left"),
                    path("y", "row of tiles, from the top"),
                    {
                        "name": "slice",
                        "in": "query",
                        "schema": {"type": "integer"},
                        "description": "volumes: the slice of the plane (required)",
                    },
                    {
                        "name": "plane",
                        "in": "query",
                        "schema": {"enum": ["axial", "coronal", "sagittal"]},
                        "description": "volumes: default the acquisition plane",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the tile",
                        "content": {MVT_MEDIA_TYPE: {}},
                    },
                    "304": {"description": "unchanged (If-None-Match)"},
                },
            }
        }
    }
