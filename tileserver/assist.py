"""Classical interactive segmentation: a click or a box becomes a proposed outline.

Pure functions on NumPy arrays, no I/O: ``segment`` turns pixel values and a prompt (positive
and negative points, an optional box) into a boolean mask, a score and the name of the method;
``trace_outline`` turns the mask into a polygon with sub-pixel vertices. The route that reads
the pixels and writes the Feature is ``tileserver.web.segment``.

Coordinates are those of the array: ``(x, y)`` with (0, 0) at the top-left corner of the
top-left pixel (its centre is (0.5, 0.5)), as ``annot.coords`` says for images.

Methods (scikit-image and SciPy):

- ``flood`` (positive points, no box): region growing from each positive point on the
  Gaussian-smoothed image. The tolerance is not a constant: candidate regions are grown at
  tolerances from half the estimated noise up to the whole value range, and the one whose
  boundary separates inside from outside best (``contrast`` below) wins. Its edge is then
  moved to mid-contrast (half-way between the inside and outside means), which puts the
  outline where the intensity step is, with sub-pixel accuracy. Negative points inside the
  region split it: a watershed of the distance transform from the positive and negative
  points, keeping the positive side (two touching objects part at their neck).
- ``random_walker`` (a box): scikit-image's random walker (Grady 2006) on the unsmoothed values
  (smoothing spreads an edge over pixels and weakens it for the walker), with the box's outside
  and outline as background seeds, the positive points (or a disc at the box centre) as
  foreground seeds, negative points as background seeds; the outline is the 0.5 level of the
  foreground probability.
- ``rectangle`` (a box; a shape prior for buildings and other rectangular objects): the
  rectangle inscribed in the box (touching its four sides) at the dominant edge orientation
  inside it (the image gradients' angle modulo 90 degrees, weighted by squared magnitude; an
  axis-aligned rectangle within 15 degrees of 45, where inscribing is ill-posed), then each
  pair of opposite sides moved in by 0 to 20 % of its length (the two pairs independently),
  keeping the rectangle whose outline lies on the strongest edges (mean gradient across the
  outline; nothing found when that is under ``RECT_MIN_EDGE`` noise sigmas: white noise gives
  about 0.13). Without points, ``auto`` answers it for a box when the random walker finds
  nothing or nothing clear (contrast under ``CLEAR_SCORE``): on real aerial imagery
  (textured roofs, shadows, trees) the walker's outline is worse than the box itself, the
  rectangle better (``bench/segment_buildings.py``). Its outline is the exact rectangle
  (``Segmentation.outline``), never a traced mask.

Flood and the random walker smooth the result (fill holes smaller than 2 % of the area, a
1-pixel opening) and keep the connected parts that hold a positive point (the box's largest
part without points).

``score`` is the boundary contrast of the result, in [0, 1): ``|m_in - m_out| / (|m_in -
m_out| + s_in + s_out)`` where ``m`` and ``s`` are the mean and standard deviation (vectors and
their norms for several bands) of the smoothed values inside the region and in a 2-pixel ring
around it. 0 means no visible boundary; above 0.6 the boundary is clear against the noise.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from scipy import ndimage
from shapely.geometry.base import BaseGeometry
from skimage import measure, segmentation

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

FLOOD = "flood"
RANDOM_WALKER = "random_walker"
RECTANGLE = "rectangle"
METHODS = (FLOOD, RANDOM_WALKER, RECTANGLE)
SMOOTH_SIGMA = 1.0  # pixels: Gaussian smoothing before growing or walking
TOLERANCE_STEPS = 40  # candidate tolerances tried by flood
MIN_SCORE = 0.15  # below this contrast nothing was found
MIN_STEP = 2.0  # nor when the step between inside and outside is under this many noise sigmas
RING = 2  # pixels of the ring outside a region that ``contrast`` compares with
SEED_RADIUS = 2  # pixels: points become small discs of seeds
RW_BETA = 130.0
RW_MARGIN = 0.1  # of the box size: background ring outside the box that the walker sees
CLEAR_SCORE = 0.6  # auto with a box: a walker result under this contrast gives way to rectangle
RECT_SHRINKS = np.linspace(0.0, 0.2, 11)  # of a side's length, tried at each of its ends
RECT_NEAR_45 = 15.0  # degrees: closer to 45 than this, the rectangle is axis-aligned
RECT_MIN_EDGE = 0.4  # noise sigmas: a weaker mean gradient across the rectangle is no edge


class NothingFound(ValueError):
    """No object with a visible boundary around the prompt."""


@dataclass(frozen=True)
class Prompt:
    """Points ``(x, y)`` in array coordinates and an optional box ``(x0, y0, x1, y1)``."""

    positive: npt.NDArray[np.float64]
    negative: npt.NDArray[np.float64]
    box: tuple[float, float, float, float] | None = None

    @classmethod
    def from_points(
        cls,
        points: list[tuple[float, float, int]],
        box: tuple[float, float, float, float] | None = None,
    ) -> Prompt:
        pos = np.array([(x, y) for x, y, on in points if on], dtype=np.float64).reshape(-1, 2)
        neg = np.array([(x, y) for x, y, on in points if not on], dtype=np.float64).reshape(-1, 2)
        return cls(pos, neg, box)


@dataclass
class Segmentation:
    """A segmentation result: ``mask`` (rows, cols); ``soft`` is a map whose 0.5 level is the
    outline (sub-pixel), consistent with ``mask``."""

    mask: BoolArray
    soft: FloatArray
    score: float
    method: str
    touches_edge: bool = False  # the mask reaches an edge of the array marked ``open``
    details: dict[str, Any] = field(default_factory=dict)
    outline: BaseGeometry | None = None  # exact outline in array coordinates, when known


def _index(points: npt.NDArray[np.float64], shape: tuple[int, int]) -> npt.NDArray[np.intp]:
    """(row, col) indexes of the pixels containing points ``(x, y)``, clipped to the array."""
    if len(points) == 0:
        return np.zeros((0, 2), dtype=np.intp)
    rows = np.clip(np.floor(points[:, 1]), 0, shape[0] - 1).astype(np.intp)
    cols = np.clip(np.floor(points[:, 0]), 0, shape[1] - 1).astype(np.intp)
    return np.stack([rows, cols], axis=1)


def _disk(radius: int) -> BoolArray:
    """A disc structuring element of ``radius`` pixels."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    out: BoolArray = yy**2 + xx**2 <= radius**2
    return out


