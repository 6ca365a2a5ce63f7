"""Inter-annotator agreement: kappa on tags and label presence, and shape matching.

Pure: takes annotations and the frames of their images, returns an ``Agreement`` whose
``to_json`` is strict JSON (an undefined statistic is null with a reason, never NaN).

Raters and items
    The raters are the annotations' authors. An author *worked on* an image when they have any
    annotation on it that the status and author filters keep (whatever its label): only then
    do their absences on that image count as "no". Every comparison between two authors uses
    only the images both worked on; Fleiss' kappa uses the images that two or more worked on,
    each with however many raters worked on it (Fleiss' formulas for unequal numbers of
    ratings per subject; with the same number everywhere they are the classic ones).

Kappa blocks
    ``presence``: items are (image, label) over the labels of shapes (every kind but tag) in
    scope; the category is whether the author drew any shape of that label on that image.
    ``tags``: the same over image-level tags, plus ``classification``: items are images and the
    category is the set of tags an author gave (single-label classification when there is one
    tag per image). ``per_label`` repeats the statistics for each label (items: images).
    Kappa is undefined (null, with a reason) when there is no item, or when chance agreement
    is 1 (every rating in one category); ``observed_agreement`` is still given then.

Labels
    Labels are compared exactly: ``vehicle/car`` never matches ``vehicle/truck``. A ``label``
    option selects that label and its sub-labels; when sub-labels are in use, each statistic
    is also given for the whole subtree (entries with ``"sublabels": true``, where any label of
    the subtree counts as the label).

Shapes
    Per label, per annotator pair ``[a, b]`` (``a`` first alphabetically, the reference),
    within each image and, on volumes, each slice of a plane (``Placement``): areal shapes
    (box, polygon, multipolygon, mask) are matched one to one on IoU >= ``iou_threshold``;
    points on distance <= ``point_tolerance``. The matching takes the most matches, then the
    best total IoU (or the least total distance): candidates come from an STRtree and each
    connected group of candidates is solved by ``scipy.optimize.linear_sum_assignment``.
    ``missed`` are a's shapes b has no match for, ``extra`` b's shapes with no match in a's.
    ``iou``, ``dice`` and ``hd95`` are means over the matched pairs; ``hd95`` is the 95th
    percentile of the symmetric boundary-to-boundary distances (both boundaries sampled every
    1/256 of their length, distances exact to the other boundary). ``area_dice`` is the Dice of
    the union of a's shapes against the union of b's, summed over images (pixel-level
    agreement, whatever the instances). Masks are compared by their pixels (vectorised), not
    their bounding boxes. Polylines, multipoints and shapes without a slice on a volume are not
    compared (counted in ``not_compared``).

Units
    Distances and areas are measured in a plane: the image's CRS units for a projected CRS
    (``m`` for metres), metres for a geographic CRS (a transverse Mercator centred on the
    image), ``mm`` in the slice plane for volumes, ``px`` for images without georeference.
    ``point_tolerance`` is in those units; by default it is 10 of the image's pixels.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry.base import BaseGeometry

from annot.coords import transform_points
from annot.errors import BadRequest
from annot.frames import GeoFrame, ImageFrame, VolumeFrame
from annot.geometry import map_coords
from annot.model import Annotation, Kind, Mask, Plane

Array = npt.NDArray[np.float64]

AREA_KINDS = frozenset({Kind.box, Kind.polygon, Kind.multipolygon, Kind.mask})
POINT_KINDS = frozenset({Kind.point})
DEFAULT_IOU_THRESHOLD = 0.5
DEFAULT_POINT_PIXELS = 10.0
BOUNDARY_SAMPLES = 256
DIGITS = 6

# A label key: (label, whether it stands for its whole subtree).
LabelKey = tuple[str, bool]


@dataclass(frozen=True)
class Options:
    """What to compare: ``label`` (and its sub-labels), only these ``authors`` (empty: all),
    the IoU a match needs and the point tolerance (None: 10 image pixels, in each image's
    units)."""

    label: str | None = None
    authors: tuple[str, ...] = ()
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    point_tolerance: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.iou_threshold) and 0.0 < self.iou_threshold <= 1.0):
            raise BadRequest("iou_threshold must be a number in (0, 1]")
        tol = self.point_tolerance
        if tol is not None and not (math.isfinite(tol) and tol > 0):
            raise BadRequest("point_tolerance must be a positive number")


# --- kappa --------------------------------------------------------------------------------


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), DIGITS)


@dataclass(frozen=True)
class Kappa:
    """A kappa statistic: None with a ``reason`` when undefined."""

    kappa: float | None
    observed: float | None
    expected: float | None
    items: int
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kappa": _round(self.kappa),
            "observed_agreement": _round(self.observed),
            "chance_agreement": _round(self.expected),
            "items": self.items,
            "reason": self.reason,
        }


def _undefined_by_chance(expected: float) -> bool:
    return expected >= 1.0 - 1e-12


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> Kappa:
    """Cohen's kappa of two raters' categories for the same items (in the same order)."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    n = len(a)
    if n == 0:
        return Kappa(None, None, None, 0, "no item was rated by both annotators")
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if _undefined_by_chance(expected):
        only = next(iter(ca))
        return Kappa(
            None,
            observed,
            expected,
            n,
            f"both annotators gave every item the same category ({_category(only)}): "
            "chance agreement is 1 and kappa is undefined",
        )
    return Kappa((observed - expected) / (1.0 - expected), observed, expected, n)


