"""COCO instances JSON: export and import of a 2D image's annotations, in its pixel coordinates.

Export: one image, categories from the project's taxonomy (``id`` 1.., ``name`` the label path,
``supercategory`` its parent), one annotation per polygon, box, multipolygon or mask. Polygons
are written as COCO polygons (exterior rings; a polygon with holes, which COCO polygons cannot
express, is written as RLE); masks as uncompressed RLE (``counts`` column-major over the whole
image, as pycocotools reads them). With ``segmentation="rle"`` every shape is rasterised
(rasterio.features, pixel centres inside) and written as RLE. Points, lines and tags have no
COCO instance form: they are counted in ``info.skipped``.

Import: COCO polygons, uncompressed and compressed RLE become polygons, multipolygons and
masks, checked as the GeoJSON import does (``annot.imports.geojson.plan``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from rasterio import features as rio_features
from rasterio.transform import Affine
from shapely.geometry.base import BaseGeometry

from annot.errors import BadRequest
from annot.frames import ImageFrame, VolumeFrame
from annot.geometry import map_coords
from annot.model import Annotation, Kind, Mask
from annot.taxonomy import Project

SHAPE_KINDS = {Kind.polygon, Kind.box, Kind.multipolygon, Kind.mask}
IDENTITY = Affine.identity()


def rle_encode(mask: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """Uncompressed COCO RLE of a full-image boolean array (rows, cols): column-major runs
    starting with 0s."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


