"""The annotation model: frozen dataclasses, stored in world coordinates.

World coordinates are the image's *storage frame*: the image's own CRS for a GeoTIFF (so that
pixel coordinates round-trip through one affine map), patient LPS millimetres for DICOM (a shape
drawn on a slice is a planar 3D shape). ``annot.features`` converts to and from GeoJSON in any
requested coordinate system; ``annot.frames`` holds the pixel <-> world maps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from annot.errors import ValidationError


class Kind(StrEnum):
    """Annotation types; ``tag`` is an image-level label without geometry."""

    point = "point"
    multipoint = "multipoint"  # keypoints, optionally named
    box = "box"
    polygon = "polygon"  # with holes
    multipolygon = "multipolygon"
    polyline = "polyline"
    mask = "mask"  # a brush mask on the image's pixel grid
    tag = "tag"  # image-level classification; several tags make a multi-label


class Status(StrEnum):
    draft = "draft"
    submitted = "submitted"
    accepted = "accepted"
    rejected = "rejected"


class Plane(StrEnum):
    axial = "axial"
    coronal = "coronal"
    sagittal = "sagittal"


# The GeoJSON geometry type of each kind (a mask's geometry is its footprint).
GEOJSON_TYPE: dict[Kind, str | None] = {
    Kind.point: "Point",
    Kind.multipoint: "MultiPoint",
    Kind.box: "Polygon",
    Kind.polygon: "Polygon",
    Kind.multipolygon: "MultiPolygon",
    Kind.polyline: "LineString",
    Kind.mask: "Polygon",
    Kind.tag: None,
}
KIND_FOR_TYPE = {"Point": Kind.point, "MultiPoint": Kind.multipoint, "Polygon": Kind.polygon}
KIND_FOR_TYPE.update({"MultiPolygon": Kind.multipolygon, "LineString": Kind.polyline})


@dataclass(frozen=True)
class Mask:
    """A binary mask on the image's pixel grid, stored exactly as run lengths.

    The mask covers pixels ``col .. col+width-1`` and ``row .. row+height-1``; ``counts`` are the
    lengths of alternating runs in row-major order, starting with a run of 0s (possibly empty),
    as COCO's uncompressed RLE but row-major.
    """

    col: int
    row: int
    width: int
    height: int
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValidationError("a mask needs a positive width and height")
        if any(c < 0 for c in self.counts) or sum(self.counts) != self.width * self.height:
            raise ValidationError(
                f"mask run lengths must be non-negative and add up to width*height "
                f"({self.width * self.height}), not {sum(self.counts)}"
            )

    @classmethod
    def from_array(cls, array: npt.ArrayLike, col: int = 0, row: int = 0) -> Mask:
        """Encode a 2D boolean array (rows, cols) whose top-left pixel is ``(col, row)``."""
        a = np.asarray(array, dtype=bool)
        if a.ndim != 2 or a.size == 0:
            raise ValidationError("a mask must be a non-empty 2D array")
        flat = a.ravel()
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        edges = np.concatenate([[0], change, [flat.size]])
        runs = np.diff(edges).tolist()
        if flat[0]:
            runs = [0, *runs]
        return cls(col, row, int(a.shape[1]), int(a.shape[0]), tuple(int(r) for r in runs))

    def to_array(self) -> npt.NDArray[np.bool_]:
        values = np.zeros(len(self.counts), dtype=bool)
        values[1::2] = True
        flat = np.repeat(values, self.counts)
        return flat.reshape(self.height, self.width)

    @property
    def area(self) -> int:
        return int(sum(self.counts[1::2]))

    def footprint(self) -> shapely.Polygon:
        """The mask's pixel box (pixel coordinates)."""
        return shapely.box(self.col, self.row, self.col + self.width, self.row + self.height)

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": [self.col, self.row],
            "size": [self.width, self.height],
            "counts": list(self.counts),
        }

    @classmethod
    def from_json(cls, data: Any) -> Mask:
        try:
            col, row = (int(v) for v in data["origin"])
            width, height = (int(v) for v in data["size"])
            counts = tuple(int(c) for c in data["counts"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(
                "properties.mask must be {'origin': [col, row], 'size': [width, height], "
                "'counts': [run lengths, row-major, starting with 0s]}"
            ) from exc
        return cls(col, row, width, height, counts)


@dataclass(frozen=True)
class Placement:
    """Where on a volume a shape was drawn (DICOM): the slice of a plane and its references."""

    slice: int
    plane: Plane
    frame_of_reference_uid: str | None = None
    sop_instance_uid: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "slice": self.slice,
            "plane": self.plane.value,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "sop_instance_uid": self.sop_instance_uid,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Placement:
        return cls(
            int(data["slice"]),
            Plane(data["plane"]),
            data.get("frame_of_reference_uid"),
            data.get("sop_instance_uid"),
        )


@dataclass(frozen=True)
class Content:
    """What an annotation says: everything a client writes.

    ``geometry`` is in the image's storage frame (see the module docstring); it is None for a
    tag. A mask also has a geometry: its pixel footprint in world coordinates (for queries).
    """

    kind: Kind
    label: str
    geometry: BaseGeometry | None
    mask: Mask | None = None
    keypoints: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    placement: Placement | None = None
    status: Status = Status.draft


@dataclass(frozen=True)
class Annotation:
    """A stored annotation: its content plus identity, authorship and version."""

    id: int
    image_id: str
    project: str
    content: Content
    author: str
    created_at: str
    updated_by: str
    updated_at: str
    version: int

    @property
    def kind(self) -> Kind:
        return self.content.kind

    @property
    def label(self) -> str:
        return self.content.label


class Action(StrEnum):
    create = "create"
    update = "update"
    delete = "delete"
    undo = "undo"


@dataclass(frozen=True)
class Change:
    """One entry of an annotation's history: who changed it, when, and what it was before.

    ``before`` is None for a creation (or the undo of a deletion's creation); ``version`` is the
    version the change produced (0 when it deleted the annotation).
    """

    id: int
    annotation_id: int
    image_id: str
    project: str
    action: Action
    user: str
    at: str
    version: int
    before: Annotation | None
    undoes: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """An immutable, named version of a project's annotations (like a git tag)."""

    project: str
    name: str
    created_by: str
    created_at: str
    count: int
    description: str = ""


def bounds3(geometry: BaseGeometry) -> tuple[float, float, float, float, float, float]:
    """``(minx, miny, maxx, maxy, minz, maxz)``; z is 0 for 2D geometries."""
    coords = shapely.get_coordinates(geometry, include_z=True)
    if coords.size == 0:
        raise ValidationError("the geometry is empty")
    lo = coords.min(axis=0)
    hi = coords.max(axis=0)
    minz = 0.0 if np.isnan(lo[2]) else float(lo[2])
    maxz = 0.0 if np.isnan(hi[2]) else float(hi[2])
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]), minz, maxz
