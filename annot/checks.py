"""Automated quality checks of an image's annotations: findings a labelling lead acts on.

Pure: annotations, the project's taxonomy and the image's frame in, ``Finding`` objects out
(``check_image``). Geometry work is vectorised (shapely 2 array calls, one ``STRtree`` per image
for the pair checks), so an image with 100,000 polygons is checked in seconds. Shapes are
checked in the pixel coordinates of the image (of their slice and plane, for volumes).

Every finding has a stable ``code``, a ``severity`` (``error``: wrong data that would hurt
training or export; ``warning``: probably wrong, a person should look), a ``message`` saying
what is wrong and what to do, the annotation (None for an image-level finding), its image,
label, author and kind, its ``Location`` (pixel bbox and centroid, slice and plane on volumes,
and the centroid in world coordinates) and code-specific ``details``.

Codes
-----
``invalid_geometry`` (error)
    The stored shape would be refused today (self-intersection, a ring of fewer than 3
    distinct points, a box that is not 4 corners, a geometry type that does not match the kind,
    NaN coordinates, a tag with a geometry...): data imported before the rules, or written
    around them. details: ``reason``.
``empty_geometry`` (error)
    A shape kind without a geometry, an empty geometry, or a mask with no pixel set.
``outside_image`` (error)
    The shape lies entirely outside the image's pixel extent (of its plane, on volumes).
    details: ``image_size`` ``[width, height]``.
``partly_outside_image`` (warning)
    Part of the shape lies outside the image (beyond a 1e-6 px tolerance).
    details: ``image_size``, ``inside_fraction`` (of the area for areas, of the length for
    polylines, of the points for points).
``tiny`` (warning)
    An area (box, polygon, multipolygon, mask) under ``min_area_px`` pixels (default 4): a
    stray click or a shape drawn at the wrong zoom. details: ``area_px``, ``min_area_px``.
``sliver`` (warning)
    A very thin area: nowhere 1 pixel thick (the largest circle inside it is under 1 px
    across; looked for among shapes whose mean width ``2 * area / perimeter`` is under 1 px).
    Tiny shapes are reported as ``tiny`` only. details: ``width_px`` (that diameter),
    ``mean_width_px``, ``area_px``, ``perimeter_px``.
``duplicate`` (error)
    The same object annotated twice: same label (and slice and plane on volumes), and areas
    with IoU >= 0.95 (masks: IoU of their pixels), points, multipoints and polylines of the same
    kind within 0.5 px of each other (Hausdorff distance), or one tag twice on an image. Each
    duplicate pair is reported once, on the later annotation (higher id), naming the earliest
    one it duplicates. details: ``duplicate_of``, ``also_duplicates`` (other earlier ids),
    ``iou`` or ``distance_px``.
``overlap`` (warning)
    Two areas with the same label (and slice and plane) overlap with 0.5 <= IoU < 0.95: a
    possible double annotation, or two objects with a bad boundary. Reported once per pair, on
    the later annotation. details: ``other``, ``iou``, ``intersection_px``.
``unknown_label`` (error)
    The label is not in the project's current taxonomy (deleted or renamed after use).
``kind_not_allowed`` (error)
    The label exists but no longer allows this kind. details: ``allowed_kinds``.
``slice_mismatch`` (error)
    Volumes: the shape's coordinates do not lie on the slice and plane recorded with it (or no
    slice is recorded): the series' geometry changed since it was drawn.
    details: ``recorded_slice``, ``measured_slice`` (``[min, max]`` over the vertices).
``slice_outside_volume`` (error)
    Volumes: the recorded slice is not in the series any more (fewer slices now).
    details: ``recorded_slice``, ``slices``.
``sop_instance_mismatch`` (error)
    Volumes: the SOP instance recorded with the shape is not the instance of that slice now.
    details: ``recorded``, ``current``.
``frame_of_reference_mismatch`` (error)
    Volumes: the frame of reference recorded with the shape is not the series'.
    details: ``recorded``, ``current``.
``rejected_not_revised`` (warning)
    Rejected by a reviewer and not changed since the rejection: stale work.
    details: ``reviewer``, ``rejected_at``, ``comment``.

Image-level findings (``annotation`` None) would come from taxonomy rules such as mutually
exclusive tags; the taxonomy cannot express those yet, so no check produces one today.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from annot.errors import BadRequest, CoordinateError, TooLarge
from annot.frames import WORLD, GeoFrame, ImageFrame, VolumeFrame
from annot.model import GEOJSON_TYPE, Annotation, Kind, Plane, Status
from annot.storage.base import MAX_PAGE, Store
from annot.taxonomy import Project
from annot.validation import EDGE_TOLERANCE, validity_reason

Array = npt.NDArray[np.float64]


class Severity(StrEnum):
    error = "error"
    warning = "warning"


# code -> (severity, one line for listings and the OpenAPI description)
CODES: dict[str, tuple[Severity, str]] = {
    "invalid_geometry": (Severity.error, "the stored shape is not valid for its kind"),
    "empty_geometry": (Severity.error, "no geometry, an empty one, or an empty mask"),
    "outside_image": (Severity.error, "entirely outside the image"),
    "partly_outside_image": (Severity.warning, "partly outside the image"),
    "tiny": (Severity.warning, "an area under min_area_px pixels"),
    "sliver": (Severity.warning, "an area nowhere 1 px thick (largest inscribed circle)"),
    "duplicate": (Severity.error, "same label, IoU >= 0.95 (points: within 0.5 px)"),
    "overlap": (Severity.warning, "same label, 0.5 <= IoU < 0.95"),
    "unknown_label": (Severity.error, "label not in the project's taxonomy"),
    "kind_not_allowed": (Severity.error, "the label no longer allows this kind"),
    "slice_mismatch": (Severity.error, "volumes: not on its recorded slice and plane"),
    "slice_outside_volume": (Severity.error, "volumes: the recorded slice is gone"),
    "sop_instance_mismatch": (Severity.error, "volumes: the slice's SOP instance changed"),
    "frame_of_reference_mismatch": (Severity.error, "volumes: another frame of reference"),
    "rejected_not_revised": (Severity.warning, "rejected and not changed since"),
}

AREAL = frozenset({Kind.box, Kind.polygon, Kind.multipolygon})
POINTLIKE = frozenset({Kind.point, Kind.multipoint, Kind.polyline})
SLICE_TOLERANCE = 1e-6  # slices: a vertex off its slice's plane by more is on another slice
AREA_TOLERANCE = 1e-6  # px²: an area this close to min_area_px is not tiny
SLIVER_TOLERANCE = 1e-3  # px: precision of the inscribed circle's radius


@dataclass(frozen=True)
class CheckOptions:
    """Thresholds of the checks (pixels of the image, or of the slice for volumes)."""

    min_area_px: float = 4.0
    duplicate_iou: float = 0.95
    overlap_iou: float = 0.5
    sliver_width_px: float = 1.0
    point_tolerance_px: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_area_px) and self.min_area_px >= 0):
            raise BadRequest("min_area_px must be a finite number >= 0")
        if not 0 < self.overlap_iou <= self.duplicate_iou <= 1:
            raise BadRequest("IoU thresholds must satisfy 0 < overlap <= duplicate <= 1")


@dataclass(frozen=True)
class Location:
    """Where a finding is: pixel bbox ``(minx, miny, maxx, maxy)`` and centroid ``(x, y)`` on
    the image (on ``slice`` of ``plane`` for volumes), and the centroid in world coordinates:
    ``world_crs`` is ``EPSG:4326`` (lon, lat) for georeferenced images, ``LPS`` (x, y, z mm)
    for volumes, ``pixel`` for images without georeference."""

    pixel_bbox: tuple[float, float, float, float] | None
    pixel_centroid: tuple[float, float] | None
    slice: int | None
    plane: Plane | None
    world_centroid: tuple[float, ...] | None
    world_crs: str

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pixel_bbox": _finite_list(self.pixel_bbox),
            "pixel_centroid": _finite_list(self.pixel_centroid),
        }
        if self.plane is not None:
            out["slice"] = self.slice
            out["plane"] = self.plane.value
        out["world_centroid"] = _finite_list(self.world_centroid)
        out["world_crs"] = self.world_crs
        return out


def _finite_list(values: Sequence[float] | None) -> list[float] | None:
    if values is None or not all(math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


# A finding's place in the stable order: (image, annotation id or -1, code, other id or -1).
SortKey = tuple[str, int, str, int]


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    image: str
    annotation: int | None
    label: str | None = None
    author: str | None = None
    kind: Kind | None = None
    location: Location | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        return CODES[self.code][0]

    @property
    def key(self) -> SortKey:
        other = self.details.get("duplicate_of", self.details.get("other", -1))
        aid = -1 if self.annotation is None else self.annotation
        return self.image, aid, self.code, int(other) if isinstance(other, int) else -1

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "image": self.image,
            "annotation": self.annotation,
            "label": self.label,
            "author": self.author,
            "kind": self.kind.value if self.kind is not None else None,
            "location": self.location.to_json() if self.location is not None else None,
            "details": dict(self.details),
        }


# --- reading ---------------------------------------------------------------------------------


def read_annotations(store: Store, image_id: str, page: int = MAX_PAGE) -> list[Annotation]:
    """Every annotation of an image, by id, read through the store's paged ``query``."""
    out: list[Annotation] = []
    after = 0
    while True:
        batch = store.query(image_id, None, after, page)
        out.extend(batch)
        if len(batch) < page:
            return out
        after = batch[-1].id


