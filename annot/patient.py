"""Patient coordinates (DICOM LPS, millimetres) of volume pixels, and the pixel grid of each plane.

Pixel coordinates are ``(col, row)`` with (0, 0) at the top-left corner of the top-left pixel, x to
the right and y down, so the centre of the first pixel is (0.5, 0.5): for DICOM that centre is
ImagePositionPatient. ``slice`` is a 0-based slice index whose integer values are slice centres
(it is not a pixel edge coordinate): slice 0 is the lowest along the normal ``row x column`` of
the direction cosines, and the index increases along it.

A volume is shown in three planes, ``axial``, ``coronal`` and ``sagittal``. The acquisition plane
(the one whose normal is closest to the slice normal) is the stored pixel grid itself. The other
two planes cut the volume along one in-plane axis; their through-slice axis is resampled so that
pixels are square (its pixel size is that of the other in-plane axis), and they are oriented as a
radiologist reads them (coronal and sagittal: the head up; axial and coronal: the patient's left
on the right of the screen; sagittal: anterior on the left). Each plane's own slice index
increases along ``col x row`` of that plane, as in the acquisition plane.

``plane_to_patient`` / ``patient_to_plane`` are the pair to use; ``pixel_to_patient`` /
``patient_to_pixel`` work on the stored (acquisition) grid. Pure NumPy: no web or server imports.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Vec3 = tuple[float, float, float]

PLANES = ("axial", "coronal", "sagittal")
# LPS axis of each plane's normal, and the (LPS axis, sign) shown to the right and downwards.
_PLANE_NORMAL = {"axial": 2, "coronal": 1, "sagittal": 0}
_PLANE_SCREEN = {
    "axial": ((0, 1.0), (1, 1.0)),  # right: patient left (+x); down: posterior (+y)
    "coronal": ((0, 1.0), (2, -1.0)),  # right: patient left; down: inferior (-z)
    "sagittal": ((1, 1.0), (2, -1.0)),  # right: posterior; down: inferior
}
GAP_FACTOR = 1.5  # neighbouring slices further apart than this many spacings leave a gap


def _vec(v: Any) -> Vec3:
    a = [float(x) for x in v]
    return (a[0], a[1], a[2])


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a stack of parallel slices lies in patient space (LPS, mm).

    ``origin`` is the centre of the first pixel of slice 0 (its ImagePositionPatient);
    ``spacing`` is (between columns, between rows, between slices); ``direction`` has three rows:
    the unit vectors along a row (increasing column), along a column (increasing row) and along
    increasing slice index; ``shape`` is (columns, rows, slices). ``slice_origins``, when given,
    holds each slice's own ImagePositionPatient, used instead of ``origin + k * spacing`` so that
    coordinates stay exact for irregular spacing; fractional slices interpolate linearly.
    """

    origin: Vec3
    spacing: Vec3
    direction: tuple[Vec3, Vec3, Vec3]
    shape: tuple[int, int, int]
    slice_origins: tuple[Vec3, ...] | None = None

    def __post_init__(self) -> None:
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        d = np.asarray(self.direction, dtype=np.float64)
        if d.shape != (3, 3) or not np.all(np.isfinite(d)):
            raise ValueError("direction must be 3x3 finite numbers")
        norms = np.linalg.norm(d, axis=1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            raise ValueError(f"direction rows must be unit vectors, got norms {norms}")
        if abs(np.linalg.det(d)) < 1e-6:
            raise ValueError("direction rows must not be parallel")
        if any(n < 1 for n in self.shape):
            raise ValueError(f"shape must be positive, got {self.shape}")
        if self.slice_origins is not None and len(self.slice_origins) != self.shape[2]:
            raise ValueError(
                f"slice_origins has {len(self.slice_origins)} entries for {self.shape[2]} slices"
            )

    @property
    def matrix(self) -> Array:
        """3x3 with columns ``spacing[i] * direction[i]``: index offsets -> LPS offsets."""
        d = np.asarray(self.direction, dtype=np.float64)
        return (d * np.asarray(self.spacing, dtype=np.float64)[:, None]).T

    def slice_heights(self) -> Array:
        """Distance of each slice's origin along the slice direction, relative to slice 0."""
        n = np.asarray(self.direction[2], dtype=np.float64)
        if self.slice_origins is None:
            return np.arange(self.shape[2], dtype=np.float64) * self.spacing[2]
        o = np.asarray(self.slice_origins, dtype=np.float64)
        h: Array = (o - o[0]) @ n
        return h

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": list(self.origin),
            "spacing": list(self.spacing),
            "direction": [list(r) for r in self.direction],
            "shape": list(self.shape),
        }