def fleiss_kappa(ratings: Iterable[Sequence[Hashable]]) -> Kappa:
    """Fleiss' kappa; ``ratings`` holds, per item, the categories its raters gave. Items with
    fewer than two ratings are left out; the number of raters may differ between items."""
    items = [list(r) for r in ratings if len(r) >= 2]
    if not items:
        return Kappa(None, None, None, 0, "no item was rated by two or more annotators")
    total = sum(len(r) for r in items)
    per_category: Counter[Hashable] = Counter()
    agreement = 0.0
    for r in items:
        counts = Counter(r)
        per_category.update(counts)
        m = len(r)
        agreement += (sum(c * c for c in counts.values()) - m) / (m * (m - 1))
    observed = agreement / len(items)
    expected = sum((c / total) ** 2 for c in per_category.values())
    if _undefined_by_chance(expected):
        only = next(iter(per_category))
        return Kappa(
            None,
            observed,
            expected,
            len(items),
            f"every rating is the same category ({_category(only)}): chance agreement is 1 "
            "and kappa is undefined",
        )
    return Kappa((observed - expected) / (1.0 - expected), observed, expected, len(items))


def _category(value: Hashable) -> str:
    if value is True:
        return "present"
    if value is False:
        return "absent"
    if isinstance(value, tuple):
        return "+".join(str(v) for v in value) or "no tag"
    return str(value)


# --- measuring spaces ----------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """Where an image's shapes are measured: a plane in ``units``; ``to_plane`` maps storage
    coordinates ``(n, 2 or 3)`` to ``(n, 2)``; ``pixel`` is one image pixel in ``units``."""

    units: str
    pixel: float
    to_plane: Callable[[Array], Array]


@lru_cache(maxsize=256)
def _crs_kind(crs: str) -> tuple[bool, str]:
    """Whether a CRS is geographic, and the name of its first axis' unit."""
    c = CRS.from_user_input(crs)
    unit = c.axis_info[0].unit_name if c.axis_info else "unknown"
    return bool(c.is_geographic), ("m" if unit in ("metre", "meter") else unit)


def _pixel_size(frame: ImageFrame, to_plane: Callable[[Array], Array], key: PlaneKey) -> float:
    w, h, _ = frame.size(key[0] if key else None)
    pts = np.array([[w / 2, h / 2], [w / 2 + 1, h / 2], [w / 2, h / 2 + 1]], dtype=np.float64)
    if key is not None:
        plane, k = key
        pts = np.column_stack([pts, np.full(3, float(k))])
        world = frame.pixel_to_world(pts, plane)
    else:
        world = frame.pixel_to_world(pts)
    p = to_plane(world)
    return float((np.linalg.norm(p[1] - p[0]) + np.linalg.norm(p[2] - p[0])) / 2)


# On volumes: which slice of which plane; None for 2D images.
PlaneKey = tuple[Plane, int] | None


