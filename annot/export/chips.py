"""Training chips: a 2D image cut into fixed-size chips, each with an index mask, split into
train/val/test and written as a ZIP (``format=chips``).

This module is the pure part: the grid, the splits, the class map, rasterising shapes into a
chip, the COCO documents and the manifest. Pixels come through a ``ChipPixels`` that the caller
gives (``tileserver.chips`` reads windows with rasterio and encodes the chip files), so nothing
here opens an image, and only one chip's pixels are ever held.

Grid. Chips lie on an output grid of ``scale`` source pixels per chip pixel (along x and y): 1 by
default; for ``level=N`` the file's own pyramid level N when it has one (its stored size: chips are
then exactly its pixels), else ``2**N``; for ``resolution=R``, R over the image's pixel width (in
its CRS's units: metres for a projected CRS; source pixels for an image without georeference). A
partial output pixel at the right or bottom edge is dropped. Chips are ``size`` output pixels
square and start every ``size - overlap`` pixels; the last chip of a row or column is moved back so
that it ends at the image's edge, so no chip is padded unless the image is smaller than one chip
(then the chip is padded with 0 at its right and bottom). A chip at output pixel (col, row) reads
the source window from ``(col, row) * scale`` to ``(col + size, row + size) * scale``; its
transform (chip pixel -> world) is the image's transform times that offset and scale.
``mode=annotated`` keeps the chips that contain part of an annotation (positive area inside the
chip, or a mask pixel); ``mode=grid`` keeps every chip.

Masks. One index per class: 0 is background, then every label of the project's taxonomy in
taxonomy order (sorted label paths; the same numbers as the COCO category ids), uint8 up to 255
classes, else uint16. A pixel belongs to a shape when its centre is inside it (rasterio.features,
as every Tessera export). Where shapes overlap, the smaller one wins (a car parked on a parking
lot stays a car); between equal areas the later annotation (higher id) wins. Brush masks are
sampled at chip pixel centres. Points, lines and tags have no area: they are counted as skipped.

Splits. A chip's split comes from a hash of ``seed`` and a key, compared with the cumulative
fractions (``split=0.8,0.1,0.1`` for train, val, test): the key is the image id
(``split_by=image``: the whole image in one split) or the coarse area cell holding the chip's
centre (``split_by=area``, default: cells of ``cell`` CRS units, by default 4 chips wide,
aligned on the CRS origin, so chips of overlapping images in one CRS share a cell's split).
Fractions hold in expectation over many keys; a given key always gets the same split.

Files: ``{split}/images/{name}{suffix}`` and ``{split}/masks/{name}{suffix}`` per chip (PNG chips
also get ``.pgw`` world files), ``classes.json``, ``manifest.json`` and ``coco_{split}.json``
(COCO instances of the chips, polygons in chip pixel coordinates clipped to the chip; RLE for
brush masks, polygons with holes, and everything with ``segmentation=rle``).
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import numpy as np
import numpy.typing as npt
import orjson
import shapely
from rasterio import features as rio_features
from rasterio.transform import Affine
from shapely.geometry.base import BaseGeometry

from annot.errors import BadRequest
from annot.export.coco import SHAPE_KINDS, categories, rle_encode
from annot.frames import GeoFrame, ImageFrame, PixelFrame, VolumeFrame
from annot.model import Annotation, Mask
from annot.taxonomy import Project

SPLITS = ("train", "val", "test")
MODES = ("annotated", "grid")
CHIP_FORMATS = {"geotiff": ".tif", "png": ".png"}
SEGMENTATIONS = ("polygon", "rle")
SPLIT_KEYS = ("area", "image")
CHIP_OPTIONS = frozenset(
    {"size", "resolution", "level", "overlap", "mode", "chip_format", "split", "split_by",
     "seed", "cell", "bands", "segmentation"}
)  # fmt: skip
SIZE_RANGE = (16, 4096)
MAX_LEVEL = 16
MIN_SCALE = 1 / 8  # at most 8x upsampling
CELL_CHIPS = 4  # default split cell: this many chips wide
OVERLAP_RULE = "smaller shapes win; between equal areas the later annotation (higher id)"
INDENT = orjson.OPT_INDENT_2
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed: the same export gives the same bytes

UInt = npt.NDArray[np.unsignedinteger[Any]]  # uint8 or uint16
Scale = tuple[float, float]  # source pixels per chip pixel, along x and y


# -- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipOptions:
    size: int = 512
    resolution: float | None = None
    level: int | None = None
    overlap: int = 0
    mode: str = "annotated"
    chip_format: str = "geotiff"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "area"
    seed: int = 0
    cell: float | None = None
    bands: tuple[int, ...] | None = None  # 1-based; None: every band
    segmentation: str = "polygon"

    @property
    def suffix(self) -> str:
        return CHIP_FORMATS[self.chip_format]


def _int(options: Mapping[str, str], name: str, lo: int, hi: int) -> int | None:
    raw = options.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _positive(options: Mapping[str, str], name: str) -> float | None:
    raw = options.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {raw[:40]!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise BadRequest(f"{name} must be a positive number, not {raw[:40]!r}")
    return value


def _choice(options: Mapping[str, str], name: str, choices: Sequence[str], default: str) -> str:
    value = (options.get(name) or default).lower()
    if value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}, not {value[:40]!r}")
    return value


def _fractions(raw: str | None) -> tuple[float, float, float]:
    if not raw:
        return ChipOptions.fractions
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        raise BadRequest(f"split must be train,val,test fractions, not {raw[:40]!r}") from None
    if len(values) == 2:
        values.append(0.0)
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise BadRequest("split must be 2 or 3 non-negative fractions: train,val[,test]")
    if abs(sum(values) - 1.0) > 1e-6:
        raise BadRequest(f"split fractions must add up to 1, not {sum(values):g}")
    return values[0], values[1], values[2]


def _bands(raw: str | None) -> tuple[int, ...] | None:
    if not raw:
        return None
    try:
        bands = tuple(int(b) for b in raw.split(","))
    except ValueError:
        raise BadRequest(
            f"bands must be 1-based band numbers, e.g. 3,2,1, not {raw[:40]!r}"
        ) from None
    if any(b < 1 for b in bands) or len(set(bands)) != len(bands):
        raise BadRequest("bands must be distinct 1-based band numbers")
    return bands


def parse_chip_options(options: Mapping[str, str]) -> ChipOptions:
    """The export's query options (or CLI flags); any bad value raises ``BadRequest``."""
    size = _int(options, "size", *SIZE_RANGE) or ChipOptions.size
    overlap = _int(options, "overlap", 0, SIZE_RANGE[1]) or 0
    if overlap >= size:
        raise BadRequest(f"overlap ({overlap}) must be smaller than size ({size})")
    resolution = _positive(options, "resolution")
    level = _int(options, "level", 0, MAX_LEVEL)
    if resolution is not None and level is not None:
        raise BadRequest("give resolution or level, not both")
    seed = _int(options, "seed", 0, 2**63 - 1) or 0
    return ChipOptions(
        size=size,
        resolution=resolution,
        level=level,
        overlap=overlap,
        mode=_choice(options, "mode", MODES, ChipOptions.mode),
        chip_format=_choice(options, "chip_format", tuple(CHIP_FORMATS), "geotiff"),
        fractions=_fractions(options.get("split")),
        split_by=_choice(options, "split_by", SPLIT_KEYS, ChipOptions.split_by),
        seed=seed,
        cell=_positive(options, "cell"),
        bands=_bands(options.get("bands")),
        segmentation=_choice(options, "segmentation", SEGMENTATIONS, "polygon"),
    )


