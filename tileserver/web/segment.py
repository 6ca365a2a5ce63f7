"""``POST /api/v1/images/{id}/segment?crs=pixel|world``: a proposed outline from a click or a box.

Body::

    {"points": [[x, y, 1], [x, y, 0], ...],   # 1 positive, 0 negative (at most MAX_POINTS)
     "box": [x0, y0, x1, y1],                  # optional
     "slice": k, "plane": "axial",             # volumes: the slice of a plane (default axial,
                                               # or the acquisition plane)
     "label": "building",                      # optional: copied to properties.label
     "method": "flood" | "random_walker" | "rectangle",  # optional: forces one
     "bands": [1, 2, 3], "window": 400, "level": 40, "preset": "bone"}  # optional, as tiles

On a 2D image, points and box are in ``crs`` (``world`` by default, as on every annotation
route: WGS84 on a georeferenced image; ``pixel``; ``EPSG:n``): a box in a world crs is the pixel
bounds of its four corners. On a volume they are
in pixel coordinates of the slice whatever ``crs`` (the slice index says where the prompt is).
``crs`` is also the coordinate system of the answer, a GeoJSON Feature written by the same
code as the annotation routes (``annot.features``), so that it can be POSTed to
``/api/v1/images/{id}/annotations?crs=...`` unchanged once it has a label. It is not stored.
``properties``: ``kind`` (polygon or multipolygon), ``score`` (boundary contrast in [0, 1),
see ``tileserver.assist``), ``method``, ``proposed: true``, ``scale`` (full-resolution pixels
per pixel worked on: above 1 when a large box was read from a coarser pyramid level),
``window`` (the pixel window read), ``clipped`` (the region reached the window's edge at the
largest window read), ``label`` if given, and ``slice``/``plane`` for volumes.

Only the pixels needed are read, through the image's reader (native pyramid tiles): a window
around the box or the points with a margin, at most ``MAX_SIDE`` pixels a side (a coarser
level beyond); around points only, a window too small for the region is grown and read again.
Values are the reader's (Hounsfield units for CT), divided by the displayed range of the shown
bands, and clipped to it when the request gives ``window``/``level``/``preset``.

Errors: 400 malformed body, points outside the image, no positive point and no box, a box of
zero area, slice out of range, too many points, non-finite numbers; 401; 403 not a member of
the image's project; 404 unknown image; 422 nothing found (with ``reason``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
import tornado.routing
import tornado.web

from annot.errors import BadRequest, ValidationError
from annot.features import content_from_feature, dumps, feature_dicts
from annot.frames import PIXEL, ImageFrame, VolumeFrame
from annot.model import Annotation, Kind, Plane
from annot.users import Role
from tileserver.assist import METHODS, NothingFound, Prompt, segment, trace_outline
from tileserver.readers.base import ImageSource, Pyramid, TileOptions
from tileserver.web.annotations import AnnotBaseHandler

MAX_POINTS = 64
MAX_SIDE = 2048  # pixels a side of the window worked on
POINT_MARGIN = 192  # full-resolution pixels around the points, before growing
GROWTHS = 3  # windows tried around points: margin x1, x4, x16
BOX_MARGIN = 0.25  # of the box's size, at least 16 pixels
BODY_KEYS = frozenset(
    {"points", "box", "slice", "plane", "label", "method", "bands", "window", "level", "preset"}
)
PROPOSAL_LABEL = "proposal"  # stands in for a missing label while the shape is validated


@dataclass(frozen=True)
class SegmentRequest:
    points: tuple[tuple[float, float, int], ...]
    box: tuple[float, float, float, float] | None
    slice: int | None
    plane: Plane | None
    label: str | None
    method: str | None
    options: TileOptions
    explicit_range: bool  # window/level/preset given: clip values to the displayed range


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{what} must be a number")
    if not math.isfinite(value):
        raise BadRequest(f"{what} must be a finite number")
    return float(value)


def prompt_in_pixels(data: Any, frame: ImageFrame, crs: str) -> Any:
    """The body with its points and box in pixel coordinates (2D images in a world crs)."""
    if crs == PIXEL or isinstance(frame, VolumeFrame) or not isinstance(data, dict):
        return data
    out = dict(data)
    raw_points = data.get("points")
    if isinstance(raw_points, list) and raw_points:
        if not all(isinstance(p, list) and len(p) == 3 for p in raw_points):
            raise BadRequest("points must be a list of [x, y, 1 or 0]")
        xy = np.array(
            [[_finite(p[0], f"points[{n}][0]"), _finite(p[1], f"points[{n}][1]")]
             for n, p in enumerate(raw_points)]
        )  # fmt: skip
        # to 1e-6 px: a reprojection round trip's last bits would move the window read
        px = np.round(frame.world_to_pixel(frame.crs_to_world(crs, xy)), 6).tolist()
        out["points"] = [[c, r, p[2]] for (c, r), p in zip(px, raw_points, strict=True)]
    box = data.get("box")
    if isinstance(box, list) and len(box) == 4:
        x0, y0, x1, y1 = (_finite(v, f"box[{i}]") for i, v in enumerate(box))
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]])
        px = np.round(frame.world_to_pixel(frame.crs_to_world(crs, corners)), 6)
        lo, hi = px.min(axis=0), px.max(axis=0)
        if x0 < x1 and y0 < y1:  # else parse_request says what is wrong with the box
            out["box"] = [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])]
    return out


def parse_request(data: Any, source: ImageSource, frame: ImageFrame) -> SegmentRequest:
    """Check a segment body against the image; BadRequest says what to fix."""
    if not isinstance(data, dict):
        raise BadRequest('the body is {"points": [[x, y, 1 or 0], ...], "box": [x0, y0, x1, y1]}')
    unknown = sorted(set(data) - BODY_KEYS)
    if unknown:
        raise BadRequest(f"unknown key(s) {', '.join(unknown)}; use {', '.join(sorted(BODY_KEYS))}")
    is_volume = isinstance(frame, VolumeFrame)
    plane: Plane | None = None
    slice_: int | None = None
    if is_volume:
        assert isinstance(frame, VolumeFrame)
        try:
            plane = Plane(data["plane"]) if data.get("plane") is not None else frame.default_plane
        except ValueError:
            raise BadRequest("plane must be axial, coronal or sagittal") from None
        s = data.get("slice")
        if isinstance(s, bool) or not isinstance(s, int):
            raise BadRequest("a volume needs slice: an integer slice index of the plane")
        width, height, count = frame.size(plane)
        if not 0 <= s < count:
            raise BadRequest(f"slice {s} is outside 0..{count - 1} of the {plane.value} plane")
        slice_ = s
    else:
        if data.get("slice") is not None or data.get("plane") is not None:
            raise BadRequest("slice and plane apply to volumes only")
        width, height, _ = frame.size()
    raw_points = data.get("points", [])
    if not isinstance(raw_points, list):
        raise BadRequest("points must be a list of [x, y, 1 or 0]")
    if len(raw_points) > MAX_POINTS:
        raise BadRequest(f"{len(raw_points)} points; at most {MAX_POINTS}")
    points = []
    for n, p in enumerate(raw_points):
        if not isinstance(p, list) or len(p) != 3:
            raise BadRequest(f"points[{n}] must be [x, y, 1 or 0]")
        x, y = _finite(p[0], f"points[{n}][0]"), _finite(p[1], f"points[{n}][1]")
        if p[2] not in (0, 1) or isinstance(p[2], bool | float):
            raise BadRequest(f"points[{n}][2] must be 1 (positive) or 0 (negative)")
        if not (0 <= x < width and 0 <= y < height):
            raise BadRequest(f"points[{n}] ({x}, {y}) is outside the {width}x{height} image")
        points.append((x, y, int(p[2])))
    box = None
    if data.get("box") is not None:
        b = data["box"]
        if not isinstance(b, list) or len(b) != 4:
            raise BadRequest("box must be [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (_finite(v, f"box[{i}]") for i, v in enumerate(b))
        if not (x0 < x1 and y0 < y1):
            raise BadRequest("box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1 (an area)")
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
        if not (x0 < x1 and y0 < y1):
            raise BadRequest(f"box does not overlap the {width}x{height} image")
        box = (x0, y0, x1, y1)
    if box is None and not any(on for _, _, on in points):
        raise BadRequest("give a box or at least one positive point ([x, y, 1])")
    label = data.get("label")
    if label is not None and (not isinstance(label, str) or not label):
        raise BadRequest("label must be a non-empty string")
    method = data.get("method")
    if method == "auto":
        method = None
    if method is not None and method not in METHODS:
        raise BadRequest(f"method must be auto, {', '.join(METHODS)}")
    if method == "flood" and box is None and not any(on for _, _, on in points):
        raise BadRequest("flood needs a positive point")
    if method == "rectangle" and box is None:
        raise BadRequest("rectangle needs a box")
    bands = data.get("bands")
    if bands is not None:
        if (
            not isinstance(bands, list)
            or len(bands) not in (1, 3)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in bands)
        ):
            raise BadRequest("bands must be a list of 1 or 3 band numbers (1-based)")
        if not all(1 <= v <= source.info.bands for v in bands):
            raise BadRequest(f"bands must be within 1..{source.info.bands}")
    window = data.get("window")
    level = data.get("level")
    preset = data.get("preset")
    if window is not None:
        window = _finite(window, "window")
        if window < 1:
            raise BadRequest("window must be at least 1")
    if level is not None:
        level = _finite(level, "level")
    if preset is not None and not isinstance(preset, str):
        raise BadRequest("preset must be a name")
    given = {
        "bands": bands,
        "window": window,
        "level": level,
        "preset": preset,
    }
    for name, value in given.items():
        if value is not None and name not in source.supported_options:
            raise BadRequest(f"{name} does not apply to this image")
    options = TileOptions(
        bands=tuple(bands) if bands is not None else None,
        window=window,
        level=level,
        preset=preset,
        slice=slice_ if "slice" in source.supported_options else None,
        plane=plane.value if plane is not None and "plane" in source.supported_options else None,
    )
    explicit = window is not None or level is not None or preset is not None
    return SegmentRequest(tuple(points), box, slice_, plane, label, method, options, explicit)


@dataclass(frozen=True)
class Window:
    """Pixels read for a segmentation: ``data`` (bands, rows, cols) covers full-resolution
    pixels ``x0 + scale * col``, ``y0 + scale * row``."""

    data: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_] | None
    x0: int
    y0: int
    scale: int
    open_edges: tuple[bool, bool, bool, bool]

    @property
    def bounds(self) -> list[int]:
        rows, cols = self.data.shape[1:]
        return [self.x0, self.y0, self.x0 + cols * self.scale, self.y0 + rows * self.scale]


def read_window(
    source: ImageSource,
    options: TileOptions,
    size: tuple[int, int],
    region: tuple[float, float, float, float],
    max_side: int,
) -> Window:
    """Pixel values of ``region`` (full-resolution pixels, clipped to the image) from native
    pyramid tiles, at the finest level whose window is at most ``max_side`` a side."""
    width, height = size
    x0, y0 = max(0, math.floor(region[0])), max(0, math.floor(region[1]))
    x1, y1 = min(width, math.ceil(region[2])), min(height, math.ceil(region[3]))
    pyramid = Pyramid(width, height, source.info.tile_size)
    need = max(x1 - x0, y1 - y0) / max_side
    z = pyramid.max_z
    while z > 0 and pyramid.factor(z) < need:
        z -= 1
    f = pyramid.factor(z)
    lw, lh = pyramid.level_size(z)
    c0, r0 = x0 // f, y0 // f
    c1, r1 = min(lw, -(-x1 // f)), min(lh, -(-y1 // f))
    ts = pyramid.tile_size
    data: npt.NDArray[np.float32] | None = None
    valid: npt.NDArray[np.bool_] | None = None
    for ty in range(r0 // ts, (r1 - 1) // ts + 1):
        for tx in range(c0 // ts, (c1 - 1) // ts + 1):
            px = source.read_tile(z, tx, ty, options, with_mask=True)
            if data is None:
                data = np.zeros((px.data.shape[0], r1 - r0, c1 - c0), dtype=np.float32)
            # the part of this tile inside the window, in window and in tile pixels
            a0, a1 = max(r0, ty * ts), min(r1, (ty + 1) * ts)
            b0, b1 = max(c0, tx * ts), min(c1, (tx + 1) * ts)
            data[:, a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = px.data[
                :, a0 - ty * ts : a1 - ty * ts, b0 - tx * ts : b1 - tx * ts
            ]
            if px.valid is not None:
                if valid is None:
                    valid = np.ones((r1 - r0, c1 - c0), dtype=bool)
                valid[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = px.valid[
                    a0 - ty * ts : a1 - ty * ts, b0 - tx * ts : b1 - tx * ts
                ]
    assert data is not None
    edges = (c0 > 0, r0 > 0, c1 < lw, r1 < lh)
    return Window(data, valid, c0 * f, r0 * f, f, edges)


def normalise(
    data: npt.NDArray[np.float32],
    ranges: list[tuple[float, float]] | None,
    clip: bool,
) -> npt.NDArray[np.float32]:
    """Values divided by the displayed range (0..1 across it); clipped to it when asked."""
    if ranges is None:
        return data / np.float32(255.0)
    if len(ranges) == 1 and data.shape[0] > 1:
        ranges = ranges * data.shape[0]
    lo = np.array([r[0] for r in ranges], dtype=np.float32)[:, None, None]
    hi = np.array([r[1] for r in ranges], dtype=np.float32)[:, None, None]
    out = (data - lo) / np.where(hi > lo, hi - lo, np.float32(1.0))
    if clip:
        out = np.clip(out, 0.0, 1.0)
    return out.astype(np.float32)


def propose(
    source: ImageSource, frame: ImageFrame, crs: str, req: SegmentRequest
) -> dict[str, Any]:
    """The proposed Feature (runs in the executor); NothingFound when there is none."""
    width, height, _ = frame.size(req.plane) if req.plane is not None else frame.size()
    ranges = source.display_ranges(req.options)
    positive = [(x, y) for x, y, on in req.points if on] or [(x, y) for x, y, _ in req.points]
    if req.box is not None:
        bx0, by0, bx1, by1 = req.box
        m = max(16.0, BOX_MARGIN * max(bx1 - bx0, by1 - by0))
        region = (bx0 - m, by0 - m, bx1 + m, by1 + m)
        tries = 1
    else:
        xs, ys = [p[0] for p in positive], [p[1] for p in positive]
        region = (min(xs), min(ys), max(xs), max(ys))
        tries = GROWTHS
    margin = float(POINT_MARGIN)
    for attempt in range(tries):
        grown = region
        if req.box is None:
            grown = (
                region[0] - margin,
                region[1] - margin,
                region[2] + margin,
                region[3] + margin,
            )
        win = read_window(source, req.options, (width, height), grown, MAX_SIDE)
        values = normalise(win.data, ranges, req.explicit_range)
        f = win.scale
        points = [((x - win.x0) / f, (y - win.y0) / f, on) for x, y, on in req.points]
        box = None
        if req.box is not None:
            bx0, by0, bx1, by1 = req.box
            box = ((bx0 - win.x0) / f, (by0 - win.y0) / f, (bx1 - win.x0) / f, (by1 - win.y0) / f)
        try:
            result = segment(
                values, Prompt.from_points(points, box), req.method, win.valid, win.open_edges
            )
        except NothingFound as exc:
            raise ValidationError(str(exc), {"reason": str(exc)}) from None
        if not result.touches_edge or attempt == tries - 1 or not any(win.open_edges):
            break
        margin *= 4
    if result.outline is not None:  # exact (rectangle): array pixels to full resolution
        offset = np.array([win.x0, win.y0], dtype=np.float64)
        outline = shapely.transform(result.outline, lambda xy: xy * f + offset)
    else:
        outline = trace_outline(result.soft, float(f), (float(win.x0), float(win.y0)), 0.5)
    outline = shapely.intersection(outline, shapely.box(0, 0, width, height))
    polys = [
        g
        for g in (outline.geoms if hasattr(outline, "geoms") else [outline])
        if isinstance(g, shapely.Polygon) and not g.is_empty and g.area > 0
    ]
    if not polys:
        reason = "the region found is too small to outline"
        raise ValidationError(reason, {"reason": reason})
    shape = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    kind = Kind.polygon if len(polys) == 1 else Kind.multipolygon
    props: dict[str, Any] = {"label": req.label or PROPOSAL_LABEL, "kind": kind.value}
    if req.slice is not None and req.plane is not None:
        props.update(slice=req.slice, plane=req.plane.value)
    pixel_feature = {
        "type": "Feature",
        "geometry": shapely.geometry.mapping(shape),
        "properties": props,
    }
    # Parsed as the annotation route will parse it: the same checks, the same storage frame.
    content = content_from_feature(pixel_feature, frame, PIXEL)
    transient = Annotation(0, source.info.id, "", content, "", "", "", "", 0)
    written = feature_dicts([transient], frame, crs)[0]
    out_props: dict[str, Any] = {
        "kind": kind.value,
        "score": round(float(result.score), 4),
        "method": result.method,
        "proposed": True,
        "scale": f,
        "window": win.bounds,
        "clipped": bool(result.touches_edge),
    }
    if req.label is not None:
        out_props["label"] = req.label
    if req.slice is not None and req.plane is not None:
        out_props.update(slice=req.slice, plane=req.plane.value)
    return {"type": "Feature", "geometry": written["geometry"], "properties": out_props}


class SegmentHandler(AnnotBaseHandler):
    """POST a prompt on an image; answers a proposed Feature (annotators and up)."""

    async def post(self, image_id: str) -> None:
        project = self.project_of_image(image_id)
        self.require(project, Role.annotator)
        source = self.ctx.catalog.get(image_id)
        frame, crs = self.frame_and_crs(image_id)
        req = parse_request(prompt_in_pixels(self.body_json(1 << 20), frame, crs), source, frame)
        proposal = await self.call(propose, source, frame, crs, req)
        self.set_header("Content-Type", "application/geo+json; charset=utf-8")
        self.finish(dumps(proposal))


def segment_routes(deps: dict[str, Any]) -> list[tornado.routing.URLSpec]:
    return [
        tornado.web.url(r"/api/v1/images/([^/]+)/segment", SegmentHandler, deps, name="segment"),
    ]


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI path item of the segment route (for ``tileserver.web.openapi``)."""
    return {
        "/api/v1/images/{id}/segment": {
            "post": {
                "summary": "Propose an outline from points and/or a box (not stored)",
                "description": (
                    "Classical interactive segmentation (flood with an automatic tolerance for "
                    "points, random walker for a box; a box alone where the walker finds no "
                    "clear boundary gets the rectangle fit, method rectangle). Points and box "
                    "are in crs on 2D images and in the slice's pixels on volumes; the answer "
                    "is a GeoJSON Feature in crs with properties "
                    "score, method, kind, proposed, scale, window, clipped (and slice/plane "
                    "for volumes), ready to POST to the annotations route once labelled. "
                    "Errors: 400 bad body, 401, 403 not a member of the image's project, 404, "
                    "422 nothing found."
                ),
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "image id",
                    },
                    {
                        "name": "crs",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "default": "world"},
                        "description": "world | pixel | EPSG:n (of the Feature answered)",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "description": (
                        '{"points": [[x, y, 1 or 0], ...], "box": [x0, y0, x1, y1], '
                        '"slice": k, "plane": "axial", "label": "...", '
                        '"method": "flood" | "random_walker" | "rectangle", "bands": [...], '
                        '"window": w, "level": c, "preset": "..."}'
                    ),
                },
                "responses": {"200": {"description": "the proposed Feature"}},
            }
        }
    }
