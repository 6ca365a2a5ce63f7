"""Image frames: the seam between an image's pixels and the world coordinates annotations use.

Pixel coordinates are ``(col, row)`` with (0, 0) at the top-left corner of the top-left pixel
(the centre of the first pixel is (0.5, 0.5)); volumes add ``slice`` (0-based, slice *centres*
at integers) and a viewing ``plane``. World coordinates are the *storage frame*:

- a GeoTIFF's own CRS (``GeoFrame``): one affine map from pixels, so pixel coordinates
  round-trip exactly; ``crs=world`` in the API means WGS84 longitude/latitude and ``EPSG:n``
  any other CRS, both converted through ``annot.coords``;
- patient LPS millimetres for DICOM volumes (``VolumeFrame``), built from anything that maps
  ``(col, row, slice, plane)`` to LPS (``VolumeGeometryLike``: the DICOM reader's
  ``VolumeGeometry``, or ``AffineVolume`` from the image metadata of the public contract);
- the pixel grid itself for an image without georeference (``PixelFrame``).

Every map takes and returns float64 arrays of shape ``(n, 2)`` (2D) or ``(n, 3)`` (volumes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from annot.coords import WGS84, GeoReference, transform_points
from annot.errors import BadRequest, CoordinateError
from annot.model import Plane

Array = npt.NDArray[np.float64]
PIXEL = "pixel"
WORLD = "world"


class ImageFrame(Protocol):
    """Pixel <-> world maps of one image (2D georeferenced, plain 2D, or a volume)."""

    @property
    def world_dims(self) -> int:
        """2 for images on a map or a plain pixel grid, 3 for patient coordinates."""
        ...

    @property
    def default_plane(self) -> Plane | None:
        """The acquisition plane of a volume; None for 2D images."""
        ...

    def size(self, plane: Plane | None = None) -> tuple[int, int, int]:
        """``(width, height, slices)`` of the pixel grid seen in ``plane`` (slices = 1 in 2D)."""
        ...

    def pixel_to_world(self, pts: Array, plane: Plane | None = None) -> Array:
        """``(col, row[, slice])`` to the storage frame."""
        ...

    def world_to_pixel(self, pts: Array, plane: Plane | None = None) -> Array:
        """The storage frame to ``(col, row[, slice])``."""
        ...

    def crs_to_world(self, crs: str, pts: Array) -> Array:
        """A requested coordinate system (``world``, ``EPSG:n``) to the storage frame."""
        ...

    def world_to_crs(self, crs: str, pts: Array) -> Array:
        """The storage frame to a requested coordinate system (``world``, ``EPSG:n``)."""
        ...

    def reference(self, slice_: int, plane: Plane) -> tuple[str | None, str | None]:
        """``(frame of reference UID, SOP instance UID)`` of a volume slice, if known."""
        ...


def _vec3(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def _as_array(pts: npt.ArrayLike, dims: int) -> Array:
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != dims:
        raise CoordinateError(f"expected points of dimension {dims}, got shape {a.shape}")
    return a


@dataclass(frozen=True)
class PixelFrame:
    """An image without georeference: world coordinates are its pixel coordinates."""

    width: int
    height: int

    world_dims = 2
    default_plane = None

    def size(self, plane: Plane | None = None) -> tuple[int, int, int]:
        return self.width, self.height, 1

    def pixel_to_world(self, pts: Array, plane: Plane | None = None) -> Array:
        return _as_array(pts, 2).copy()

    def world_to_pixel(self, pts: Array, plane: Plane | None = None) -> Array:
        return _as_array(pts, 2).copy()

    def crs_to_world(self, crs: str, pts: Array) -> Array:
        if crs != WORLD:
            raise BadRequest("this image has no georeference: use crs=pixel or crs=world")
        return _as_array(pts, 2).copy()

    world_to_crs = crs_to_world

    def reference(self, slice_: int, plane: Plane) -> tuple[str | None, str | None]:
        return None, None


@dataclass(frozen=True)
class GeoFrame:
    """A georeferenced 2D image: stored in its own CRS, ``world`` meaning WGS84."""

    georef: GeoReference
    width: int
    height: int

    world_dims = 2
    default_plane = None

    @classmethod
    def from_metadata(cls, width: int, height: int, extra: Mapping[str, Any]) -> GeoFrame:
        """From a GeoTIFF's catalog metadata (``transform`` and ``crs`` ``{wkt, epsg}``)."""
        crs = extra["crs"]
        crs_str = f"EPSG:{crs['epsg']}" if crs.get("epsg") else str(crs["wkt"])
        a, b, c, d, e, f = (float(v) for v in extra["transform"])
        return cls(GeoReference((a, b, c, d, e, f), crs_str), width, height)

    def size(self, plane: Plane | None = None) -> tuple[int, int, int]:
        return self.width, self.height, 1

    def pixel_to_world(self, pts: Array, plane: Plane | None = None) -> Array:
        p = _as_array(pts, 2)
        x, y = self.georef.pixel_to_crs(p[:, 0], p[:, 1])
        return np.column_stack([x, y])

    def world_to_pixel(self, pts: Array, plane: Plane | None = None) -> Array:
        p = _as_array(pts, 2)
        c, r = self.georef.crs_to_pixel(p[:, 0], p[:, 1])
        return np.column_stack([c, r])

    def _crs(self, crs: str) -> str:
        if crs == WORLD:
            return WGS84
        if crs.upper().startswith("EPSG:") and crs[5:].isdigit():
            return crs.upper()
        raise BadRequest(f"unknown crs {crs!r}: use world, pixel or EPSG:n")

    def crs_to_world(self, crs: str, pts: Array) -> Array:
        p = _as_array(pts, 2)
        x, y = transform_points(self._crs(crs), self.georef.crs, p[:, 0], p[:, 1])
        return np.column_stack([x, y])

    def world_to_crs(self, crs: str, pts: Array) -> Array:
        p = _as_array(pts, 2)
        x, y = transform_points(self.georef.crs, self._crs(crs), p[:, 0], p[:, 1])
        return np.column_stack([x, y])

    def reference(self, slice_: int, plane: Plane) -> tuple[str | None, str | None]:
        return None, None


