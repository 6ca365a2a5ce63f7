"""The export and import formats, one table shared by the HTTP routes and ``tessera export``.

An export format writes into a binary file object, so a large export goes to a file (the CLI)
or a spooled temporary file (HTTP, streamed out in chunks) and is never built twice in memory.
Each format names the options it takes; the HTTP route answers 400 for any other query
parameter and the CLI maps its flags of the same names (``-`` for ``_``).

An import format turns a file's bytes into a GeoJSON FeatureCollection and the CRS of its
coordinates; ``annot.imports.geojson`` then checks and stores every feature the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from annot.errors import BadRequest
from annot.export.coco import coco_to_features, export_coco
from annot.export.dicom_seg import dicom_bytes, export_dicom_seg, source_frames
from annot.export.geojson import export_geojson
from annot.export.gis import FLATGEOBUF, GPKG, GisFormat, export_gis, reject_volume
from annot.export.masks import export_masks
from annot.export.nifti import SliceSource, export_nifti
from annot.export.rtstruct import export_rtstruct, slice_refs
from annot.features import dumps
from annot.frames import ImageFrame, VolumeFrame
from annot.imports.dicom_seg import read_dicom_seg, target_of
from annot.imports.gis import read_gis
from annot.imports.rtstruct import read_rtstruct
from annot.imports.rtstruct import target_of as rtstruct_target
from annot.model import Annotation
from annot.taxonomy import Project
from tileserver.chips import CHIP_OPTIONS, write_chips


@dataclass(frozen=True)
class ExportJob:
    """What an export format gets: the selected annotations of one image and its source."""

    image_id: str
    image_name: str
    frame: ImageFrame
    source: Any  # tileserver.readers.base.ImageSource (pixels, for chips; paths, for SEG)
    project: Project
    annotations: Sequence[Annotation]
    options: Mapping[str, str] = field(default_factory=dict)
    progress: Callable[[int], None] | None = None

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)


@dataclass(frozen=True)
class ExportFormat:
    name: str
    media_type: str
    suffix: str  # appended to the image id for the download's file name
    # writes the file; answers how many selected annotations the format could not hold (DICOM
    # formats: tags, points or shapes off the acquisition plane), None when it holds them all
    write: Callable[[ExportJob, BinaryIO], int | None]
    options: frozenset[str] = frozenset()
    volume_only: bool = False
    plane_only: bool = False  # 2D images only (GIS layers: no 3D patient coordinates)
    # (media type, suffix) when the options change them (nifti's volume=image|labels)
    variant: Callable[[Mapping[str, str]], tuple[str, str]] | None = None

    def media(self, options: Mapping[str, str]) -> tuple[str, str]:
        """The download's media type and file name suffix for these options."""
        return self.variant(options) if self.variant else (self.media_type, self.suffix)

    def check(self, frame: ImageFrame, options: Mapping[str, str]) -> None:
        unknown = sorted(set(options) - self.options)
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise BadRequest(
                f"format={self.name} does not take {', '.join(unknown)} (its options: {allowed})"
            )
        if self.volume_only and not isinstance(frame, VolumeFrame):
            raise BadRequest(f"format={self.name} needs a DICOM volume")
        if self.plane_only:
            reject_volume(frame, self.name)


@dataclass(frozen=True)
class ImportSource:
    """A file turned into GeoJSON features, and the CRS their coordinates are in."""

    collection: dict[str, Any]
    crs: str | None
    summary: dict[str, Any] | None = None  # what the file held (DICOM-SEG: per segment)


@dataclass(frozen=True)
class ImportFormat:
    name: str
    # (file bytes, frame, image name, source, crs asked for) -> features
    read: Callable[[bytes, ImageFrame, str, Any, str | None], ImportSource]


def _write_geojson(job: ExportJob, out: BinaryIO) -> None:
    out.write(export_geojson(job.annotations, job.frame, job.option("crs")))


def _gis_writer(fmt: GisFormat) -> Callable[[ExportJob, BinaryIO], None]:
    def write(job: ExportJob, out: BinaryIO) -> None:
        export_gis(job.annotations, job.frame, fmt, out, job.option("crs"))

    return write


def _write_coco(job: ExportJob, out: BinaryIO) -> None:
    segmentation = job.option("segmentation", "polygon") or "polygon"
    doc = export_coco(
        job.annotations, job.frame, job.project, job.image_id, job.image_name, segmentation
    )
    out.write(dumps(doc))


def _write_masks(job: ExportJob, out: BinaryIO) -> None:
    out.write(export_masks(job.annotations, job.frame, job.project, job.image_id))


def _write_dicom_seg(job: ExportJob, out: BinaryIO) -> int:
    assert isinstance(job.frame, VolumeFrame)
    seg = export_dicom_seg(
        job.annotations,
        job.frame,
        source_frames(job.source),
        job.project,
        seg_type=(job.option("seg_type", "binary") or "binary").lower(),
    )
    out.write(dicom_bytes(seg.dataset))
    return seg.skipped


