"""DICOM Segmentation import (highdicom): one mask annotation per segment per slice of a volume.

The SEG must share the target image's frame of reference (else ``SegMismatch``, a 422); when
neither names one, its referenced series must be the image's series. Each frame is placed by
its own ImagePositionPatient, ImageOrientationPatient and PixelSpacing, never by its frame
number: the position of its first pixel is mapped onto the volume, which gives the slice and
the pixel offset of the frame. A frame whose pixels do not fall on the image's pixel grid
(another orientation or spacing, or off the slices) is refused: nothing is resampled.

BINARY frames are masks as they are; FRACTIONAL frames are thresholded at 0.5 (a pixel is
inside when its value is at least half of MaximumFractionalValue); LABELMAP frames give each
segment the pixels holding its number. The masks of one segment on one slice are united and
stored as one ``mask`` annotation, cropped to their bounding box.

The label is the segment's label (a locked taxonomy must know it; an open one adds it); the
segment number, label and coded concepts (property type and category) are kept in
``attributes``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from annot.errors import BadRequest, ValidationError
from annot.frames import VolumeFrame
from annot.model import Mask

FRACTIONAL_THRESHOLD = 0.5
GRID_TOLERANCE = 0.01  # pixels: DICOM decimal strings round positions to about 1e-4 mm


class SegMismatch(ValidationError):
    """The SEG does not belong to the image (frame of reference, series or pixel grid)."""


@dataclass(frozen=True)
class SegTarget:
    """The image a SEG is imported onto."""

    frame: VolumeFrame
    series_instance_uid: str | None
    frame_of_reference_uid: str | None


@dataclass
class SegmentCount:
    number: int
    segment_label: str
    label: str
    property_type: dict[str, str]
    annotations: int = 0
    pixels: int = 0
    slices: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "segment_number": self.number,
            "segment_label": self.segment_label,
            "label": self.label,
            "property_type": self.property_type,
            "annotations": self.annotations,
            "pixels": self.pixels,
            "slices": self.slices,
        }


@dataclass
class SegImport:
    """The features read from a SEG and what was found per segment."""

    features: list[dict[str, Any]]
    segments: list[SegmentCount]
    segmentation_type: str
    series_instance_uid: str
    referenced_series: list[str]
    threshold: float | None
    empty_frames: int

    def collection(self) -> dict[str, Any]:
        return {"type": "FeatureCollection", "features": self.features}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": "dicom-seg",
            "segmentation_type": self.segmentation_type,
            "series_instance_uid": self.series_instance_uid,
            "referenced_series": self.referenced_series,
            "empty_frames": self.empty_frames,
            "segments": [s.to_json() for s in self.segments],
        }
        if self.threshold is not None:
            out["fractional_threshold"] = self.threshold
            out["note"] = (
                f"fractional values were thresholded at {self.threshold}: a pixel is inside "
                "when its value is at least half of MaximumFractionalValue"
            )
        return out


def _code(concept: Any) -> dict[str, str]:
    return {
        "scheme": str(concept.scheme_designator),
        "value": str(concept.value),
        "meaning": str(concept.meaning),
    }


def _read(body: bytes) -> Any:
    import highdicom as hd

    try:
        return hd.seg.segread(io.BytesIO(body))
    except Exception as exc:  # pydicom and highdicom raise many kinds for damaged files
        raise BadRequest(f"the file is not a readable DICOM Segmentation: {exc}") from None


def _item(seg: Any, index: int, sequence: str) -> Any:
    """The item of a functional-group ``sequence`` for frame ``index`` (per-frame, else shared)."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence")
    shared = seg.get("SharedFunctionalGroupsSequence")
    groups = []
    if per_frame is not None and index < len(per_frame):
        groups.append(per_frame[index])
    if shared:
        groups.append(shared[0])
    for group in groups:
        found = group.get(sequence)
        if found:
            return found[0]
    return None


