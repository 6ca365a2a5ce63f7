"""Reading DICOM headers once: finding DICOM files, a header index, and grouping into images.

Headers are read with ``stop_before_pixels`` and the few attributes the server needs are kept as
a small JSON record per file, cached in an SQLite index in the state folder keyed by path,
modification time and size; a restart re-reads only files that changed. Grouping then turns the
records into image plans: classic single-frame files are grouped into series by
SeriesInstanceUID and sorted along the slice normal; every multi-frame file is its own image.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.errors import InvalidDicomError

log = logging.getLogger(__name__)

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
INDEX_FILE = "dicom_index.sqlite"
SCHEMA = "files_v1"

IMPLICIT_LE = "1.2.840.10008.1.2"
NATIVE_SYNTAXES = {IMPLICIT_LE, "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
DEFLATED = "1.2.840.10008.1.2.1.99"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"

# SOP classes that carry pixels but are not images to view as such.
NOT_SERVED = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a segmentation (DICOM-SEG) is annotation data, not an image",
    "1.2.840.10008.5.1.4.1.1.66.7": "a label-map segmentation is annotation data, not an image",
    "1.2.840.10008.5.1.4.1.1.77.1.6": (
        "whole-slide microscopy (VL WSI) is not served by the DICOM volume reader"
    ),
}
ENHANCED_HINT = "Enhanced"

POSITION_TOLERANCE_MM = 0.01  # slices closer than this along the normal share a position
ORIENTATION_TOLERANCE = 1e-3  # max difference between direction cosines of one volume
GAP_FACTOR = 1.5  # a step more than 1.5x the median spacing is a gap
IRREGULAR_TOLERANCE = 0.05  # steps differing from the median by more than 5% are irregular


class HeaderError(Exception):
    """A file that looks like DICOM but cannot be served; the message says why."""


def is_dicom_candidate(path: Path) -> bool:
    """DICOM by suffix (.dcm, .dicom, .ima), or a suffix-less file with 'DICM' at byte 128.

    DICOMDIR is ignored (files are found by walking the folder).
    """
    if path.name.upper() == "DICOMDIR":
        return False
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix and not suffix[1:].isdigit():  # "1.2.3.4" style names have numeric "suffixes"
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _floats(value: Any, count: int | None = None) -> list[float] | None:
    if value is None:
        return None
    scalar = isinstance(value, (str, bytes, int, float)) or not hasattr(value, "__iter__")
    try:
        out = [float(v) for v in ([value] if scalar else list(value))]
    except (TypeError, ValueError):
        return None
    if count is not None and len(out) != count:
        return None
    if not all(np.isfinite(out)):
        return None
    return out


def _float1(value: Any) -> float | None:
    one = _floats(value, 1)
    return one[0] if one else None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _first(ds: Any, seq: str) -> Any:
    s = ds.get(seq) if ds is not None else None
    return s[0] if s else None


def _frame_fields(group: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Fields of one frame from a functional-group item, over ``base`` (shared/top-level)."""
    out = dict(base)
    if group is None:
        return out
    pos = _first(group, "PlanePositionSequence")
    if pos is not None and (ipp := _floats(pos.get("ImagePositionPatient"), 3)) is not None:
        out["ipp"] = ipp
    ori = _first(group, "PlaneOrientationSequence")
    if ori is not None and (iop := _floats(ori.get("ImageOrientationPatient"), 6)) is not None:
        out["iop"] = iop
    meas = _first(group, "PixelMeasuresSequence")
    if meas is not None:
        if (ps := _floats(meas.get("PixelSpacing"), 2)) is not None:
            out["pixel_spacing"] = ps
        if (st := _floats(meas.get("SliceThickness"), 1)) is not None:
            out["slice_thickness"] = st[0]
        if (sb := _floats(meas.get("SpacingBetweenSlices"), 1)) is not None:
            out["spacing_between_slices"] = sb[0]
    pvt = _first(group, "PixelValueTransformationSequence")
    if pvt is not None:
        if (slope := _floats(pvt.get("RescaleSlope"), 1)) is not None:
            out["slope"] = slope[0]
        if (icpt := _floats(pvt.get("RescaleIntercept"), 1)) is not None:
            out["intercept"] = icpt[0]
    voi = _first(group, "FrameVOILUTSequence")
    if voi is not None:
        windows = _windows(voi)
        if windows:
            out["windows"] = windows
    return out


def _windows(ds: Any) -> list[list[Any]]:
    centers = _floats(ds.get("WindowCenter"))
    widths = _floats(ds.get("WindowWidth"))
    if not centers or not widths:
        return []
    expl = ds.get("WindowCenterWidthExplanation")
    names: list[str] = []
    if expl is not None:
        names = [str(expl)] if isinstance(expl, str) else [str(e) for e in expl]
    out: list[list[Any]] = []
    for i, (c, w) in enumerate(zip(centers, widths, strict=False)):
        if w >= 1:
            out.append([c, w, names[i].strip() if i < len(names) else ""])
    return out