def _discs(idx: npt.NDArray[np.intp], shape: tuple[int, int], radius: int) -> BoolArray:
    out = np.zeros(shape, dtype=bool)
    if len(idx) == 0:
        return out
    out[idx[:, 0], idx[:, 1]] = True
    if radius > 0:
        out = ndimage.binary_dilation(out, _disk(radius))
    return out


def smooth(pixels: npt.NDArray[Any]) -> FloatArray:
    """(bands, rows, cols) values -> Gaussian-smoothed float32 (bands, rows, cols)."""
    data = np.asarray(pixels, dtype=np.float32)
    out: FloatArray = ndimage.gaussian_filter(data, sigma=(0, SMOOTH_SIGMA, SMOOTH_SIGMA))
    return out


def noise_sigma(values: FloatArray) -> float:
    """Robust noise estimate (MAD of neighbour differences), norm over bands."""
    d = np.diff(values, axis=2)
    if d.size == 0:
        return 0.0
    per_band = 1.4826 * np.median(np.abs(d - np.median(d, axis=(1, 2), keepdims=True)), axis=(1, 2))
    return float(np.sqrt(np.sum(per_band**2)) / np.sqrt(2.0))


def contrast(values: FloatArray, region: BoolArray) -> float:
    """Boundary contrast of ``region`` (see the module docstring), 0 when undefined."""
    return _contrast(values, region)[0]