# -- geometry of the grid ----------------------------------------------------------------------


def image_transform(frame: ImageFrame) -> Affine:
    """Pixel -> world of a 2D image (the identity for an image without georeference)."""
    if isinstance(frame, VolumeFrame):
        raise BadRequest(
            "format=chips is for 2D images; export a volume with format=nifti or format=dicom-seg"
        )
    if isinstance(frame, GeoFrame):
        return Affine(*frame.georef.transform)
    if isinstance(frame, PixelFrame):
        return Affine.identity()
    raise BadRequest("format=chips is for 2D images (GeoTIFF or plain TIFF)")


def grid_scale(
    options: ChipOptions,
    transform: Affine,
    image_size: tuple[int, int],
    level_size: tuple[int, int] | None = None,
) -> Scale:
    """Source pixels per chip pixel along x and y (``level_size``: the stored size of pyramid
    level ``options.level``, when the file has that level)."""
    if options.level is not None:
        if level_size is not None:
            return image_size[0] / level_size[0], image_size[1] / level_size[1]
        return float(2**options.level), float(2**options.level)
    if options.resolution is None:
        return 1.0, 1.0
    scale = options.resolution / math.hypot(transform.a, transform.d)
    if scale < MIN_SCALE:
        raise BadRequest(f"resolution asks for {1 / scale:.3g}x upsampling; at most 8x")
    return scale, scale


