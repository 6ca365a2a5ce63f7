"""A deterministic synthetic CT phantom written as a DICOM series (one file per slice).

The phantom is defined in patient space (LPS, mm): a water-like cylinder (40 HU) along the
patient's z axis in air (-1000 HU) holding spheres of known HU (``SPHERES``). Every voxel takes
the HU of the region its centre lies in, so the series may be oblique (``tilt_deg``) and the HU
at any patient point is known exactly (``hu_at``). Stored values are HU + 1024 in 12 bits
(RescaleIntercept -1024), as most CT scanners write them. Identical arguments give identical files
(UIDs included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

AIR_HU = -1000.0
BODY_HU = 40.0
# (name, centre as fractions of the cylinder radius (x, y) and of the height (z), radius as a
# fraction of the cylinder radius, HU)
SPHERES: tuple[tuple[str, tuple[float, float, float], float, float], ...] = (
    ("bone", (0.45, 0.0, 0.5), 0.25, 700.0),
    ("lung", (-0.45, 0.0, 0.5), 0.25, -700.0),
    ("fat", (0.0, 0.45, 0.5), 0.2, -100.0),
    ("contrast", (0.0, -0.45, 0.5), 0.2, 200.0),
    ("water", (0.0, 0.0, 0.25), 0.25, 0.0),
)


@dataclass(frozen=True)
class PhantomSpec:
    """Size and geometry of a phantom series."""

    cols: int = 64
    rows: int = 64
    slices: int = 40
    pixel_spacing: float = 0.8  # mm, both in-plane directions
    slice_spacing: float = 2.5  # mm
    tilt_deg: float = 0.0  # rotation of the image plane about the patient's x axis (oblique)
    seed: int = 7
    monochrome1: bool = False
    origin_z: float = -50.0  # z of the centre of slice 0 before tilting

    @property
    def orientation(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Unit vectors along a row and along a column (ImageOrientationPatient)."""
        t = math.radians(self.tilt_deg)
        row = np.array([1.0, 0.0, 0.0])
        col = np.array([0.0, math.cos(t), math.sin(t)])
        return row, col

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        row, col = self.orientation
        n: npt.NDArray[np.float64] = np.cross(row, col)
        return n

    def position(self, k: int) -> npt.NDArray[np.float64]:
        """ImagePositionPatient of slice k: the slab is centred on the patient's z axis."""
        row, col = self.orientation
        centre = np.array([0.0, 0.0, self.origin_z + (self.slices - 1) * self.slice_spacing / 2])
        half_w = (self.cols - 1) * self.pixel_spacing / 2
        half_h = (self.rows - 1) * self.pixel_spacing / 2
        mid = (self.slices - 1) / 2
        p: npt.NDArray[np.float64] = (
            centre - half_w * row - half_h * col + (k - mid) * self.slice_spacing * self.normal
        )
        return p

    @property
    def radius(self) -> float:
        """Cylinder radius (mm)."""
        return 0.42 * min(self.cols, self.rows) * self.pixel_spacing

    @property
    def z_range(self) -> tuple[float, float]:
        zc = self.origin_z + (self.slices - 1) * self.slice_spacing / 2
        half = self.slices * self.slice_spacing / 2
        return zc - half, zc + half

    def sphere_centres(self) -> dict[str, tuple[npt.NDArray[np.float64], float, float]]:
        """Sphere name -> (centre LPS, radius mm, HU)."""
        z0, z1 = self.z_range
        out = {}
        for name, (fx, fy, fz), fr, hu in SPHERES:
            centre = np.array([fx * self.radius, fy * self.radius, z0 + fz * (z1 - z0)])
            radius = min(fr * self.radius, 0.22 * (z1 - z0))
            out[name] = (centre, radius, hu)
        return out


# The demo's series: 256x256x120, about 15 MB, written in a few seconds.
DEMO_PHANTOM = PhantomSpec(cols=256, rows=256, slices=120, pixel_spacing=0.9, slice_spacing=2.0)
# The benchmark's: a typical CT.
BENCH_PHANTOM = PhantomSpec(cols=512, rows=512, slices=300, pixel_spacing=0.7, slice_spacing=1.0)


def hu_at(spec: PhantomSpec, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The phantom's HU at patient points (..., 3)."""
    p = np.asarray(points, dtype=np.float64)
    hu = np.full(p.shape[:-1], AIR_HU)
    z0, z1 = spec.z_range
    margin = 3 * spec.slice_spacing
    body = (
        (np.hypot(p[..., 0], p[..., 1]) <= spec.radius)
        & (p[..., 2] >= z0 - margin)
        & (p[..., 2] <= z1 + margin)
    )
    hu[body] = BODY_HU
    for centre, radius, value in spec.sphere_centres().values():
        inside = np.sum((p - centre) ** 2, axis=-1) <= radius**2
        hu[inside] = value
    return hu


def slice_hu(spec: PhantomSpec, k: int) -> npt.NDArray[np.float64]:
    """HU of slice k, (rows, cols), from its voxel centres."""
    row, col = spec.orientation
    c = np.arange(spec.cols, dtype=np.float64) * spec.pixel_spacing
    r = np.arange(spec.rows, dtype=np.float64) * spec.pixel_spacing
    pts = spec.position(k) + r[:, None, None] * col + c[None, :, None] * row
    return hu_at(spec, pts)


def _uid(spec: PhantomSpec, *parts: object) -> UID:
    return generate_uid(entropy_srcs=[repr(spec), *[str(p) for p in parts]])


def write_ct_phantom(
    folder: Path, spec: PhantomSpec | None = None, names: list[str] | None = None
) -> list[Path]:
    """Write the series into ``folder`` (one ``.dcm`` per slice); returns the paths in slice
    order. ``names`` overrides the file names (slice order)."""
    spec = spec or PhantomSpec()
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = _uid(spec, "study"), _uid(spec, "series"), _uid(spec, "frame")
    row, col = spec.orientation
    paths = []
    for k in range(spec.slices):
        hu = slice_hu(spec, k)
        stored = np.clip(np.rint(hu) + 1024, 0, 4095).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = _uid(spec, "instance", k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = names[k] if names is not None else f"CT{k + 1:04d}.dcm"
        path = folder / name
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = "Phantom^CT", "PHANTOM-1"
        ds.StudyDate = ds.SeriesDate = "20240101"
        ds.Modality, ds.Manufacturer = "CT", "Tessera synthetic phantom"
        ds.SeriesDescription = f"CT phantom {spec.cols}x{spec.rows}x{spec.slices}" + (
            f" tilted {spec.tilt_deg:g} deg" if spec.tilt_deg else ""
        )
        ds.SeriesNumber, ds.InstanceNumber = 1, spec.slices - k  # scanners often count downwards
        ds.ImagePositionPatient = [round(float(v), 6) for v in spec.position(k)]
        ds.ImageOrientationPatient = [round(float(v), 9) for v in (*row, *col)]
        ds.PixelSpacing = [spec.pixel_spacing, spec.pixel_spacing]
        ds.SliceThickness = spec.slice_spacing
        ds.Rows, ds.Columns = spec.rows, spec.cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME1" if spec.monochrome1 else "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = stored.tobytes()
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths
