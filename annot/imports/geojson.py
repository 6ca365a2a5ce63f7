"""GeoJSON import: a FeatureCollection in any CRS, checked feature by feature, stored all at once.

The source CRS is the ``crs`` argument, else the file's ``crs`` member (``urn:ogc:def:crs:EPSG::n``,
``EPSG:n``, CRS84), else WGS84 (RFC 7946). Each feature is converted to the image's storage
frame and validated (``annot.features.content_from_feature``: shape checks in pixels) and its
label checked against the project's taxonomy. ``plan`` reports what would be created and every
rejected feature with its reason; ``apply`` stores the plan through the store's bulk ``add``
(all or nothing), and only when nothing was rejected.

Properties: ``label`` (or the ``default_label`` given), ``kind``, ``status``, ``attributes``,
``keypoints``, ``mask``, ``slice``, ``plane`` as the annotation API reads them. Any other
property (``osm_id``, ``building``, ...) is kept in ``attributes``; the metadata an export
writes (id, version, author, timestamps, image, project) is not imported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
import shapely.geometry

from annot.errors import AnnotError, BadRequest, TooLarge, UnknownLabel, ValidationError
from annot.features import content_from_feature
from annot.frames import PIXEL, WORLD, GeoFrame, ImageFrame
from annot.model import Annotation, Content
from annot.taxonomy import Label, Project

MAX_FEATURES = 200_000
CONTENT_KEYS = {"label", "kind", "status", "attributes", "keypoints", "mask", "slice", "plane"}
EXPORT_METADATA = {
    "id",
    "version",
    "image_id",
    "project",
    "author",
    "created_at",
    "updated_by",
    "updated_at",
    "label_path",
    "frame_of_reference_uid",
    "sop_instance_uid",
}
_URN = re.compile(r"^urn:ogc:def:crs:EPSG:[0-9.]*:(\d+)$", re.IGNORECASE)


def parse_source_crs(value: str | None) -> str | None:
    """A CRS name (``urn:ogc:def:crs:EPSG::n``, ``EPSG:n``, CRS84, ``world``, ``pixel``) as
    the frames take it (``world``, ``pixel`` or ``EPSG:n``); None when not given."""
    if value is None or not str(value).strip():
        return None
    v = str(value).strip()
    low = v.lower()
    if low in (WORLD, "wgs84", "crs84", "ogc:crs84") or low.endswith(("crs:ogc:1.3:crs84",)):
        return WORLD
    if low == PIXEL:
        return PIXEL
    m = _URN.match(v)
    code = m.group(1) if m else (v[5:] if low.startswith("epsg:") and v[5:].isdigit() else None)
    if code is None:
        raise BadRequest(f"unknown crs {v!r}: use EPSG:n, urn:ogc:def:crs:EPSG::n or CRS84")
    return WORLD if code == "4326" else f"EPSG:{code}"


def member_crs(data: Mapping[str, Any]) -> str | None:
    """The CRS named in a FeatureCollection's ``crs`` member (GeoJSON 2008), if any."""
    crs = data.get("crs")
    if crs is None:
        return None
    try:
        name = crs["properties"]["name"]
    except (KeyError, TypeError):
        raise BadRequest("the crs member must be {type: name, properties: {name: ...}}") from None
    return parse_source_crs(str(name))


@dataclass(frozen=True)
class Rejection:
    index: int  # position of the feature in the file
    feature_id: Any
    label: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.feature_id,
            "label": self.label,
            "reason": self.reason,
        }