def _floats(value: Any, n: int, what: str, index: int) -> npt.NDArray[np.float64]:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise BadRequest(f"frame {index + 1} of the SEG has no valid {what}")
    return out


def _check_reference(seg: Any, target: SegTarget) -> list[str]:
    """The series the SEG references; raises ``SegMismatch`` if it is not on this image."""
    referenced = [str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence") or []]
    seg_for = str(seg.get("FrameOfReferenceUID") or "") or None
    if seg_for is not None and target.frame_of_reference_uid is not None:
        if seg_for != target.frame_of_reference_uid:
            raise SegMismatch(
                f"the SEG's frame of reference {seg_for} is not the image's "
                f"({target.frame_of_reference_uid}): it segments another acquisition",
                {"seg_frame_of_reference_uid": seg_for, "referenced_series": referenced},
            )
    elif target.series_instance_uid not in referenced:
        raise SegMismatch(
            "the SEG has no frame of reference matching the image's and does not reference "
            f"its series {target.series_instance_uid}",
            {"referenced_series": referenced},
        )
    return referenced


def _placement(
    seg: Any, index: int, frame: VolumeFrame, shape: tuple[int, int, int]
) -> tuple[int, int, int]:
    """``(slice, col offset, row offset)`` of SEG frame ``index`` on the volume's pixel grid."""
    pos = _item(seg, index, "PlanePositionSequence")
    ori = _item(seg, index, "PlaneOrientationSequence")
    meas = _item(seg, index, "PixelMeasuresSequence")
    if pos is None or ori is None or meas is None:
        raise BadRequest(f"frame {index + 1} of the SEG has no plane position/orientation")
    ipp = _floats(pos.get("ImagePositionPatient"), 3, "ImagePositionPatient", index)
    iop = _floats(ori.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", index)
    row_step, col_step = _floats(meas.get("PixelSpacing"), 2, "PixelSpacing", index)
    # the first pixel's centre, one pixel along its row and one down its column, in LPS
    world = np.stack([ipp, ipp + iop[:3] * col_step, ipp + iop[3:] * row_step])
    px = frame.world_to_pixel(world, frame.default_plane)
    col, row, slice_ = px[0, 0] - 0.5, px[0, 1] - 0.5, px[0, 2]
    steps = px[1:] - px[0]
    expected = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    on_grid = np.abs(steps - expected).max() <= GRID_TOLERANCE and all(
        abs(v - round(v)) <= GRID_TOLERANCE for v in (col, row, slice_)
    )
    if not on_grid:
        raise SegMismatch(
            f"frame {index + 1} of the SEG is not on the image's pixel grid (another "
            "orientation or pixel spacing, or between slices): resampling is not supported",
            {"frame": index + 1, "image_position_patient": ipp.tolist()},
        )
    k = round(slice_)
    if not 0 <= k < shape[2]:
        raise SegMismatch(
            f"frame {index + 1} of the SEG lies at slice {k}, outside the volume "
            f"(0..{shape[2] - 1})",
            {"frame": index + 1, "slice": k},
        )
    return k, round(col), round(row)


def _stored(seg: Any, index: int) -> npt.NDArray[Any]:
    try:
        return np.asarray(seg.get_stored_frame(index, as_index=True))
    except Exception as exc:  # a truncated or damaged pixel data element
        raise BadRequest(f"frame {index + 1} of the SEG cannot be decoded: {exc}") from None


def _segment_of(seg: Any, index: int) -> int:
    ident = _item(seg, index, "SegmentIdentificationSequence")
    if ident is None:
        raise BadRequest(f"frame {index + 1} of the SEG names no segment")
    return int(ident.ReferencedSegmentNumber)


def _paste(
    slab: npt.NDArray[np.bool_], frame_mask: npt.NDArray[np.bool_], col: int, row: int
) -> int:
    """OR a frame's mask into a slice at its offset; returns the pixels that fell outside."""
    h, w = slab.shape
    fh, fw = frame_mask.shape
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + fh, h), min(col + fw, w)
    inside = 0
    if r1 > r0 and c1 > c0:
        part = frame_mask[r0 - row : r1 - row, c0 - col : c1 - col]
        slab[r0:r1, c0:c1] |= part
        inside = int(part.sum())
    return int(frame_mask.sum()) - inside


def read_dicom_seg(body: bytes, target: SegTarget) -> SegImport:
    """The mask features of a SEG on ``target``; nothing is stored."""
    seg = _read(body)
    referenced = _check_reference(seg, target)
    frame = target.frame
    plane = frame.default_plane
    width, height, n = frame.size(plane)
    kind = str(seg.SegmentationType)
    threshold = FRACTIONAL_THRESHOLD if kind == "FRACTIONAL" else None
    max_value = float(seg.get("MaximumFractionalValue") or 1)
    counts: dict[int, SegmentCount] = {}
    for desc in seg.SegmentSequence:
        code = _code(desc.segmented_property_type)
        name = str(desc.segment_label)
        counts[desc.segment_number] = SegmentCount(desc.segment_number, name, name, code)
    masks: dict[tuple[int, int], npt.NDArray[np.bool_]] = {}
    outside = 0
    empty = 0
    for index in range(int(seg.get("NumberOfFrames") or 1)):
        k, col, row = _placement(seg, index, frame, (width, height, n))
        stored = _stored(seg, index)
        if kind == "LABELMAP":
            numbers = [int(v) for v in np.unique(stored) if v and int(v) in counts]
            layers = [(number, stored == number) for number in numbers]
        else:
            number = _segment_of(seg, index)
            if number not in counts:
                raise BadRequest(f"frame {index + 1} names segment {number}, not described")
            values = stored.astype(np.float64)
            inside = values / max_value >= FRACTIONAL_THRESHOLD if threshold else values > 0
            layers = [(number, inside)]
        if not any(m.any() for _, m in layers):
            empty += 1
            continue
        for number, layer in layers:
            slab = masks.setdefault((number, k), np.zeros((height, width), dtype=bool))
            outside += _paste(slab, layer, col, row)
    if outside:
        raise SegMismatch(
            f"{outside} segmented pixel(s) of the SEG fall outside the image",
            {"outside_pixels": outside},
        )
    features = []
    for (number, k), slab in sorted(masks.items()):
        if not slab.any():
            continue
        rows = np.flatnonzero(slab.any(axis=1))
        cols = np.flatnonzero(slab.any(axis=0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        mask = Mask.from_array(slab[r0:r1, c0:c1], col=c0, row=r0)
        count = counts[number]
        count.annotations += 1
        count.pixels += mask.area
        count.slices.append(k)
        desc = seg.get_segment_description(number)
        attributes: dict[str, Any] = {
            "segment_number": number,
            "segment_label": count.segment_label,
            "segmented_property_type": count.property_type,
            "segmented_property_category": _code(desc.segmented_property_category),
            "seg_series_instance_uid": str(seg.SeriesInstanceUID),
        }
        if threshold is not None:
            attributes["fractional_threshold"] = threshold
        features.append(
            {
                "type": "Feature",
                "geometry": None,
                "properties": {
                    "label": count.label,
                    "kind": "mask",
                    "slice": k,
                    "plane": plane.value,
                    "mask": mask.to_json(),
                    "attributes": attributes,
                },
            }
        )
    return SegImport(
        features,
        [counts[k] for k in sorted(counts)],
        kind,
        str(seg.SeriesInstanceUID),
        referenced,
        threshold,
        empty,
    )


def target_of(frame: Any, extra: Mapping[str, Any]) -> SegTarget:
    """The import target from an image's frame and catalog metadata (``extra``)."""
    if not isinstance(frame, VolumeFrame):
        raise BadRequest("DICOM-SEG import needs a DICOM volume")
    return SegTarget(
        frame, extra.get("series_instance_uid"), extra.get("frame_of_reference_uid") or None
    )


__all__ = ["SegImport", "SegMismatch", "SegTarget", "read_dicom_seg", "target_of"]
