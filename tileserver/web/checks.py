"""Quality checks: ``GET /api/v1/projects/{project}/checks`` lists automated findings.

Reviewers and admins of the project only. The checks themselves are ``annot.checks``; this
module reads each image's annotations through the store's paged ``query``, keeps each image's
findings in a small cache (keyed by the image's latest change, its file version, the
taxonomy and the options, so the pages of one listing do not check the image again), filters
and pages them.

Answer::

    {"project": "default", "images": 2, "checked": 1234,
     "counts": {"duplicate": 3, "tiny": 1}, "severities": {"error": 3, "warning": 1},
     "total": 4, "options": {"min_area_px": 4.0, ...},
     "findings": [{"code": "duplicate", "severity": "error", "message": "...",
                   "image": "cog", "annotation": 17, "label": "building", "author": "ann",
                   "kind": "polygon",
                   "location": {"pixel_bbox": [x0, y0, x1, y1], "pixel_centroid": [x, y],
                                "world_centroid": [lon, lat], "world_crs": "EPSG:4326"},
                   "details": {"duplicate_of": 12, "also_duplicates": [], "iou": 0.98}}],
     "next_cursor": "..." or null}

``counts``, ``severities`` and ``total`` count every finding the filters keep (all pages);
``checked`` is the number of annotations checked on those images. Findings come in a stable
order (image id, annotation id, code, other annotation id); the cursor is the position of the
last finding of a page, so a page stays right when findings before it go away.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from annot.checks import (
    CODES,
    CheckOptions,
    Finding,
    FindingFilter,
    SortKey,
    check_image,
    decode_cursor,
    encode_cursor,
    parse_codes,
    parse_severities,
    read_annotations,
)
from annot.errors import BadRequest, NotFound
from annot.frames import ImageFrame
from annot.storage.base import MAX_PAGE, Store
from annot.taxonomy import DEFAULT_PROJECT, Project
from annot.users import Role
from tileserver.web.annotations import AnnotBaseHandler
from tileserver.web.openapi import param

DEFAULT_LIMIT = 1000
PARAMETERS = frozenset(
    {"image", "code", "severity", "label", "author", "limit", "cursor", "min_area_px"}
)
CACHED_IMAGES = 32


@dataclass(frozen=True)
class ChecksQuery:
    images: tuple[str, ...]
    keep: FindingFilter
    options: CheckOptions
    limit: int
    after: SortKey | None


def parse_query(names: list[str], arguments: Callable[[str], list[str]]) -> ChecksQuery:
    """The route's query parameters; BadRequest says which one is wrong and why."""
    unknown = sorted(set(names) - PARAMETERS)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}: use {', '.join(sorted(PARAMETERS))}")
    for name in ("limit", "cursor", "min_area_px"):
        if len(arguments(name)) > 1:
            raise BadRequest(f"give {name} once")
    limit_text = (arguments("limit") or [""])[0]
    limit = DEFAULT_LIMIT
    if limit_text:
        try:
            limit = int(limit_text)
        except ValueError:
            raise BadRequest(f"limit must be an integer 1..{MAX_PAGE}") from None
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be an integer 1..{MAX_PAGE}")
    area_text = (arguments("min_area_px") or [""])[0]
    options = CheckOptions()
    if area_text:
        try:
            area = float(area_text)
        except ValueError:
            raise BadRequest("min_area_px must be a number of pixels >= 0") from None
        if not (math.isfinite(area) and area >= 0):
            raise BadRequest("min_area_px must be a number of pixels >= 0")
        options = CheckOptions(min_area_px=area)
    cursor = (arguments("cursor") or [""])[0]
    images = tuple(dict.fromkeys(v for v in arguments("image") if v))
    keep = FindingFilter(
        codes=parse_codes(arguments("code")),
        severities=parse_severities(arguments("severity")),
        labels=tuple(v for v in arguments("label") if v),
        authors=frozenset(v for v in arguments("author") if v),
    )
    return ChecksQuery(images, keep, options, limit, decode_cursor(cursor) if cursor else None)


def _taxonomy_key(project: Project) -> str:
    parts = sorted(
        (name, sorted(k.value for k in label.kinds) if label.kinds is not None else None)
        for name, label in project.labels.items()
    )
    return hashlib.sha1(repr((project.name, parts)).encode()).hexdigest()


class FindingCache:
    """Each image's findings for its latest change, file version, taxonomy and options."""

    def __init__(self, size: int = CACHED_IMAGES) -> None:
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], tuple[list[Finding], int]] = OrderedDict()
        self._lock = threading.Lock()

    def findings(
        self,
        store: Store,
        image_id: str,
        version: str,
        frame: ImageFrame,
        project: Project,
        options: CheckOptions,
    ) -> tuple[list[Finding], int]:
        """``(findings, annotations checked)`` of one image."""
        key = (image_id, version, store.last_change(image_id), _taxonomy_key(project), options)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        items = read_annotations(store, image_id)
        value = (check_image(image_id, items, project, frame, options), len(items))
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