# --- the checks ------------------------------------------------------------------------------


@dataclass
class _Image:
    """Columns of one image's annotations, and the findings found so far."""

    image_id: str
    items: list[Annotation]
    frame: ImageFrame
    options: CheckOptions
    pixel: npt.NDArray[np.object_]  # 2D pixel geometries (None where there is none)
    planes: list[Plane | None]
    measured: npt.NDArray[np.float64]  # volumes: the slice the vertices lie on (lowest)
    ok: npt.NDArray[np.bool_]  # a finite, non-empty, valid geometry
    found: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)

    def add(self, i: int, code: str, message: str, **details: Any) -> None:
        self.found.append((i, code, message, details))


def _world_crs(frame: ImageFrame) -> str:
    if isinstance(frame, GeoFrame):
        return "EPSG:4326"
    if isinstance(frame, VolumeFrame):
        return "LPS"
    return "pixel"


def _to_pixel(
    items: list[Annotation], frame: ImageFrame
) -> tuple[npt.NDArray[np.object_], list[Plane | None], Array, Array]:
    """2D pixel geometries, the plane of each, and each one's min and max measured slice."""
    n = len(items)
    pixel = np.full(n, None, dtype=object)
    smin = np.full(n, np.nan)
    smax = np.full(n, np.nan)
    volume = isinstance(frame, VolumeFrame)
    planes: list[Plane | None] = []
    groups: dict[Plane | None, list[int]] = {}
    for i, a in enumerate(items):
        c = a.content
        plane: Plane | None = None
        if volume:
            plane = c.placement.plane if c.placement is not None else frame.default_plane
        planes.append(plane)
        if c.geometry is not None and not c.geometry.is_empty:
            groups.setdefault(plane, []).append(i)
    for plane, members in groups.items():
        idx = np.asarray(members)
        world = np.array([items[i].content.geometry for i in members], dtype=object)
        coords, which = shapely.get_coordinates(world, include_z=volume, return_index=True)
        flat = shapely.force_2d(world)
        with np.errstate(all="ignore"):
            try:
                px = np.asarray(frame.world_to_pixel(coords, plane), dtype=np.float64)
            except (CoordinateError, ValueError, np.linalg.LinAlgError):
                px = np.full((len(coords), 3 if volume else 2), np.nan)
        pixel[idx] = shapely.set_coordinates(flat.copy(), px[:, :2])
        if volume:
            lo = np.full(len(members), np.inf)
            hi = np.full(len(members), -np.inf)
            np.minimum.at(lo, which, px[:, 2])
            np.maximum.at(hi, which, px[:, 2])
            smin[idx], smax[idx] = lo, hi
    return pixel, planes, smin, smax