@dataclass(frozen=True)
class ChipWindow:
    """One chip: its top-left corner on the output grid, and the part of it inside the image."""

    col: int
    row: int
    width: int  # output pixels inside the image: the chip size unless the image is smaller
    height: int
    scale: Scale

    @property
    def source(self) -> tuple[float, float, float, float]:
        """``(col_off, row_off, width, height)`` in full-resolution source pixels."""
        sx, sy = self.scale
        return self.col * sx, self.row * sy, self.width * sx, self.height * sy

    def transform(self, image: Affine) -> Affine:
        """Chip pixel -> world."""
        sx, sy = self.scale
        return image @ Affine.translation(self.col * sx, self.row * sy) @ Affine.scale(sx, sy)


@dataclass(frozen=True)
class ChipGrid:
    width: int  # output pixels
    height: int
    size: int
    overlap: int
    scale: Scale

    @classmethod
    def for_image(cls, width: int, height: int, size: int, overlap: int, scale: Scale) -> ChipGrid:
        out_w = math.floor(width / scale[0] + 1e-9)
        out_h = math.floor(height / scale[1] + 1e-9)
        if out_w < 1 or out_h < 1:
            raise BadRequest(f"at {scale[0]:g} source pixels per chip pixel the image is empty")
        return cls(out_w, out_h, size, overlap, scale)

    def starts(self, extent: int) -> list[int]:
        if extent <= self.size:
            return [0]
        return [*range(0, extent - self.size, self.size - self.overlap), extent - self.size]

    def windows(self) -> list[ChipWindow]:
        w, h = min(self.size, self.width), min(self.size, self.height)
        return [
            ChipWindow(col, row, w, h, self.scale)
            for row in self.starts(self.height)
            for col in self.starts(self.width)
        ]


# -- splits ----------------------------------------------------------------------------------