def measuring_space(frame: ImageFrame, key: PlaneKey = None) -> Space:
    """The plane an image's shapes (on slice ``key`` of a volume) are measured in."""
    to_plane: Callable[[Array], Array]
    if isinstance(frame, VolumeFrame):
        if key is None:
            raise ValueError("a volume's shapes are measured on a slice")
        plane, k = key
        corners = np.array([[0.0, 0.0, k], [1.0, 0.0, k], [0.0, 1.0, k]])
        p0, p1, p2 = frame.pixel_to_world(corners, plane)
        u = (p1 - p0) / np.linalg.norm(p1 - p0)
        v = (p2 - p0) - np.dot(p2 - p0, u) * u
        v = v / np.linalg.norm(v)
        basis = np.column_stack([u, v])

        def to_plane(pts: Array) -> Array:
            return np.asarray((pts[:, :3] - p0) @ basis, dtype=np.float64)

        units = "mm"
    elif isinstance(frame, GeoFrame):
        crs = frame.georef.crs
        geographic, units = _crs_kind(crs)
        if geographic:
            centre = frame.pixel_to_world(np.array([[frame.width / 2, frame.height / 2]]))
            lon, lat = (float(v) for v in centre[0])
            local = (
                f"+proj=tmerc +lat_0={lat!r} +lon_0={lon!r} +k=1 +x_0=0 +y_0=0 "
                "+ellps=WGS84 +units=m +no_defs"
            )

            def to_plane(pts: Array) -> Array:
                x, y = transform_points(crs, local, pts[:, 0], pts[:, 1])
                return np.column_stack([x, y])

            units = "m"
        else:

            def to_plane(pts: Array) -> Array:
                return np.asarray(pts[:, :2], dtype=np.float64)

    else:

        def to_plane(pts: Array) -> Array:
            return np.asarray(pts[:, :2], dtype=np.float64)

        units = "px"
    return Space(units, _pixel_size(frame, to_plane, key), to_plane)


def mask_pixels(mask: Mask) -> BaseGeometry:
    """The pixels a mask sets, as (multi)polygons in pixel coordinates."""
    from rasterio.features import shapes
    from rasterio.transform import Affine

    arr = mask.to_array()
    if not arr.any():
        return shapely.Polygon()
    polys = [
        shapely.geometry.shape(g)
        for g, v in shapes(
            arr.astype(np.uint8), mask=arr, transform=Affine.translation(mask.col, mask.row)
        )
        if v == 1
    ]
    return shapely.union_all(polys)


def _measured(a: Annotation, frame: ImageFrame, space: Space, key: PlaneKey) -> BaseGeometry:
    """An annotation's shape in its measuring plane (2D)."""
    c = a.content
    if c.mask is not None:
        pixels = mask_pixels(c.mask)
        if pixels.is_empty:
            return pixels
        if key is not None:
            plane, k = key

            def to_world(p: Array) -> Array:
                return frame.pixel_to_world(np.column_stack([p, np.full(len(p), float(k))]), plane)

        else:

            def to_world(p: Array) -> Array:
                return frame.pixel_to_world(p)

        geom = map_coords(pixels, lambda p: space.to_plane(to_world(p)), 2)
    else:
        assert c.geometry is not None
        geom = map_coords(c.geometry, space.to_plane, 2)
    if c.kind in AREA_KINDS and not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


# --- matching ------------------------------------------------------------------------------


def assign(
    rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp], quality: Array
) -> list[tuple[int, int]]:
    """A one-to-one matching over candidate edges ``(rows[i], cols[i])`` of ``quality`` in
    [0, 1]: the most matches, then the highest total quality. Solved per connected group of
    candidates (small, even when the shapes are many)."""
    if len(rows) == 0:
        return []
    nr, nc = int(rows.max()) + 1, int(cols.max()) + 1
    graph = coo_matrix((np.ones(len(rows)), (rows, cols + nr)), shape=(nr + nc, nr + nc))
    _, component = connected_components(graph, directed=False)
    out: list[tuple[int, int]] = []
    group_of_edge = component[rows]
    for g in np.unique(group_of_edge):
        sel = group_of_edge == g
        r, c, q = rows[sel], cols[sel], quality[sel]
        ur, ri = np.unique(r, return_inverse=True)
        uc, ci = np.unique(c, return_inverse=True)
        # scores: each match is worth more than any total loss of quality (count first)
        big = float(min(len(ur), len(uc)) + 1)
        score = np.zeros((len(ur), len(uc)))
        score[ri, ci] = big - (1.0 - q)
        picked_r, picked_c = linear_sum_assignment(score, maximize=True)
        for i, j in zip(picked_r.tolist(), picked_c.tolist(), strict=True):
            if score[i, j] > 0:
                out.append((int(ur[i]), int(uc[j])))
    return out