def _kind_text(kind: Kind) -> str:
    return {Kind.box: "box", Kind.polyline: "polyline", Kind.multipoint: "multipoint"}.get(
        kind, kind.value
    )


def _labels(img: _Image, project: Project) -> None:
    verdicts: dict[tuple[str, Kind], tuple[str, str, dict[str, Any]] | None] = {}
    for i, a in enumerate(img.items):
        key = (a.label, a.kind)
        if key not in verdicts:
            label = project.labels.get(a.label)
            if label is None:
                verdicts[key] = (
                    "unknown_label",
                    f"Label {a.label!r} is not in the taxonomy of project {project.name!r} "
                    "(deleted or renamed after use): relabel the annotation, or add the label "
                    "back to the taxonomy.",
                    {},
                )
            elif label.kinds is not None and a.kind not in label.kinds:
                allowed = sorted(k.value for k in label.kinds)
                verdicts[key] = (
                    "kind_not_allowed",
                    f"Label {a.label!r} no longer allows a {_kind_text(a.kind)} (it allows "
                    f"{', '.join(allowed)}): redraw it as an allowed kind, relabel it, or allow "
                    "the kind again.",
                    {"allowed_kinds": allowed},
                )
            else:
                verdicts[key] = None
        verdict = verdicts[key]
        if verdict is not None:
            img.add(i, verdict[0], verdict[1], **verdict[2])


def _stale(img: _Image) -> None:
    for i, a in enumerate(img.items):
        if a.content.status is not Status.rejected:
            continue
        review = a.content.attributes.get("review")
        if isinstance(review, Mapping):
            if review.get("decision") != "reject":
                continue
            at_version = review.get("version")
            if isinstance(at_version, int) and a.version > at_version:
                continue  # changed since the rejection (revised, not yet resubmitted)
            who, when = str(review.get("reviewer", "")), str(review.get("at", a.updated_at))
            comment = str(review.get("comment", ""))
        else:  # rejected by a plain update: the last update was the rejection
            who, when, comment = a.updated_by, a.updated_at, ""
        said = f" ({comment!r})" if comment else ""
        img.add(
            i,
            "rejected_not_revised",
            f"Rejected by {who or 'a reviewer'} at {when}{said} and not changed since: revise "
            "and resubmit it, or delete it.",
            reviewer=who,
            rejected_at=when,
            comment=comment,
        )