def _contrast(values: FloatArray, region: BoolArray) -> tuple[float, float]:
    """``contrast`` and the distance between the inside and outside means."""
    if not region.any():
        return 0.0, 0.0
    rows, cols = np.nonzero(region)
    r0, r1 = max(rows.min() - RING - 1, 0), min(rows.max() + RING + 2, region.shape[0])
    c0, c1 = max(cols.min() - RING - 1, 0), min(cols.max() + RING + 2, region.shape[1])
    sub = region[r0:r1, c0:c1]
    ring = ndimage.binary_dilation(sub, iterations=RING) & ~sub
    if not ring.any():
        return 0.0, 0.0
    v = values[:, r0:r1, c0:c1]
    inside, outside = v[:, sub], v[:, ring]
    diff = float(np.linalg.norm(inside.mean(axis=1) - outside.mean(axis=1)))
    spread = float(np.linalg.norm(inside.std(axis=1)) + np.linalg.norm(outside.std(axis=1)))
    if diff <= 0:
        return 0.0, 0.0
    return diff / (diff + spread), diff


def _touches(mask: BoolArray, open_edges: tuple[bool, bool, bool, bool]) -> bool:
    """Whether ``mask`` reaches an open edge (left, top, right, bottom)."""
    left, top, right, bottom = open_edges
    return bool(
        (left and mask[:, 0].any())
        or (top and mask[0, :].any())
        or (right and mask[:, -1].any())
        or (bottom and mask[-1, :].any())
    )