def match_areas(
    a: Sequence[BaseGeometry], b: Sequence[BaseGeometry], threshold: float
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(i, j, iou)`` of areal shapes with IoU >= ``threshold``."""
    if not a or not b:
        return []
    ga, gb = np.array(a, dtype=object), np.array(b, dtype=object)
    ia, ib = shapely.STRtree(gb).query(ga, predicate="intersects")
    if len(ia) == 0:
        return []
    inter = shapely.area(shapely.intersection(ga[ia], gb[ib]))
    union = shapely.area(ga)[ia] + shapely.area(gb)[ib] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    keep = iou >= threshold
    ia, ib, iou = ia[keep], ib[keep], iou[keep]
    lookup = {(int(i), int(j)): float(v) for i, j, v in zip(ia, ib, iou, strict=True)}
    return [(i, j, lookup[(i, j)]) for i, j in assign(ia, ib, iou)]


def match_points(
    a: Sequence[BaseGeometry], b: Sequence[BaseGeometry], tolerance: float
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(i, j, distance)`` of points within ``tolerance``."""
    if not a or not b:
        return []
    ga, gb = np.array(a, dtype=object), np.array(b, dtype=object)
    ia, ib = shapely.STRtree(gb).query(ga, predicate="dwithin", distance=tolerance)
    if len(ia) == 0:
        return []
    dist = shapely.distance(ga[ia], gb[ib])
    lookup = {(int(i), int(j)): float(d) for i, j, d in zip(ia, ib, dist, strict=True)}
    return [(i, j, lookup[(i, j)]) for i, j in assign(ia, ib, 1.0 - dist / tolerance)]


def _boundary_points(boundary: BaseGeometry) -> BaseGeometry:
    length = float(boundary.length)
    dense = shapely.segmentize(boundary, length / BOUNDARY_SAMPLES) if length > 0 else boundary
    return shapely.points(shapely.get_coordinates(dense))


def hd95(a: BaseGeometry, b: BaseGeometry) -> float:
    """The 95th percentile of the symmetric distances between the boundaries of two areal
    shapes (each boundary sampled every 1/256 of its length, to the other boundary exactly)."""
    ba, bb = shapely.boundary(a), shapely.boundary(b)
    da = shapely.distance(_boundary_points(ba), bb)
    db = shapely.distance(_boundary_points(bb), ba)
    return float(np.percentile(np.concatenate([da, db]), 95))


# --- accumulating ----------------------------------------------------------------------------


@dataclass
class ShapeStats:
    """Shape agreement of one label and geometry type between annotators ``a`` and ``b``."""

    label: str
    sublabels: bool
    geometry: str  # "area" or "point"
    a: str
    b: str
    units: str
    images: set[str] = field(default_factory=set)
    count_a: int = 0
    count_b: int = 0
    matched: int = 0
    ious: list[float] = field(default_factory=list)
    hd95s: list[float] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    overlap: float = 0.0
    area_a: float = 0.0
    area_b: float = 0.0

    def to_json(self) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return _round(float(np.mean(values))) if values else None

        total = self.count_a + self.count_b
        out: dict[str, Any] = {
            "label": self.label,
            "sublabels": self.sublabels,
            "geometry": self.geometry,
            "annotators": [self.a, self.b],
            "units": self.units,
            "images": len(self.images),
            "count_a": self.count_a,
            "count_b": self.count_b,
            "matched": self.matched,
            "missed": self.count_a - self.matched,
            "extra": self.count_b - self.matched,
            "f1": _round(2 * self.matched / total) if total else None,
        }
        if self.geometry == "area":
            dice = [2 * v / (1 + v) for v in self.ious]
            areas = self.area_a + self.area_b
            out.update(
                iou=mean(self.ious),
                dice=mean(dice),
                hd95=mean(self.hd95s),
                hd95_max=_round(max(self.hd95s)) if self.hd95s else None,
                area_dice=_round(2 * self.overlap / areas) if areas > 0 else None,
            )
        else:
            out.update(
                mean_distance=mean(self.distances),
                max_distance=_round(max(self.distances)) if self.distances else None,
            )
        return out


@dataclass(frozen=True)
class Agreement:
    """The agreement between the annotators of a set of images."""

    images: int
    images_compared: int
    annotators: list[str]
    units: str | None
    presence: dict[str, Any]
    tags: dict[str, Any]
    shapes: list[ShapeStats]
    not_compared: dict[str, int]
    skipped_images: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "images_compared": self.images_compared,
            "annotators": self.annotators,
            "units": self.units,
            "presence": self.presence,
            "tags": self.tags,
            "shapes": [s.to_json() for s in self.shapes],
            "not_compared": self.not_compared,
            "skipped_images": self.skipped_images,
        }


def _in_scope(label: str, wanted: str | None) -> bool:
    return wanted is None or label == wanted or label.startswith(wanted + "/")