def _geometry(img: _Image) -> None:
    """Empty and invalid shapes (as stored), then the image extent; sets ``img.ok``."""
    items, pixel = img.items, img.pixel
    n = len(items)
    kinds = [a.kind for a in items]
    has = np.array([g is not None for g in pixel], dtype=bool)
    for i, a in enumerate(items):
        c = a.content
        if c.kind is Kind.tag:
            if c.geometry is not None:
                img.add(
                    i,
                    "invalid_geometry",
                    "Invalid tag (a tag has no geometry): delete it and tag the image again.",
                    reason="a tag has no geometry",
                )
            has[i] = False
        elif not has[i] or (c.mask is not None and c.mask.area == 0):
            what = "an empty mask" if c.mask is not None and has[i] else "no geometry"
            img.add(
                i,
                "empty_geometry",
                f"The {_kind_text(c.kind)} has {what}: delete it, or redraw it.",
            )
            has[i] = False
    idx = np.flatnonzero(has)
    if len(idx) == 0:
        return
    geoms = pixel[idx]
    coords, which = shapely.get_coordinates(geoms, return_index=True)
    bad_coord = np.zeros(len(idx), dtype=bool)
    np.logical_or.at(bad_coord, which, ~np.isfinite(coords).all(axis=1))
    finite = ~bad_coord
    valid = np.zeros(len(idx), dtype=bool)
    valid[finite] = shapely.is_valid(geoms[finite])
    types = shapely.get_type_id(geoms)
    expected_type = np.array(
        [_TYPE_IDS.get(GEOJSON_TYPE[kinds[i]] or "", -1) for i in idx.tolist()], dtype=np.int64
    )
    kind_arr = np.array([kinds[i].value for i in idx.tolist()])
    areal = np.isin(kind_arr, [k.value for k in (*AREAL, Kind.mask)])
    suspect = bad_coord | ~valid | (types != expected_type)
    with np.errstate(all="ignore"):
        area = shapely.area(geoms)
        length = shapely.length(geoms)
    suspect |= areal & ~(area > 0)
    suspect |= (kind_arr == Kind.polyline.value) & ~(length > 0)
    boxes = kind_arr == Kind.box.value
    suspect |= boxes & (
        (shapely.get_num_coordinates(geoms) != 5)
        | (shapely.get_num_interior_rings(geoms) > 0)
        | (types != _TYPE_IDS["Polygon"])
    )
    multipoints = kind_arr == Kind.multipoint.value
    if multipoints.any():
        counts = shapely.get_num_coordinates(geoms)
        for j in np.flatnonzero(multipoints).tolist():
            names = items[idx[j]].content.keypoints
            if names and len(names) != counts[j]:
                suspect[j] = True
    ok = np.zeros(n, dtype=bool)
    ok[idx] = True
    for j in np.flatnonzero(suspect).tolist():
        i = int(idx[j])
        a = items[i]
        try:
            why = validity_reason(a.kind, pixel[i], keypoints=a.content.keypoints)
        except TooLarge as exc:
            why = str(exc)
        if why is None:
            continue
        reason = why
        ok[i] = False
        img.add(
            i,
            "invalid_geometry",
            f"The {_kind_text(a.kind)} is not a valid shape ({reason}): redraw it, or replace "
            "it by a repaired shape (the API's 422 answer for it suggests one), or delete it.",
            reason=reason,
        )
    img.ok = ok
    _extent(img)


_TYPE_IDS = {
    "Point": int(shapely.GeometryType.POINT),
    "LineString": int(shapely.GeometryType.LINESTRING),
    "Polygon": int(shapely.GeometryType.POLYGON),
    "MultiPoint": int(shapely.GeometryType.MULTIPOINT),
    "MultiPolygon": int(shapely.GeometryType.MULTIPOLYGON),
}


def _sizes(img: _Image) -> Array:
    """``(width, height, slices)`` of each annotation's plane."""
    cache: dict[Plane | None, tuple[int, int, int]] = {}
    out = np.empty((len(img.items), 3))
    for i, plane in enumerate(img.planes):
        if plane not in cache:
            cache[plane] = img.frame.size(plane)
        out[i] = cache[plane]
    return out