def _as_arrays(*values: npt.ArrayLike) -> list[Array]:
    arrays = np.broadcast_arrays(*[np.asarray(v, dtype=np.float64) for v in values])
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _slice_origin(geom: VolumeGeometry, k: Array) -> Array:
    """Patient position of the first pixel's centre on (fractional) slice ``k``: (..., 3)."""
    origin = np.asarray(geom.origin, dtype=np.float64)
    if geom.slice_origins is None or len(geom.slice_origins) == 1:
        step = np.asarray(geom.direction[2], dtype=np.float64) * geom.spacing[2]
        out: Array = origin + k[..., None] * step
        return out
    o = np.asarray(geom.slice_origins, dtype=np.float64)
    k0 = np.clip(np.floor(k), 0, len(o) - 2).astype(np.intp)
    t = (k - k0)[..., None]
    res: Array = o[k0] + t * (o[k0 + 1] - o[k0])
    return res


def pixel_to_patient(
    geom: VolumeGeometry, col: npt.ArrayLike, row: npt.ArrayLike, slice_: npt.ArrayLike
) -> Array:
    """Patient LPS (mm) of stored-grid pixel coordinates; returns shape (..., 3).

    ``col``/``row`` are pixel-edge coordinates (first pixel centre 0.5), ``slice_`` a slice index.
    """
    c, r, k = _as_arrays(col, row, slice_)
    d = np.asarray(geom.direction, dtype=np.float64)
    base = _slice_origin(geom, k)
    out: Array = (
        base
        + ((c - 0.5) * geom.spacing[0])[..., None] * d[0]
        + ((r - 0.5) * geom.spacing[1])[..., None] * d[1]
    )
    return out


def _interp_extrapolate(x: Array, xp: Array, fp: Array) -> Array:
    """Piecewise-linear interpolation of increasing ``xp``, extended by its end segments."""
    if len(xp) == 1:
        return np.full_like(x, fp[0])
    i = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, len(xp) - 2)
    t = (x - xp[i]) / (xp[i + 1] - xp[i])
    out: Array = fp[i] + t * (fp[i + 1] - fp[i])
    return out


def patient_to_pixel(geom: VolumeGeometry, points: npt.ArrayLike) -> tuple[Array, Array, Array]:
    """Stored-grid ``(col, row, slice)`` of patient LPS points (..., 3): the inverse of
    ``pixel_to_patient``."""
    p = np.asarray(points, dtype=np.float64)
    d = np.asarray(geom.direction, dtype=np.float64)
    origin = np.asarray(geom.origin, dtype=np.float64)
    if geom.slice_origins is None or len(geom.slice_origins) == 1:
        flat = np.linalg.solve(geom.matrix, (p - origin).reshape(-1, 3).T).T
        idx = np.asarray(flat, dtype=np.float64).reshape(p.shape)
        return idx[..., 0] + 0.5, idx[..., 1] + 0.5, idx[..., 2]
    u, v = d[0], d[1]
    normal = np.cross(u, v)
    normal /= np.linalg.norm(normal)
    o = np.asarray(geom.slice_origins, dtype=np.float64)
    heights = (o - o[0]) @ normal
    k = _interp_extrapolate((p - o[0]) @ normal, heights, np.arange(len(o), dtype=np.float64))
    q = p - _slice_origin(geom, k)
    gram = np.array([[u @ u, u @ v], [v @ u, v @ v]])
    ab = np.linalg.solve(gram, np.stack([q @ u, q @ v], axis=-1).reshape(-1, 2).T).T
    ab = ab.reshape(*p.shape[:-1], 2)
    return ab[..., 0] / geom.spacing[0] + 0.5, ab[..., 1] / geom.spacing[1] + 0.5, k


def acquisition_plane(geom: VolumeGeometry) -> str:
    """The plane whose normal (an LPS axis) is closest to the slice direction."""
    axis = int(np.argmax(np.abs(np.asarray(geom.direction[2], dtype=np.float64))))
    return {2: "axial", 1: "coronal", 0: "sagittal"}[axis]


