"""GeoPackage and FlatGeobuf import: a layer read by GDAL (pyogrio), handed on as GeoJSON.

The file's first layer becomes a FeatureCollection that ``annot.imports.geojson`` checks and
stores like any GeoJSON import, so rejections, dry runs and reprojection are the same. The
coordinates' CRS is the ``crs`` argument, else the layer's (its EPSG code), else (a layer with
no CRS) the image's world coordinates: pixels for an image without a georeference; a
georeferenced image then needs ``crs=``. Fields become properties (``label``, ``kind``, ...;
the export's ``attributes``, ``keypoints`` and ``mask`` JSON text decoded; any other field is
kept in ``attributes``).

An upload must begin with its format's magic bytes before GDAL opens it, so GDAL never guesses
another driver for it (a VRT naming local files, say).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyogrio
import pyogrio.raw
import shapely
from pyproj import CRS

from annot.errors import BadRequest
from annot.export.gis import JSON_FIELDS, GisFormat, reject_volume
from annot.frames import WORLD, GeoFrame, ImageFrame

KINDS = {"gpkg": "GeoPackage", "fgb": "FlatGeobuf"}


def _epsg(layer_crs: str) -> str:
    """``EPSG:n`` for a layer's CRS (pyogrio gives ``EPSG:n``, ``OGC:CRS84`` or WKT)."""
    if layer_crs.upper().startswith("EPSG:") or layer_crs.upper() == "OGC:CRS84":
        return layer_crs.upper()
    try:
        code = CRS.from_user_input(layer_crs).to_epsg()
    except Exception:  # pyproj's CRSError is a plain Exception subclass
        code = None
    if code is None:
        raise BadRequest("the layer's CRS has no EPSG code: name it with crs=EPSG:n")
    return f"EPSG:{code}"


def source_crs(layer_crs: str | None, frame: ImageFrame, asked: str | None) -> str | None:
    """The CRS of the layer's coordinates, as ``annot.imports.geojson.plan`` takes it."""
    if asked:
        return asked
    if layer_crs:
        return _epsg(layer_crs)
    if isinstance(frame, GeoFrame):
        raise BadRequest("the layer names no CRS: give crs=EPSG:n (or crs=pixel)")
    return WORLD


def _decoded(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text  # not ours: kept as text (the checks say if it does not fit)


def _column(name: str, values: np.ndarray) -> list[Any]:
    """A field's values as Python objects: GDAL's nulls (NaN in a numeric column) None, the
    export's JSON text decoded."""
    out: list[Any] = values.tolist()
    if values.dtype.kind == "f":
        nulls = np.isnan(values)
        if nulls.any():
            out = [None if null else v for v, null in zip(out, nulls.tolist(), strict=True)]
    if name in JSON_FIELDS:
        out = [_decoded(v) for v in out]
    return out


def _geometry_objects(geoms: Any, count: int) -> list[Any]:
    """GeoJSON geometry objects; GEOS writes every float's shortest round-trip digits."""
    if geoms is None:
        return [None] * count
    texts = shapely.to_geojson(geoms)
    return [None if t is None else orjson.loads(t) for t in texts.tolist()]


def _read(body: bytes, fmt: GisFormat) -> tuple[dict[str, Any], Any, Any, Any]:
    kind = KINDS.get(fmt.name, fmt.driver)
    if not body.startswith(fmt.magic):
        raise BadRequest(f"the file is not a {kind} file (it does not begin as one)")
    with tempfile.TemporaryDirectory(prefix="tessera-gis-") as folder:
        path = Path(folder) / f"upload{fmt.suffix}"
        path.write_bytes(body)
        try:
            driver = pyogrio.read_info(str(path)).get("driver")
            if driver != fmt.driver:
                raise BadRequest(f"the file is {driver}, not {kind}")
            meta, fids, geometry, fields = pyogrio.raw.read(
                str(path), force_2d=True, return_fids=True, datetime_as_string=True
            )
            geoms = None if geometry is None else shapely.from_wkb(geometry)
        except BadRequest:
            raise
        except Exception as exc:  # a damaged file fails anywhere in GDAL, pyogrio or GEOS
            raise BadRequest(f"cannot read the {kind} file: {exc}") from None
    return meta, fids, geoms, fields


def read_gis(body: bytes, frame: ImageFrame, fmt: GisFormat, crs: str | None) -> tuple[
    dict[str, Any], str | None
]:  # fmt: skip
    """The file's first layer as a GeoJSON FeatureCollection, and its coordinates' CRS."""
    reject_volume(frame, fmt.name)
    meta, fids, geoms, fields = _read(body, fmt)
    names = [str(n) for n in meta["fields"]]
    columns = [_column(n, np.asarray(c)) for n, c in zip(names, fields, strict=True)]
    fid_list = np.asarray(fids).tolist()
    geometries = _geometry_objects(geoms, len(fid_list))
    features = []
    for i, fid in enumerate(fid_list):
        props = {n: col[i] for n, col in zip(names, columns, strict=True) if col[i] is not None}
        features.append(
            {
                "type": "Feature",
                "id": props.get("id", fid),
                "geometry": geometries[i],
                "properties": props,
            }
        )
    collection = {"type": "FeatureCollection", "features": features}
    return collection, source_crs(meta.get("crs"), frame, crs)
