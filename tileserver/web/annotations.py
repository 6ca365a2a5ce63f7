"""Handlers for annotations, their history, projects, taxonomies, members and snapshots.

Thin: check the role, parse, call the store (in the executor: it blocks), write JSON. All
geometry work lives in ``annot`` (``annot.features`` converts GeoJSON in any ``crs``).

Roles are per project (``annot.taxonomy.effective_role``): global admins are admins everywhere,
an explicit membership counts, and everyone is a member of ``default`` with their global role.
Annotators create, and edit or delete only their own annotations, never setting ``accepted`` or
``rejected``; reviewers edit anything and take snapshots; project admins edit the taxonomy, the
instructions, the lock and the members; only global admins create projects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np
import shapely
from tornado.http1connection import HTTP1Connection
from tornado.ioloop import IOLoop
from tornado.web import stream_request_body

from annot.errors import (
    BadRequest,
    InvalidGeometry,
    NotFound,
    PermissionDenied,
    TooLarge,
    ValidationError,
)
from annot.features import (
    CachedTexts,
    GeometryTexts,
    cached_column,
    content_from_feature,
    dumps,
    feature_dicts,
    features_json,
    geometry_texts,
    page_collection,
    properties,
    repair_json,
    text_key,
    view_features,
)
from annot.frames import (
    PIXEL,
    WORLD,
    GeoFrame,
    ImageFrame,
    VolumeFrame,
    frame_from_metadata,
    parse_crs,
)
from annot.geometry import map_coords
from annot.model import Annotation, Content, Kind, Plane, Status
from annot.storage import Filter, Region
from annot.taxonomy import Label, Project, at_least, effective_role
from annot.users import Role
from tileserver.web.errors import status_for
from tileserver.web.handlers import MAX_BODY_BYTES, BaseHandler

T = TypeVar("T")

MAX_FEATURE_BYTES = 16 * 1024 * 1024
CHUNKED_DRAIN_BYTES = 1024 * 1024 * 1024  # a chunked body past the limit is read and dropped
MAX_BULK_FEATURES = 200_000
DEFAULT_LIMIT = 1000
REVIEW_STATUSES = {Status.accepted, Status.rejected}
EDGE_POINTS = 32  # points per bbox edge when a bbox is reprojected


_FRAMES: dict[tuple[str, str], ImageFrame] = {}


def _holds_nul(value: Any) -> bool:
    """Whether a NUL character is in any string (key or value) of parsed JSON."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def row_id(text: str, what: str) -> int:
    """A route's numeric id; past the 64-bit ids both stores use, there is no such row."""
    value = int(text)
    if value > 2**63 - 1:
        raise NotFound(f"no {what} {text}")
    return value


def _frame(image_id: str, version: str, source: Any) -> ImageFrame:
    """The image's frame, cached per image id and file version."""
    key = (image_id, version)
    hit = _FRAMES.get(key)
    if hit is not None:
        return hit
    info = source.info
    frame = frame_from_metadata(info.width, info.height, info.extra)
    if len(_FRAMES) > 1024:
        _FRAMES.clear()
    _FRAMES[key] = frame
    return frame


def store_geometry_texts(catalog: Any) -> GeometryTexts:
    """What the store keeps with each annotation it writes: its geometry's text in ``world``
    and ``pixel`` for the image's current frame (2D images; see ``annot.features``)."""

    def texts(image_id: str, geometries: Any) -> CachedTexts | None:
        source = catalog.images.get(image_id)
        if source is None:
            return None
        frame = _frame(image_id, source.info.version, source)
        if text_key(frame) is None:
            return None
        return geometry_texts(frame, geometries)

    return texts


def parse_if_match(value: str | None) -> int | None:
    """``"3"``, ``W/"3"`` or ``3`` -> 3; None when absent; ``*`` means any version."""
    if value is None or value.strip() == "*":
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    if not v.isdigit():
        raise BadRequest(f'If-Match must be the annotation\'s ETag ("3") or version, not {value!r}')
    return int(v)


def parse_feature(data: Any, frame: ImageFrame, crs: str) -> Content:
    """Content from a Feature; an invalid shape's error carries its repair in ``crs``."""
    try:
        return content_from_feature(data, frame, crs)
    except InvalidGeometry as exc:
        plane_slice = None
        props = data.get("properties") if isinstance(data, dict) else None
        if isinstance(frame, VolumeFrame) and isinstance(props, dict):
            try:
                plane = Plane(props.get("plane") or frame.default_plane)
                plane_slice = (plane, int(props["slice"]))
            except (KeyError, ValueError, TypeError):
                plane_slice = None
        exc.details["repair"] = repair_json(exc, frame, crs, plane_slice)
        raise


@stream_request_body
class AnnotBaseHandler(BaseHandler):
    """Role checks, JSON bodies, the image frame, and error bodies with details.

    Bodies are streamed in so that ``prepare`` sees the headers first: a Content-Length over
    the server's limit is answered with a JSON 413 before any of the body is read (tornado
    itself would answer a bare 400 and drop the connection).
    """

    _chunks: list[bytes]
    _received: int

    def prepare(self) -> None:
        self._chunks, self._received = [], 0
        try:
            length = int(self.request.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        chunked = "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()
        connection = self.request.connection
        if chunked and isinstance(connection, HTTP1Connection):
            # A chunked body has no length up front: read (and drop) up to the drain limit
            # so that the handler can answer a JSON 413 instead of tornado's bare 400.
            connection.set_max_body_size(CHUNKED_DRAIN_BYTES)
        if length > MAX_BODY_BYTES:
            # Let the connection accept the headers' length so that it does not refuse the
            # request itself; finishing the response before reading the body closes it.
            connection = self.request.connection
            if isinstance(connection, HTTP1Connection):
                connection.set_max_body_size(length)
        super().prepare()  # authentication first: 401 before 413
        if length > MAX_BODY_BYTES:
            self.set_header("Connection", "close")
            raise TooLarge(f"the body is {length} bytes; at most {MAX_BODY_BYTES} are accepted")

    def data_received(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > MAX_BODY_BYTES:
            self._chunks.clear()  # keep counting, stop keeping: body_json answers 413
        else:
            self._chunks.append(chunk)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await IOLoop.current().run_in_executor(
            self.ctx.executor, partial(fn, *args, **kwargs)
        )

    def body_json(self, limit: int = MAX_FEATURE_BYTES) -> Any:
        return self._parse_json(self.body_bytes(limit))

    def body_bytes(self, limit: int = MAX_FEATURE_BYTES) -> bytes:
        limit = min(limit, MAX_BODY_BYTES)  # chunks past the server's limit were dropped
        if self._received > limit:
            raise TooLarge(
                f"the body is {self._received} bytes or more; at most {limit} are accepted here"
            )
        return b"".join(self._chunks)

    @staticmethod
    def _parse_json(body: bytes) -> Any:
        if not body:
            raise BadRequest("a JSON body is required")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadRequest("the body's JSON nests too deeply") from None
        if b"\\u0000" in body and _holds_nul(data):
            # PostgreSQL's text cannot hold NUL: refuse it on every store alike
            raise BadRequest("text in the body must not contain NUL characters (\\u0000)")
        return data

    def crs(self) -> str:
        return parse_crs(self.get_query_argument("crs", None))

    def frame(self, image_id: str) -> ImageFrame:
        source = self.ctx.catalog.get(image_id)
        return _frame(image_id, source.info.version, source)

    def frame_and_crs(self, image_id: str) -> tuple[ImageFrame, str]:
        """The image's frame and the request's ``crs``, checked against each other."""
        frame, crs = self.frame(image_id), self.crs()
        if crs not in (WORLD, PIXEL) and not isinstance(frame, GeoFrame):
            raise BadRequest(f"crs={crs} needs a georeferenced image: use world or pixel")
        return frame, crs

    def project_of_image(self, image_id: str) -> str:
        self.ctx.catalog.get(image_id)
        return self.ctx.store.image_project(image_id)

    def role_in(self, project: str) -> Role | None:
        user = self.current_user
        membership = None if user.is_admin else self.ctx.store.membership(project, user.id)
        return effective_role(user, project, membership)

    def require(self, project: str, needed: Role) -> Role:
        role = self.role_in(project)
        if role is None:
            raise PermissionDenied(f"you are not a member of project {project!r}")
        if not at_least(role, needed):
            raise PermissionDenied(
                f"this needs the {needed.value} role in project {project!r}; you are {role.value}"
            )
        return role

    def check_edit(self, role: Role, current: Annotation | None, content: Content | None) -> None:
        """Annotators touch only their own work and never review it."""
        if at_least(role, Role.reviewer):
            return
        if current is not None and current.author != self.current_user.name:
            raise PermissionDenied("annotators may change only their own annotations")
        if content is not None and content.status in REVIEW_STATUSES:
            raise PermissionDenied("only reviewers may set the status accepted or rejected")

    def write_feature(self, a: Annotation, frame: ImageFrame, crs: str, status: int = 200) -> None:
        self.set_header("ETag", f'"{a.version}"')
        self.set_status(status)
        self.set_header("Content-Type", "application/geo+json; charset=utf-8")
        self.finish(dumps(feature_dicts([a], frame, crs)[0]))

    def write_collection(self, body: bytes) -> None:
        self.set_header("Content-Type", "application/geo+json; charset=utf-8")
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, ValidationError) and exc.details:
            mapped = status_for(exc)
            if mapped is not None:
                status, code = mapped
                self.set_status(status)
                self.clear_header("ETag")
                self.set_header("Content-Type", "application/json; charset=utf-8")
                payload = {**exc.details, "error": code, "message": str(exc)}
                self.finish(json.dumps(payload, default=str))
                return
        super().write_error(status_code, **kwargs)


def _int_arg(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None


def _numbers(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise BadRequest(f"{name} must be comma-separated numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise BadRequest(f"{name} must be finite numbers")
    return values


def collection(features: list[dict[str, Any]], found: list[Annotation], limit: int) -> bytes:
    """A FeatureCollection page; ``next_cursor`` is set when there may be more."""
    nxt = str(found[-1].id) if len(found) == limit else None
    return dumps({"type": "FeatureCollection", "features": features, "next_cursor": nxt})


def query_collection(
    store: Any,
    image_id: str,
    region: Region | None,
    after: int,
    limit: int,
    frame: ImageFrame,
    crs: str,
    where: Filter | None = None,
) -> bytes:
    """One page of a query as FeatureCollection bytes (runs in the executor)."""
    if region is None:
        found = store.query(image_id, None, after, limit, where)
        return collection(feature_dicts(found, frame, crs), found, limit)
    cached = cached_column(text_key(frame), crs)
    page = store.query_page(image_id, region, after, limit, cached, where)
    nxt = str(page.ids[-1]) if len(page.ids) == limit else None
    return page_collection(page, frame, crs, nxt)


def enum_values(values: list[str], enum: type[Status] | type[Kind], name: str) -> tuple[Any, ...]:
    """Repeated and/or comma-separated values of an enumerated query parameter (each once)."""
    allowed = [e.value for e in enum]
    out = []
    for value in dict.fromkeys(v.strip() for text in values for v in text.split(",") if v.strip()):
        if value not in allowed:
            raise BadRequest(f"{name} must be one of {', '.join(allowed)}, not {value[:40]!r}")
        out.append(enum(value))
    return tuple(out)


def listing_filter(arguments: Callable[[str], list[str]]) -> Filter:
    """The listing's ``label``, ``status``, ``author`` and ``kind`` parameters (each may repeat;
    ``status`` and ``kind`` also take commas; a label keeps its sub-labels)."""
    return Filter(
        labels=tuple(v for v in arguments("label") if v),
        statuses=enum_values(arguments("status"), Status, "status"),
        authors=tuple(v for v in arguments("author") if v),
        kinds=enum_values(arguments("kind"), Kind, "kind"),
    )


def region_2d(frame: ImageFrame, crs: str, bbox: list[float]) -> Region:
    """A 2D bbox in ``crs`` as a region of the storage frame (reprojected edges densified)."""
    if len(bbox) != 4:
        raise BadRequest("bbox has 4 numbers: minx,miny,maxx,maxy")
    x0, y0, x1, y1 = bbox
    if x1 < x0 or y1 < y0:
        raise BadRequest("bbox must be minx,miny,maxx,maxy with min <= max")
    box = shapely.box(x0, y0, x1, y1)
    if crs == PIXEL:
        shape = map_coords(box, frame.pixel_to_world, 2)
    else:
        dense = shapely.segmentize(box, max(x1 - x0, y1 - y0, 1e-12) / EDGE_POINTS)
        shape = map_coords(dense, lambda c: frame.crs_to_world(crs, c), 2)
    minx, miny, maxx, maxy = shape.bounds
    return Region((minx, miny, maxx, maxy, 0.0, 0.0), shape)


class ImageAnnotationsHandler(AnnotBaseHandler):
    """GET (query) and POST (create one) the annotations of an image."""

    async def get(self, image_id: str) -> None:
        project = self.project_of_image(image_id)
        self.require(project, Role.annotator)
        frame, crs = self.frame_and_crs(image_id)
        limit = _int_arg(self.get_query_argument("limit", None), "limit", DEFAULT_LIMIT)
        after = _int_arg(self.get_query_argument("cursor", None), "cursor", 0)
        where = listing_filter(self.get_query_arguments)
        bbox_arg = self.get_query_argument("bbox", None)
        slice_arg = self.get_query_argument("slice", None)
        plane_arg = self.get_query_argument("plane", None)
        is_volume = isinstance(frame, VolumeFrame)
        if (slice_arg is not None or plane_arg is not None) and not is_volume:
            raise BadRequest("slice and plane apply to volumes only")
        if is_volume:
            assert isinstance(frame, VolumeFrame)
            if slice_arg is not None:
                await self._slice_view(
                    image_id, frame, crs, slice_arg, plane_arg, after, limit, where
                )
                return
            if crs == PIXEL and bbox_arg is not None:
                raise BadRequest("a pixel bbox on a volume needs slice (and plane)")
        region: Region | None = None
        if bbox_arg is not None:
            bbox = _numbers(bbox_arg, "bbox")
            if is_volume:
                if len(bbox) != 6:
                    raise BadRequest("a volume's bbox in world coordinates has 6 numbers")
                x0, y0, z0, x1, y1, z1 = bbox
                region = Region((x0, y0, x1, y1, z0, z1))
            else:
                region = region_2d(frame, crs, bbox)
        body = await self.call(
            query_collection, self.ctx.store, image_id, region, after, limit, frame, crs, where
        )
        self.write_collection(body)

    async def _slice_view(
        self,
        image_id: str,
        frame: VolumeFrame,
        crs: str,
        slice_arg: str,
        plane_arg: str | None,
        after: int,
        limit: int,
        where: Filter,
    ) -> None:
        try:
            plane = Plane(plane_arg) if plane_arg else frame.default_plane
        except ValueError:
            raise BadRequest("plane must be axial, coronal or sagittal") from None
        k = _int_arg(slice_arg, "slice", 0)
        w, h, n = frame.size(plane)
        if not 0 <= k < n:
            raise BadRequest(f"slice must be 0..{n - 1} in the {plane.value} plane")
        bbox_arg = self.get_query_argument("bbox", None)
        c0, r0, c1, r1 = 0.0, 0.0, float(w), float(h)
        if bbox_arg is not None:
            if crs != PIXEL:
                raise BadRequest("with slice, give bbox in pixel coordinates (crs=pixel)")
            c0, r0, c1, r1 = region_bbox4(_numbers(bbox_arg, "bbox"))
        corners = np.array([[c0, r0, k], [c1, r0, k], [c0, r1, k], [c1, r1, k]], dtype=np.float64)
        world = frame.pixel_to_world(corners, plane)
        lo, hi = world.min(axis=0) - 1e-3, world.max(axis=0) + 1e-3
        region = Region((lo[0], lo[1], hi[0], hi[1], lo[2], hi[2]))

        def run() -> bytes:
            found = self.ctx.store.query(image_id, region, after, limit, where)
            features = view_features(found, frame, crs, k, plane)
            return collection(features, found, limit)

        self.write_collection(await self.call(run))

    async def post(self, image_id: str) -> None:
        project = self.project_of_image(image_id)
        role = self.require(project, Role.annotator)
        frame, crs = self.frame_and_crs(image_id)
        content = parse_feature(self.body_json(), frame, crs)
        self.check_edit(role, None, content)
        (stored,) = await self.call(
            self.ctx.store.add, image_id, project, [content], self.current_user.name
        )
        self.set_header("Location", f"/api/v1/annotations/{stored.id}")
        self.write_feature(stored, frame, crs, 201)


def region_bbox4(b: list[float]) -> tuple[float, float, float, float]:
    if len(b) != 4:
        raise BadRequest("bbox has 4 numbers: minx,miny,maxx,maxy")
    return b[0], b[1], b[2], b[3]


class BulkAnnotationsHandler(AnnotBaseHandler):
    """POST a FeatureCollection: every feature is stored, or none (the first error answers)."""

    async def post(self, image_id: str) -> None:
        project = self.project_of_image(image_id)
        role = self.require(project, Role.annotator)
        frame, crs = self.frame_and_crs(image_id)
        data = self.body_json(limit=MAX_BODY_BYTES)
        if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
            raise BadRequest("the body must be a GeoJSON FeatureCollection")
        features = data.get("features")
        if not isinstance(features, list) or not features:
            raise BadRequest("features must be a non-empty list")
        if len(features) > MAX_BULK_FEATURES:
            raise TooLarge(f"at most {MAX_BULK_FEATURES} features per request")

        def parse_all() -> list[Content]:
            out = []
            for n, f in enumerate(features):
                try:
                    out.append(parse_feature(f, frame, crs))
                except ValidationError as exc:
                    exc.details["index"] = n
                    raise
                except BadRequest as exc:
                    raise BadRequest(f"feature {n}: {exc}") from None
            return out

        contents = await self.call(parse_all)
        for c in contents:
            self.check_edit(role, None, c)
        stored = await self.call(
            self.ctx.store.add, image_id, project, contents, self.current_user.name
        )
        self.set_status(201)
        self.write_json({"created": len(stored), "ids": [a.id for a in stored]}, status=201)


class AnnotationHandler(AnnotBaseHandler):
    """GET, PUT (replace, If-Match) and DELETE (If-Match) one annotation."""

    async def _load(self, aid: str) -> tuple[Annotation, Role, ImageFrame, str]:
        a = await self.call(self.ctx.store.get, row_id(aid, "annotation"))
        role = self.require(a.project, Role.annotator)
        frame, crs = self.frame_and_crs(a.image_id)
        return a, role, frame, crs

    async def get(self, aid: str) -> None:
        a, _, frame, crs = await self._load(aid)
        etag = f'"{a.version}"'
        inm = self.request.headers.get("If-None-Match")
        if inm is not None and etag in [v.strip().removeprefix("W/") for v in inm.split(",")]:
            self.set_header("ETag", etag)
            self.set_status(304)
            self.finish()
            return
        self.write_feature(a, frame, crs)

    async def put(self, aid: str) -> None:
        current, role, frame, crs = await self._load(aid)
        expected = parse_if_match(self.request.headers.get("If-Match"))
        content = parse_feature(self.body_json(), frame, crs)
        self.check_edit(role, current, content)
        updated = await self.call(
            self.ctx.store.update, current.id, content, expected, self.current_user.name
        )
        self.write_feature(updated, frame, crs)

    async def delete(self, aid: str) -> None:
        current, role, _, _ = await self._load(aid)
        self.check_edit(role, current, None)
        expected = parse_if_match(self.request.headers.get("If-Match"))
        await self.call(self.ctx.store.delete, current.id, expected, self.current_user.name)
        self.set_status(204)
        self.finish()


def change_json(change: Any, frame: ImageFrame | None, crs: str) -> dict[str, Any]:
    before = None
    if change.before is not None and frame is not None:
        before = json.loads(features_json([change.before], frame, crs)[0])
    return {
        "id": change.id,
        "annotation_id": change.annotation_id,
        "action": change.action.value,
        "user": change.user,
        "at": change.at,
        "version": change.version,
        "undoes": change.undoes,
        "before": before,
    }


class HistoryHandler(AnnotBaseHandler):
    """GET every change of an annotation (also after it was deleted), oldest first."""

    async def get(self, aid: str) -> None:
        changes = await self.call(self.ctx.store.history, row_id(aid, "annotation"))
        self.require(changes[0].project, Role.annotator)
        try:
            frame: ImageFrame | None = self.frame(changes[0].image_id)
        except Exception:
            frame = None
        crs = self.crs()
        self.write_json({"changes": [change_json(c, frame, crs) for c in changes]})


class UndoHandler(AnnotBaseHandler):
    """POST: undo one change (the latest of its annotation); answers the restored Feature, or
    204 when undoing a creation deleted the annotation."""

    async def post(self, aid: str, change_id: str) -> None:
        change = await self.call(self.ctx.store.get_change, row_id(change_id, "change"))
        if change.annotation_id != row_id(aid, "annotation"):
            raise NotFound(f"change {change_id} is not a change of annotation {aid}")
        role = self.require(change.project, Role.annotator)
        if not at_least(role, Role.reviewer) and change.user != self.current_user.name:
            raise PermissionDenied("annotators may undo only their own changes")
        result = await self.call(self.ctx.store.undo, change.id, self.current_user.name)
        if result is None:
            self.set_status(204)
            self.finish()
            return
        self.write_feature(result, self.frame(result.image_id), self.crs())


# --- projects ----------------------------------------------------------------------------


class ProjectsHandler(AnnotBaseHandler):
    async def get(self) -> None:
        projects = await self.call(self.ctx.store.list_projects)
        visible = []
        for p in projects:
            role = self.role_in(p.name)
            if role is not None:
                visible.append({**p.to_json(), "role": role.value})
        self.write_json({"projects": visible})

    async def post(self) -> None:
        if not self.current_user.is_admin:
            raise PermissionDenied("only admins create projects")
        data = self.body_json(1 << 20)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise BadRequest("the body is {'name': ..., 'instructions': markdown, 'labels': [...]}")
        project = await self.call(
            self.ctx.store.create_project, data["name"], str(data.get("instructions", ""))
        )
        for raw in data.get("labels") or []:
            project = await self.call(self.ctx.store.put_label, project.name, Label.from_json(raw))
        if data.get("locked"):
            project = await self.call(self.ctx.store.update_project, project.name, None, True)
        self.write_json(project.to_json(), status=201)


class ProjectHandler(AnnotBaseHandler):
    async def get(self, name: str) -> None:
        project = await self.call(self.ctx.store.get_project, name)
        role = self.require(name, Role.annotator)
        self.write_json({**project.to_json(), "role": role.value})

    async def patch(self, name: str) -> None:
        await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.admin)
        data = self.body_json(1 << 20)
        if not isinstance(data, dict):
            raise BadRequest("the body is {'instructions': markdown, 'locked': bool}")
        locked = data.get("locked")
        if locked is not None and not isinstance(locked, bool):
            raise BadRequest("locked must be true or false")
        instructions = data.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise BadRequest("instructions must be a (markdown) string")
        project: Project = await self.call(
            self.ctx.store.update_project, name, instructions, locked
        )
        self.write_json(project.to_json())


class ImageProjectHandler(AnnotBaseHandler):
    """``PUT /api/v1/images/{id}/project`` ``{"project": NAME}``: move an image (and its
    annotations) to another project; an admin of both projects may."""

    async def put(self, image_id: str) -> None:
        source = self.project_of_image(image_id)
        data = self.body_json(1 << 16)
        target = data.get("project") if isinstance(data, dict) else None
        if not isinstance(target, str) or not target:
            raise BadRequest('the body is {"project": NAME}')
        await self.call(self.ctx.store.get_project, target)  # 404 for an unknown project
        self.require(source, Role.admin)
        self.require(target, Role.admin)
        moved = await self.call(self.ctx.store.move_image, image_id, target)
        self.ctx.forget_access(image_id)
        self.write_json({"image": image_id, "project": target, "moved_annotations": moved})


class LabelsHandler(AnnotBaseHandler):
    async def get(self, name: str) -> None:
        project = await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.annotator)
        self.write_json({"locked": project.locked, "labels": project.to_json()["labels"]})

    async def post(self, name: str) -> None:
        await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.admin)
        label = Label.from_json(self.body_json(1 << 20))
        project = await self.call(self.ctx.store.put_label, name, label)
        self.write_json(project.labels[label.name].to_json(), status=201)


class LabelHandler(AnnotBaseHandler):
    async def put(self, name: str, label_name: str) -> None:
        await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.admin)
        data = self.body_json(1 << 20)
        if not isinstance(data, dict):
            raise BadRequest("a label is a JSON object")
        label = Label.from_json({**data, "name": label_name})
        project = await self.call(self.ctx.store.put_label, name, label)
        self.write_json(project.labels[label.name].to_json())

    async def delete(self, name: str, label_name: str) -> None:
        await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.admin)
        await self.call(self.ctx.store.delete_label, name, label_name)
        self.set_status(204)
        self.finish()