@dataclass(frozen=True)
class PlaneGrid:
    """The pixel grid of one plane and how it maps onto the stored volume grid.

    ``axes[i]`` is the stored axis (0 columns, 1 rows, 2 slices) shown along this plane's
    column, row and slice axis, ``flips[i]`` whether it runs backwards. The stored slice axis
    shown in-plane is resampled: ``through`` pixels span the stack from half a slice below
    slice 0 to half a slice above the last one (``span`` mm from ``start`` mm, along the slice
    direction, relative to slice 0), ``shape[i] = round(span / pixel size)``.
    """

    plane: str
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    shape: tuple[int, int, int]  # (columns, rows, slices) of this plane
    volume_shape: tuple[int, int, int]
    start: float = 0.0
    span: float = 0.0
    heights: tuple[float, ...] = ()
    step: float = 1.0  # median slice spacing (mm)

    @property
    def is_stored(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)

    def to_volume(
        self, col: npt.ArrayLike, row: npt.ArrayLike, slice_: npt.ArrayLike
    ) -> tuple[Array, Array, Array]:
        """Stored-grid (col, row, slice) of this plane's (col, row, slice) coordinates."""
        coords = _as_arrays(col, row, slice_)
        if self.is_stored:
            return coords[0], coords[1], coords[2]
        out: list[Array] = [np.zeros(0)] * 3
        for i, (axis, flip, value) in enumerate(zip(self.axes, self.flips, coords, strict=True)):
            n = self.shape[i]
            if i == 2:  # a slice index (centre convention) along a stored in-plane axis
                edge = (n - value - 0.5) if flip else value + 0.5
                out[axis] = edge
                continue
            t = n - value if flip else value
            if axis == 2:
                h = self.start + t * (self.span / n)
                out[2] = _interp_extrapolate(
                    h,
                    np.asarray(self.heights, dtype=np.float64),
                    np.arange(len(self.heights), dtype=np.float64),
                )
            else:
                out[axis] = t
        return out[0], out[1], out[2]

    def from_volume(
        self, col: npt.ArrayLike, row: npt.ArrayLike, slice_: npt.ArrayLike
    ) -> tuple[Array, Array, Array]:
        """This plane's (col, row, slice) of stored-grid (col, row, slice) coordinates."""
        vol = _as_arrays(col, row, slice_)
        if self.is_stored:
            return vol[0], vol[1], vol[2]
        out: list[Array] = [np.zeros(0)] * 3
        for i, (axis, flip) in enumerate(zip(self.axes, self.flips, strict=True)):
            n = self.shape[i]
            value = vol[axis]
            if i == 2:
                out[2] = (n - value - 0.5) if flip else value - 0.5
                continue
            if axis == 2:
                h = _interp_extrapolate(
                    value,
                    np.arange(len(self.heights), dtype=np.float64),
                    np.asarray(self.heights, dtype=np.float64),
                )
                t = (h - self.start) / (self.span / n)
            else:
                t = value
            out[i] = n - t if flip else t
        return out[0], out[1], out[2]

    def describe(self) -> dict[str, Any]:
        """JSON description of the mapping, for image metadata."""
        names = ("col", "row", "slice")
        mapping = {}
        for i, (axis, flip) in enumerate(zip(self.axes, self.flips, strict=True)):
            stored = names[axis]
            n = self.volume_shape[axis]
            if self.is_stored:
                mapping[names[i]] = f"stored {stored}"
            elif axis == 2:
                mapping[names[i]] = (
                    f"stored slice resampled: {self.shape[i]} pixels over {self.span:.6g} mm "
                    "(linear interpolation between the two nearest slices)"
                    + ("; reversed" if flip else "")
                )
            elif flip:
                mapping[names[i]] = f"stored {stored} reversed ({n} - {stored})"
            else:
                mapping[names[i]] = f"stored {stored}"
        return {
            "width": self.shape[0],
            "height": self.shape[1],
            "slices": self.shape[2],
            "axes": [names[a] for a in self.axes],
            "flips": list(self.flips),
            "mapping": mapping,
        }