@dataclass
class ImportPlan:
    """What an import would do: the contents to create, the labels an open taxonomy gains, and
    the features rejected."""

    crs: str
    contents: list[Content] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    new_labels: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def to_json(
        self, created: list[Annotation] | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for c in self.contents:
            counts[c.label] = counts.get(c.label, 0) + 1
        out: dict[str, Any] = {
            "dry_run": dry_run,
            "crs": self.crs,
            "valid": len(self.contents),
            "would_create": len(self.contents) if self.ok else 0,
            "created": len(created) if created is not None else 0,
            "labels": counts,
            "new_labels": self.new_labels,
            "rejected": [r.to_json() for r in self.rejected],
        }
        if created is not None:
            out["ids"] = [a.id for a in created]
        return out


def _normalise(feature: Any, default_label: str | None) -> Any:
    """The feature with its label set and foreign properties moved into ``attributes``."""
    if not isinstance(feature, Mapping):
        return feature
    props = feature.get("properties")
    props = dict(props) if isinstance(props, Mapping) else {}
    out = {k: v for k, v in props.items() if k in CONTENT_KEYS}
    attributes = props.get("attributes")
    extra = {k: v for k, v in props.items() if k not in CONTENT_KEYS | EXPORT_METADATA}
    if extra:
        merged = dict(extra)
        if isinstance(attributes, Mapping):
            merged.update(attributes)
        out["attributes"] = merged
    if not out.get("label") and default_label:
        out["label"] = default_label
    return {**feature, "properties": out}


def rejoin_antimeridian(feature: Any) -> Any:
    """A polygon (``kind`` polygon or box) that an RFC 7946 export split at the antimeridian
    into a MultiPolygon, joined again (longitudes west of it unwrapped past 180)."""
    if not isinstance(feature, Mapping):
        return feature
    props = feature.get("properties") or {}
    geom = feature.get("geometry")
    if props.get("kind") not in ("polygon", "box") or not isinstance(geom, Mapping):
        return feature
    if geom.get("type") != "MultiPolygon":
        return feature
    try:
        shape = shapely.geometry.shape(geom)
    except (ValueError, TypeError, AttributeError, shapely.errors.GEOSException):
        return feature
    minx, _, maxx, _ = shape.bounds
    if not (minx >= -180.0 and maxx <= 180.0 and maxx - minx > 180.0):
        return feature

    def unwrap(c: np.ndarray) -> np.ndarray:
        out = c.copy()
        out[:, 0] = np.where(out[:, 0] < 0, out[:, 0] + 360.0, out[:, 0])
        return out

    joined = shapely.union_all(shapely.transform(shape, unwrap)).normalize()
    if joined.geom_type != "Polygon":
        return feature
    return {**feature, "geometry": shapely.geometry.mapping(joined)}


def plan(
    data: Any,
    frame: ImageFrame,
    project: Project,
    crs: str | None = None,
    default_label: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportPlan:
    """Check every feature of a FeatureCollection; nothing is stored."""
    if not isinstance(data, Mapping) or data.get("type") != "FeatureCollection":
        raise BadRequest("the file must be a GeoJSON FeatureCollection")
    features = data.get("features")
    if not isinstance(features, list):
        raise BadRequest("features must be a list")
    if len(features) > MAX_FEATURES:
        raise TooLarge(f"at most {MAX_FEATURES} features per import")
    source = parse_source_crs(crs) or member_crs(data) or WORLD
    if source not in (WORLD, PIXEL) and not isinstance(frame, GeoFrame):
        raise BadRequest(f"a file in {source} needs a georeferenced image")
    result = ImportPlan(source)
    labels: dict[str, Label] = dict(project.labels)
    for n, raw in enumerate(features):
        feature = _normalise(raw, default_label)
        if source == WORLD:
            feature = rejoin_antimeridian(feature)
        fid = raw.get("id") if isinstance(raw, Mapping) else None
        props = feature.get("properties") if isinstance(feature, Mapping) else None
        label = props.get("label") if isinstance(props, Mapping) else None
        try:
            content = content_from_feature(feature, frame, source)
            current = Project(project.name, project.instructions, project.locked, labels)
            for new in current.resolve(content.label, content.kind):
                labels[new.name] = new
                result.new_labels.append(new.name)
        except (ValidationError, BadRequest, UnknownLabel) as exc:
            result.rejected.append(
                Rejection(n, fid, label if isinstance(label, str) else None, str(exc))
            )
        except AnnotError as exc:  # e.g. a point outside the CRS's area of use
            result.rejected.append(Rejection(n, fid, None, str(exc)))
        else:
            result.contents.append(content)
        if progress is not None:
            progress(1)
    return result


def apply(
    result: ImportPlan, store: Any, image_id: str, project: str, user: str
) -> list[Annotation]:
    """Store a plan's contents, all or none; a plan with rejections stores nothing."""
    if not result.ok:
        first = result.rejected[0]
        raise ValidationError(
            f"{len(result.rejected)} feature(s) rejected, nothing stored; first: feature "
            f"{first.index}: {first.reason}",
            {"rejected": [r.to_json() for r in result.rejected]},
        )
    if not result.contents:
        return []
    created: list[Annotation] = store.add(image_id, project, result.contents, user)
    return created


__all__ = ["ImportPlan", "Rejection", "apply", "member_crs", "parse_source_crs", "plan"]