class MembersHandler(AnnotBaseHandler):
    async def get(self, name: str) -> None:
        await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.reviewer)
        members = await self.call(self.ctx.store.members, name)
        self.write_json({"members": [{"user": u.name, "role": r.value} for u, r in members]})


class MemberHandler(AnnotBaseHandler):
    async def put(self, name: str, user: str) -> None:
        await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.admin)
        data = self.body_json(1 << 16)
        try:
            role = Role(data["role"])
        except (KeyError, TypeError, ValueError):
            raise BadRequest("the body is {'role': 'annotator' | 'reviewer' | 'admin'}") from None
        await self.call(self.ctx.store.set_member, name, user, role)
        self.ctx.forget_access()
        self.write_json({"user": user, "role": role.value})

    async def delete(self, name: str, user: str) -> None:
        await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.admin)
        await self.call(self.ctx.store.set_member, name, user, None)
        self.ctx.forget_access()
        self.set_status(204)
        self.finish()


def storage_features_json(items: list[Annotation]) -> list[str]:
    out = []
    for a in items:
        geom = a.content.geometry
        g = shapely.to_geojson(geom) if geom is not None else "null"
        props = dumps({**properties(a), "crs": "storage"}).decode()
        out.append(f'{{"type":"Feature","id":{a.id},"geometry":{g},"properties":{props}}}')
    return out


