"""DICOM RT Structure Set (RTSTRUCT) import: ROI contours as 3D annotations on a volume.

Each ROI of ``StructureSetROISequence`` gives a label: its ROIName, cleaned to a valid label
path (``/`` becomes ``-``, control characters are dropped, surrounding spaces stripped, at most
100 characters; an empty name becomes ``ROI-<number>``). The ROI number and name, its
RTROIInterpretedType and ROIObservationLabel (``RTROIObservationsSequence``), its colour
(ROIDisplayColor, as ``[r, g, b]`` and ``#rrggbb``) and the contour's geometric type are kept
in ``attributes``.

ContourData are patient LPS millimetre triplets, so every contour becomes a feature in world
coordinates and ``annot.features.content_from_feature`` finds the slice it lies on (and the
SOP instance it references). CLOSED_PLANAR contours are polygons, OPEN_PLANAR and
OPEN_NONPLANAR polylines, POINT points (several points: a multipoint). A contour that lies
within ``PLANE_TOLERANCE_MM`` of a slice of the acquisition plane is projected onto it (DICOM
decimal strings round coordinates); one further off (between slices, tilted, outside the
volume) is left as it is and rejected by the import plan, and the source summary says why.

Holes: the closed contours of one ROI on one slice are nested by even-odd containment (in the
slice's pixel plane, with shapely): a contour inside an even number of others is an outer
boundary, one inside an odd number is a hole of the smallest contour holding it. Each outer
boundary with its holes is one polygon. A keyhole contour (one ring holding a hole, joined to
its outer boundary by a zero-width channel, which makes the ring touch itself) is split with
``shapely.make_valid`` into its outer ring and hole(s), which then nest like separate contours;
it counts as a keyhole only when that gives one polygon whose area is the ring's signed
(shoelace) area and the rest (the channel) has no area; its rings are mapped back to LPS
from the slice's pixel plane (float round-off only). Any other self-crossing contour is left
as it is and the shape checks reject it with their reason: nothing is repaired silently.

The structure set must belong to the image: its referenced frame of reference must be the
image's, or else (some writers put a fresh UID there) it must reference the image's series;
otherwise ``RtMismatch`` (a 422). Nothing is stored here: the features go through
``annot.imports.geojson.plan`` like any import.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from annot.errors import BadRequest, ValidationError
from annot.frames import VolumeFrame

PLANE_TOLERANCE_MM = 0.01  # DICOM decimal strings round positions to about 1e-4 mm
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Points = npt.NDArray[np.float64]


class RtMismatch(ValidationError):
    """The structure set does not belong to the image (frame of reference and series)."""


@dataclass(frozen=True)
class RtTarget:
    """The volume a structure set is imported onto."""

    frame: VolumeFrame
    series_instance_uid: str | None
    frame_of_reference_uid: str | None
    sop_instance_uids: tuple[str | None, ...]  # per slice of the acquisition plane


@dataclass
class RoiCount:
    number: int
    name: str
    label: str
    color: str | None
    interpreted_type: str
    contours: int = 0
    annotations: int = 0
    holes: int = 0
    keyholes: int = 0
    slices: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "roi_number": self.number,
            "roi_name": self.name,
            "label": self.label,
            "color": self.color,
            "interpreted_type": self.interpreted_type,
            "contours": self.contours,
            "annotations": self.annotations,
            "holes": self.holes,
            "keyholes": self.keyholes,
            "slices": sorted(set(self.slices)),
        }


@dataclass
class RtImport:
    """The features read from a structure set and what was found per ROI."""

    features: list[dict[str, Any]]
    rois: list[RoiCount]
    series_instance_uid: str
    referenced_series: list[str]
    frame_of_reference: str  # "match" or the note on how the reference was accepted
    # contours on no slice of the acquisition plane, and why: the plan rejects them (unless
    # one lies on a slice of the coronal or sagittal plane, where it is placed)
    off_slice: list[dict[str, Any]]
    notes: list[str]

    def collection(self) -> dict[str, Any]:
        return {"type": "FeatureCollection", "features": self.features}

    def summary(self) -> dict[str, Any]:
        return {
            "format": "rtstruct",
            "series_instance_uid": self.series_instance_uid,
            "referenced_series": self.referenced_series,
            "frame_of_reference": self.frame_of_reference,
            "rois": [r.to_json() for r in self.rois],
            "off_slice": self.off_slice,
            "notes": self.notes,
        }


def clean_label(name: str, number: int) -> str:
    """A valid label path for an ROI name (``/`` would make a hierarchy: it becomes ``-``)."""
    text = _CONTROL.sub("", name).replace("/", "-").strip()[:100].strip()
    return text or f"ROI-{number}"


def _read(body: bytes) -> Any:
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(body))
        sop_class = str(ds.get("SOPClassUID", ""))
        modality = str(ds.get("Modality", ""))
    except Exception as exc:  # pydicom raises many kinds for damaged files
        raise BadRequest(f"the file is not a readable DICOM file: {exc}") from None
    if sop_class != RT_STRUCTURE_SET_STORAGE and modality != "RTSTRUCT":
        raise BadRequest(
            f"the file is not an RT Structure Set (SOP class {sop_class or 'none'}, "
            f"modality {modality or 'none'})"
        )
    missing = [
        name for name in ("StructureSetROISequence", "ROIContourSequence") if not ds.get(name)
    ]
    if missing:
        raise BadRequest(
            f"the structure set has no {' and no '.join(missing)} (an empty or truncated file?)"
        )
    return ds


def _color(value: Any) -> tuple[list[int], str] | None:
    try:
        rgb = [int(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        return None
    return rgb, "#{:02x}{:02x}{:02x}".format(*rgb)


def _references(ds: Any) -> tuple[list[str], list[str]]:
    """The frames of reference and the series a structure set references."""
    frames: list[str] = []
    series: list[str] = []
    for ref in ds.get("ReferencedFrameOfReferenceSequence") or []:
        if ref.get("FrameOfReferenceUID"):
            frames.append(str(ref.FrameOfReferenceUID))
        for study in ref.get("RTReferencedStudySequence") or []:
            for s in study.get("RTReferencedSeriesSequence") or []:
                if s.get("SeriesInstanceUID"):
                    series.append(str(s.SeriesInstanceUID))
    for roi in ds.get("StructureSetROISequence") or []:
        uid = roi.get("ReferencedFrameOfReferenceUID")
        if uid and str(uid) not in frames:
            frames.append(str(uid))
    return frames, series


def _check_reference(ds: Any, target: RtTarget) -> tuple[list[str], str]:
    """The referenced series and how the reference matched; raises ``RtMismatch``."""
    frames, series = _references(ds)
    image_for, image_series = target.frame_of_reference_uid, target.series_instance_uid
    if image_for is not None and image_for in frames:
        return series, "match"
    if image_series is not None and image_series in series:
        if not frames:
            return series, "the structure set names no frame of reference; its series matches"
        return series, (
            f"the structure set's frame of reference ({', '.join(frames)}) is not the image's "
            f"({image_for}), but it references the image's series: accepted"
        )
    raise RtMismatch(
        f"the structure set does not belong to this image: it references frame of reference "
        f"{', '.join(frames) or 'none'} and series {', '.join(series) or 'none'}, the image is "
        f"frame of reference {image_for} in series {image_series}",
        {"referenced_frames_of_reference": frames, "referenced_series": series},
    )


def _contour_points(item: Any, roi: int, n: int) -> Points:
    try:
        values = np.asarray([float(v) for v in item.ContourData], dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        values = np.zeros(1)
    if values.size < 3 or values.size % 3 or not np.all(np.isfinite(values)):
        raise BadRequest(f"contour {n + 1} of ROI {roi} has no valid ContourData (x, y, z mm)")
    return values.reshape(-1, 3)


def _on_slice(frame: VolumeFrame, pts: Points) -> tuple[int | None, Points, str | None]:
    """The acquisition-plane slice the points lie on, the points projected onto it, or why not."""
    plane = frame.default_plane
    px = frame.world_to_pixel(pts, plane)
    s = px[:, 2]
    k = round(float(np.median(s)))
    origin, normal = frame.slice_plane(k, plane)
    off = (pts - origin) @ normal
    n = frame.size(plane)[2]
    if np.abs(off).max() > PLANE_TOLERANCE_MM:
        spread = float(np.ptp(off))
        if spread > PLANE_TOLERANCE_MM:
            return (
                None,
                pts,
                (
                    f"not in one {plane.value} slice: its points lie {spread:.3g} mm apart "
                    "across the slices (tilted or non-planar)"
                ),
            )
        return (
            None,
            pts,
            (f"between {plane.value} slices: {float(off.mean()):+.3g} mm off slice {k}"),
        )
    if not 0 <= k < n:
        return None, pts, f"at {plane.value} slice {k}, outside the volume (0..{n - 1})"
    return k, pts - np.outer(off, normal), None


def _nest(rings: list[Points], frame: VolumeFrame) -> list[tuple[int, list[int]]]:
    """Even-odd nesting of closed rings on one slice: (outer ring, its holes) by index."""
    plane = frame.default_plane
    flat = [
        shapely.make_valid(shapely.Polygon(frame.world_to_pixel(r, plane)[:, :2])) for r in rings
    ]
    holders = [
        [
            j
            for j, outer in enumerate(flat)
            if j != i and outer.area > inner.area and outer.contains(inner)
        ]
        for i, inner in enumerate(flat)
    ]
    outers = [i for i, h in enumerate(holders) if len(h) % 2 == 0]
    holes: dict[int, list[int]] = {i: [] for i in outers}
    for i, h in enumerate(holders):
        if len(h) % 2:  # a hole of the smallest outer boundary holding it
            owner = min((j for j in h if j in holes), key=lambda j: flat[j].area, default=None)
            if owner is None:  # improper nesting: keep it as a shape of its own
                holes[i] = []
            else:
                holes[owner].append(i)
    return [(i, holes[i]) for i in sorted(holes)]


def _keyhole(pts: Points, k: int, frame: VolumeFrame) -> list[Points] | None:
    """The outer ring and holes of a keyhole contour on slice ``k``; None if it is not one."""
    plane = frame.default_plane
    flat = frame.world_to_pixel(pts, plane)[:, :2]
    ring = shapely.Polygon(flat)
    if ring.is_valid or len(flat) < 4:
        return None
    x, y = flat[:, 0], flat[:, 1]
    signed = abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2
    parts = shapely.get_parts(shapely.make_valid(ring))
    polygons = [g for g in parts if g.geom_type == "Polygon"]
    others = [g for g in parts if g.geom_type != "Polygon"]
    if len(polygons) != 1 or not polygons[0].interiors or any(g.area > 0 for g in others):
        return None
    polygon = polygons[0]
    if abs(polygon.area - signed) > 1e-9 * max(signed, 1.0):
        return None
    out = []
    for r in [polygon.exterior, *polygon.interiors]:
        xy = np.asarray(r.coords)[:-1]
        out.append(frame.pixel_to_world(np.column_stack([xy, np.full(len(xy), k)]), plane))
    return out


def _closed(pts: Points) -> list[list[float]]:
    ring: list[list[float]] = pts.tolist()
    if ring and ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


def _sop_refs(item: Any) -> list[str]:
    return [
        str(ref.ReferencedSOPInstanceUID)
        for ref in item.get("ContourImageSequence") or []
        if ref.get("ReferencedSOPInstanceUID")
    ]


def read_rtstruct(body: bytes, target: RtTarget) -> RtImport:
    """The features of a structure set's contours on ``target``; nothing is stored."""
    ds = _read(body)
    referenced, how = _check_reference(ds, target)
    frame = target.frame
    rois: dict[int, RoiCount] = {}
    extras: dict[int, dict[str, Any]] = {}
    for roi in ds.get("StructureSetROISequence") or []:
        try:
            number = int(roi.ROINumber)
        except (AttributeError, TypeError, ValueError):
            raise BadRequest("an ROI of StructureSetROISequence has no ROINumber") from None
        name = str(roi.get("ROIName") or "")
        rois[number] = RoiCount(number, name, clean_label(name, number), None, "")
        extras[number] = {"roi_number": number, "roi_name": name}
    for obs in ds.get("RTROIObservationsSequence") or []:
        number = int(obs.get("ReferencedROINumber") or -1)
        if number in rois:
            kind = str(obs.get("RTROIInterpretedType") or "")
            rois[number].interpreted_type = kind
            extras[number]["rt_roi_interpreted_type"] = kind
            if obs.get("ROIObservationLabel"):
                extras[number]["roi_observation_label"] = str(obs.ROIObservationLabel)
    features: list[dict[str, Any]] = []
    off_slice: list[dict[str, Any]] = []
    notes: list[str] = []
    if how != "match":
        notes.append(how)
    known_sops = {u for u in target.sop_instance_uids if u}
    missing_sops: set[str] = set()
    elsewhere: list[str] = []  # contours referencing another image than their slice's
    series_uid = str(ds.get("SeriesInstanceUID") or "")

    def feature(
        number: int, contours: list[int], kind: str, geometry: dict[str, Any], extra: Any
    ) -> None:
        count = rois[number]
        attributes = dict(extras[number])
        if count.color is not None:
            attributes["roi_display_color"] = extra["rgb"]
            attributes["color"] = count.color
        attributes.update(
            {
                "contour_geometric_type": extra["type"],
                "contour_numbers": [c + 1 for c in contours],
                "rtstruct_series_instance_uid": series_uid,
            }
        )
        if extra["sops"]:
            attributes["referenced_sop_instance_uids"] = extra["sops"]
        ident = f"ROI {number} ({count.name}) contour {', '.join(str(c + 1) for c in contours)}"
        features.append(
            {
                "type": "Feature",
                "id": ident,
                "geometry": geometry,
                "properties": {"label": count.label, "kind": kind, "attributes": attributes},
            }
        )

    for roi_contour in ds.get("ROIContourSequence") or []:
        number = int(roi_contour.get("ReferencedROINumber") or -1)
        if number not in rois:
            raise BadRequest(f"ROIContourSequence names ROI {number}, not described")
        count = rois[number]
        rgb = _color(roi_contour.get("ROIDisplayColor"))
        if rgb is not None:
            count.color = rgb[1]
        base = {"rgb": rgb[0] if rgb else None}
        # closed contours per slice, to nest them into polygons with holes
        rings: dict[int, list[tuple[int, Points, list[str]]]] = {}
        for n, item in enumerate(roi_contour.get("ContourSequence") or []):
            pts = _contour_points(item, number, n)
            kind = str(item.get("ContourGeometricType") or "").upper()
            sops = _sop_refs(item)
            missing_sops.update(s for s in sops if s not in known_sops)
            count.contours += 1
            k, placed, why = _on_slice(frame, pts)
            if why is not None:
                off_slice.append(
                    {"roi_number": number, "roi_name": count.name, "contour": n + 1,
                     "reason": f"contour {n + 1} of ROI {number} ({count.name}) lies {why}"}
                )  # fmt: skip
            else:
                pts = placed
            extra = base | {"type": kind, "sops": sops}
            expected = target.sop_instance_uids[k] if k is not None else None
            if sops and expected is not None and expected not in sops:
                elsewhere.append(f"contour {n + 1} of ROI {number}")
            if kind == "CLOSED_PLANAR" and k is not None:
                split = _keyhole(pts, k, frame)
                count.keyholes += split is not None
                for part in split or [pts]:
                    rings.setdefault(k, []).append((n, part, sops))
            elif kind == "CLOSED_PLANAR":  # the plan rejects it (not on a slice)
                geom = {"type": "Polygon", "coordinates": [_closed(pts)]}
                feature(number, [n], "polygon", geom, extra)
            elif kind in ("OPEN_PLANAR", "OPEN_NONPLANAR"):
                geom = {"type": "LineString", "coordinates": pts.tolist()}
                feature(number, [n], "polyline", geom, extra)
            elif kind == "POINT":
                if len(pts) == 1:
                    geom = {"type": "Point", "coordinates": pts[0].tolist()}
                    feature(number, [n], "point", geom, extra)
                else:
                    geom = {"type": "MultiPoint", "coordinates": pts.tolist()}
                    feature(number, [n], "multipoint", geom, extra)
            else:
                raise BadRequest(
                    f"contour {n + 1} of ROI {number} has ContourGeometricType {kind or 'none'}"
                    ": expected CLOSED_PLANAR, OPEN_PLANAR, OPEN_NONPLANAR or POINT"
                )
            if k is not None:
                count.slices.append(k)
        for k in sorted(rings):
            group = rings[k]
            for outer, holes in _nest([pts for _, pts, _ in group], frame):
                members = [outer, *holes]
                coordinates = [_closed(group[i][1]) for i in members]
                sops = sorted({s for i in members for s in group[i][2]})
                extra = base | {"type": "CLOSED_PLANAR", "sops": sops}
                geom = {"type": "Polygon", "coordinates": coordinates}
                numbers = sorted({group[i][0] for i in members})
                feature(number, numbers, "polygon", geom, extra)
                count.holes += len(holes)
    for f in features:
        rois[int(f["properties"]["attributes"]["roi_number"])].annotations += 1
    if missing_sops:
        notes.append(
            f"{len(missing_sops)} referenced image(s) are not in this series: "
            + ", ".join(sorted(missing_sops)[:10])
        )
    if elsewhere:
        notes.append(
            f"{len(elsewhere)} contour(s) reference another image than the slice they lie on "
            f"(placed by their coordinates): {', '.join(elsewhere[:10])}"
        )
    return RtImport(
        features,
        [rois[k] for k in sorted(rois)],
        series_uid,
        referenced,
        how,
        off_slice,
        notes,
    )


def target_of(frame: Any, extra: Mapping[str, Any]) -> RtTarget:
    """The import target from an image's frame and catalog metadata (``extra``)."""
    if not isinstance(frame, VolumeFrame):
        raise BadRequest(
            "format=rtstruct needs a DICOM volume: a 2D image imports geojson, gpkg, fgb or coco"
        )
    plane = frame.default_plane
    sops = tuple(frame.reference(k, plane)[1] for k in range(frame.size(plane)[2]))
    return RtTarget(
        frame,
        extra.get("series_instance_uid") or None,
        extra.get("frame_of_reference_uid") or None,
        sops,
    )


__all__ = ["RtImport", "RtMismatch", "RtTarget", "clean_label", "read_rtstruct", "target_of"]
