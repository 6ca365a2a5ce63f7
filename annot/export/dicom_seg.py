"""DICOM Segmentation export (highdicom): one binary segment per label of a volume's annotations.

Shapes drawn on slices of the acquisition plane (polygons, boxes, multipolygons, masks) are
rasterised on the source image's pixel grid (pixel centres inside, rasterio.features) and
united per label. Each label is a segment whose property type is the taxonomy's coded concept
when it has one, else a private code (scheme ``99TESSERA``); the category is SCT 91723000
"Anatomical Structure". Only frames containing a segment are written; each references its
source instance, and the SEG shares the source series' frame of reference.
Shapes on reformatted planes, points, lines and tags are skipped (counted).
"""

from __future__ import annotations

import hashlib
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
from annot.taxonomy import Project

SHAPE_KINDS = {Kind.polygon, Kind.box, Kind.multipolygon, Kind.mask}
DEFAULT_CATEGORY = ("91723000", "SCT", "Anatomical Structure")
PRIVATE_SCHEME = "99TESSERA"


@dataclass
class SegExport:
    dataset: pydicom.Dataset
    segments: dict[str, int]  # label -> segment number
    skipped: int


def _code(value: str, scheme: str, meaning: str) -> Any:
    from highdicom.sr.coding import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning[:64])


def export_dicom_seg(
    annotations: Sequence[Annotation],
    frame: VolumeFrame,
    source_paths: Sequence[Path],
    project: Project,
    series_description: str = "Tessera annotations",
) -> SegExport:
    """The SEG dataset of a volume's annotations; ``source_paths`` are the slices in order."""
    import highdicom as hd

    plane = frame.default_plane
    width, height, n = frame.size(plane)
    if len(source_paths) != n:
        raise BadRequest(
            f"DICOM-SEG needs one source file per slice ({n}); this image has "
            f"{len(source_paths)} (multi-frame sources are not supported yet)"
        )
    sources = [pydicom.dcmread(p) for p in source_paths]
    index_of_uid = {str(ds.SOPInstanceUID): i for i, ds in enumerate(sources)}
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
        vol[k] |= img
    if not masks:
        raise BadRequest("no annotation of this image can be written as a DICOM-SEG segment")
    labels = sorted(masks)
    descriptions = []
    for number, name in enumerate(labels, start=1):
        label = project.labels.get(name)
        code = label.code if label is not None else None
        if code is not None:
            prop_type = _code(code.value, code.scheme, code.meaning)
        else:
            digest = hashlib.sha1(name.encode()).hexdigest()[:12]
            prop_type = _code(digest, PRIVATE_SCHEME, name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=_code(*DEFAULT_CATEGORY),
                segmented_property_type=prop_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        )
    pixels = np.stack([masks[name] for name in labels], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
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


def source_paths(source: Any) -> list[Path]:
    """The slice files of a served DICOM series, in slice order (``tileserver`` DicomSource)."""
    frames = getattr(source, "frames", None)
    if not frames or any(getattr(f, "frame", None) is not None for f in frames):
        raise BadRequest("DICOM-SEG export needs a single-frame DICOM series")
    return [Path(f.path) for f in frames]