def split_for(key: str, seed: int, fractions: Sequence[float]) -> str:
    """The split of ``key``: a hash of (seed, key) as a number in [0, 1) against the cumulative
    fractions (train, val, test)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    edge = 0.0
    for name, fraction in zip(SPLITS[:-1], fractions, strict=False):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1]


def area_key(space: str, x: float, y: float, cell: float) -> str:
    """The key of the area cell holding world point (x, y)."""
    return f"{space}:{math.floor(x / cell)}:{math.floor(y / cell)}"


# -- classes and shapes ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassMap:
    """Mask index of every label: 1.. in taxonomy order (0 is background)."""

    entries: tuple[dict[str, Any], ...]  # COCO categories: id, name, supercategory

    @classmethod
    def build(cls, project: Project, labels: Sequence[str]) -> ClassMap:
        cats = categories(project)
        known = {c["name"] for c in cats}
        for extra in sorted(set(labels) - known):  # a label the taxonomy no longer has
            parent = extra.rsplit("/", 1)[0] if "/" in extra else ""
            cats.append({"id": len(cats) + 1, "name": extra, "supercategory": parent})
        return cls(tuple(cats))

    @property
    def index(self) -> dict[str, int]:
        return {c["name"]: int(c["id"]) for c in self.entries}

    @property
    def dtype(self) -> type[np.uint8] | type[np.uint16]:
        return np.uint8 if len(self.entries) <= 255 else np.uint16

    def to_json(self, project: Project) -> dict[str, Any]:
        classes: list[dict[str, Any]] = [
            {"index": 0, "label": None, "name": "background", "path": [], "color": "#000000"}
        ]
        for c in self.entries:
            known = project.labels.get(c["name"])
            classes.append(
                {
                    "index": c["id"],
                    "label": c["name"],
                    "name": c["name"].rsplit("/", 1)[-1],
                    "path": c["name"].split("/"),
                    "parent": c["supercategory"] or None,
                    "color": known.color if known else None,
                }
            )
        return {"mask_dtype": np.dtype(self.dtype).name, "overlap": OVERLAP_RULE,
                "classes": classes}  # fmt: skip


@dataclass(frozen=True)
class Instance:
    """One annotation with area, on the output grid; ``rank`` orders painting (last wins)."""

    annotation_id: int
    label: str
    class_index: int
    shape: BaseGeometry | None  # output-grid pixel coordinates; None for a brush mask
    mask: Mask | None  # on the source pixel grid
    footprint: BaseGeometry  # output-grid pixel coordinates (the spatial index's)
    area: float  # output pixels
    rank: int = 0
    # Made once, used by every chip the shape touches: GeoJSON for rasterio, bounds, holes.
    geojson: Mapping[str, Any] | None = None
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    holes: bool = False
    exteriors: tuple[npt.NDArray[np.float64], ...] = ()  # rings without the closing point


def prepare_instances(
    annotations: Sequence[Annotation], frame: ImageFrame, classes: ClassMap, scale: Scale
) -> tuple[list[Instance], int]:
    """The shapes of ``annotations`` on the output grid, ranked (largest first, so smaller and
    later ones are painted over them), and how many annotations have no area (skipped)."""
    index = classes.index
    sx, sy = scale
    per_pixel = np.array([sx, sy], dtype=np.float64)
    shaped = [
        a for a in annotations if a.content.kind in SHAPE_KINDS and a.content.geometry is not None
    ]
    geometry_ones = [a for a in shaped if a.content.mask is None]

    def to_grid(world: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        grid: npt.NDArray[np.float64] = frame.world_to_pixel(world) / per_pixel
        return grid

    worlds = np.array([a.content.geometry for a in geometry_ones], dtype=object)
    on_grid = shapely.transform(worlds, to_grid) if len(worlds) else worlds
    # Stored shapes were validated, but GEOS cannot clip an invalid one: repair it, areas only.
    for n in np.flatnonzero(~shapely.is_valid(on_grid)):
        repaired = _area_parts(shapely.make_valid(on_grid[n]))
        on_grid[n] = repaired if repaired is not None else shapely.Polygon()
    keep = ~shapely.is_empty(on_grid) if len(on_grid) else np.zeros(0, dtype=bool)
    kept = on_grid[keep]
    ones = [a for a, k in zip(geometry_ones, keep, strict=True) if k]
    found: list[tuple[float, int, dict[str, Any]]] = []
    if len(kept):
        bounds, areas = shapely.bounds(kept).tolist(), shapely.area(kept).tolist()
        for i, (geojson, holes, rings) in enumerate(_ring_arrays(kept)):
            a = ones[i]
            fields = {
                "annotation_id": a.id, "label": a.label, "class_index": index[a.label],
                "shape": kept[i], "mask": None, "footprint": kept[i], "area": areas[i],
                "geojson": geojson, "bounds": tuple(bounds[i]), "holes": holes,
                "exteriors": () if holes else rings,
            }  # fmt: skip
            found.append((areas[i], a.id, fields))
    for a in shaped:
        m = a.content.mask
        if m is None:
            continue
        box = shapely.box(m.col / sx, m.row / sy, (m.col + m.width) / sx, (m.row + m.height) / sy)
        area = m.area / (sx * sy)
        fields = {
            "annotation_id": a.id, "label": a.label, "class_index": index[a.label],
            "shape": None, "mask": m, "footprint": box, "area": area,
        }  # fmt: skip
        found.append((area, a.id, fields))
    found.sort(key=lambda t: (-t[0], t[1]))
    ranked = [Instance(**fields, rank=rank) for rank, (_, _, fields) in enumerate(found)]
    return ranked, len(annotations) - len(shaped)


def mask_in_chip(mask: Mask, window: ChipWindow, size: int) -> npt.NDArray[np.bool_]:
    """A brush mask sampled at the centres of a chip's pixels (rows, cols)."""
    steps = np.arange(size) + 0.5
    sx, sy = window.scale
    cols = np.floor((window.col + steps) * sx).astype(np.int64) - mask.col
    rows = np.floor((window.row + steps) * sy).astype(np.int64) - mask.row
    out = np.zeros((size, size), dtype=bool)
    cc = np.flatnonzero((cols >= 0) & (cols < mask.width))
    rr = np.flatnonzero((rows >= 0) & (rows < mask.height))
    if len(cc) and len(rr):
        out[np.ix_(rr, cc)] = mask.to_array()[np.ix_(rows[rr], cols[cc])]
    return out