def _extent(img: _Image) -> None:
    idx = np.flatnonzero(img.ok)
    if len(idx) == 0:
        return
    geoms = img.pixel[idx]
    size = _sizes(img)[idx]
    bounds = shapely.bounds(geoms)
    tol = EDGE_TOLERANCE
    out = (
        (bounds[:, 0] < -tol)
        | (bounds[:, 1] < -tol)
        | (bounds[:, 2] > size[:, 0] + tol)
        | (bounds[:, 3] > size[:, 1] + tol)
    )
    if not out.any():
        return
    sel = np.flatnonzero(out)
    frames = shapely.box(0.0, 0.0, size[sel, 0], size[sel, 1])
    g = geoms[sel]
    inside = shapely.intersection(g, frames)
    kinds = [img.items[int(idx[j])].kind for j in sel.tolist()]
    for k, j in enumerate(sel.tolist()):
        i = int(idx[j])
        kind = kinds[k]
        w, h = int(size[j, 0]), int(size[j, 1])
        if kind in AREAL or kind is Kind.mask:
            whole, part = float(shapely.area(g[k])), float(shapely.area(inside[k]))
        elif kind is Kind.polyline:
            whole, part = float(shapely.length(g[k])), float(shapely.length(inside[k]))
        else:
            whole = float(shapely.get_num_coordinates(g[k]))
            part = float(shapely.get_num_coordinates(inside[k]))
        fraction = part / whole if whole > 0 else 0.0
        if fraction <= 0.0 and not shapely.intersects(g[k], frames[k]):
            img.add(
                i,
                "outside_image",
                f"The {_kind_text(kind)} lies entirely outside the image (0, 0, {w}, {h} px): "
                "delete it, or move it onto the image.",
                image_size=[w, h],
            )
        else:
            img.add(
                i,
                "partly_outside_image",
                f"The {_kind_text(kind)} extends outside the image (0, 0, {w}, {h} px); "
                f"{fraction:.1%} of it lies inside: clip it to the image edge.",
                image_size=[w, h],
                inside_fraction=round(fraction, 6),
            )


def _volume(img: _Image, smin: Array, smax: Array) -> None:
    frame = img.frame
    if not isinstance(frame, VolumeFrame):
        return
    size = _sizes(img)
    refs: dict[tuple[int, Plane], tuple[str | None, str | None]] = {}
    for i, a in enumerate(img.items):
        if a.kind is Kind.tag or a.content.geometry is None:
            continue
        placement = a.content.placement
        plane = img.planes[i]
        assert plane is not None
        measured = [round(float(smin[i]), 6), round(float(smax[i]), 6)]
        if placement is None:
            img.add(
                i,
                "slice_mismatch",
                "No slice is recorded with this volume annotation: open it in the viewer and "
                "save it again on its slice, or delete it.",
                recorded_slice=None,
                measured_slice=measured if all(map(math.isfinite, measured)) else None,
            )
            img.ok[i] = False
            continue
        s, n = placement.slice, int(size[i, 2])
        if not 0 <= s < n:
            img.add(
                i,
                "slice_outside_volume",
                f"Recorded on slice {s} of the {plane.value} plane, but the series has slices "
                f"0..{n - 1} now: the series lost slices since; delete it, or redraw it.",
                recorded_slice=s,
                slices=n,
            )
            img.ok[i] = False
            continue
        if not (abs(smin[i] - s) <= SLICE_TOLERANCE and abs(smax[i] - s) <= SLICE_TOLERANCE):
            img.add(
                i,
                "slice_mismatch",
                f"Recorded on slice {s} of the {plane.value} plane, but its coordinates lie on "
                f"slice {measured[0]:g}..{measured[1]:g}: the series' geometry changed since it "
                "was drawn; check it and redraw it on the right slice.",
                recorded_slice=s,
                measured_slice=measured if all(map(math.isfinite, measured)) else None,
            )
            img.ok[i] = False
        key = (s, plane)
        if key not in refs:
            refs[key] = frame.reference(s, plane)
        for_uid, sop_uid = refs[key]
        if placement.sop_instance_uid and sop_uid and placement.sop_instance_uid != sop_uid:
            img.add(
                i,
                "sop_instance_mismatch",
                f"Drawn on SOP instance {placement.sop_instance_uid}, but slice {s} is now "
                f"instance {sop_uid}: the series changed; check that the shape is still on "
                "the right image.",
                recorded=placement.sop_instance_uid,
                current=sop_uid,
            )
        if (
            placement.frame_of_reference_uid
            and for_uid
            and placement.frame_of_reference_uid != for_uid
        ):
            img.add(
                i,
                "frame_of_reference_mismatch",
                f"Drawn in frame of reference {placement.frame_of_reference_uid}, but the "
                f"series is in {for_uid} now: its patient coordinates may not match the image; "
                "check it, or redraw it.",
                recorded=placement.frame_of_reference_uid,
                current=for_uid,
            )