def snapshot_json(s: Any) -> dict[str, Any]:
    return {
        "project": s.project,
        "name": s.name,
        "created_by": s.created_by,
        "created_at": s.created_at,
        "count": s.count,
        "description": s.description,
    }


class SnapshotsHandler(AnnotBaseHandler):
    async def get(self, name: str) -> None:
        await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.annotator)
        snaps = await self.call(self.ctx.store.list_snapshots, name)
        self.write_json({"snapshots": [snapshot_json(s) for s in snaps]})

    async def post(self, name: str) -> None:
        await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.reviewer)
        data = self.body_json(1 << 16)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise BadRequest("the body is {'name': ..., 'description': ...}")
        snap = await self.call(
            self.ctx.store.create_snapshot,
            name,
            data["name"],
            self.current_user.name,
            str(data.get("description", "")),
        )
        self.write_json(snapshot_json(snap), status=201)


class SnapshotHandler(AnnotBaseHandler):
    """GET a snapshot's annotations as a FeatureCollection (``crs``; paginated)."""

    async def get(self, name: str, snapshot: str) -> None:
        await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.annotator)
        crs = self.crs()
        limit = _int_arg(self.get_query_argument("limit", None), "limit", DEFAULT_LIMIT)
        after = _int_arg(self.get_query_argument("cursor", None), "cursor", 0)
        found = await self.call(self.ctx.store.snapshot_annotations, name, snapshot, after, limit)
        by_image: dict[str, list[Annotation]] = {}
        for a in found:
            by_image.setdefault(a.image_id, []).append(a)
        text_of: dict[int, str] = {}
        for image_id, items in by_image.items():
            if image_id in self.ctx.catalog.images:
                texts = features_json(items, self.frame(image_id), crs)
            else:  # the image is gone: its annotations in their storage frame
                texts = storage_features_json(items)
            text_of.update(zip((a.id for a in items), texts, strict=True))
        texts = [text_of[a.id] for a in found]
        nxt = str(found[-1].id) if len(found) == limit else None
        tail = f',"snapshot":{json.dumps(snapshot)},"next_cursor":{json.dumps(nxt)}}}'
        self.write_collection(
            ('{"type":"FeatureCollection","features":[' + ",".join(texts) + "]" + tail).encode()
        )


