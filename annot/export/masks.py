"""Binary mask export: a ZIP of PNG masks, one per label (per slice for volumes).

Each PNG is the image's pixel grid (8-bit, 255 inside, 0 outside; pixel centres inside a shape,
rasterio.features). ``index.json`` lists every file with its label, colour and slice. Points,
lines, tags and shapes on reformatted planes of a volume have no mask (counted as skipped).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from annot.export.coco import rasterise
from annot.frames import ImageFrame, VolumeFrame
from annot.geometry import map_coords
from annot.model import Annotation, Content, Kind, Plane
from annot.taxonomy import Project

SHAPE_KINDS = {Kind.polygon, Kind.box, Kind.multipolygon, Kind.mask}


def content_mask(
    c: Content, frame: ImageFrame, plane: Plane | None, width: int, height: int
) -> npt.NDArray[np.bool_]:
    """One annotation's pixels on a (height, width) grid: its mask, or its shape rasterised."""
    if c.mask is not None:
        img = np.zeros((height, width), dtype=bool)
        m = c.mask
        r0, c0 = max(m.row, 0), max(m.col, 0)
        r1, c1 = min(m.row + m.height, height), min(m.col + m.width, width)
        img[r0:r1, c0:c1] = m.to_array()[r0 - m.row : r1 - m.row, c0 - m.col : c1 - m.col]
        return img
    assert c.geometry is not None

    def drop(pts: np.ndarray) -> np.ndarray:
        return frame.world_to_pixel(pts, plane)[:, :2]

    return rasterise(map_coords(c.geometry, drop, 2), width, height)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "label"


def label_masks(
    annotations: Sequence[Annotation], frame: ImageFrame
) -> tuple[dict[tuple[str, int | None], npt.NDArray[np.bool_]], int]:
    """``{(label, slice or None): mask (rows, cols)}`` and the number of annotations skipped."""
    volume = isinstance(frame, VolumeFrame)
    plane = frame.default_plane
    width, height, _ = frame.size(plane)
    out: dict[tuple[str, int | None], npt.NDArray[np.bool_]] = {}
    skipped = 0
    for a in annotations:
        c = a.content
        p = c.placement
        if c.kind not in SHAPE_KINDS or c.geometry is None:
            skipped += 1
            continue
        if volume and (p is None or p.plane is not plane):
            skipped += 1
            continue
        key = (c.label, p.slice if volume and p is not None else None)
        img = content_mask(c, frame, plane, width, height)
        if key in out:
            out[key] |= img
        else:
            out[key] = img
    return out, skipped


def export_masks(
    annotations: Sequence[Annotation], frame: ImageFrame, project: Project, image_id: str
) -> bytes:
    """The ZIP file's bytes."""
    masks, skipped = label_masks(annotations, frame)
    index: list[dict[str, Any]] = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for (label, slice_), mask in sorted(
            masks.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)
        ):
            name = _safe(label) + (f"_slice{slice_:04d}" if slice_ is not None else "") + ".png"
            png = io.BytesIO()
            Image.fromarray(mask.astype(np.uint8) * 255).save(png, format="PNG")
            zf.writestr(name, png.getvalue())
            known = project.labels.get(label)
            index.append(
                {
                    "file": name,
                    "label": label,
                    "slice": slice_,
                    "color": known.color if known else None,
                    "pixels": int(mask.sum()),
                }
            )
        meta = {"image_id": image_id, "masks": index, "skipped": skipped}
        zf.writestr("index.json", json.dumps(meta, indent=1))
    return buf.getvalue()