def read_header(path: Path) -> dict[str, Any]:
    """The record of one DICOM file; raises HeaderError with the reason it cannot be served."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            pixel_offset = fh.tell()
    except InvalidDicomError as exc:
        raise HeaderError(f"not a DICOM file ({exc})") from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HeaderError(
            f"DICOM header cannot be read, the file may be truncated ({exc})"
        ) from exc
    sop_class = _text(ds.get("SOPClassUID"))
    if sop_class in NOT_SERVED:
        raise HeaderError(NOT_SERVED[sop_class])
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        name = getattr(ds.get("SOPClassUID"), "name", sop_class) or "unknown SOP class"
        raise HeaderError(f"not an image ({name})")
    ts = _text(ds.file_meta.get("TransferSyntaxUID")) if hasattr(ds, "file_meta") else ""
    ts = ts or IMPLICIT_LE
    frames = int(ds.get("NumberOfFrames") or 1)
    spp = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.get("BitsAllocated") or 16)
    if ts != DEFLATED:
        _check_pixel_data(path, size, pixel_offset, ts, int(rows) * int(cols) * spp, bits, frames)
    base: dict[str, Any] = {
        "ipp": _floats(ds.get("ImagePositionPatient"), 3),
        "iop": _floats(ds.get("ImageOrientationPatient"), 6),
        "pixel_spacing": _floats(ds.get("PixelSpacing"), 2)
        or _floats(ds.get("ImagerPixelSpacing"), 2),
        "slice_thickness": _float1(ds.get("SliceThickness")),
        "spacing_between_slices": _float1(ds.get("SpacingBetweenSlices")),
        "slope": (_floats(ds.get("RescaleSlope"), 1) or [1.0])[0],
        "intercept": (_floats(ds.get("RescaleIntercept"), 1) or [0.0])[0],
        "windows": _windows(ds),
    }
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    multiframe = (
        frames > 1
        or ENHANCED_HINT in getattr(ds.SOPClassUID, "name", "")
        or (per_frame is not None)
    )
    frame_records: list[dict[str, Any]] = []
    if multiframe:
        common = _frame_fields(shared, base)
        for i in range(frames):
            group = per_frame[i] if per_frame is not None and i < len(per_frame) else None
            frame_records.append(_frame_fields(group, common))
    else:
        frame_records.append(base)
    return {
        "sop_class": sop_class,
        "sop_class_name": str(getattr(ds.get("SOPClassUID"), "name", sop_class)),
        "sop_instance": _text(ds.get("SOPInstanceUID")),
        "series_uid": _text(ds.get("SeriesInstanceUID")),
        "study_uid": _text(ds.get("StudyInstanceUID")),
        "frame_of_reference_uid": _text(ds.get("FrameOfReferenceUID")),
        "modality": _text(ds.get("Modality")),
        "series_description": _text(ds.get("SeriesDescription")),
        "series_number": _text(ds.get("SeriesNumber")),
        "instance_number": _text(ds.get("InstanceNumber")),
        "rows": int(rows),
        "cols": int(cols),
        "samples": spp,
        "photometric": _text(ds.get("PhotometricInterpretation")) or "MONOCHROME2",
        "bits_allocated": bits,
        "bits_stored": int(ds.get("BitsStored") or bits),
        "pixel_representation": int(ds.get("PixelRepresentation") or 0),
        "frames": frames,
        "multiframe": bool(multiframe),
        "transfer_syntax": ts,
        "frame_info": frame_records,
    }


def _check_pixel_data(
    path: Path, size: int, offset: int, ts: str, samples: int, bits: int, frames: int
) -> None:
    """Refuse files whose pixel data is missing or cut short (cheap: sizes and one tail read)."""
    if offset >= size:
        raise HeaderError("no pixel data")
    if ts in NATIVE_SYNTAXES:
        expected = (samples * frames + 7) // 8 if bits == 1 else samples * frames * (bits // 8)
        header = 8 if ts == IMPLICIT_LE else 12
        if size - offset - header < expected:
            raise HeaderError(
                f"truncated: pixel data has {max(0, size - offset - header)} of {expected} bytes"
            )
        return
    # Encapsulated: the fragments end with a sequence delimiter item near the end of the file.
    with open(path, "rb") as fh:
        fh.seek(max(offset, size - 4096))
        tail = fh.read()
    if SEQUENCE_DELIMITER not in tail:
        raise HeaderError("truncated: the compressed pixel data has no end (sequence delimiter)")


class HeaderIndex:
    """SQLite cache of header records keyed by path, mtime and size (falls back to memory)."""

    def __init__(self, state: Path | None) -> None:
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if state is None:
            return
        try:
            self._db = sqlite3.connect(state / INDEX_FILE, check_same_thread=False, timeout=30)
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA} (path TEXT PRIMARY KEY, mtime_ns INTEGER, "
                "size INTEGER, record TEXT)"
            )
            self._db.commit()
        except sqlite3.Error as exc:
            log.warning("DICOM header index unavailable (%s): headers are read every start", exc)
            self._db = None

    def get(self, path: Path) -> dict[str, Any]:
        """The file's record, or ``{"error": reason}``; read from the file when not cached."""
        st = path.stat()
        key = str(path)
        if self._db is not None:
            with self._lock:
                row = self._db.execute(
                    f"SELECT mtime_ns, size, record FROM {SCHEMA} WHERE path = ?", (key,)
                ).fetchone()
            if row is not None and row[0] == st.st_mtime_ns and row[1] == st.st_size:
                cached: dict[str, Any] = json.loads(row[2])
                return cached
        try:
            record = read_header(path)
        except HeaderError as exc:
            record = {"error": str(exc)}
        record["mtime_ns"], record["size"] = st.st_mtime_ns, st.st_size
        if self._db is not None:
            try:
                with self._lock:
                    self._db.execute(
                        f"INSERT OR REPLACE INTO {SCHEMA} VALUES (?, ?, ?, ?)",
                        (key, st.st_mtime_ns, st.st_size, json.dumps(record)),
                    )
            except sqlite3.Error as exc:
                log.debug("cannot cache the header of %s: %s", path, exc)
        return record

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                try:
                    self._db.commit()
                finally:
                    self._db.close()
                    self._db = None


# -- grouping -----------------------------------------------------------------------------------


@dataclass
class Frame:
    """One 2D frame: a file, the frame number in it (None for single-frame files), its fields."""

    path: Path
    frame: int | None
    fields: dict[str, Any]
    sop_instance: str = ""


@dataclass
class ImagePlan:
    """What one served image is made of, before any pixel is read."""

    kind: str  # dicom-volume | dicom-multiframe | dicom-image
    name: str
    files: list[Path]
    header: dict[str, Any]  # the record of the first file (series-level attributes)
    frames: list[Frame]  # in slice order
    volume: bool  # frames form a regular-geometry stack (sorted along the normal)
    warnings: list[str] = field(default_factory=list)


def _normal(iop: list[float]) -> npt.NDArray[np.float64]:
    u = np.asarray(iop[:3], dtype=np.float64)
    v = np.asarray(iop[3:], dtype=np.float64)
    n = np.cross(u / np.linalg.norm(u), v / np.linalg.norm(v))
    out: npt.NDArray[np.float64] = n / np.linalg.norm(n)
    return out


def _has_geometry(f: dict[str, Any]) -> bool:
    return (
        f.get("ipp") is not None and f.get("iop") is not None and f.get("pixel_spacing") is not None
    )


def stack_problem(frames: list[Frame], same_size: bool) -> str | None:
    """Why these frames cannot form one volume, or None if they can."""
    if not same_size:
        return "its images differ in size or pixel format"
    if not all(_has_geometry(f.fields) for f in frames):
        return "some images have no position/orientation (ImagePositionPatient)"
    iops = np.asarray([f.fields["iop"] for f in frames], dtype=np.float64)
    if np.max(np.abs(iops - iops[0])) > ORIENTATION_TOLERANCE:
        return "its images differ in orientation (ImageOrientationPatient)"
    ps = np.asarray([f.fields["pixel_spacing"] for f in frames], dtype=np.float64)
    if np.max(np.abs(ps - ps[0])) > 1e-4 * max(1.0, float(np.max(ps))):
        return "its images differ in pixel spacing"
    n = _normal(frames[0].fields["iop"])
    h = np.sort(np.asarray([f.fields["ipp"] for f in frames], dtype=np.float64) @ n)
    dup = int(np.sum(np.diff(h) < POSITION_TOLERANCE_MM))
    if dup:
        return (
            f"{len(frames)} images at only {len(frames) - dup} positions (echoes, phases or copies)"
        )
    return None