class VolumeGeometryLike(Protocol):
    """What a volume frame needs from the DICOM side: pixel (col, row, slice, plane) <-> LPS."""

    @property
    def frame_of_reference_uid(self) -> str | None: ...

    @property
    def acquisition_plane(self) -> Plane: ...

    def shape(self, plane: Plane) -> tuple[int, int, int]:
        """``(width, height, slices)`` of the volume seen in ``plane``."""
        ...

    def pixel_to_lps(self, pts: Array, plane: Plane) -> Array:
        """``(n, 3)`` ``(col, row, slice)`` in ``plane`` to ``(n, 3)`` LPS millimetres."""
        ...

    def lps_to_pixel(self, pts: Array, plane: Plane) -> Array:
        """``(n, 3)`` LPS millimetres to ``(col, row, slice)`` in ``plane``."""
        ...

    def sop_instance_uid(self, slice_: int, plane: Plane) -> str | None:
        """The SOP instance a slice comes from (acquisition plane only), if known."""
        ...


# Which volume index axes (i along a row, j along a column, k along the slices) a view of each
# plane shows as (col, row, slice), and whether each is flipped, for an axial acquisition.
# Provisional: the DICOM reader's VolumeGeometry defines the real reformat conventions.
_VIEW_AXES: dict[Plane, tuple[tuple[int, bool], tuple[int, bool], tuple[int, bool]]] = {
    Plane.axial: ((0, False), (1, False), (2, False)),
    Plane.coronal: ((0, False), (2, True), (1, False)),
    Plane.sagittal: ((1, False), (2, True), (0, False)),
}


