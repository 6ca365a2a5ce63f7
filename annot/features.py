"""GeoJSON <-> annotations, in one place, in any coordinate system an image frame offers.

``content_from_feature`` parses and validates a GeoJSON Feature written in ``crs`` (``pixel``,
``world`` or ``EPSG:n``) and returns its content in the storage frame; ``features_json`` writes
stored annotations back as Feature JSON text in ``crs`` (vectorised: one coordinate transform
for a whole page). Validation happens in the pixel coordinates of the image (of the slice, for
volumes), whatever the coordinate system of the request.

Properties written: ``label`` (required), ``kind`` (default from the geometry type: ``box``,
``mask`` and ``tag`` must be named; a geometry of null is a tag), ``status``, ``attributes``
(a free JSON object), ``keypoints`` (names of a multipoint's points), ``mask`` (``{origin,
size, counts}`` on the pixel grid), and for volumes in pixel coordinates ``slice`` and
``plane``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from annot.errors import BadRequest, InvalidGeometry, ValidationError
from annot.frames import PIXEL, ImageFrame, VolumeFrame
from annot.geometry import (
    Array,
    PointMap,
    lies_on_plane,
    map_coords,
    map_many,
    plane_intersection,
    with_z,
)
from annot.model import KIND_FOR_TYPE, Annotation, Content, Kind, Mask, Placement, Plane, Status
from annot.validation import check_shape

SLICE_TOLERANCE = 1e-6


def _geometry(data: Any) -> BaseGeometry | None:
    if data is None:
        return None
    if not isinstance(data, Mapping) or "type" not in data:
        raise InvalidGeometry("geometry must be a GeoJSON geometry object or null", {})
    try:
        geom = shapely.from_geojson(json.dumps(data, allow_nan=True))
    except (shapely.errors.GEOSException, ValueError, TypeError) as exc:
        reason = f"not a readable GeoJSON geometry: {exc}"
        if "NaN" in str(exc) or "nan" in json.dumps(data, allow_nan=True).lower():
            reason = "coordinates must be finite numbers (no NaN or infinity)"
        raise InvalidGeometry(reason, {"reason": reason}) from None
    if geom.geom_type == "LinearRing":
        raise InvalidGeometry("not a GeoJSON geometry type", {})
    coords = shapely.get_coordinates(geom, include_z=True)
    if coords.size and not np.all(np.isfinite(shapely.get_coordinates(geom))):
        reason = "coordinates must be finite numbers (no NaN or infinity)"
        raise InvalidGeometry(reason, {"reason": reason})
    return geom


def _kind(props: Mapping[str, Any], geom: BaseGeometry | None) -> Kind:
    if "kind" in props:
        try:
            return Kind(props["kind"])
        except ValueError:
            raise BadRequest(f"properties.kind must be one of {[k.value for k in Kind]}") from None
    if props.get("mask") is not None:
        return Kind.mask
    if geom is None:
        return Kind.tag
    kind = KIND_FOR_TYPE.get(geom.geom_type)
    if kind is None:
        raise InvalidGeometry(
            f"{geom.geom_type} geometries are not stored: use Point, MultiPoint, LineString, "
            "Polygon or MultiPolygon",
            {},
        )
    return kind


def _dropping_slice(frame: ImageFrame, plane: Plane | None) -> PointMap:
    def fn(c: Array) -> Array:
        return frame.world_to_pixel(c, plane)[:, :2]

    return fn


def _pixel_to_world(frame: ImageFrame, plane: Plane | None) -> PointMap:
    def fn(c: Array) -> Array:
        return frame.pixel_to_world(c, plane)

    return fn


def _volume_slice(frame: VolumeFrame, props: Mapping[str, Any]) -> tuple[int, Plane]:
    plane_v = props.get("plane")
    try:
        plane = Plane(plane_v) if plane_v is not None else frame.default_plane
    except ValueError:
        raise BadRequest("properties.plane must be axial, coronal or sagittal") from None
    s = props.get("slice")
    if isinstance(s, bool) or not isinstance(s, int | float) or s != int(s):
        raise BadRequest("volumes in pixel coordinates need an integer properties.slice")
    return int(s), plane


def _find_slice(frame: VolumeFrame, geom: BaseGeometry) -> tuple[BaseGeometry, int, Plane]:
    """The plane and slice a 3D world shape lies on; its pixel shape there."""
    coords = shapely.get_coordinates(geom, include_z=True)
    if np.isnan(coords[:, 2]).any():
        raise InvalidGeometry(
            "volume annotations in world coordinates need x, y and z (LPS mm)", {}
        )
    planes = [frame.default_plane, *(p for p in Plane if p is not frame.default_plane)]
    for plane in planes:
        px = frame.world_to_pixel(coords, plane)
        s = px[:, 2]
        if np.ptp(s) <= SLICE_TOLERANCE and abs(s[0] - round(s[0])) <= SLICE_TOLERANCE:
            pixel = map_coords(geom, _dropping_slice(frame, plane), 2)
            return pixel, round(float(s[0])), plane
    reason = "a shape on a volume must lie on one slice of the axial, coronal or sagittal plane"
    raise InvalidGeometry(reason, {"reason": reason})


def content_from_feature(feature: Any, frame: ImageFrame, crs: str) -> Content:
    """Parse, validate and convert a Feature to content in the storage frame.

    Raises ``BadRequest`` (malformed), ``InvalidGeometry`` (with ``repair`` in pixel
    coordinates) or ``ValidationError``.
    """
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise BadRequest("the body must be a GeoJSON Feature")
    props = feature.get("properties")
    if not isinstance(props, Mapping):
        raise BadRequest("a Feature needs properties with at least a label")
    label = props.get("label")
    if not isinstance(label, str) or not label:
        raise BadRequest("properties.label is required (a non-empty string)")
    geom = _geometry(feature.get("geometry"))
    kind = _kind(props, geom)
    try:
        status = Status(props.get("status", "draft"))
    except ValueError:
        raise BadRequest(
            "properties.status must be draft, submitted, accepted or rejected"
        ) from None
    attributes = props.get("attributes", {})
    if not isinstance(attributes, Mapping):
        raise BadRequest("properties.attributes must be a JSON object")
    try:
        json.dumps(attributes, allow_nan=False)
    except ValueError:
        raise BadRequest("properties.attributes must not contain NaN or infinity") from None
    keypoints = props.get("keypoints") or ()
    if not isinstance(keypoints, Sequence) or not all(isinstance(k, str) for k in keypoints):
        raise BadRequest("properties.keypoints must be a list of names")
    if keypoints and kind is not Kind.multipoint:
        raise BadRequest("properties.keypoints go with a multipoint")
    mask = Mask.from_json(props["mask"]) if kind is Kind.mask else None
    if kind is Kind.mask and props.get("mask") is None:
        raise BadRequest("a mask needs properties.mask")
    is_volume = isinstance(frame, VolumeFrame)
    placement: Placement | None = None

    pixel: BaseGeometry | None
    world: BaseGeometry | None
    if kind is Kind.tag:
        if geom is not None:
            raise InvalidGeometry("a tag has no geometry (send geometry: null)", {})
        pixel = world = None
    elif is_volume:
        assert isinstance(frame, VolumeFrame)
        if crs == PIXEL or mask is not None:
            s, plane = _volume_slice(frame, props)
            pixel = mask.footprint() if mask is not None else shapely.force_2d(geom)
        else:
            assert geom is not None
            pixel, s, plane = _find_slice(frame, geom)
        w, h, n = frame.size(plane)
        if not 0 <= s < n:
            reason = f"slice {s} is outside the volume (0..{n - 1} in the {plane.value} plane)"
            raise InvalidGeometry(reason, {"reason": reason})
        check_shape(kind, pixel, w, h, tuple(keypoints))
        if crs == PIXEL or mask is not None:
            world = map_coords(with_z(pixel, s), _pixel_to_world(frame, plane), 3)
        else:
            world = shapely.force_3d(geom)
        for_uid, sop_uid = frame.reference(s, plane)
        placement = Placement(s, plane, for_uid, sop_uid)
    else:
        w, h, _ = frame.size()
        if mask is not None:
            pixel = mask.footprint()
        else:
            assert geom is not None
            if shapely.has_z(geom):
                geom = shapely.force_2d(geom)
            if crs == PIXEL:
                pixel = geom
            else:
                world_in = map_coords(geom, lambda c: frame.crs_to_world(crs, c), 2)
                pixel = map_coords(world_in, frame.world_to_pixel, 2)
        check_shape(kind, pixel, w, h, tuple(keypoints))
        if crs == PIXEL or mask is not None:
            world = map_coords(pixel, frame.pixel_to_world, 2)
        else:
            world = world_in
    return Content(
        kind=kind,
        label=label,
        geometry=world,
        mask=mask,
        keypoints=tuple(keypoints),
        attributes=dict(attributes),
        placement=placement,
        status=status,
    )


def properties(a: Annotation) -> dict[str, Any]:
    c = a.content
    props: dict[str, Any] = {
        "label": c.label,
        "kind": c.kind.value,
        "status": c.status.value,
        "version": a.version,
        "image_id": a.image_id,
        "project": a.project,
        "author": a.author,
        "created_at": a.created_at,
        "updated_by": a.updated_by,
        "updated_at": a.updated_at,
        "attributes": c.attributes,
    }
    if c.keypoints:
        props["keypoints"] = list(c.keypoints)
    if c.mask is not None:
        props["mask"] = c.mask.to_json()
    if c.placement is not None:
        props.update(c.placement.to_json())
    return props


def _to_crs(
    geoms: np.ndarray, frame: ImageFrame, crs: str, planes: Sequence[Plane | None]
) -> np.ndarray:
    out = np.empty(len(geoms), dtype=object)
    if crs != PIXEL:
        if frame.world_dims == 2:
            return map_many(geoms, lambda c: frame.world_to_crs(crs, c), 2)
        return geoms
    groups: dict[Plane | None, list[int]] = {}
    for i, p in enumerate(planes):
        groups.setdefault(p, []).append(i)
    for plane, idx in groups.items():
        out[idx] = map_many(geoms[idx], _dropping_slice(frame, plane), 2)
    return out


def geometry_json(geoms: np.ndarray) -> list[str]:
    """GeoJSON geometry text; polygons' exterior rings counter-clockwise (RFC 7946)."""
    if len(geoms) == 0:
        return []
    oriented = shapely.orient_polygons(geoms, exterior_cw=False)
    return list(shapely.to_geojson(oriented))


