"""GeoJSON export: an image's annotations as one FeatureCollection file.

By default RFC 7946: WGS84 longitude/latitude, exterior rings counter-clockwise (right-hand
rule), geometries crossing the antimeridian split into parts on either side of it. On request
(``crs=image`` or ``crs=EPSG:n``) in another CRS, named in a ``crs`` member
(``{"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::n"}}``, as GDAL reads it).
Images without a georeference export their world coordinates (pixels, or patient LPS mm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from annot.errors import BadRequest
from annot.features import dumps, geometry_objects, properties
from annot.frames import PIXEL, WORLD, GeoFrame, ImageFrame, VolumeFrame
from annot.geometry import map_coords, map_many
from annot.model import Annotation, Status

PAGE = 1000
IMAGE_CRS = "image"


def parse_statuses(value: str | None) -> frozenset[Status] | None:
    """``draft,accepted`` -> the statuses; None for no filter."""
    if not value:
        return None
    try:
        return frozenset(Status(v.strip()) for v in value.split(",") if v.strip())
    except ValueError:
        raise BadRequest(
            f"status must be a comma-separated list of {[s.value for s in Status]}"
        ) from None


def parse_labels(value: str | None) -> frozenset[str] | None:
    """``building,vehicle/car`` -> the labels; None for no filter."""
    if not value:
        return None
    return frozenset(v.strip().strip("/") for v in value.split(",") if v.strip())


def label_selected(label: str, labels: frozenset[str] | None) -> bool:
    """A label is selected by itself or any of its ancestors (``vehicle`` selects
    ``vehicle/car``)."""
    if labels is None:
        return True
    return label in labels or any(label.startswith(sel + "/") for sel in labels)


def select(
    store: Any,
    image_id: str,
    labels: frozenset[str] | None = None,
    statuses: frozenset[Status] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Annotation]:
    """Every annotation of an image passing the filters, by id (the store paged through)."""
    out: list[Annotation] = []
    after = 0
    while True:
        page: list[Annotation] = store.query(image_id, None, after, PAGE)
        for a in page:
            if label_selected(a.label, labels) and (
                statuses is None or a.content.status in statuses
            ):
                out.append(a)
        if progress is not None:
            progress(len(page))
        if len(page) < PAGE:
            return out
        after = page[-1].id


def crs_name(crs: str) -> str:
    """The OGC URN GDAL reads for ``EPSG:n``, or the CRS's WKT when it has no EPSG code."""
    if crs.upper().startswith("EPSG:"):
        return f"urn:ogc:def:crs:EPSG::{crs[5:]}"
    code = CRS.from_user_input(crs).to_epsg()
    return f"urn:ogc:def:crs:EPSG::{code}" if code else CRS.from_user_input(crs).to_wkt()


def _split_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """A lon/lat geometry spanning more than 180 degrees of longitude, taken as crossing the
    antimeridian: cut into its parts east and west of it."""
    if geom.is_empty or geom.geom_type == "Point":
        return geom
    minx, _, maxx, _ = geom.bounds
    if maxx - minx <= 180.0:
        return geom

    def unwrap(c: np.ndarray) -> np.ndarray:
        out = c.copy()
        out[:, 0] = np.where(out[:, 0] < 0, out[:, 0] + 360.0, out[:, 0])
        return out

    shifted = map_coords(geom, unwrap, 2)
    west = shapely.intersection(shifted, shapely.box(-180.0, -90.0, 180.0, 90.0))
    east = shapely.intersection(shifted, shapely.box(180.0, -90.0, 540.0, 90.0))
    east = shapely.transform(east, lambda c: c - np.array([360.0, 0.0]))
    parts = [g for g in (west, east) if not g.is_empty]
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        polys = [p for g in parts for p in getattr(g, "geoms", [g]) if p.geom_type == "Polygon"]
        return shapely.MultiPolygon(polys)
    if geom.geom_type in ("LineString", "MultiLineString"):
        lines = [
            ln for g in parts for ln in getattr(g, "geoms", [g]) if ln.geom_type == "LineString"
        ]
        return shapely.MultiLineString(lines)
    return shapely.union_all(parts)