__all__ = [
    "WORLD",
    "AnnotationHandler",
    "BulkAnnotationsHandler",
    "HistoryHandler",
    "ImageAnnotationsHandler",
    "LabelHandler",
    "LabelsHandler",
    "MemberHandler",
    "MembersHandler",
    "ProjectHandler",
    "ProjectsHandler",
    "SnapshotHandler",
    "SnapshotsHandler",
    "UndoHandler",
]


def openapi_paths() -> dict[str, Any]:
    """OpenAPI path items of these routes (for ``tileserver.web.openapi``)."""

    def op(summary: str, ok: str, *params: str, body: str | None = None) -> dict[str, Any]:
        names = {
            "id": ("path", {"type": "string"}, "image id"),
            "aid": ("path", {"type": "integer"}, "annotation id"),
            "cid": ("path", {"type": "integer"}, "change id"),
            "project": ("path", {"type": "string"}, "project name"),
            "label": ("path", {"type": "string"}, "label path, e.g. vehicle/car/sedan"),
            "user": ("path", {"type": "string"}, "user name"),
            "snapshot": ("path", {"type": "string"}, "snapshot name"),
            "crs": ("query", {"type": "string", "default": "world"}, "world | pixel | EPSG:n"),
            "bbox": ("query", {"type": "string"}, "minx,miny,maxx,maxy (volumes in world: 6)"),
            "slice": ("query", {"type": "integer"}, "volumes: a slice of plane"),
            "plane": ("query", {"enum": ["axial", "coronal", "sagittal"]}, "volumes"),
            "limit": ("query", {"type": "integer", "default": DEFAULT_LIMIT}, "page size"),
            "cursor": ("query", {"type": "string"}, "next_cursor of the previous page"),
            "label=": ("query", {"type": "string"}, "keep this label and its sub-labels; repeats"),
            "status": ("query", {"type": "string"}, "keep these statuses (commas or repeats)"),
            "author": ("query", {"type": "string"}, "keep this author's; repeats"),
            "kind": ("query", {"type": "string"}, "keep these kinds (commas or repeats)"),
            "If-Match": ("header", {"type": "string"}, 'the ETag ("3") or the version'),
        }
        parameters = [
            {
                "name": p.rstrip("="),  # "label=": the query parameter, not the path's
                "in": names[p][0],
                "required": names[p][0] == "path",
                "schema": names[p][1],
                "description": names[p][2],
            }
            for p in params
        ]
        out: dict[str, Any] = {
            "summary": summary,
            "parameters": parameters,
            "responses": {ok: {"description": "success"}},
        }
        errors = "400 bad request, 401, 403 role, 404, 409 conflict, 412 If-Match, 413, 422"
        out["description"] = f"Errors: {errors} (JSON error bodies)."
        if body:
            out["requestBody"] = {"description": body, "required": True}
        return out

    feature = "a GeoJSON Feature; properties.label required (slice/plane for volumes in pixels)"
    return {
        "/api/v1/images/{id}/annotations": {
            "get": op(
                "Annotations of an image",
                "200",
                "id",
                "crs",
                "bbox",
                "slice",
                "plane",
                "limit",
                "cursor",
                "label=",
                "status",
                "author",
                "kind",
            ),
            "post": op("Create an annotation", "201", "id", "crs", body=feature),
        },
        "/api/v1/images/{id}/annotations/bulk": {
            "post": op(
                "Create many (all or none)", "201", "id", "crs", body="a GeoJSON FeatureCollection"
            ),
        },
        "/api/v1/annotations/{aid}": {
            "get": op("One annotation (ETag = version)", "200", "aid", "crs"),
            "put": op("Replace it", "200", "aid", "crs", "If-Match", body=feature),
            "delete": op("Delete it", "204", "aid", "If-Match"),
        },
        "/api/v1/annotations/{aid}/history": {
            "get": op("Every change: who, when, what before", "200", "aid", "crs"),
        },
        "/api/v1/annotations/{aid}/history/{cid}/undo": {
            "post": op("Undo the latest change", "200", "aid", "cid", "crs"),
        },
        "/api/v1/projects": {
            "get": op("Projects you belong to", "200"),
            "post": op(
                "Create a project (admins)", "201", body="{name, instructions, labels, locked}"
            ),
        },
        "/api/v1/images/{id}/project": {
            "put": op(
                "Move the image and its annotations to another project (admins of both); "
                "409 when the target's locked taxonomy lacks a label in use",
                "200",
                "id",
                body='{"project": NAME}',
            ),
        },
        "/api/v1/projects/{project}": {
            "get": op("A project and its taxonomy", "200", "project"),
            "patch": op(
                "Instructions and lock (project admins)",
                "200",
                "project",
                body="{instructions, locked}",
            ),
        },
        "/api/v1/projects/{project}/labels": {
            "get": op("The taxonomy", "200", "project"),
            "post": op(
                "Add or change a label",
                "201",
                "project",
                body="{name, color, code: {scheme, value, meaning}, kinds}",
            ),
        },
        "/api/v1/projects/{project}/labels/{label}": {
            "put": op(
                "Add or change a label", "200", "project", "label", body="{color, code, kinds}"
            ),
            "delete": op("Delete an unused label and those below it", "204", "project", "label"),
        },
        "/api/v1/projects/{project}/members": {"get": op("Members", "200", "project")},
        "/api/v1/projects/{project}/members/{user}": {
            "put": op("Set a member's role", "200", "project", "user", body="{role}"),
            "delete": op("Remove a member", "204", "project", "user"),
        },
        "/api/v1/projects/{project}/snapshots": {
            "get": op("Snapshots", "200", "project"),
            "post": op("Take an immutable snapshot", "201", "project", body="{name, description}"),
        },
        "/api/v1/projects/{project}/snapshots/{snapshot}": {
            "get": op(
                "A snapshot's annotations", "200", "project", "snapshot", "crs", "limit", "cursor"
            ),
        },
    }