@dataclass(frozen=True)
class AffineVolume:
    """A volume from the contract's metadata: ``origin``, ``spacing``, ``direction``, shape.

    Index ``(i, j, k)`` (i along a row, j down a column, k the slice) has its voxel *centre* at
    ``origin + direction.T @ (spacing * (i, j, k))``; pixel ``(col, row)`` = ``(i + 0.5,
    j + 0.5)`` in the acquisition plane. Other planes permute and flip axes as ``_VIEW_AXES``.
    Also the test double for 3D until the DICOM reader's ``VolumeGeometry`` is plugged in.
    """

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...]
    dims: tuple[int, int, int]  # (columns, rows, slices) in the acquisition plane
    frame_of_reference_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()
    acquisition_plane: Plane = Plane.axial

    @classmethod
    def from_metadata(cls, width: int, height: int, extra: Mapping[str, Any]) -> AffineVolume:
        direction = tuple(_vec3(row) for row in extra["direction"])
        sx, sy, sz = (float(v) for v in extra["spacing"])
        ox, oy, oz = (float(v) for v in extra["origin"])
        return cls(
            (ox, oy, oz),
            (sx, sy, sz),
            direction,
            (width, height, int(extra.get("slices") or 1)),
            extra.get("frame_of_reference_uid"),
            tuple(extra.get("sop_instance_uids") or ()),
            Plane(extra.get("plane", "axial")),
        )

    def _matrix(self) -> Array:
        d = np.asarray(self.direction, dtype=np.float64)
        return d.T * np.asarray(self.spacing, dtype=np.float64)  # columns: steps along i, j, k

    def _view(self, plane: Plane) -> tuple[tuple[int, bool], tuple[int, bool], tuple[int, bool]]:
        return _VIEW_AXES[plane]

    def shape(self, plane: Plane) -> tuple[int, int, int]:
        axes = self._view(plane)
        return (self.dims[axes[0][0]], self.dims[axes[1][0]], self.dims[axes[2][0]])

    def _view_to_index(self, pts: Array, plane: Plane) -> Array:
        axes = self._view(plane)
        ijk = np.empty_like(pts)
        for v, (axis, flip) in enumerate(axes):
            centre = pts[:, v] - 0.5 if v < 2 else pts[:, v]  # col/row: corners; slice: centres
            ijk[:, axis] = (self.dims[axis] - 1 - centre) if flip else centre
        return ijk

    def _index_to_view(self, ijk: Array, plane: Plane) -> Array:
        axes = self._view(plane)
        out = np.empty_like(ijk)
        for v, (axis, flip) in enumerate(axes):
            centre = (self.dims[axis] - 1 - ijk[:, axis]) if flip else ijk[:, axis]
            out[:, v] = centre + 0.5 if v < 2 else centre
        return out

    def pixel_to_lps(self, pts: Array, plane: Plane) -> Array:
        ijk = self._view_to_index(_as_array(pts, 3), plane)
        return np.asarray(ijk @ self._matrix().T + np.asarray(self.origin), dtype=np.float64)

    def lps_to_pixel(self, pts: Array, plane: Plane) -> Array:
        rel = _as_array(pts, 3) - np.asarray(self.origin)
        ijk = np.linalg.solve(self._matrix(), rel.T).T
        return self._index_to_view(np.asarray(ijk, dtype=np.float64), plane)

    def sop_instance_uid(self, slice_: int, plane: Plane) -> str | None:
        if plane is self.acquisition_plane and 0 <= slice_ < len(self.sop_instance_uids):
            return self.sop_instance_uids[slice_]
        return None


@dataclass(frozen=True)
class VolumeFrame:
    """A volume: stored in patient LPS millimetres; ``world`` means LPS."""

    volume: VolumeGeometryLike

    world_dims = 3

    @property
    def default_plane(self) -> Plane:
        return self.volume.acquisition_plane

    def size(self, plane: Plane | None = None) -> tuple[int, int, int]:
        return self.volume.shape(plane or self.default_plane)

    def pixel_to_world(self, pts: Array, plane: Plane | None = None) -> Array:
        return self.volume.pixel_to_lps(_as_array(pts, 3), plane or self.default_plane)

    def world_to_pixel(self, pts: Array, plane: Plane | None = None) -> Array:
        return self.volume.lps_to_pixel(_as_array(pts, 3), plane or self.default_plane)

    def crs_to_world(self, crs: str, pts: Array) -> Array:
        if crs != WORLD:
            raise BadRequest("volumes use crs=world (patient LPS, mm) or crs=pixel")
        return _as_array(pts, 3).copy()

    world_to_crs = crs_to_world

    def reference(self, slice_: int, plane: Plane) -> tuple[str | None, str | None]:
        return self.volume.frame_of_reference_uid, self.volume.sop_instance_uid(slice_, plane)

    def slice_plane(self, slice_: float, plane: Plane | None = None) -> tuple[Array, Array]:
        """A point on slice ``slice_`` of ``plane`` and the unit normal, in LPS."""
        plane = plane or self.default_plane
        w, h, _ = self.size(plane)
        pts = np.array([[0.0, 0.0, slice_], [w, 0.0, slice_], [0.0, h, slice_]])
        world = self.pixel_to_world(pts, plane)
        normal = np.cross(world[1] - world[0], world[2] - world[0])
        return world[0], normal / np.linalg.norm(normal)