def _area_parts(geometry: BaseGeometry) -> BaseGeometry | None:
    """The polygons of a clipped shape (a clip can add lines and points), or None."""
    parts = [p for p in shapely.get_parts(geometry) if isinstance(p, shapely.Polygon)]
    parts = [p for p in parts if p.area > 0]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _exteriors(shape: BaseGeometry) -> tuple[npt.NDArray[np.float64], ...]:
    """The exterior rings of a polygon or multipolygon, without their closing points."""
    polys = shapely.get_parts(shape)
    return tuple(shapely.get_coordinates(shapely.get_exterior_ring(p))[:-1] for p in polys)


def _ring_arrays(
    shapes: npt.NDArray[np.object_],
) -> list[tuple[dict[str, Any], bool, tuple[npt.NDArray[np.float64], ...]]]:
    """Per polygon or multipolygon: a GeoJSON-like dict for rasterio (rings as tuples of
    tuples, which rasterio walks several times faster than lists, NumPy arrays or shapely
    objects), whether it has holes, and its exterior rings (NumPy, without their closing
    points, for COCO). All shapes in one vectorised pass."""
    parts, shape_of_part = shapely.get_parts(shapes, return_index=True)
    rings, part_of_ring = shapely.get_rings(parts, return_index=True)
    coords, ring_of_coord = shapely.get_coordinates(rings, return_index=True)
    counts = np.bincount(ring_of_coord, minlength=len(rings))
    ring_coords = np.split(coords, np.cumsum(counts)[:-1])
    polys: list[list[npt.NDArray[np.float64]]] = [[] for _ in range(len(parts))]
    for ring, part in zip(ring_coords, part_of_ring.tolist(), strict=True):
        polys[part].append(ring)
    per_shape: list[list[list[npt.NDArray[np.float64]]]] = [[] for _ in range(len(shapes))]
    for poly, owner in zip(polys, shape_of_part.tolist(), strict=True):
        per_shape[owner].append(poly)
    out = []
    for ps in per_shape:
        rings_t = [tuple(tuple(map(tuple, ring.tolist())) for ring in p) for p in ps]
        if len(ps) == 1:
            geojson: dict[str, Any] = {"type": "Polygon", "coordinates": rings_t[0]}
        else:
            geojson = {"type": "MultiPolygon", "coordinates": rings_t}
        out.append((geojson, any(len(p) > 1 for p in ps), tuple(p[0][:-1] for p in ps)))
    return out