def sort_stack(frames: list[Frame]) -> tuple[list[Frame], list[str]]:
    """Frames sorted along the normal (slice 0 lowest), with spacing warnings."""
    n = _normal(frames[0].fields["iop"])
    ipp = np.asarray([f.fields["ipp"] for f in frames], dtype=np.float64)
    order = np.argsort(ipp @ n, kind="stable")
    frames = [frames[i] for i in order]
    warnings: list[str] = []
    if len(frames) < 3:
        return frames, warnings
    h = ipp[order] @ n
    steps = np.diff(h)
    med = float(np.median(steps))
    gaps = np.nonzero(steps > GAP_FACTOR * med)[0]
    if len(gaps):
        where = ", ".join(f"{int(i)}-{int(i) + 1}" for i in gaps[:5])
        warnings.append(
            f"missing slices: {len(gaps)} gap(s) in the stack (between slices {where}); "
            f"median spacing {med:.4g} mm; gaps are transparent in the other planes and "
            "slice_positions gives each slice's position"
        )
    irregular = np.abs(steps - med) > IRREGULAR_TOLERANCE * med
    irregular[gaps] = False
    if irregular.any():
        warnings.append(
            f"slice spacing is irregular ({float(steps.min()):.4g} to {float(steps.max()):.4g} mm, "
            f"median {med:.4g} mm); slice_positions gives each slice's position"
        )
    rel = ipp[order] - ipp[order][0]
    inplane = rel - np.outer(rel @ n, n)
    shear = float(np.max(np.linalg.norm(inplane, axis=1)))
    if shear > 0.01:
        warnings.append(
            f"the stack is sheared (gantry tilt?): slice origins move {shear:.3g} mm in-plane; "
            "coordinates on the acquisition plane are exact, the other planes ignore the shear"
        )
    return frames, warnings


def _size_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    return (rec["rows"], rec["cols"], rec["samples"], rec["photometric"])


def _common_folder(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def plan_images(records: list[tuple[Path, str, dict[str, Any]]]) -> list[ImagePlan]:
    """Group ``(path, relative name, record)`` of readable DICOM files into images."""
    plans: list[ImagePlan] = []
    series: dict[str, list[tuple[Path, str, dict[str, Any]]]] = defaultdict(list)
    for path, rel, rec in records:
        if rec["multiframe"]:
            plans.append(_multiframe_plan(path, rel, rec))
        else:
            series[rec["series_uid"] or f"file:{path}"].append((path, rel, rec))
    for members in series.values():
        plans.extend(_series_plans(members))
    _unique_names(plans)
    return plans


def _multiframe_plan(path: Path, rel: str, rec: dict[str, Any]) -> ImagePlan:
    frames = [Frame(path, i, f) for i, f in enumerate(rec["frame_info"])]
    if len(frames) == 1:
        return ImagePlan("dicom-image", rel, [path], rec, frames, False)
    problem = stack_problem(frames, True)
    if problem is None:
        ordered, warnings = sort_stack(frames)
        return ImagePlan("dicom-multiframe", rel, [path], rec, ordered, True, warnings)
    warning = f"the frames cannot form a volume ({problem}): served as a stack of frames"
    return ImagePlan("dicom-multiframe", rel, [path], rec, frames, False, [warning])


def _series_plans(members: list[tuple[Path, str, dict[str, Any]]]) -> list[ImagePlan]:
    members.sort(key=lambda m: m[1])
    if len(members) == 1:
        path, rel, rec = members[0]
        frame = Frame(path, None, rec["frame_info"][0])
        return [ImagePlan("dicom-image", rel, [path], rec, [frame], False)]
    frames = [Frame(p, None, rec["frame_info"][0], rec["sop_instance"]) for p, _, rec in members]
    same_size = len({_size_key(rec) for _, _, rec in members}) == 1
    problem = stack_problem(frames, same_size)
    if problem is not None:
        uid = members[0][2]["series_uid"]
        warning = f"series {uid} cannot form a volume ({problem}): its files are served one by one"
        return [
            ImagePlan(
                "dicom-image",
                rel,
                [path],
                rec,
                [Frame(path, None, rec["frame_info"][0])],
                False,
                [warning],
            )
            for path, rel, rec in members
        ]
    by_path = {p: (rel, rec) for p, rel, rec in members}
    ordered, warnings = sort_stack(frames)
    paths = [f.path for f in ordered]
    folder = os.path.commonpath([Path(rel).parent.as_posix() for _, rel, _ in members])
    header = by_path[paths[0]][1]
    name = folder or header["series_description"] or "series"
    return [ImagePlan("dicom-volume", name, paths, header, ordered, True, warnings)]


def _unique_names(plans: list[ImagePlan]) -> None:
    """Several series in one folder: name each after its series number (and UID if needed)."""
    for with_uid in (False, True):
        count: dict[str, int] = defaultdict(int)
        for plan in plans:
            count[plan.name] += 1
        for plan in plans:
            if count[plan.name] > 1 and plan.kind == "dicom-volume":
                base = plan.name.split("/series-")[0] if "/series-" in plan.name else plan.name
                tag = plan.header["series_number"] or "x"
                if with_uid:
                    tag = f"{tag}-{plan.header['series_uid'][-8:]}"
                plan.name = f"{base}/series-{tag}"