@dataclass(frozen=True)
class PatientVolume:
    """The DICOM reader's ``annot.patient.VolumeGeometry`` as a ``VolumeGeometryLike``."""

    geometry: Any  # annot.patient.VolumeGeometry
    frame_of_reference_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()

    @classmethod
    def from_metadata(
        cls, width: int, height: int, extra: Mapping[str, Any], sop_uids: Sequence[str] = ()
    ) -> PatientVolume:
        from annot.patient import VolumeGeometry

        positions = extra.get("slice_positions")
        geometry = VolumeGeometry(
            _vec3(extra["origin"]),
            _vec3(extra["spacing"]),
            (
                _vec3(extra["direction"][0]),
                _vec3(extra["direction"][1]),
                _vec3(extra["direction"][2]),
            ),
            (width, height, int(extra.get("slices") or 1)),
            tuple(_vec3(p) for p in positions) if positions else None,
        )
        return cls(geometry, extra.get("frame_of_reference_uid"), tuple(sop_uids))

    @property
    def acquisition_plane(self) -> Plane:
        from annot.patient import acquisition_plane

        return Plane(acquisition_plane(self.geometry))

    def shape(self, plane: Plane) -> tuple[int, int, int]:
        from annot.patient import plane_grid

        w, h, n = plane_grid(self.geometry, plane.value).shape
        return int(w), int(h), int(n)

    def pixel_to_lps(self, pts: Array, plane: Plane) -> Array:
        from annot.patient import plane_to_patient

        p = _as_array(pts, 3)
        out = plane_to_patient(self.geometry, p[:, 0], p[:, 1], p[:, 2], plane.value)
        return np.asarray(out, dtype=np.float64).reshape(-1, 3)

    def lps_to_pixel(self, pts: Array, plane: Plane) -> Array:
        from annot.patient import patient_to_plane

        cols, rows, slices = patient_to_plane(self.geometry, _as_array(pts, 3), plane.value)
        return np.column_stack([cols, rows, slices]).astype(np.float64)

    def sop_instance_uid(self, slice_: int, plane: Plane) -> str | None:
        if plane is self.acquisition_plane and 0 <= slice_ < len(self.sop_instance_uids):
            return self.sop_instance_uids[slice_]
        return None


def frame_from_metadata(
    width: int, height: int, extra: Mapping[str, Any], sop_uids: Sequence[str] = ()
) -> ImageFrame:
    """The frame of an image from its catalog metadata (the ``extra`` of the image info)."""
    if extra.get("transform") is not None and extra.get("crs") is not None:
        return GeoFrame.from_metadata(width, height, extra)
    if extra.get("direction") is not None and extra.get("spacing") is not None:
        uids = sop_uids or extra.get("sop_instance_uids") or ()
        return VolumeFrame(PatientVolume.from_metadata(width, height, extra, uids))
    return PixelFrame(width, height)


def parse_crs(value: str | None) -> str:
    """The ``crs`` query parameter: ``world`` (default), ``pixel`` or ``EPSG:n``."""
    if value is None or value == "" or value.lower() == WORLD:
        return WORLD
    if value.lower() == PIXEL:
        return PIXEL
    if value.upper().startswith("EPSG:") and value[5:].isdigit():
        return value.upper()
    raise BadRequest(f"unknown crs {value!r}: use world, pixel or EPSG:n")