def _polygons_flat(
    rings: Sequence[npt.NDArray[np.float64]], offset: npt.NDArray[np.float64]
) -> list[list[float]]:
    """COCO polygons: rings moved by ``-offset``, flattened to x0, y0, x1, y1, ..."""
    return [(ring - offset).ravel().tolist() for ring in rings]


def _has_holes(shape: BaseGeometry) -> bool:
    polys = shape.geoms if isinstance(shape, shapely.MultiPolygon) else [shape]
    return any(len(p.interiors) for p in polys)


@dataclass
class ChipContent:
    """A chip's index mask and the COCO annotations (without ids) of its instances."""

    mask: UInt
    instances: list[tuple[Instance, dict[str, Any]]]


def chip_content(
    window: ChipWindow,
    size: int,
    instances: Sequence[Instance],
    candidates: npt.NDArray[np.intp],
    dtype: type[np.uint8] | type[np.uint16],
    segmentation: str,
) -> ChipContent:
    """Rasterise the candidate instances (spatial index hits) into one chip.

    Shapes stay in output-grid coordinates: rasterio maps chip pixels onto the grid (``grid``
    transform), and only shapes crossing the chip's edge are clipped (for COCO)."""
    mask: UInt = np.zeros((size, size), dtype=dtype)
    col0, row0, col1, row1 = window.col, window.row, window.col + size, window.row + size
    chip_box = shapely.box(col0, row0, col1, row1)
    offset = np.array([col0, row0], dtype=np.float64)
    grid = Affine.translation(col0, row0)  # chip pixel -> output grid
    pending: list[tuple[Mapping[str, Any], int]] = []
    found: list[tuple[Instance, dict[str, Any]]] = []

    def flush() -> None:
        if pending:
            rio_features.rasterize(pending, out=mask, transform=grid, fill=0)
            pending.clear()

    for inst in sorted((instances[i] for i in candidates), key=lambda i: i.rank):
        if inst.mask is not None:
            pixels = mask_in_chip(inst.mask, window, size)
            if not pixels.any():
                continue
            flush()
            mask[pixels] = inst.class_index
            rows, cols = np.nonzero(pixels)
            c0, r0 = int(cols.min()), int(rows.min())
            bbox = [c0, r0, int(cols.max()) + 1 - c0, int(rows.max()) + 1 - r0]
            seg: Any = rle_encode(pixels)
            found.append((inst, {"segmentation": seg, "area": float(pixels.sum()),
                                 "bbox": [float(v) for v in bbox]}))  # fmt: skip
            continue
        assert inst.shape is not None and inst.geojson is not None
        x0, y0, x1, y1 = inst.bounds
        if x0 >= col0 and y0 >= row0 and x1 <= col1 and y1 <= row1:
            rings, area = inst.exteriors, inst.area  # wholly inside: no clip
        else:
            clipped = _area_parts(shapely.intersection(inst.shape, chip_box))
            if clipped is None:
                continue
            rings, area = _exteriors(clipped), float(clipped.area)
            x0, y0, x1, y1 = (float(v) for v in clipped.bounds)
        pending.append((inst.geojson, inst.class_index))
        if segmentation == "rle" or inst.holes:
            burnt = rio_features.rasterize(
                [(inst.geojson, 1)], out_shape=(size, size), transform=grid, fill=0, dtype="uint8"
            )
            pixels = np.asarray(burnt, dtype=bool)
            seg, area = rle_encode(pixels), float(pixels.sum())
        else:
            seg = _polygons_flat(rings, offset)
        bbox = [x0 - col0, y0 - row0, x1 - x0, y1 - y0]
        found.append((inst, {"segmentation": seg, "area": area, "bbox": bbox}))
    flush()
    return ChipContent(mask, found)


# -- the export ----------------------------------------------------------------------------------