def _areas(img: _Image) -> tuple[npt.NDArray[np.int64], Array]:
    """Indices of the valid vector areas and their pixel areas."""
    idx = np.array(
        [i for i, a in enumerate(img.items) if img.ok[i] and a.kind in AREAL], dtype=np.int64
    )
    return idx, shapely.area(img.pixel[idx]) if len(idx) else np.empty(0)


def _small_and_thin(img: _Image) -> None:
    opt = img.options
    idx, area = _areas(img)
    if len(idx):
        perimeter = shapely.length(img.pixel[idx])
        tiny = area < opt.min_area_px - AREA_TOLERANCE  # world round trips: 1e-9 px² off
        mean_width = 2.0 * area / np.maximum(perimeter, 1e-300)
        # thin on average (cheap), then nowhere as thick as the threshold: the diameter of the
        # largest inscribed circle (a 2 x 2 square is 1 px wide on average but 2 px thick)
        thin = np.flatnonzero(~tiny & (mean_width < opt.sliver_width_px))
        thickness = np.empty(0)
        if len(thin):
            circles = shapely.maximum_inscribed_circle(img.pixel[idx[thin]], SLIVER_TOLERANCE)
            thickness = 2.0 * shapely.length(circles)
        for j in np.flatnonzero(tiny).tolist():
            i = int(idx[j])
            _tiny(img, i, float(area[j]))
        for j, d in zip(thin.tolist(), thickness.tolist(), strict=True):
            if d >= opt.sliver_width_px:
                continue
            i = int(idx[j])
            img.add(
                i,
                "sliver",
                f"The {_kind_text(img.items[i].kind)} is a sliver, at most {d:.3g} px thick "
                f"(area {area[j]:.4g} px², perimeter {perimeter[j]:.4g} px): likely an editing "
                "artefact; delete it, or redraw it.",
                width_px=round(d, 6),
                mean_width_px=round(float(mean_width[j]), 6),
                area_px=round(float(area[j]), 6),
                perimeter_px=round(float(perimeter[j]), 6),
            )
    for i, a in enumerate(img.items):
        mask = a.content.mask
        if mask is not None and img.ok[i] and 0 < mask.area < opt.min_area_px:
            _tiny(img, i, float(mask.area))


def _tiny(img: _Image, i: int, area: float) -> None:
    minimum = img.options.min_area_px
    img.add(
        i,
        "tiny",
        f"The {_kind_text(img.items[i].kind)} covers {area:.4g} px², under the minimum of "
        f"{minimum:g} px²: delete it if it is a stray click, or redraw it larger.",
        area_px=round(area, 6),
        min_area_px=minimum,
    )