CACHE = FindingCache()


def run_checks(
    store: Store,
    project: Project,
    images: list[tuple[str, str, ImageFrame]],
    query: ChecksQuery,
    cache: FindingCache = CACHE,
) -> dict[str, Any]:
    """The route's answer (runs in the executor): ``images`` are ``(id, version, frame)``."""
    counts: dict[str, int] = {}
    severities: dict[str, int] = {}
    page: list[Finding] = []
    more = False
    checked = 0
    for image_id, version, frame in sorted(images):
        found, n = cache.findings(store, image_id, version, frame, project, query.options)
        checked += n
        for f in found:
            if not query.keep.keeps(f):
                continue
            counts[f.code] = counts.get(f.code, 0) + 1
            severities[f.severity.value] = severities.get(f.severity.value, 0) + 1
            if query.after is not None and f.key <= query.after:
                continue
            if len(page) < query.limit:
                page.append(f)
            else:
                more = True
    return {
        "project": project.name,
        "images": len(images),
        "checked": checked,
        "counts": dict(sorted(counts.items())),
        "severities": severities,
        "total": sum(counts.values()),
        "options": asdict(query.options),
        "findings": [f.to_json() for f in page],
        "next_cursor": encode_cursor(page[-1].key) if more and page else None,
    }


class ChecksHandler(AnnotBaseHandler):
    """GET the quality findings of a project's images (reviewers and admins)."""

    async def get(self, name: str) -> None:
        project = await self.call(self.ctx.store.get_project, name)
        self.require(name, Role.reviewer)
        query = parse_query(list(self.request.query_arguments), self.get_query_arguments)
        assigned = await self.call(self.ctx.store.image_projects)
        if query.images:
            for image_id in query.images:
                self.ctx.catalog.get(image_id)  # 404 for an unknown image
                if assigned.get(image_id, DEFAULT_PROJECT) != name:
                    raise NotFound(f"image {image_id!r} is not in project {name!r}")
            ids = list(query.images)
        else:
            ids = [i for i in self.ctx.catalog.images if assigned.get(i, DEFAULT_PROJECT) == name]
        images = [(i, self.ctx.catalog.get(i).info.version, self.frame(i)) for i in ids]
        self.write_json(await self.call(run_checks, self.ctx.store, project, images, query))


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI path item of the checks route (for ``tileserver.web.openapi``)."""
    codes = "; ".join(f"{code} ({sev.value}): {text}" for code, (sev, text) in CODES.items())

    return {
        "/api/v1/projects/{project}/checks": {
            "get": {
                "summary": "Quality findings on a project's annotations (reviewers and admins)",
                "description": (
                    "Automated checks of every annotation of the project's images (or of one "
                    "image). Each finding has a stable code, a severity (error | warning), a "
                    "message saying what is wrong and what to do, the image, the annotation id "
                    "(null for image-level findings), its label, author and kind, its location "
                    "(pixel_bbox and pixel_centroid in pixels, slice and plane on volumes, "
                    "world_centroid in world_crs: EPSG:4326 lon/lat, LPS mm, or pixel) and "
                    "details. Answer: {project, images, checked (annotations), counts {code: n}, "
                    "severities {error, warning}, total, options, findings, next_cursor}; the "
                    "counts cover every page. Findings are ordered by image id, annotation id, "
                    "code and other annotation id. Codes: " + codes + ". Duplicates and "
                    "overlaps are reported once per pair, on the later annotation. Errors: 400 "
                    "bad or unknown parameter, 401, 403 not a reviewer or admin of the project, "
                    "404 unknown project, or image not in the project."
                ),
                "parameters": [
                    param("project", "path", {"type": "string"}, "project name"),
                    param(
                        "image",
                        "query",
                        {"type": "string"},
                        "only this image (repeats); default all",
                    ),
                    param(
                        "code",
                        "query",
                        {"type": "string"},
                        "keep these codes (commas or repeats): " + ", ".join(CODES),
                    ),
                    param(
                        "severity", "query", {"enum": ["error", "warning"]}, "keep this severity"
                    ),
                    param(
                        "label",
                        "query",
                        {"type": "string"},
                        "keep this label and sub-labels; repeats",
                    ),
                    param("author", "query", {"type": "string"}, "keep this author's; repeats"),
                    param(
                        "min_area_px",
                        "query",
                        {"type": "number", "minimum": 0, "default": 4},
                        "areas under this many pixels are tiny",
                    ),
                    param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1000},
                        "findings per page",
                    ),
                    param(
                        "cursor", "query", {"type": "string"}, "next_cursor of the previous page"
                    ),
                ],
                "responses": {
                    "200": {"description": "findings, counts and next_cursor"},
                    "400": {"description": "bad parameter"},
                    "403": {"description": "not a reviewer or admin of the project"},
                    "404": {"description": "unknown project or image"},
                },
            }
        }
    }