def resolve_crs(frame: ImageFrame, crs: str | None) -> tuple[str, str | None]:
    """``(crs for the frame's maps, name for the crs member or None)`` of a requested ``crs``:
    None/``world``/``EPSG:4326`` (RFC 7946 WGS84), ``image``, ``EPSG:n`` or ``pixel``."""
    value = (crs or WORLD).strip()
    low = value.lower()
    if low in (WORLD, "wgs84", "epsg:4326", "crs84", "ogc:crs84"):
        return WORLD, None
    if low == PIXEL:
        return PIXEL, None
    if not isinstance(frame, GeoFrame):
        if low == IMAGE_CRS:
            return WORLD, None
        raise BadRequest(f"crs={value} needs a georeferenced image: use world, image or pixel")
    if low == IMAGE_CRS:
        return IMAGE_CRS, crs_name(frame.georef.crs)
    if low.startswith("epsg:") and value[5:].isdigit():
        try:
            CRS.from_user_input(value.upper())
        except Exception:  # pyproj raises CRSError, a plain Exception subclass
            raise BadRequest(f"unknown crs {value!r}") from None
        return value.upper(), crs_name(value.upper())
    raise BadRequest(f"unknown crs {value!r}: use world, image, pixel or EPSG:n")


def _geometries(
    annotations: Sequence[Annotation], frame: ImageFrame, crs: str
) -> list[BaseGeometry | None]:
    with_geom = [i for i, a in enumerate(annotations) if a.content.geometry is not None]
    geoms = np.array([annotations[i].content.geometry for i in with_geom], dtype=object)
    out: list[BaseGeometry | None] = [None] * len(annotations)
    if len(with_geom) == 0:
        return out
    if crs == IMAGE_CRS or (crs == WORLD and not isinstance(frame, GeoFrame)):
        mapped = geoms
    elif crs == PIXEL:
        mapped = np.empty(len(geoms), dtype=object)
        for n, i in enumerate(with_geom):
            placement = annotations[i].content.placement
            plane = placement.plane if placement is not None else None
            if isinstance(frame, VolumeFrame):

                def drop(c: np.ndarray, plane: Any = plane) -> np.ndarray:
                    return frame.world_to_pixel(c, plane)[:, :2]

                mapped[n] = map_coords(geoms[n], drop, 2)
            else:
                mapped[n] = map_coords(geoms[n], frame.world_to_pixel, 2)
    else:
        mapped = map_many(geoms, lambda c: frame.world_to_crs(crs, c), 2)
        if crs == WORLD:
            mapped = np.array([_split_antimeridian(g) for g in mapped], dtype=object)
    for n, i in enumerate(with_geom):
        out[i] = mapped[n]
    return out


def feature_collection(
    annotations: Sequence[Annotation], frame: ImageFrame, crs: str | None = None
) -> dict[str, Any]:
    """The FeatureCollection (coordinates as NumPy arrays: write it with ``dumps``)."""
    frame_crs, name = resolve_crs(frame, crs)
    geoms = _geometries(annotations, frame, frame_crs)
    present = [i for i, g in enumerate(geoms) if g is not None]
    objects = geometry_objects(np.array([geoms[i] for i in present], dtype=object))
    by_index: dict[int, Any] = dict(zip(present, objects, strict=True))
    features = []
    for i, a in enumerate(annotations):
        props = properties(a)
        props["id"] = a.id
        props["label_path"] = a.label.split("/")
        features.append(
            {"type": "Feature", "id": a.id, "geometry": by_index.get(i), "properties": props}
        )
    out: dict[str, Any] = {"type": "FeatureCollection"}
    if name is not None:
        out["crs"] = {"type": "name", "properties": {"name": name}}
    out["features"] = features
    return out


def export_geojson(
    annotations: Iterable[Annotation], frame: ImageFrame, crs: str | None = None
) -> bytes:
    """The GeoJSON file's bytes."""
    return dumps(feature_collection(list(annotations), frame, crs))