def _write_rtstruct(job: ExportJob, out: BinaryIO) -> int:
    """RT Structure Set; the skipped count is also in the file's StructureSetDescription."""
    assert isinstance(job.frame, VolumeFrame)
    header, slices = slice_refs(source_frames(job.source))
    rt = export_rtstruct(job.annotations, job.frame, header, slices, job.project)
    out.write(dicom_bytes(rt.dataset))
    return rt.skipped


def _nifti_slices(source: Any) -> list[SliceSource]:
    """The slices of a served DICOM volume (``tileserver`` DicomSource) with their LUTs."""
    return [
        SliceSource(f.path, f.frame, float(f.fields["slope"]), float(f.fields["intercept"]))
        for f in getattr(source, "frames", None) or []
    ]


def _write_nifti(job: ExportJob, out: BinaryIO) -> None:
    assert isinstance(job.frame, VolumeFrame)
    volume = (job.option("volume", "both") or "both").lower()
    export_nifti(
        job.annotations, job.frame, _nifti_slices(job.source), job.project, out, volume,
        job.progress,
    )  # fmt: skip


def _nifti_media(options: Mapping[str, str]) -> tuple[str, str]:
    volume = (options.get("volume") or "both").lower()
    if volume in ("image", "labels"):
        return "application/gzip", f".{volume}.nii.gz"
    return "application/zip", ".nifti.zip"


EXPORTS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            "geojson", "application/geo+json; charset=utf-8", ".geojson", _write_geojson,
            frozenset({"crs"}),
        ),
        ExportFormat(
            "coco", "application/json; charset=utf-8", ".coco.json", _write_coco,
            frozenset({"segmentation"}),
        ),
        ExportFormat(
            "gpkg", "application/geopackage+sqlite3", ".gpkg", _gis_writer(GPKG),
            frozenset({"crs"}), plane_only=True,
        ),
        ExportFormat(
            "fgb", "application/vnd.flatgeobuf", ".fgb", _gis_writer(FLATGEOBUF),
            frozenset({"crs"}), plane_only=True,
        ),
        ExportFormat("masks", "application/zip", ".masks.zip", _write_masks),
        ExportFormat("chips", "application/zip", ".chips.zip", write_chips, CHIP_OPTIONS),
        ExportFormat(
            "dicom-seg", "application/dicom", ".seg.dcm", _write_dicom_seg,
            frozenset({"seg_type"}), volume_only=True,
        ),
        ExportFormat(
            "rtstruct", "application/dicom", ".rtstruct.dcm", _write_rtstruct, volume_only=True,
        ),
        ExportFormat(
            "nifti", "application/zip", ".nifti.zip", _write_nifti, frozenset({"volume"}),
            volume_only=True, variant=_nifti_media,
        ),
    )
}  # fmt: skip


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the file is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the file's JSON nests too deeply") from None


def _read_geojson(
    body: bytes, frame: ImageFrame, name: str, source: Any, crs: str | None
) -> ImportSource:
    return ImportSource(_json(body), crs)


def _read_coco(
    body: bytes, frame: ImageFrame, name: str, source: Any, crs: str | None
) -> ImportSource:
    return ImportSource(coco_to_features(_json(body), name), "pixel")


def _read_dicom_seg(
    body: bytes, frame: ImageFrame, name: str, source: Any, crs: str | None
) -> ImportSource:
    found = read_dicom_seg(body, target_of(frame, source.info.extra))
    return ImportSource(found.collection(), "pixel", found.summary())


def _read_rtstruct(
    body: bytes, frame: ImageFrame, name: str, source: Any, crs: str | None
) -> ImportSource:
    found = read_rtstruct(body, rtstruct_target(frame, source.info.extra))
    return ImportSource(found.collection(), "world", found.summary())


def _gis_reader(
    fmt: GisFormat,
) -> Callable[[bytes, ImageFrame, str, Any, str | None], ImportSource]:
    def read(
        body: bytes, frame: ImageFrame, name: str, source: Any, crs: str | None
    ) -> ImportSource:
        return ImportSource(*read_gis(body, frame, fmt, crs))

    return read


IMPORTS: dict[str, ImportFormat] = {
    f.name: f
    for f in (
        ImportFormat("geojson", _read_geojson),
        ImportFormat("coco", _read_coco),
        ImportFormat("dicom-seg", _read_dicom_seg),
        ImportFormat("rtstruct", _read_rtstruct),
        ImportFormat("gpkg", _gis_reader(GPKG)),
        ImportFormat("fgb", _gis_reader(FLATGEOBUF)),
    )
}


def export_format(name: str | None) -> ExportFormat:
    fmt = EXPORTS.get((name or "").lower())
    if fmt is None:
        raise BadRequest(f"format must be one of {', '.join(EXPORTS)}")
    return fmt


def import_format(name: str | None) -> ImportFormat:
    fmt = IMPORTS.get((name or "").lower())
    if fmt is None:
        raise BadRequest(f"format must be one of {', '.join(IMPORTS)}")
    return fmt
