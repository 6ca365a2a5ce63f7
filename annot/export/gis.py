"""GeoPackage and FlatGeobuf export: an image's annotations as one layer GIS tools open.

Written by GDAL through pyogrio (``pyogrio.raw.write``: WKB geometries and NumPy field columns,
no per-feature Python in GDAL's loop). The geometries are the GeoJSON export's
(``annot.export.geojson``): the same ``crs`` values, but the default is the image's own CRS, as
GIS tools prefer it (no reprojection, the georeference stays exact); ``crs=world`` writes WGS84
(EPSG:4326, longitude/latitude) and images without a georeference write their world coordinates
(pixels) with no CRS. The layer's geometry type is ``Unknown`` so points, lines and polygons
share it. Fields are flat: strings and integers, with ``attributes``, ``keypoints`` and ``mask``
as JSON text (``annot.imports.gis`` reads them back). Exterior rings are counter-clockwise.
FlatGeobuf gets GDAL's packed Hilbert R-tree (features in its order, the ``id`` field keeps
ours), except when tags (no geometry) are exported: that index cannot hold them.

DICOM volumes are not written (patient coordinates are 3D and have no EPSG CRS): they export
with ``format=dicom-seg`` or ``format=nifti``.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyogrio.raw
import shapely

from annot.errors import BadRequest
from annot.export.geojson import IMAGE_CRS, _geometries, resolve_crs
from annot.features import dumps, properties
from annot.frames import PIXEL, WORLD, GeoFrame, ImageFrame, VolumeFrame
from annot.model import Annotation

LAYER = "annotations"
INT_FIELDS = ("id", "version")
TEXT_FIELDS = ("label", "kind", "status", "author", "created_at", "updated_by", "updated_at",
               "image_id", "project")  # fmt: skip
JSON_FIELDS = ("attributes", "keypoints", "mask")  # null when the annotation has none


@dataclass(frozen=True)
class GisFormat:
    """A GDAL vector driver: our format name, GDAL's, the file suffix and magic bytes."""

    name: str
    driver: str
    suffix: str
    magic: bytes  # how a file of this format begins (checked before GDAL opens an upload)
    dataset_options: tuple[tuple[str, str], ...] = ()


# GeoPackage 1.3, not GDAL 3.12's default 1.4: older GDAL (QGIS) readers then open it without
# a warning, and 1.4 adds nothing an annotation layer uses.
GPKG = GisFormat("gpkg", "GPKG", ".gpkg", b"SQLite format 3\x00", (("VERSION", "1.3"),))
FLATGEOBUF = GisFormat("fgb", "FlatGeobuf", ".fgb", b"fgb\x03")


def reject_volume(frame: ImageFrame, name: str) -> None:
    if isinstance(frame, VolumeFrame):
        raise BadRequest(
            f"format={name} takes 2D images; a DICOM volume's annotations are in 3D patient "
            "coordinates: use format=dicom-seg or format=nifti"
        )


def layer_crs(frame: ImageFrame, frame_crs: str) -> str | None:
    """The CRS written in the file for the coordinates ``resolve_crs`` chose (None: none)."""
    if not isinstance(frame, GeoFrame) or frame_crs == PIXEL:
        return None
    if frame_crs == WORLD:
        return "EPSG:4326"
    if frame_crs == IMAGE_CRS:
        return frame.georef.crs
    return frame_crs


def _columns(annotations: Sequence[Annotation]) -> tuple[list[np.ndarray], list[str]]:
    props = [properties(a) | {"id": a.id} for a in annotations]
    columns: list[np.ndarray] = []
    for name in INT_FIELDS:
        columns.append(np.array([p[name] for p in props], dtype=np.int64))
    for name in TEXT_FIELDS:
        columns.append(np.array([p.get(name) for p in props], dtype=object))
    for name in JSON_FIELDS:
        text = [None if p.get(name) is None else dumps(p[name]).decode() for p in props]
        columns.append(np.array(text, dtype=object))
    return columns, [*INT_FIELDS, *TEXT_FIELDS, *JSON_FIELDS]


def export_gis(
    annotations: Sequence[Annotation],
    frame: ImageFrame,
    fmt: GisFormat,
    out: BinaryIO,
    crs: str | None = None,
) -> None:
    """Write the annotations as one ``fmt`` layer into ``out``."""
    reject_volume(frame, fmt.name)
    frame_crs, _ = resolve_crs(frame, crs or IMAGE_CRS)
    geoms = _geometries(annotations, frame, frame_crs)
    # exterior rings counter-clockwise, as in the GeoJSON export (and OGC Simple Features)
    oriented = shapely.orient_polygons(np.array(geoms, dtype=object), exterior_cw=False)
    wkb = shapely.to_wkb(oriented)
    columns, names = _columns(annotations)
    options: dict[str, Any] = {}
    if fmt is FLATGEOBUF and any(g is None for g in geoms):
        options["SPATIAL_INDEX"] = "NO"  # GDAL's FlatGeobuf index has no room for null shapes
    # GDAL writes a GeoPackage through SQLite and FlatGeobuf's index in a second pass, so both
    # want a real file: written in a private folder, then copied out in chunks.
    with tempfile.TemporaryDirectory(prefix="tessera-gis-") as folder:
        path = Path(folder) / f"{LAYER}{fmt.suffix}"
        with warnings.catch_warnings():
            # a file without a CRS is what was asked for (pixels, or an image without one)
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            pyogrio.raw.write(
                str(path),
                wkb,
                columns,
                names,
                layer=LAYER,
                driver=fmt.driver,
                geometry_type="Unknown",
                crs=layer_crs(frame, frame_crs),
                promote_to_multi=False,
                layer_options=options,
                dataset_options=dict(fmt.dataset_options),
            )
        with path.open("rb") as written:
            shutil.copyfileobj(written, out, 1024 * 1024)