def _groups(img: _Image, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """An integer per annotation of ``idx``: equal for the same label, plane and slice."""
    keys: dict[tuple[str, str, float], int] = {}
    out = np.empty(len(idx), dtype=np.int64)
    for j, i in enumerate(idx.tolist()):
        a = img.items[i]
        plane = img.planes[i]
        s = a.content.placement.slice if a.content.placement is not None else -1
        out[j] = keys.setdefault((a.label, plane.value if plane else "", s), len(keys))
    return out


def _pairs(
    geoms: npt.NDArray[np.object_], groups: npt.NDArray[np.int64], **query: Any
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Local index pairs ``a < b`` in one group whose geometries meet (STRtree, vectorised)."""
    if len(geoms) < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, **query)
    keep = (a < b) & (groups[a] == groups[b])
    return a[keep].astype(np.int64), b[keep].astype(np.int64)


def _duplicates_and_overlaps(img: _Image) -> None:
    opt = img.options
    dup: dict[int, list[tuple[int, dict[str, Any]]]] = {}

    def add_dup(later: int, earlier: int, **measure: Any) -> None:
        dup.setdefault(later, []).append((earlier, measure))

    # areas: IoU of the shapes
    idx, area = _areas(img)
    geoms = img.pixel[idx]
    a, b = _pairs(geoms, _groups(img, idx), predicate="intersects")
    if len(a):
        inter = shapely.area(shapely.intersection(geoms[a], geoms[b]))
        union = area[a] + area[b] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-300), 0.0)
        for j in np.flatnonzero(iou >= opt.duplicate_iou).tolist():
            add_dup(int(idx[b[j]]), int(idx[a[j]]), iou=round(float(iou[j]), 6))
        mid = (iou >= opt.overlap_iou) & (iou < opt.duplicate_iou)
        for j in np.flatnonzero(mid).tolist():
            later, earlier = int(idx[b[j]]), int(idx[a[j]])
            img.add(
                later,
                "overlap",
                f"Overlaps annotation {img.items[earlier].id} of the same label (IoU "
                f"{iou[j]:.2f}): if both outline one object, keep one; if they are two "
                "objects, correct the boundary between them.",
                other=img.items[earlier].id,
                iou=round(float(iou[j]), 6),
                intersection_px=round(float(inter[j]), 6),
            )
    # points, multipoints, polylines: within the tolerance (Hausdorff distance), same kind
    pidx = np.array(
        [i for i, x in enumerate(img.items) if img.ok[i] and x.kind in POINTLIKE], dtype=np.int64
    )
    if len(pidx) > 1:
        kinds = np.array([img.items[i].kind.value for i in pidx.tolist()])
        _, kind_code = np.unique(kinds, return_inverse=True)
        groups = _groups(img, pidx) * len(POINTLIKE) + kind_code
        pg = img.pixel[pidx]
        a, b = _pairs(pg, groups, predicate="dwithin", distance=opt.point_tolerance_px)
        if len(a):
            dist = shapely.hausdorff_distance(pg[a], pg[b])
            for j in np.flatnonzero(dist <= opt.point_tolerance_px).tolist():
                add_dup(int(pidx[b[j]]), int(pidx[a[j]]), distance_px=round(float(dist[j]), 6))
    # masks: IoU of their pixels, for masks whose footprints meet
    midx = np.array(
        [i for i, x in enumerate(img.items) if img.ok[i] and x.kind is Kind.mask], dtype=np.int64
    )
    if len(midx) > 1:
        a, b = _pairs(img.pixel[midx], _groups(img, midx), predicate="intersects")
        for ja, jb in zip(a.tolist(), b.tolist(), strict=True):
            i, k = int(midx[ja]), int(midx[jb])
            iou_m = _mask_iou(img.items[i], img.items[k])
            if iou_m >= opt.duplicate_iou:
                add_dup(k, i, iou=round(iou_m, 6))
            elif iou_m >= opt.overlap_iou:
                img.add(
                    k,
                    "overlap",
                    f"Overlaps mask {img.items[i].id} of the same label (IoU {iou_m:.2f}): if "
                    "both paint one object, keep one; else correct the boundary.",
                    other=img.items[i].id,
                    iou=round(iou_m, 6),
                )
    # tags: one label twice on the image
    first_tag: dict[str, int] = {}
    for i, x in enumerate(img.items):
        if x.kind is Kind.tag and x.content.geometry is None:
            if x.label in first_tag:
                add_dup(i, first_tag[x.label])
            else:
                first_tag[x.label] = i
    for later, matches in dup.items():
        matches.sort(key=lambda e: img.items[e[0]].id)
        first, measure = matches[0]
        others = [img.items[e].id for e, _ in matches[1:]]
        first_id = img.items[first].id
        how = ""
        if "iou" in measure:
            how = f", IoU {measure['iou']:.3f}"
        elif "distance_px" in measure:
            how = f", {measure['distance_px']:.3g} px apart"
        img.add(
            later,
            "duplicate",
            f"Duplicate of annotation {first_id} (same label{how}): delete this one, or the other.",
            duplicate_of=first_id,
            also_duplicates=others,
            **measure,
        )


def _mask_iou(x: Annotation, y: Annotation) -> float:
    mx, my = x.content.mask, y.content.mask
    if mx is None or my is None:
        return 0.0
    c0, r0 = max(mx.col, my.col), max(mx.row, my.row)
    c1 = min(mx.col + mx.width, my.col + my.width)
    r1 = min(mx.row + mx.height, my.row + my.height)
    inter = 0
    if c1 > c0 and r1 > r0:
        ax, ay = mx.to_array(), my.to_array()
        sub_x = ax[r0 - mx.row : r1 - mx.row, c0 - mx.col : c1 - mx.col]
        sub_y = ay[r0 - my.row : r1 - my.row, c0 - my.col : c1 - my.col]
        inter = int(np.count_nonzero(sub_x & sub_y))
    union = mx.area + my.area - inter
    return inter / union if union > 0 else 0.0


def _locations(img: _Image, rows: Sequence[int]) -> dict[int, Location]:
    """The location of each annotation index in ``rows`` that has a pixel geometry."""
    frame = img.frame
    crs = _world_crs(frame)
    volume = isinstance(frame, VolumeFrame)
    with_geom = [i for i in sorted(set(rows)) if img.pixel[i] is not None]
    out: dict[int, Location] = {}
    if not with_geom:
        return out
    idx = np.asarray(with_geom)
    geoms = img.pixel[idx]
    with np.errstate(all="ignore"):
        bounds = shapely.bounds(geoms)
        centre = (bounds[:, :2] + bounds[:, 2:]) / 2.0
        good = img.ok[idx]
        if good.any():
            cent = shapely.get_coordinates(shapely.centroid(geoms[good]))
            if len(cent) == int(good.sum()):
                centre[good] = cent
    slices = np.empty(len(with_geom))
    for j, i in enumerate(with_geom):
        placement = img.items[i].content.placement
        slices[j] = placement.slice if placement is not None else img.measured[i]
    world = np.full((len(idx), 3 if volume else 2), np.nan)
    by_plane: dict[Plane | None, list[int]] = {}
    for j, i in enumerate(with_geom):
        by_plane.setdefault(img.planes[i], []).append(j)
    for plane, js in by_plane.items():
        sel = np.asarray(js)
        pts = centre[sel]
        if volume:
            pts = np.column_stack([pts, slices[sel]])
        finite = np.isfinite(pts).all(axis=1)
        if not finite.any():
            continue
        try:
            w = frame.pixel_to_world(pts[finite], plane)
            if not volume and crs != "pixel":
                w = frame.world_to_crs(WORLD, w)
            world[sel[finite]] = w
        except (CoordinateError, ValueError, np.linalg.LinAlgError):
            continue
    for j, i in enumerate(with_geom):
        plane = img.planes[i]
        placement = img.items[i].content.placement
        out[i] = Location(
            (float(bounds[j, 0]), float(bounds[j, 1]), float(bounds[j, 2]), float(bounds[j, 3])),
            (float(centre[j, 0]), float(centre[j, 1])),
            placement.slice if volume and placement is not None else None,
            plane if volume else None,
            tuple(float(v) for v in world[j]),
            crs,
        )
    return out


def check_image(
    image_id: str,
    annotations: Iterable[Annotation],
    project: Project,
    frame: ImageFrame,
    options: CheckOptions | None = None,
) -> list[Finding]:
    """Every finding on one image's annotations, in the stable order (``Finding.key``).

    ``project`` gives the taxonomy the labels are checked against; ``frame`` the image's pixel
    grid (and slices, for volumes).
    """
    items = sorted(annotations, key=lambda a: a.id)
    if not items:
        return []
    opt = options or CheckOptions()
    pixel, planes, smin, smax = _to_pixel(items, frame)
    img = _Image(image_id, items, frame, opt, pixel, planes, smin, np.zeros(len(items), bool))
    _labels(img, project)
    _stale(img)
    _geometry(img)
    _volume(img, smin, smax)
    _small_and_thin(img)
    _duplicates_and_overlaps(img)
    locations = _locations(img, [i for i, *_ in img.found])
    findings = []
    for i, code, message, details in img.found:
        a = items[i]
        findings.append(
            Finding(
                code,
                message,
                image_id,
                a.id,
                a.label,
                a.author,
                a.kind,
                locations.get(i),
                details,
            )
        )
    findings.sort(key=lambda f: f.key)
    return findings


# --- selecting and paging --------------------------------------------------------------------


@dataclass(frozen=True)
class FindingFilter:
    """Which findings a listing keeps: any of ``codes``, ``severities``, ``labels`` (a label
    keeps its sub-labels) and ``authors``; empty keeps every value."""

    codes: frozenset[str] = frozenset()
    severities: frozenset[Severity] = frozenset()
    labels: tuple[str, ...] = ()
    authors: frozenset[str] = frozenset()

    def keeps(self, f: Finding) -> bool:
        if self.codes and f.code not in self.codes:
            return False
        if self.severities and f.severity not in self.severities:
            return False
        if self.authors and f.author not in self.authors:
            return False
        if self.labels:
            label = f.label or ""
            if not any(label == x or label.startswith(x + "/") for x in self.labels):
                return False
        return True


def parse_codes(values: Iterable[str]) -> frozenset[str]:
    """Codes from repeated and/or comma-separated values; BadRequest names an unknown one."""
    out = set()
    for value in (v.strip() for text in values for v in text.split(",")):
        if not value:
            continue
        if value not in CODES:
            raise BadRequest(f"unknown check code {value!r}: use {', '.join(sorted(CODES))}")
        out.add(value)
    return frozenset(out)


def parse_severities(values: Iterable[str]) -> frozenset[Severity]:
    out = set()
    for value in (v.strip() for text in values for v in text.split(",")):
        if not value:
            continue
        try:
            out.add(Severity(value))
        except ValueError:
            raise BadRequest(f"severity must be error or warning, not {value!r}") from None
    return frozenset(out)


def encode_cursor(key: SortKey) -> str:
    """An opaque cursor: the key of the last finding of a page."""
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> SortKey:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        image, aid, code, other = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise BadRequest("cursor is not a next_cursor this route gave") from None
    if not (
        isinstance(image, str)
        and isinstance(code, str)
        and isinstance(aid, int)
        and isinstance(other, int)
    ):
        raise BadRequest("cursor is not a next_cursor this route gave")
    return image, aid, code, other
