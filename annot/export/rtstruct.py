"""DICOM RT Structure Set (RTSTRUCT) export: a volume's annotations as ROI contours.

One ROI per label (ROINumber 1.. in label order, ROIName = the label, ROIGenerationAlgorithm
MANUAL, ROIDisplayColor = the taxonomy colour). RTROIInterpretedType is taken from the
annotations' ``rt_roi_interpreted_type`` attribute (what the RTSTRUCT import keeps) when it is
a defined term, else it is empty (type 2).

Only annotations placed on a slice of the acquisition plane that has a SOP instance can be
written; every contour references that instance in its ContourImageSequence. Others
(reformatted planes, tags, no placement) are skipped and counted: ``RtExport.skipped`` and the
file's StructureSetDescription say how many.

ContourData are the stored world (patient LPS, mm) coordinates, written as decimal strings of
at most 16 characters (pydicom's DS auto-formatting: 11 decimals below 1000 mm, a rounding
error of at most 5e-12 mm; 5e-11 mm below 10 000 mm). Contours by kind:

- polygon, box, multipolygon: one CLOSED_PLANAR contour per ring, the closing vertex left out.
  Each hole is a contour of its own (the standard's "separate contour" form, not a keyhole);
  readers nest them by even-odd containment, as ``annot.imports.rtstruct`` does.
- polyline: OPEN_PLANAR. point: POINT (one point). multipoint: one POINT contour per point.
- mask: traced to polygons on its slice (``rasterio.features.shapes``, pixel edges, so the
  polygon covers exactly the mask's pixels), then written as polygons.

The Patient and General Study attributes and the Frame of Reference come from the source
series (its first instance); the RT Series, Structure Set and SOP Common get new UIDs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import shapely
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from annot.errors import BadRequest
from annot.export.dicom_seg import SourceFrame
from annot.frames import VolumeFrame
from annot.model import Annotation, Content, Kind
from annot.taxonomy import Project

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
INTERPRETED_TYPES = frozenset({  # the standard's defined terms (C.8.8.8)
    "EXTERNAL", "PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME", "OAR", "BOLUS",
    "AVOIDANCE", "ORGAN", "MARKER", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "CAVITY",
    "BRACHY_CHANNEL", "BRACHY_ACCESSORY", "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD", "SUPPORT",
    "FIXATION", "DOSE_REGION", "CONTROL",
})  # fmt: skip
_COPIED = (  # Patient, General Study and General Equipment attributes of the source
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription",
)  # fmt: skip
_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip

Points = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SliceRef:
    """The source instance of one slice: SOP class and instance, frame (multi-frame: 1..)."""

    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None = None


@dataclass
class RtExport:
    dataset: Dataset
    rois: dict[str, int]  # label -> ROI number
    contours: int
    skipped: int


def slice_refs(frames: Sequence[SourceFrame]) -> tuple[Dataset, list[SliceRef]]:
    """The first source header and the instance referenced by each slice, in slice order."""
    if not frames:
        raise BadRequest("RTSTRUCT export needs a DICOM volume")
    headers: dict[str, Dataset] = {}
    refs = []
    for f in frames:
        key = str(f.path)
        if key not in headers:
            headers[key] = pydicom.dcmread(f.path, stop_before_pixels=True)
        ds = headers[key]
        number = None if f.frame is None else f.frame + 1
        refs.append(SliceRef(str(ds.SOPClassUID), str(ds.SOPInstanceUID), number))
    return headers[str(frames[0].path)], refs


def _ds(values: Points) -> list[DSfloat]:
    return [DSfloat(float(v), auto_format=True) for v in values.reshape(-1)]


def _rings(geometry: Any) -> list[tuple[str, Points]]:
    """(ContourGeometricType, points) of a shape, rings without their closing vertex."""
    out: list[tuple[str, Points]] = []
    for part in shapely.get_parts(geometry):
        kind = part.geom_type
        if kind == "Polygon":
            for ring in [part.exterior, *part.interiors]:
                pts = np.asarray(ring.coords, dtype=np.float64)[:-1]
                out.append(("CLOSED_PLANAR", pts))
        elif kind == "LineString":
            out.append(("OPEN_PLANAR", np.asarray(part.coords, dtype=np.float64)))
        elif kind == "Point":
            out.append(("POINT", np.asarray(part.coords, dtype=np.float64)))
    return out


def _mask_polygons(c: Content, frame: VolumeFrame, k: int) -> Any:
    """A mask traced to polygons along pixel edges, in world coordinates on slice ``k``."""
    from rasterio.features import shapes
    from rasterio.transform import Affine

    assert c.mask is not None
    m = c.mask
    arr = m.to_array().astype(np.uint8)
    polygons = []
    transform = Affine(1.0, 0.0, float(m.col), 0.0, 1.0, float(m.row))
    for geom, value in shapes(arr, mask=arr.astype(bool), transform=transform):
        if not value:
            continue
        rings = []
        for ring in geom["coordinates"]:
            xy = np.asarray(ring, dtype=np.float64)
            pix = np.column_stack([xy, np.full(len(xy), float(k))])
            rings.append(frame.pixel_to_world(pix, frame.default_plane))
        polygons.append(shapely.Polygon(rings[0], rings[1:]))
    return shapely.MultiPolygon(polygons)


def _contours(c: Content, frame: VolumeFrame, k: int) -> list[tuple[str, Points]]:
    if c.kind is Kind.mask and c.mask is not None:
        return _rings(_mask_polygons(c, frame, k))
    if c.geometry is None or c.kind is Kind.tag:
        return []
    return _rings(c.geometry)


def export_rtstruct(
    annotations: Sequence[Annotation],
    frame: VolumeFrame,
    source: Dataset,
    slices: Sequence[SliceRef],
    project: Project,
    label: str = "TESSERA",
    now: dt.datetime | None = None,
) -> RtExport:
    """The RT Structure Set of a volume's annotations; ``slices`` are the source instances in
    slice order and ``source`` the header of one of them (patient, study, equipment)."""
    plane = frame.default_plane
    n = frame.size(plane)[2]
    if len(slices) != n:
        raise BadRequest(f"RTSTRUCT needs one source instance per slice ({n}), got {len(slices)}")
    for_uid = str(source.get("FrameOfReferenceUID") or frame.reference(0, plane)[0] or "")
    if not for_uid:
        raise BadRequest("RTSTRUCT export needs the series' frame of reference UID")
    index_of_uid = {s.sop_instance_uid: i for i, s in enumerate(slices)}
    per_label: dict[str, list[tuple[int, str, Points]]] = {}
    interpreted: dict[str, str] = {}
    skipped = 0
    for a in annotations:
        c = a.content
        p = c.placement
        k = None
        if p is not None and p.plane is plane and p.sop_instance_uid:
            k = index_of_uid.get(p.sop_instance_uid)
        contours = _contours(c, frame, k) if k is not None else []
        if k is None or not contours:
            skipped += 1
            continue
        items = per_label.setdefault(c.label, [])
        items.extend((k, kind, pts) for kind, pts in contours)
        kind_attr = str(c.attributes.get("rt_roi_interpreted_type") or "").upper()
        if kind_attr in INTERPRETED_TYPES:
            interpreted.setdefault(c.label, kind_attr)
    if not per_label:
        raise BadRequest("no annotation of this image can be written as an RTSTRUCT contour")

    now = now or dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for name in _COPIED:
        if name in source:
            setattr(ds, name, source.data_element(name).value)  # type: ignore[union-attr]
    for name in _TYPE2:
        if name not in ds:
            setattr(ds, name, "")
    # Frame of Reference (the source's: the contours are in its patient coordinates)
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = str(source.get("PositionReferenceIndicator") or "")
    # RT Series, General Equipment
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9002
    ds.SeriesDescription = "Tessera annotations"
    ds.OperatorsName = ""
    ds.Manufacturer = "Tessera"
    ds.ManufacturerModelName = "Tessera"
    ds.SoftwareVersions = "tessera"
    # Structure Set
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDescription = (
        f"{sum(len(v) for v in per_label.values())} contour(s) of "
        f"{len(annotations) - skipped} annotation(s); {skipped} annotation(s) skipped "
        "(not on a slice of the acquisition plane with a SOP instance, or no geometry)"
    )
    ds.InstanceNumber = 1
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_frame_ref(for_uid, source, slices)])
    labels = sorted(per_label)
    numbers = {name: i for i, name in enumerate(labels, start=1)}
    rois, roi_contours, observations = [], [], []
    total = 0
    for name in labels:
        number = numbers[name]
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = for_uid
        roi.ROIName = name[:64]
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        colour = project.labels[name].color if name in project.labels else None
        if colour:
            rc.ROIDisplayColor = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        contour_items: list[Dataset] = []
        for k, kind, pts in sorted(per_label[name], key=lambda t: t[0]):
            total += 1
            item = Dataset()
            item.ContourNumber = total
            item.ContourImageSequence = DicomSequence([_image_ref(slices[k])])
            item.ContourGeometricType = kind
            item.NumberOfContourPoints = len(pts)
            item.ContourData = _ds(pts)
            contour_items.append(item)
        rc.ContourSequence = DicomSequence(contour_items)
        roi_contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = interpreted.get(name, "")
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    # Approval is optional (U); SOP Common
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate = ds.StructureSetDate
    ds.InstanceCreationTime = ds.StructureSetTime
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return RtExport(ds, numbers, total, skipped)


def _image_ref(s: SliceRef) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = s.sop_class_uid
    ref.ReferencedSOPInstanceUID = s.sop_instance_uid
    if s.frame_number is not None:
        ref.ReferencedFrameNumber = s.frame_number
    return ref


def _frame_ref(for_uid: str, source: Dataset, slices: Sequence[SliceRef]) -> Dataset:
    series = Dataset()
    series.SeriesInstanceUID = str(source.SeriesInstanceUID)
    seen: dict[tuple[str, int | None], SliceRef] = {}
    for s in slices:
        seen.setdefault((s.sop_instance_uid, s.frame_number), s)
    series.ContourImageSequence = DicomSequence([_image_ref(s) for s in seen.values()])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management
    study.ReferencedSOPInstanceUID = str(source.StudyInstanceUID)
    study.RTReferencedSeriesSequence = DicomSequence([series])
    ref = Dataset()
    ref.FrameOfReferenceUID = for_uid
    ref.RTReferencedStudySequence = DicomSequence([study])
    return ref


__all__ = ["RtExport", "SliceRef", "export_rtstruct", "slice_refs"]