class ChipPixels(Protocol):
    """Where chip pixels come from and how chip files are made (``tileserver.chips``)."""

    def read(self, window: ChipWindow) -> npt.NDArray[Any]:
        """The window's pixels, (bands, window.height, window.width), resampled to ``scale``."""
        ...

    def encode(self, pixels: npt.NDArray[Any], transform: Affine, is_mask: bool) -> bytes:
        """A chip file of (bands, rows, cols) pixels whose pixel -> world map is ``transform``."""
        ...

    def level_size(self, level: int) -> tuple[int, int] | None:
        """``(width, height)`` of the file's own pyramid level (0: full resolution), if stored."""
        ...


def world_file(transform: Affine) -> str:
    """An ESRI world file: pixel sizes and rotations, then the centre of the top-left pixel."""
    t = transform
    values = (t.a, t.d, t.b, t.e, t.c + (t.a + t.b) / 2, t.f + (t.d + t.e) / 2)
    return "".join(f"{v!r}\n" for v in values)


@dataclass
class _Totals:
    chips: int = 0
    pixels: dict[str, int] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    chips_with: dict[str, int] = field(default_factory=dict)

    def add(self, classes: Mapping[str, Mapping[str, int]]) -> None:
        self.chips += 1
        for label, c in classes.items():
            self.pixels[label] = self.pixels.get(label, 0) + c["pixels"]
            self.instances[label] = self.instances.get(label, 0) + c["instances"]
            self.chips_with[label] = self.chips_with.get(label, 0) + 1

    def to_json(self) -> dict[str, Any]:
        per_class = {
            label: {"pixels": self.pixels[label], "instances": self.instances[label],
                    "chips": self.chips_with[label]}
            for label in sorted(self.pixels)
        }  # fmt: skip
        return {"chips": self.chips, "classes": per_class}


@dataclass
class _Coco:
    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def add(self, image: dict[str, Any], found: Sequence[tuple[Instance, dict[str, Any]]]) -> None:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, **image})
        for inst, entry in found:
            self.annotations.append(
                {"id": len(self.annotations) + 1, "image_id": image_id,
                 "category_id": inst.class_index, "iscrowd": 0,
                 "annotation_id": inst.annotation_id, **entry}
            )  # fmt: skip

    def to_json(self, image_id: str, split: str, cats: Sequence[Any]) -> dict[str, Any]:
        return {
            "info": {"description": f"Tessera training chips of {image_id}, {split} split"},
            "images": self.images,
            "categories": list(cats),
            "annotations": self.annotations,
        }


def _zip_info(name: str, compress: bool) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    return info


def _split_space(frame: ImageFrame, image_id: str) -> str:
    """What area keys are relative to: the CRS, or the image itself without georeference."""
    if isinstance(frame, GeoFrame):
        return "crs:" + hashlib.blake2b(frame.georef.crs.encode(), digest_size=8).hexdigest()
    return f"image:{image_id}"


