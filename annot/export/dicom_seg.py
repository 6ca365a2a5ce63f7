"""DICOM Segmentation export (highdicom): one segment per label of a volume's annotations.

Shapes drawn on slices of the acquisition plane (polygons, boxes, multipolygons, masks) are
rasterised on the source image's pixel grid (pixel centres inside, rasterio.features) and
united per label. Each label is a segment whose property type is the taxonomy's coded concept
(or its nearest ancestor's) when it has one, else SCT 91723000 "Anatomical Structure"; the
category is SCT 91723000 "Anatomical Structure". ``seg_type`` is ``binary`` (default) or
``fractional`` (PROBABILITY, values 0 or 255: the shapes are binary). Only the frames that
contain a segment are written (one per segment and slice); each references its source
instance (and frame, for a multi-frame source), and the SEG shares the source's frame of
reference. Sources are a single-frame series or one enhanced multi-frame object.
Shapes on reformatted planes, points, lines and tags are skipped (counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from annot.errors import BadRequest
from annot.export.masks import content_mask
from annot.frames import VolumeFrame
from annot.model import Annotation, Kind
from annot.taxonomy import Concept, Project, ancestors

SHAPE_KINDS = {Kind.polygon, Kind.box, Kind.multipolygon, Kind.mask}
DEFAULT_CATEGORY = ("91723000", "SCT", "Anatomical Structure")
DEFAULT_TYPE = DEFAULT_CATEGORY  # for labels without a coded concept (the label says which)
SEG_TYPES = ("binary", "fractional")


@dataclass(frozen=True)
class SourceFrame:
    """One slice of the source: its file and the frame in it (None: a single-frame file)."""

    path: Path
    frame: int | None


@dataclass
class SegExport:
    dataset: pydicom.Dataset
    segments: dict[str, int]  # label -> segment number
    skipped: int


def _code(value: str, scheme: str, meaning: str) -> Any:
    from highdicom.sr.coding import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning[:64])


def _concept(name: str, project: Project) -> Concept | None:
    """The coded concept of a label, or of its nearest ancestor that has one."""
    for candidate in [name, *reversed(ancestors(name))]:
        label = project.labels.get(candidate)
        if label is not None and label.code is not None:
            return label.code
    return None


def _sources(frames: Sequence[SourceFrame]) -> tuple[list[pydicom.Dataset], list[int]]:
    """The source datasets and, per slice, the position of its frame in highdicom's pixel
    array (the frames of all sources in order)."""
    if all(f.frame is None for f in frames):
        return [pydicom.dcmread(f.path) for f in frames], list(range(len(frames)))
    paths = {f.path for f in frames}
    if len(paths) != 1 or any(f.frame is None for f in frames):
        raise BadRequest("DICOM-SEG export needs a single-frame series or one multi-frame file")
    ds = pydicom.dcmread(frames[0].path)
    count = int(ds.get("NumberOfFrames") or 1)
    if sorted(f.frame for f in frames if f.frame is not None) != list(range(count)):
        raise BadRequest("DICOM-SEG export needs every frame of a multi-frame source as a slice")
    return [ds], [int(f.frame) for f in frames if f.frame is not None]


def export_dicom_seg(
    annotations: Sequence[Annotation],
    frame: VolumeFrame,
    source_frames: Sequence[SourceFrame],
    project: Project,
    series_description: str = "Tessera annotations",
    seg_type: str = "binary",
) -> SegExport:
    """The SEG dataset of a volume's annotations; ``source_frames`` are the slices in order."""
    import highdicom as hd

    if seg_type not in SEG_TYPES:
        raise BadRequest(f"seg_type must be one of {', '.join(SEG_TYPES)}")
    plane = frame.default_plane
    width, height, n = frame.size(plane)
    if len(source_frames) != n:
        raise BadRequest(
            f"DICOM-SEG needs one source frame per slice ({n}); this image has {len(source_frames)}"
        )
    sources, position = _sources(source_frames)
    single_frame = len(sources) == n
    index_of_uid = (
        {str(ds.SOPInstanceUID): i for i, ds in enumerate(sources)} if single_frame else {}
    )
    masks: dict[str, np.ndarray] = {}
    skipped = 0
    for a in annotations:
        c = a.content
        p = c.placement
        if c.kind not in SHAPE_KINDS or c.geometry is None or p is None or p.plane is not plane:
            skipped += 1
            continue
        k = index_of_uid.get(p.sop_instance_uid or "", p.slice)
        img = content_mask(c, frame, plane, width, height)
        if not img.any():
            skipped += 1
            continue
        vol = masks.setdefault(c.label, np.zeros((n, height, width), dtype=bool))
        vol[position[k]] |= img
    if not masks:
        raise BadRequest("no annotation of this image can be written as a DICOM-SEG segment")
    labels = sorted(masks)
    descriptions = []
    for number, name in enumerate(labels, start=1):
        code = _concept(name, project)
        prop_type = _code(code.value, code.scheme, code.meaning) if code else _code(*DEFAULT_TYPE)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=_code(*DEFAULT_CATEGORY),
                segmented_property_type=prop_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        )
    stacked = np.stack([masks[name] for name in labels], axis=-1)
    fractional = seg_type == "fractional"
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stacked.astype(np.float32) if fractional else stacked.astype(np.uint8),
        segmentation_type=(
            hd.seg.SegmentationTypeValues.FRACTIONAL
            if fractional
            else hd.seg.SegmentationTypeValues.BINARY
        ),
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=9001,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Tessera",
        manufacturer_model_name="Tessera",
        software_versions="tessera",
        device_serial_number="0",
        series_description=series_description,
        content_label="TESSERA",
        omit_empty_frames=True,
    )
    return SegExport(seg, {name: i for i, name in enumerate(labels, start=1)}, skipped)


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def source_frames(source: Any) -> list[SourceFrame]:
    """The slices of a served DICOM volume, in slice order (``tileserver`` DicomSource)."""
    frames = getattr(source, "frames", None)
    if not frames:
        raise BadRequest("DICOM-SEG export needs a DICOM volume")
    return [SourceFrame(Path(f.path), getattr(f, "frame", None)) for f in frames]