def _assign(direction: Array, lps_axes: list[int], vol_axes: list[int]) -> dict[int, int]:
    """Volume axis for each LPS axis, maximising the summed |cosines| (a small assignment)."""
    best: tuple[float, dict[int, int]] = (-1.0, {})
    for perm in itertools.permutations(vol_axes):
        score = sum(abs(direction[m, a]) for a, m in zip(lps_axes, perm, strict=True))
        if score > best[0] + 1e-12:
            best = (score, dict(zip(lps_axes, perm, strict=True)))
    return best[1]


def plane_grid(geom: VolumeGeometry, plane: str) -> PlaneGrid:
    """The pixel grid of ``plane`` (see the module docstring for its orientation rules)."""
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
    acq = acquisition_plane(geom)
    if plane == acq:
        return PlaneGrid(plane, (0, 1, 2), (False, False, False), geom.shape, geom.shape)
    d = np.asarray(geom.direction, dtype=np.float64)
    heights = geom.slice_heights()
    nk = geom.shape[2]
    step = float(np.median(np.diff(heights))) if nk > 1 else geom.spacing[2]
    start = float(heights[0] - step / 2)
    span = float(heights[-1] - heights[0] + step)
    # The stored in-plane axis closest to this plane's normal is cut; the other one and the
    # slice axis are shown.
    normal_axis = _PLANE_NORMAL[plane]
    cut = int(np.argmax([abs(d[0, normal_axis]), abs(d[1, normal_axis])]))
    other = 1 - cut
    (ra, rs), (da, ds) = _PLANE_SCREEN[plane]
    which = _assign(d, [ra, da], [other, 2])
    axis_r, axis_d = which[ra], which[da]
    flip_r = float(np.sign(d[axis_r, ra]) or 1.0) * rs < 0
    flip_d = float(np.sign(d[axis_d, da]) or 1.0) * ds < 0
    vr = d[axis_r] * (-1 if flip_r else 1)
    vd = d[axis_d] * (-1 if flip_d else 1)
    flip_s = float(np.dot(np.cross(vr, vd), d[cut])) < 0
    pixel = geom.spacing[other]
    through = max(1, round(span / pixel))
    sizes = {cut: geom.shape[cut], other: geom.shape[other], 2: through}
    return PlaneGrid(
        plane,
        (axis_r, axis_d, cut),
        (flip_r, flip_d, flip_s),
        (sizes[axis_r], sizes[axis_d], sizes[cut]),
        geom.shape,
        start,
        span,
        tuple(float(h) for h in heights),
        step,
    )


def plane_to_patient(
    geom: VolumeGeometry,
    col: npt.ArrayLike,
    row: npt.ArrayLike,
    slice_: npt.ArrayLike,
    plane: str | None = None,
) -> Array:
    """Patient LPS (mm), shape (..., 3), of pixel ``(col, row, slice)`` in ``plane``.

    ``plane`` None is the acquisition plane. The first pixel's centre is (0.5, 0.5).
    """
    grid = plane_grid(geom, plane or acquisition_plane(geom))
    return pixel_to_patient(geom, *grid.to_volume(col, row, slice_))


def patient_to_plane(
    geom: VolumeGeometry, points: npt.ArrayLike, plane: str | None = None
) -> tuple[Array, Array, Array]:
    """``(col, row, slice)`` in ``plane`` of patient LPS points (..., 3): inverse of
    ``plane_to_patient``."""
    grid = plane_grid(geom, plane or acquisition_plane(geom))
    return grid.from_volume(*patient_to_pixel(geom, points))


def plane_geometry(geom: VolumeGeometry, plane: str) -> VolumeGeometry:
    """The affine geometry of a plane's pixel grid (exact unless the stack is irregular)."""
    grid = plane_grid(geom, plane)
    if grid.is_stored:
        return VolumeGeometry(geom.origin, geom.spacing, geom.direction, geom.shape)
    # Steps from the far edges, not from the first pixel: real stacks are regular only to
    # ~1e-3 mm, and a local step would tilt the whole plane by the first gap's irregularity.
    w, h = max(1, grid.shape[0] - 1), max(1, grid.shape[1] - 1)
    o = plane_to_patient(geom, 0.5, 0.5, 0, plane)
    ex = (plane_to_patient(geom, 0.5 + w, 0.5, 0, plane) - o) / w
    ey = (plane_to_patient(geom, 0.5, 0.5 + h, 0, plane) - o) / h
    d = np.asarray(geom.direction, dtype=np.float64)
    sx, sy = float(np.linalg.norm(ex)), float(np.linalg.norm(ey))
    sz = geom.spacing[grid.axes[2]]
    ez = d[grid.axes[2]] * (-1 if grid.flips[2] else 1)
    return VolumeGeometry(
        _vec(o),
        (sx, sy, sz),
        (_vec(ex / sx), _vec(ey / sy), _vec(ez)),
        grid.shape,
    )