def _label_keys(label: str, options: Options, rollup: bool) -> list[LabelKey]:
    keys: list[LabelKey] = [(label, False)]
    if rollup and options.label is not None:
        keys.append((options.label, True))
    return keys


def _pair_kappas(
    raters: Sequence[str],
    worked: Mapping[str, set[str]],
    items_of: Callable[[str], Iterable[Hashable]],
    category: Callable[[str, str, Hashable], Hashable],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Cohen's kappa per pair and Fleiss' over all: ``items_of(image)`` are an image's items,
    ``category(image, rater, item)`` a rater's category for one."""
    pairs = []
    for a, b in combinations(raters, 2):
        ca: list[Hashable] = []
        cb: list[Hashable] = []
        for image, who in worked.items():
            if a in who and b in who:
                for item in items_of(image):
                    ca.append(category(image, a, item))
                    cb.append(category(image, b, item))
        pairs.append({"annotators": [a, b], **cohen_kappa(ca, cb).to_json()})
    ratings: list[list[Hashable]] = []
    for image, who in worked.items():
        present = [r for r in raters if r in who]
        for item in items_of(image):
            ratings.append([category(image, r, item) for r in present])
    fleiss: dict[str, Any] = {"annotators": list(raters)}
    if len(raters) < 2:
        fleiss.update(
            Kappa(None, None, None, 0, "agreement needs two or more annotators").to_json()
        )
    else:
        fleiss.update(fleiss_kappa(ratings).to_json())
    return pairs, fleiss


def _only(item: Hashable) -> Callable[[str], tuple[Hashable]]:
    def items_of(_: str) -> tuple[Hashable]:
        return (item,)

    return items_of


def _presence_block(
    raters: Sequence[str],
    worked: Mapping[str, set[str]],
    has: Mapping[tuple[str, str], set[LabelKey]],
    keys: Sequence[LabelKey],
) -> dict[str, Any]:
    def category(image: str, rater: str, item: Hashable) -> Hashable:
        return item in has.get((image, rater), set())

    pairs, fleiss = _pair_kappas(raters, worked, lambda _: keys, category)
    per_label = []
    for key in keys:
        p, f = _pair_kappas(raters, worked, _only(key), category)
        per_label.append(
            {"label": key[0], "sublabels": key[1], "cohen_kappa": p, "fleiss_kappa": f}
        )
    return {
        "labels": [{"label": k[0], "sublabels": k[1]} for k in keys],
        "cohen_kappa": pairs,
        "fleiss_kappa": fleiss,
        "per_label": per_label,
    }


def agreement(
    annotations: Iterable[Annotation],
    frames: Mapping[str, ImageFrame],
    options: Options | None = None,
    images: int | None = None,
) -> Agreement:
    """The agreement between the authors of ``annotations`` (already filtered by status).

    ``frames`` holds the frame of each image to compare; annotations of an image without one
    are left out (its id is listed in ``skipped_images``). ``images`` is how many images are
    in scope (for the report; default: those with annotations).
    """
    options = options or Options()
    wanted_authors = set(options.authors)
    by_image: dict[str, list[Annotation]] = defaultdict(list)
    skipped: set[str] = set()
    for a in annotations:
        if wanted_authors and a.author not in wanted_authors:
            continue
        if a.image_id not in frames:
            skipped.add(a.image_id)
            continue
        by_image[a.image_id].append(a)

    worked = {image: {a.author for a in items} for image, items in by_image.items()}
    raters = sorted({r for who in worked.values() for r in who})
    compared = {image: who for image, who in worked.items() if len(who) >= 2}
    rollup = options.label is not None and any(
        a.label.startswith(options.label + "/") for items in by_image.values() for a in items
    )

    # presence of labels: shapes and tags apart
    has_shape: dict[tuple[str, str], set[LabelKey]] = defaultdict(set)
    has_tag: dict[tuple[str, str], set[LabelKey]] = defaultdict(set)
    tag_sets: dict[tuple[str, str], set[str]] = defaultdict(set)
    shape_keys: set[LabelKey] = set()
    tag_keys: set[LabelKey] = set()
    for image, items in by_image.items():
        for a in items:
            if not _in_scope(a.label, options.label):
                continue
            keys = _label_keys(a.label, options, rollup)
            if a.kind is Kind.tag:
                has_tag[(image, a.author)].update(keys)
                tag_keys.update(keys)
                tag_sets[(image, a.author)].add(a.label)
            else:
                has_shape[(image, a.author)].update(keys)
                shape_keys.update(keys)

    presence = _presence_block(raters, worked, has_shape, sorted(shape_keys))
    tags = _presence_block(raters, worked, has_tag, sorted(tag_keys))
    cls_pairs, cls_fleiss = _pair_kappas(
        raters,
        worked,
        lambda _: (None,),
        lambda image, rater, _: tuple(sorted(tag_sets.get((image, rater), set()))),
    )
    tags["classification"] = {"cohen_kappa": cls_pairs, "fleiss_kappa": cls_fleiss}

    shapes, not_compared, units = _compare_shapes(by_image, compared, frames, options, rollup)
    return Agreement(
        images=images if images is not None else len(by_image),
        images_compared=len(compared),
        annotators=raters,
        units=units.pop() if len(units) == 1 else ("mixed" if units else None),
        presence=presence,
        tags=tags,
        shapes=shapes,
        not_compared=not_compared,
        skipped_images=sorted(skipped),
    )


def _compare_shapes(
    by_image: Mapping[str, list[Annotation]],
    compared: Mapping[str, set[str]],
    frames: Mapping[str, ImageFrame],
    options: Options,
    rollup: bool,
) -> tuple[list[ShapeStats], dict[str, int], set[str]]:
    stats: dict[tuple[LabelKey, str, str, str, str], ShapeStats] = {}
    not_compared: Counter[str] = Counter()
    units_seen: set[str] = set()
    for image, who in compared.items():
        frame = frames[image]
        is_volume = isinstance(frame, VolumeFrame)
        # (plane key, label key, geometry) -> author -> shapes
        groups: dict[tuple[PlaneKey, LabelKey, str], dict[str, list[BaseGeometry]]] = {}
        spaces: dict[PlaneKey, Space] = {}
        for a in by_image[image]:
            if a.kind is Kind.tag or not _in_scope(a.label, options.label):
                continue
            if a.kind in AREA_KINDS:
                geometry = "area"
            elif a.kind in POINT_KINDS:
                geometry = "point"
            else:
                not_compared[a.kind.value] += 1
                continue
            key: PlaneKey = None
            if is_volume:
                if a.content.placement is None:
                    not_compared["no slice"] += 1
                    continue
                key = (a.content.placement.plane, a.content.placement.slice)
            if key not in spaces:
                spaces[key] = measuring_space(frame, key)
            shape = _measured(a, frame, spaces[key], key)
            if shape.is_empty:
                not_compared["empty"] += 1
                continue
            for lk in _label_keys(a.label, options, rollup):
                groups.setdefault((key, lk, geometry), {}).setdefault(a.author, []).append(shape)
        for (key, lk, geometry), shapes_of in groups.items():
            space = spaces[key]
            units_seen.add(space.units)
            tolerance = options.point_tolerance or DEFAULT_POINT_PIXELS * space.pixel
            for ra, rb in combinations(sorted(who), 2):
                sa, sb = shapes_of.get(ra, []), shapes_of.get(rb, [])
                if not sa and not sb:
                    continue
                s = stats.get((lk, geometry, ra, rb, space.units))
                if s is None:
                    s = ShapeStats(lk[0], lk[1], geometry, ra, rb, space.units)
                    stats[(lk, geometry, ra, rb, space.units)] = s
                _compare(s, image, sa, sb, geometry, options.iou_threshold, tolerance)
    ordered = sorted(stats.values(), key=lambda s: (s.label, s.sublabels, s.geometry, s.a, s.b))
    return ordered, dict(sorted(not_compared.items())), units_seen


def _compare(
    s: ShapeStats,
    image: str,
    sa: list[BaseGeometry],
    sb: list[BaseGeometry],
    geometry: str,
    threshold: float,
    tolerance: float,
) -> None:
    s.images.add(image)
    s.count_a += len(sa)
    s.count_b += len(sb)
    if geometry == "point":
        matches = match_points(sa, sb, tolerance)
        s.matched += len(matches)
        s.distances.extend(d for _, _, d in matches)
        return
    matches = match_areas(sa, sb, threshold)
    s.matched += len(matches)
    for i, j, iou in matches:
        s.ious.append(iou)
        s.hd95s.append(hd95(sa[i], sb[j]))
    ua = shapely.union_all(sa) if sa else shapely.Polygon()
    ub = shapely.union_all(sb) if sb else shapely.Polygon()
    s.area_a += float(ua.area)
    s.area_b += float(ub.area)
    if sa and sb:
        s.overlap += float(shapely.intersection(ua, ub).area)