def features_json(annotations: Sequence[Annotation], frame: ImageFrame, crs: str) -> list[str]:
    """Each annotation as a GeoJSON Feature (JSON text) in ``crs``."""
    with_geom = [i for i, a in enumerate(annotations) if a.content.geometry is not None]
    geoms = np.array([annotations[i].content.geometry for i in with_geom], dtype=object)
    planes = [(p.plane if (p := annotations[i].content.placement) else None) for i in with_geom]
    texts = geometry_json(_to_crs(geoms, frame, crs, planes))
    geom_text: dict[int, str] = dict(zip(with_geom, texts, strict=True))
    out = []
    for i, a in enumerate(annotations):
        props = json.dumps(properties(a), allow_nan=False)
        out.append(
            f'{{"type":"Feature","id":{a.id},"geometry":{geom_text.get(i, "null")},'
            f'"properties":{props}}}'
        )
    return out


def feature(a: Annotation, frame: ImageFrame, crs: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(features_json([a], frame, crs)[0])
    return result


def repair_json(
    exc: InvalidGeometry, frame: ImageFrame, crs: str, plane_slice: tuple[Plane, int] | None
) -> dict[str, Any] | None:
    """The suggested repair of an invalid shape as a GeoJSON geometry in ``crs``."""
    repair = exc.repair
    if not isinstance(repair, BaseGeometry):
        return None
    try:
        if crs != PIXEL:
            if isinstance(frame, VolumeFrame):
                if plane_slice is None:
                    return None
                plane, s = plane_slice
                repair = map_coords(with_z(repair, s), lambda c: frame.pixel_to_world(c, plane), 3)
            else:
                repair = map_coords(repair, frame.pixel_to_world, 2)
                repair = map_coords(repair, lambda c: frame.world_to_crs(crs, c), 2)
        oriented = shapely.orient_polygons(repair, exterior_cw=False)
        result: dict[str, Any] = json.loads(shapely.to_geojson(oriented))
        return result
    except (ValidationError, BadRequest, ValueError):
        return None


def view_features(
    annotations: Sequence[Annotation],
    frame: VolumeFrame,
    crs: str,
    slice_: int,
    plane: Plane,
    tol: float = 1e-3,
) -> list[str]:
    """Annotations of a volume as seen on one slice of ``plane``.

    Shapes drawn on that slice come back whole; shapes drawn on another plane come back as
    their intersection with this slice (polygons as line segments, polylines as points), with
    ``properties.intersection`` true. Shapes that do not reach the slice are left out.
    """
    point, normal = frame.slice_plane(slice_, plane)
    out: list[str] = []
    for a in annotations:
        c = a.content
        if c.geometry is None:
            continue
        p = c.placement
        if p is not None and p.plane is plane and p.slice == slice_:
            out.extend(features_json([a], frame, crs))
            continue
        if lies_on_plane(c.geometry, point, normal, tol):
            out.extend(features_json([a], frame, crs))
            continue
        cut = plane_intersection(c.geometry, point, normal, tol)
        if cut is None:
            continue
        if crs == PIXEL:
            cut = map_coords(cut, _dropping_slice(frame, plane), 2)
        props = properties(a)
        props.update(intersection=True, slice=slice_, plane=plane.value)
        out.append(
            f'{{"type":"Feature","id":{a.id},"geometry":{shapely.to_geojson(cut)},'
            f'"properties":{json.dumps(props, allow_nan=False)}}}'
        )
    return out


def finite(value: float) -> bool:
    return math.isfinite(value)