def geometry_from_dicom(
    positions: npt.ArrayLike,
    orientation: npt.ArrayLike,
    pixel_spacing: npt.ArrayLike,
    rows: int,
    cols: int,
    slice_spacing: float | None = None,
) -> VolumeGeometry:
    """Geometry of slices given by ImagePositionPatient (k, 3), ImageOrientationPatient (6),
    PixelSpacing ([between rows, between columns], as DICOM orders it).

    Positions must already be sorted along the normal. The slice spacing is the median distance
    between neighbouring slices along the normal (``slice_spacing`` for a single slice).
    """
    ipp = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    iop = np.asarray(orientation, dtype=np.float64)
    # The direction cosines are used as written (DICOM's own formula does), even when rounding
    # left them a little off unit length; the slice direction is the unit normal.
    u, v = iop[:3], iop[3:]
    n = np.cross(u, v)
    n /= np.linalg.norm(n)
    ps = np.asarray(pixel_spacing, dtype=np.float64)
    if len(ipp) > 1:
        dz = float(np.median(np.diff(ipp @ n)))
    else:
        dz = float(slice_spacing) if slice_spacing and slice_spacing > 0 else 1.0
    return VolumeGeometry(
        _vec(ipp[0]),
        (float(ps[1]), float(ps[0]), dz),
        (_vec(u), _vec(v), _vec(n)),
        (cols, rows, len(ipp)),
        tuple(_vec(p) for p in ipp) if len(ipp) > 1 else None,
    )


@dataclass(frozen=True)
class PatientVolume:
    """A volume's geometry with its identifiers, with (n, 3)-array methods per plane.

    Build it from the image metadata served at ``/api/v1/images/{id}`` with ``from_metadata``.
    """

    geometry: VolumeGeometry
    frame_of_reference_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()

    @property
    def acquisition_plane(self) -> str:
        return acquisition_plane(self.geometry)

    @classmethod
    def from_metadata(cls, width: int, height: int, extra: dict[str, Any]) -> PatientVolume:
        positions = extra.get("slice_positions")
        slices = int(extra.get("slices") or 1)
        geom = VolumeGeometry(
            _vec(extra["origin"]),
            _vec(extra["spacing"]),
            (
                _vec(extra["direction"][0]),
                _vec(extra["direction"][1]),
                _vec(extra["direction"][2]),
            ),
            (width, height, slices),
            tuple(_vec(p) for p in positions) if positions and len(positions) > 1 else None,
        )
        uids = tuple(str(u) for u in extra.get("sop_instance_uids") or ())
        return cls(geom, extra.get("frame_of_reference_uid"), uids)

    def shape(self, plane: str) -> tuple[int, int, int]:
        """``(width, height, slices)`` of ``plane``."""
        return plane_grid(self.geometry, plane).shape

    def pixel_to_lps(self, pts: npt.ArrayLike, plane: str) -> Array:
        """(n, 3) ``(col, row, slice)`` in ``plane`` to (n, 3) patient LPS mm."""
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        return plane_to_patient(self.geometry, p[:, 0], p[:, 1], p[:, 2], plane)

    def lps_to_pixel(self, pts: npt.ArrayLike, plane: str) -> Array:
        """(n, 3) patient LPS mm to (n, 3) ``(col, row, slice)`` in ``plane``."""
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        return np.stack(patient_to_plane(self.geometry, p, plane), axis=-1)

    def sop_instance_uid(self, slice_: int, plane: str) -> str | None:
        """The SOP instance of a stored slice (acquisition plane only)."""
        if plane == self.acquisition_plane and 0 <= slice_ < len(self.sop_instance_uids):
            return self.sop_instance_uids[slice_]
        return None