def _component_with(mask: BoolArray, idx: npt.NDArray[np.intp]) -> BoolArray:
    """The connected parts of ``mask`` that hold any of the pixels ``idx`` (8-connected)."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    keep = np.unique(labels[idx[:, 0], idx[:, 1]])
    keep = keep[keep > 0]
    out: BoolArray = np.isin(labels, keep)
    return out


def _projection(values: FloatArray, region: BoolArray) -> tuple[FloatArray, float]:
    """Each pixel's position between the outside mean (0) and the inside mean (1) of
    ``region``, along the line joining them; and the distance between the means."""
    rows, cols = np.nonzero(region)
    r0, r1 = max(rows.min() - RING - 1, 0), min(rows.max() + RING + 2, region.shape[0])
    c0, c1 = max(cols.min() - RING - 1, 0), min(cols.max() + RING + 2, region.shape[1])
    sub = region[r0:r1, c0:c1]
    ring = ndimage.binary_dilation(sub, iterations=RING) & ~sub
    v = values[:, r0:r1, c0:c1]
    m_in, m_out = v[:, sub].mean(axis=1), v[:, ring].mean(axis=1)
    axis = m_in - m_out
    span = float(np.linalg.norm(axis))
    if span == 0:
        return np.zeros(region.shape, dtype=np.float32), 0.0
    u = (axis / span).astype(np.float32)
    proj = np.tensordot(u, values - m_out[:, None, None].astype(np.float32), axes=1) / span
    return proj.astype(np.float32), span


def _flood(
    values: FloatArray,
    prompt: Prompt,
    open_edges: tuple[bool, bool, bool, bool],
    limit: BoolArray | None,
    noise: float,
) -> tuple[BoolArray, FloatArray, dict[str, Any]]:
    shape = values.shape[1:]
    pos = _index(prompt.positive, shape)
    sigma = noise_sigma(values)
    union = np.zeros(shape, dtype=bool)
    soft = np.zeros(shape, dtype=np.float32)
    tolerances: list[float] = []
    for r, c in pos:
        if union[r, c]:
            continue
        r0, r1 = max(r - 2, 0), min(r + 3, shape[0])
        c0, c1 = max(c - 2, 0), min(c + 3, shape[1])
        ref = np.median(values[:, r0:r1, c0:c1].reshape(values.shape[0], -1), axis=1)
        d = np.sqrt(np.sum((values - ref[:, None, None].astype(np.float32)) ** 2, axis=0))
        if limit is not None:
            d = np.where(limit, d, np.inf)
        top = float(np.max(d[np.isfinite(d)]))
        if top <= 0:
            continue
        low = max(sigma * 0.5, top * 1e-3)
        best: tuple[float, float, BoolArray] | None = None
        best_closed: tuple[float, float, BoolArray] | None = None
        for t in np.geomspace(low, top, TOLERANCE_STEPS):
            region = ndimage.binary_fill_holes(_component_with(d <= t, np.array([[r, c]])))
            if region.all():
                break
            score, step = _contrast(values, region)
            if step < MIN_STEP * noise:
                continue
            cand = (score, float(t), region)
            if best is None or score > best[0] + 1e-9:
                best = cand
            if not _touches(region, open_edges) and (
                best_closed is None or score > best_closed[0] + 1e-9
            ):
                best_closed = cand
        if best is None:
            continue
        # A region inside the window wins unless one reaching its open edges is much better
        # (then the object is larger than the window: the caller reads a larger one).
        chosen = (
            best_closed if best_closed is not None and best_closed[0] >= 0.8 * best[0] else best
        )
        score, t, region = chosen
        tolerances.append(t)
        proj, span = _projection(values, region)
        if span == 0:
            continue
        near = ndimage.binary_dilation(region, iterations=3)
        if limit is not None:
            near &= limit
        grown = _component_with((proj >= 0.5) & near, np.array([[r, c]]))
        if not grown.any():
            grown = region
        union |= grown
        soft = np.where(near, np.maximum(soft, proj), soft)
    details = {"tolerance": tolerances, "noise": noise}
    return union, np.clip(soft, 0.0, 1.0).astype(np.float32), details


def _random_walker(
    values: FloatArray, prompt: Prompt
) -> tuple[BoolArray, FloatArray, dict[str, Any]]:
    shape = values.shape[1:]
    rows, cols = shape
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
    else:  # points only: the window's border is the background
        x0, y0, x1, y1 = 1.0, 1.0, cols - 1.0, rows - 1.0
    mx, my = max(3.0, RW_MARGIN * (x1 - x0)), max(3.0, RW_MARGIN * (y1 - y0))
    c0, c1 = max(int(np.floor(x0 - mx)), 0), min(int(np.ceil(x1 + mx)), cols)
    r0, r1 = max(int(np.floor(y0 - my)), 0), min(int(np.ceil(y1 + my)), rows)
    crop = values[:, r0:r1, c0:c1]
    h, w = crop.shape[1:]
    yy = np.arange(h)[:, None] + r0 + 0.5
    xx = np.arange(w)[None, :] + c0 + 0.5
    inside = (xx > x0) & (xx < x1) & (yy > y0) & (yy < y1)
    core = (xx > x0 + 1) & (xx < x1 - 1) & (yy > y0 + 1) & (yy < y1 - 1)
    labels = np.zeros((h, w), dtype=np.int32)
    labels[~core] = 2
    if crop.shape[1] > 0:  # the crop's own border too, when the box meets the window edge
        labels[0, :] = labels[-1, :] = 2
        labels[:, 0] = labels[:, -1] = 2
    offset = np.array([[r0, c0]])
    pos = _index(prompt.positive, shape) - offset
    pos = pos[(pos[:, 0] >= 0) & (pos[:, 0] < h) & (pos[:, 1] >= 0) & (pos[:, 1] < w)]
    if len(pos) == 0:  # the box's centre
        cy, cx = (y0 + y1) / 2 - r0, (x0 + x1) / 2 - c0
        radius = max(SEED_RADIUS, int(0.1 * min(x1 - x0, y1 - y0)))
        yy0, xx0 = np.ogrid[:h, :w]
        fg = (yy0 + 0.5 - cy) ** 2 + (xx0 + 0.5 - cx) ** 2 <= radius**2
        seeds = np.array([[int(cy), int(cx)]])
    else:
        fg = _discs(pos, (h, w), SEED_RADIUS)
        seeds = pos
    neg = _index(prompt.negative, shape) - offset
    neg = neg[(neg[:, 0] >= 0) & (neg[:, 0] < h) & (neg[:, 1] >= 0) & (neg[:, 1] < w)]
    labels[_discs(neg, (h, w), SEED_RADIUS)] = 2
    labels[fg & core] = 1
    if not (labels == 1).any() or not (labels == 2).any():
        raise NothingFound("the box is too small to hold foreground and background seeds")
    lo, hi = np.percentile(crop, [1.0, 99.0], axis=(1, 2))
    span = np.where(hi > lo, hi - lo, 1.0)
    data = np.moveaxis((crop - lo[:, None, None]) / span[:, None, None], 0, -1)
    with warnings.catch_warnings():
        # "probability range outside [0, 1] given the tolerance": clipped below
        warnings.simplefilter("ignore", UserWarning)
        prob = segmentation.random_walker(
            data.astype(np.float64),
            labels,
            beta=RW_BETA,
            mode="cg_j",
            return_full_prob=True,
            channel_axis=-1,
        )[0]
    prob = np.where(inside, np.clip(prob, 0.0, 1.0), 0.0)
    mask = np.zeros(shape, dtype=bool)
    soft = np.zeros(shape, dtype=np.float32)
    mask[r0:r1, c0:c1] = prob > 0.5
    soft[r0:r1, c0:c1] = prob
    details = {"seeds": seeds.tolist()}
    return mask, soft, details


def _gradients(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """x and y derivatives (bands, rows, cols) of the smoothed values."""
    gy, gx = np.gradient(values, axis=(1, 2))
    out_x: FloatArray = np.asarray(gx, dtype=np.float32)
    out_y: FloatArray = np.asarray(gy, dtype=np.float32)
    return out_x, out_y


def _box_mask(box: tuple[float, float, float, float], shape: tuple[int, int]) -> BoolArray:
    x0, y0, x1, y1 = box
    yy = np.arange(shape[0])[:, None] + 0.5
    xx = np.arange(shape[1])[None, :] + 0.5
    out: BoolArray = (xx > x0) & (xx < x1) & (yy > y0) & (yy < y1)
    return out


def _edge_angle(gx: FloatArray, gy: FloatArray, inside: BoolArray) -> float:
    """The dominant edge orientation in ``inside``, radians in [0, pi/2): the mean of the
    gradient angles times four (modulo 90 degrees), weighted by the squared magnitude."""
    ax, ay = gx[:, inside], gy[:, inside]
    z = np.sum((ax**2 + ay**2) * np.exp(4j * np.arctan2(ay, ax)))
    return float((np.angle(z) / 4) % (np.pi / 2))


def _inscribed(
    box: tuple[float, float, float, float], angle: float, shrink: tuple[float, float]
) -> shapely.Polygon:
    """The rectangle at ``angle`` whose bounds are ``box``, its side along ``angle`` shrunk by
    ``shrink[0]`` of its length at each end, the other by ``shrink[1]`` (axis-aligned near 45
    degrees, where the bounds do not fix its sides)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    c, s = float(np.cos(angle)), float(np.sin(angle))
    # a rectangle of sides (a, b) along (c, s) has bounds a c + b s wide and a s + b c high
    det = c * c - s * s
    a = (c * w - s * h) / det if abs(det) > 1e-9 else 0.0
    b = (c * h - s * w) / det if abs(det) > 1e-9 else 0.0
    if abs(np.degrees(angle) - 45.0) < RECT_NEAR_45 or a <= 1.0 or b <= 1.0:
        c, s, a, b = 1.0, 0.0, w, h
    a, b = a * (1 - 2 * shrink[0]), b * (1 - 2 * shrink[1])
    u, n = np.array([c, s]), np.array([-s, c])
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    corners = [
        centre + (p * a * u + q * b * n) / 2 for p, q in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    return shapely.Polygon(corners)


def _edge_strength(gx: FloatArray, gy: FloatArray, poly: shapely.Polygon) -> float:
    """Mean gradient across the outline of ``poly`` (norm over bands), sampled every half
    pixel."""
    xy = np.asarray(poly.exterior.coords)
    total, count = 0.0, 0
    for p, q in itertools.pairwise(xy):
        d = q - p
        length = float(np.hypot(d[0], d[1]))
        if length < 1.0:
            continue
        normal = np.array([-d[1], d[0]]) / length
        pts = p + np.arange(0.0, length, 0.5)[:, None] / length * d
        at = [pts[:, 1] - 0.5, pts[:, 0] - 0.5]
        across = [
            ndimage.map_coordinates(gx[k], at, order=1, mode="nearest") * normal[0]
            + ndimage.map_coordinates(gy[k], at, order=1, mode="nearest") * normal[1]
            for k in range(len(gx))
        ]
        total += float(np.sum(np.linalg.norm(np.array(across), axis=0)))
        count += len(pts)
    return total / max(count, 1)


def _rectangle(
    values: FloatArray, box: tuple[float, float, float, float]
) -> tuple[shapely.Polygon, dict[str, Any]]:
    """The rectangle fit in ``box`` (see the module docstring), in array coordinates."""
    shape = (int(values.shape[1]), int(values.shape[2]))
    gx, gy = _gradients(values)
    inside = _box_mask(box, shape)
    if not inside.any():
        raise NothingFound("the box is too small to fit a rectangle")
    angle = _edge_angle(gx, gy, inside)
    fits = [(_edge_strength(gx, gy, r), (float(ta), float(tb)), r)
            for ta in RECT_SHRINKS for tb in RECT_SHRINKS
            for r in [_inscribed(box, angle, (float(ta), float(tb)))]]  # fmt: skip
    strength, shrink, rect = max(fits, key=lambda f: f[0])
    details = {
        "angle": round(float(np.degrees(angle)), 2),
        "shrink": list(shrink),
        "edge": strength,
    }
    return rect, details


def _clean(mask: BoolArray, keep_at: npt.NDArray[np.intp]) -> BoolArray:
    """Fill small holes, open by one pixel, keep the parts holding ``keep_at`` (else the
    largest part)."""
    if not mask.any():
        return mask
    area = int(mask.sum())
    holes = ndimage.binary_fill_holes(mask) & ~mask
    labels, n = ndimage.label(holes)
    out = mask.copy()
    if n:
        sizes = np.bincount(labels.ravel())
        small = sizes < max(16, int(0.02 * area))
        small[0] = False
        out |= small[labels]
    opened = ndimage.binary_opening(out, _disk(1))
    if opened.any():
        out = opened
    if len(keep_at):
        kept = _component_with(out, keep_at)
        if kept.any():
            return kept
    labels, n = ndimage.label(out, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return out
    sizes = np.bincount(labels.ravel())[1:]
    largest: BoolArray = labels == (int(np.argmax(sizes)) + 1)
    return largest


def _split(mask: BoolArray, prompt: Prompt) -> BoolArray:
    """Remove the parts of ``mask`` nearer (through the mask) to negative points than to
    positive ones: a watershed of the distance transform."""
    shape = mask.shape
    neg = _index(prompt.negative, shape)
    neg = neg[mask[neg[:, 0], neg[:, 1]]] if len(neg) else neg
    if len(neg) == 0:
        return mask
    pos = _index(prompt.positive, shape)
    markers = np.zeros(shape, dtype=np.int32)
    markers[_discs(neg, shape, 1) & mask] = 2
    markers[_discs(pos, shape, 1) & mask] = 1
    dist = ndimage.distance_transform_edt(mask)
    basins = segmentation.watershed(-dist, markers, mask=mask)  # type: ignore[no-untyped-call]
    out: BoolArray = basins == 1
    return out


def segment(
    pixels: npt.NDArray[Any],
    prompt: Prompt,
    method: str | None = None,
    valid: BoolArray | None = None,
    open_edges: tuple[bool, bool, bool, bool] = (False, False, False, False),
) -> Segmentation:
    """Segment the object a prompt points at in ``pixels`` (bands, rows, cols).

    ``method`` None picks ``random_walker`` with a box and ``flood`` otherwise; a box alone
    (no points) gets ``rectangle`` when the walker finds nothing clear. ``valid``
    (rows, cols) excludes pixels (nodata); ``open_edges`` (left, top, right, bottom) are the
    array edges that are not the image's (``touches_edge`` says whether the mask reaches
    one: the object may go on beyond the array).

    Raises ``ValueError`` for a prompt the method cannot use and ``NothingFound`` when no
    object with a visible boundary is found.
    """
    if pixels.ndim != 3:
        raise ValueError("pixels must be (bands, rows, cols)")
    chosen = method or (RANDOM_WALKER if prompt.box is not None else FLOOD)
    if chosen not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    if chosen == FLOOD and len(prompt.positive) == 0 and prompt.box is None:
        raise ValueError("flood needs a positive point")
    if chosen == RECTANGLE and prompt.box is None:
        raise ValueError("rectangle needs a box")
    raw = np.asarray(pixels, dtype=np.float32)
    if valid is not None and not valid.all():
        fill = np.median(raw[:, valid], axis=1) if valid.any() else np.zeros(len(raw))
        raw = np.where(valid[None], raw, fill[:, None, None].astype(np.float32))
    values = smooth(raw)
    noise = noise_sigma(raw)
    if chosen == RECTANGLE:
        return _rectangle_result(values, noise, prompt, valid, open_edges)
    fallback = (
        method is None
        and prompt.box is not None
        and len(prompt.positive) == 0
        and len(prompt.negative) == 0
    )
    try:
        result = _region(raw, values, noise, prompt, chosen, valid, open_edges)
    except NothingFound:
        if not fallback:
            raise
        return _rectangle_result(values, noise, prompt, valid, open_edges)
    if fallback and result.score < CLEAR_SCORE:
        return _rectangle_result(values, noise, prompt, valid, open_edges)
    return result


def _rectangle_result(
    values: FloatArray,
    noise: float,
    prompt: Prompt,
    valid: BoolArray | None,
    open_edges: tuple[bool, bool, bool, bool],
) -> Segmentation:
    assert prompt.box is not None
    rect, details = _rectangle(values, prompt.box)
    if not details["edge"] > RECT_MIN_EDGE * noise:
        raise NothingFound(
            f"no rectangle with visible edges in the box (edge {details['edge']:.3g} against "
            f"noise {noise:.3g})"
        )
    rows, cols = int(values.shape[1]), int(values.shape[2])
    yy, xx = np.mgrid[:rows, :cols] + 0.5
    mask: BoolArray = shapely.contains_xy(rect, xx, yy)
    if valid is not None:
        mask &= valid
    if not mask.any():
        raise NothingFound("the box is too small to fit a rectangle")
    soft = mask.astype(np.float32)
    score = contrast(values, mask)
    return Segmentation(
        mask, soft, score, RECTANGLE, _touches(mask, open_edges), details, outline=rect
    )


def _region(
    raw: FloatArray,
    values: FloatArray,
    noise: float,
    prompt: Prompt,
    chosen: str,
    valid: BoolArray | None,
    open_edges: tuple[bool, bool, bool, bool],
) -> Segmentation:
    """Flood or random walker, cleaned and checked against the noise."""
    shape = (int(values.shape[1]), int(values.shape[2]))
    if chosen == FLOOD:
        limit: BoolArray | None = valid
        flood_prompt = prompt
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            yy = np.arange(shape[0])[:, None] + 0.5
            xx = np.arange(shape[1])[None, :] + 0.5
            in_box = (xx > x0) & (xx < x1) & (yy > y0) & (yy < y1)
            limit = in_box if limit is None else limit & in_box
            if len(prompt.positive) == 0:
                centre = np.array([[(x0 + x1) / 2, (y0 + y1) / 2]])
                flood_prompt = Prompt(centre, prompt.negative, prompt.box)
        mask, soft, details = _flood(values, flood_prompt, open_edges, limit, noise)
        mask = _split(mask, flood_prompt)
        keep_at = _index(flood_prompt.positive, shape)
    else:
        mask, soft, details = _random_walker(raw, prompt)
        keep_at = _index(prompt.positive, shape)
    if valid is not None:
        mask &= valid
    mask = _clean(mask, keep_at)
    if not mask.any():
        raise NothingFound("no region was found around the points")
    score, step = _contrast(values, mask)
    if score < MIN_SCORE or step < MIN_STEP * noise:
        raise NothingFound(
            f"no object with a visible boundary around the points (contrast {score:.2f}, "
            f"step {step:.3g} against noise {noise:.3g})"
        )
    near = ndimage.binary_dilation(mask, iterations=2)
    eps = np.float32(1e-3)
    soft = np.where(mask, np.maximum(soft, 0.5 + eps), np.minimum(soft, 0.5 - eps))
    soft = np.where(near, soft, 0.0).astype(np.float32)
    return Segmentation(mask, soft, score, chosen, _touches(mask, open_edges), details)


def trace_outline(
    soft: FloatArray,
    scale: float = 1.0,
    origin: tuple[float, float] = (0.0, 0.0),
    tolerance: float = 0.5,
) -> BaseGeometry:
    """The 0.5 level of ``soft`` (rows, cols) as a valid Polygon (with holes) or MultiPolygon.

    Vertices are interpolated between pixel centres (sub-pixel), mapped to ``origin + scale *
    (x, y)`` in array coordinates (pixel centres at +0.5), and simplified to ``tolerance``
    array pixels. Empty when there is nothing at the level.
    """
    padded = np.pad(soft.astype(np.float64), 1, constant_values=0.0)
    rings = []
    contours = measure.find_contours(padded, 0.5)  # type: ignore[no-untyped-call]
    for contour in contours:
        if len(contour) < 4:
            continue
        xy = np.column_stack([contour[:, 1] - 0.5, contour[:, 0] - 0.5])
        poly = shapely.Polygon(xy)
        if not poly.is_valid:
            poly = shapely.make_valid(poly)
        if poly.area > 0:
            rings.append(poly)
    # Rings nest alternately (object, hole, island...): even-odd by symmetric difference.
    shape: BaseGeometry = shapely.Polygon()
    for poly in sorted(rings, key=lambda p: -p.area):
        shape = shapely.symmetric_difference(shape, poly)
    shape = shapely.simplify(shape, tolerance, preserve_topology=True)
    if not shape.is_valid:
        shape = shapely.make_valid(shape)
    polys = _polygons(shape)
    if not polys:
        return shapely.Polygon()
    out: BaseGeometry = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    ox, oy = origin
    out = shapely.transform(out, lambda c: c * scale + np.array([ox, oy]))
    return shapely.orient_polygons(out, exterior_cw=False)


def _polygons(geom: BaseGeometry) -> list[shapely.Polygon]:
    if isinstance(geom, shapely.Polygon):
        return [geom] if not geom.is_empty and geom.area > 0 else []
    if isinstance(geom, shapely.MultiPolygon | shapely.GeometryCollection):
        return [p for g in geom.geoms for p in _polygons(g)]
    return []