def export_chips(
    annotations: Sequence[Annotation],
    frame: ImageFrame,
    project: Project,
    image_id: str,
    options: ChipOptions,
    pixels: ChipPixels,
    out: BinaryIO,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write the chips ZIP to ``out`` (which need not be seekable), each chip as soon as it is
    made; returns the manifest. ``progress(1)`` is called per chip written."""
    transform = image_transform(frame)
    width, height, _ = frame.size()
    stored = pixels.level_size(options.level) if options.level is not None else None
    scale = grid_scale(options, transform, (width, height), stored)
    grid = ChipGrid.for_image(width, height, options.size, options.overlap, scale)
    classes = ClassMap.build(project, [a.label for a in annotations])
    labels = {c["id"]: c["name"] for c in classes.entries}
    instances, skipped = prepare_instances(annotations, frame, classes, scale)
    tree = shapely.STRtree([i.footprint for i in instances])
    space = _split_space(frame, image_id)
    chip_world = options.size * scale[0] * math.hypot(transform.a, transform.d)
    cell = options.cell or CELL_CHIPS * chip_world
    size, suffix = options.size, options.suffix
    coco = {s: _Coco() for s in SPLITS}
    totals = _Totals()
    split_totals = {s: _Totals() for s in SPLITS}
    chips: list[dict[str, Any]] = []
    with zipfile.ZipFile(out, "w", allowZip64=True) as zf:

        def put(name: str, data: bytes | str, compress: bool = False) -> None:
            zf.writestr(_zip_info(name, compress), data, compresslevel=1 if compress else None)

        for window in grid.windows():
            box = shapely.box(window.col, window.row, window.col + size, window.row + size)
            hits = tree.query(box, predicate="intersects")
            content = chip_content(window, size, instances, hits, classes.dtype,
                                   options.segmentation)  # fmt: skip
            if options.mode == "annotated" and not content.instances:
                continue
            chip_transform = window.transform(transform)
            if options.split_by == "image":
                key = f"image:{image_id}"
            else:
                x, y = chip_transform @ (size / 2, size / 2)
                key = area_key(space, x, y, cell)
            split = split_for(key, options.seed, options.fractions)
            name = f"{image_id}_r{window.row:06d}_c{window.col:06d}"
            image_path = f"{split}/images/{name}{suffix}"
            mask_path = f"{split}/masks/{name}{suffix}"
            data = pixels.read(window)
            if data.shape[1:] != (size, size):  # the image is smaller than a chip: pad
                padded = np.zeros((data.shape[0], size, size), dtype=data.dtype)
                padded[:, : data.shape[1], : data.shape[2]] = data
                data = padded
            put(image_path, pixels.encode(data, chip_transform, is_mask=False))
            put(mask_path, pixels.encode(content.mask[None], chip_transform, is_mask=True))
            if options.chip_format == "png":
                for path in (image_path, mask_path):
                    put(path[: -len(suffix)] + ".pgw", world_file(chip_transform))
            counts = np.bincount(content.mask.ravel(), minlength=len(labels) + 1)
            per_class: dict[str, dict[str, int]] = {}
            for inst, _ in content.instances:
                c = per_class.setdefault(inst.label, {"pixels": 0, "instances": 0})
                c["instances"] += 1
            for index in np.flatnonzero(counts[1:]) + 1:
                c = per_class.setdefault(labels[int(index)], {"pixels": 0, "instances": 0})
                c["pixels"] = int(counts[index])
            totals.add(per_class)
            split_totals[split].add(per_class)
            coco[split].add(
                {"file_name": image_path, "mask_file": mask_path, "width": size, "height": size},
                content.instances,
            )
            chips.append(
                {
                    "name": name,
                    "image": image_path,
                    "mask": mask_path,
                    "split": split,
                    "split_key": key,
                    "grid": [window.col, window.row],
                    "window": list(window.source),
                    "valid": [window.width, window.height],
                    "transform": list(chip_transform)[:6],
                    "background_pixels": int(counts[0]),
                    "classes": dict(sorted(per_class.items())),
                }
            )
            if progress is not None:
                progress(1)
        manifest = {
            "image_id": image_id,
            "size": size,
            "scale": list(scale),
            "resolution": chip_world / size,
            "crs": frame.georef.crs if isinstance(frame, GeoFrame) else None,
            "mode": options.mode,
            "chip_format": options.chip_format,
            "bands": list(options.bands) if options.bands else None,
            "overlap": options.overlap,
            "split": {"fractions": list(options.fractions), "by": options.split_by,
                      "seed": options.seed, "cell": cell if options.split_by == "area" else None},
            "overlap_rule": OVERLAP_RULE,
            "skipped": skipped,
            "chips": chips,
            "totals": {**totals.to_json(),
                       "splits": {s: split_totals[s].to_json() for s in SPLITS}},
        }  # fmt: skip
        put("classes.json", orjson.dumps(classes.to_json(project), option=INDENT), compress=True)
        put("manifest.json", orjson.dumps(manifest, option=INDENT), compress=True)
        for s in SPLITS:
            doc = coco[s].to_json(image_id, s, classes.entries)
            put(f"coco_{s}.json", orjson.dumps(doc), compress=True)
    return manifest