def _decode_string(s: str) -> list[int]:
    """COCO's compressed RLE string (pycocotools ``rleFrString``) to run lengths."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(rle: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
    """A COCO RLE (uncompressed list or compressed string counts) to (rows, cols) booleans."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
        runs = _decode_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest("an RLE segmentation is {size: [h, w], counts: [...] or str}") from exc
    if any(r < 0 for r in runs) or sum(runs) != h * w:
        raise BadRequest(f"RLE counts add up to {sum(runs)}, not size h*w = {h * w}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape((w, h)).T.copy()


def rasterise(shape: BaseGeometry, width: int, height: int) -> npt.NDArray[np.bool_]:
    """A pixel-coordinate shape's pixels (centres inside), as rasterio.features does it."""
    out = rio_features.rasterize(
        [(shape, 1)], out_shape=(height, width), transform=IDENTITY, fill=0, dtype="uint8"
    )
    return np.asarray(out, dtype=bool)


def _mask_full(mask: Mask, width: int, height: int) -> npt.NDArray[np.bool_]:
    full = np.zeros((height, width), dtype=bool)
    local = mask.to_array()
    r0, c0 = max(mask.row, 0), max(mask.col, 0)
    r1, c1 = min(mask.row + mask.height, height), min(mask.col + mask.width, width)
    if r1 > r0 and c1 > c0:
        full[r0:r1, c0:c1] = local[r0 - mask.row : r1 - mask.row, c0 - mask.col : c1 - mask.col]
    return full


def _polygons_flat(shape: BaseGeometry) -> list[list[float]]:
    polys = list(shape.geoms) if isinstance(shape, shapely.MultiPolygon) else [shape]
    out = []
    for p in polys:
        ring = np.asarray(p.exterior.coords)[:-1]
        out.append([float(v) for v in ring.ravel()])
    return out


def categories(project: Project) -> list[dict[str, Any]]:
    return [
        {
            "id": n,
            "name": name,
            "supercategory": project.labels[name].parent or "",
            **({"code": c.to_json()} if (c := project.labels[name].code) else {}),
        }
        for n, name in enumerate(sorted(project.labels), start=1)
    ]


def export_coco(
    annotations: Sequence[Annotation],
    frame: ImageFrame,
    project: Project,
    image_id: str,
    file_name: str,
    segmentation: str = "polygon",
) -> dict[str, Any]:
    """The COCO instances document of one 2D image."""
    if isinstance(frame, VolumeFrame):
        raise BadRequest("COCO export is for 2D images; use format=dicom-seg for volumes")
    if segmentation not in ("polygon", "rle"):
        raise BadRequest("segmentation must be polygon or rle")
    width, height, _ = frame.size()
    cats = categories(project)
    cat_ids = {c["name"]: c["id"] for c in cats}
    out: list[dict[str, Any]] = []
    skipped = 0
    for a in annotations:
        c = a.content
        if c.kind not in SHAPE_KINDS or c.geometry is None:
            skipped += 1
            continue
        entry: dict[str, Any] = {
            "id": a.id,
            "image_id": 1,
            "category_id": cat_ids.get(c.label, 0),
            "iscrowd": 0,
            "attributes": {**dict(c.attributes), "status": c.status.value, "author": a.author},
        }
        if c.mask is not None:
            full = _mask_full(c.mask, width, height)
            entry["segmentation"] = rle_encode(full)
            entry["area"] = float(full.sum())
            rows, cols = np.nonzero(full)
            if len(rows):
                x0, y0 = int(cols.min()), int(rows.min())
                bbox = [x0, y0, int(cols.max()) + 1 - x0, int(rows.max()) + 1 - y0]
            else:
                bbox = [c.mask.col, c.mask.row, 0, 0]
            entry["bbox"] = [float(v) for v in bbox]
        else:
            pixel = map_coords(c.geometry, frame.world_to_pixel, 2)
            has_holes = any(
                len(p.interiors)
                for p in (pixel.geoms if isinstance(pixel, shapely.MultiPolygon) else [pixel])
            )
            if segmentation == "rle" or has_holes:
                full = rasterise(pixel, width, height)
                entry["segmentation"] = rle_encode(full)
                entry["area"] = float(full.sum())
            else:
                entry["segmentation"] = _polygons_flat(pixel)
                entry["area"] = float(pixel.area)
            x0, y0, x1, y1 = pixel.bounds
            entry["bbox"] = [x0, y0, x1 - x0, y1 - y0]
        out.append(entry)
    return {
        "info": {"description": f"Tessera export of {image_id}", "skipped": skipped},
        "images": [{"id": 1, "file_name": file_name, "width": width, "height": height}],
        "categories": cats,
        "annotations": out,
    }


def coco_to_features(data: Any, file_name: str | None = None) -> dict[str, Any]:
    """A COCO document's annotations of one image as a FeatureCollection in pixel coordinates
    (the GeoJSON import then checks and stores them)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("annotations"), list):
        raise BadRequest("a COCO file has images, categories and annotations")
    images = data.get("images") or []
    if not images:
        raise BadRequest("the COCO file has no images")
    chosen = images[0]
    if len(images) > 1:
        named = [im for im in images if file_name and im.get("file_name") == file_name]
        if len(named) != 1:
            raise BadRequest(
                f"the COCO file has {len(images)} images and none is named {file_name!r}"
            )
        chosen = named[0]
    names = {c["id"]: c["name"] for c in data.get("categories") or []}
    feats: list[dict[str, Any]] = []
    for ann in data["annotations"]:
        if ann.get("image_id") != chosen.get("id"):
            continue
        label = names.get(ann.get("category_id"))
        props: dict[str, Any] = {"label": label, "attributes": dict(ann.get("attributes") or {})}
        status = props["attributes"].pop("status", None)
        props["attributes"].pop("author", None)
        if status:
            props["status"] = status
        seg = ann.get("segmentation")
        geometry: dict[str, Any] | None = None
        if isinstance(seg, list):
            rings = [np.asarray(s, dtype=float).reshape(-1, 2) for s in seg]
            polys = [[[*r.tolist(), r[0].tolist()]] for r in rings]
            if len(polys) == 1:
                geometry = {"type": "Polygon", "coordinates": polys[0]}
            else:
                geometry = {"type": "MultiPolygon", "coordinates": polys}
        elif isinstance(seg, Mapping):
            full = rle_decode(seg)
            rows, cols = np.nonzero(full)
            if len(rows) == 0:
                props["kind"] = "mask"
            else:
                r0, c0 = int(rows.min()), int(cols.min())
                crop = full[r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1]
                props["mask"] = Mask.from_array(crop, c0, r0).to_json()
                props["kind"] = "mask"
        feats.append({"type": "Feature", "id": ann.get("id"), "geometry": geometry,
                      "properties": props})  # fmt: skip
    return {"type": "FeatureCollection", "features": feats}
