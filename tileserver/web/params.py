"""Parsing and checking query parameters; every problem is a BadParameter (400)."""

from __future__ import annotations

import math

from tileserver.errors import BadParameter
from tileserver.readers.base import TileOptions

TILE_PARAMS = {"bands", "rescale", "slice", "plane", "window", "level", "preset"}
PLANES = {"axial", "coronal", "sagittal"}
MAX_PARAM_LENGTH = 200


def _one(args: dict[str, list[bytes]], name: str) -> str | None:
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadParameter(f"give {name} once")
    return _text(name, values[0])


def _text(name: str, raw: bytes) -> str:
    if len(raw) > MAX_PARAM_LENGTH:
        raise BadParameter(f"{name} is too long")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadParameter(f"{name} is not valid UTF-8") from None


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadParameter(f"{name} must be a number, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise BadParameter(f"{name} must be finite")
    return value


def _int(name: str, text: str, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(f"{name} must be an integer, got {text[:40]!r}") from None
    if value < minimum:
        raise BadParameter(f"{name} must be at least {minimum}")
    return value


def parse_tile_options(args: dict[str, list[bytes]], supported: frozenset[str]) -> TileOptions:
    """Parse tile query parameters; unknown ones, and ones that don't apply, answer 400.

    Parameters starting with ``_`` (cache busters) are ignored.
    """
    unknown = sorted(k for k in args if k not in TILE_PARAMS and not k.startswith("_"))
    if unknown:
        raise BadParameter(
            f"unknown parameter(s) {', '.join(unknown)}; tile parameters are "
            f"{', '.join(sorted(TILE_PARAMS))}"
        )
    not_applicable = sorted(k for k in args if k in TILE_PARAMS and k not in supported)
    if not_applicable:
        raise BadParameter(
            f"{', '.join(not_applicable)} does not apply to this image "
            f"(it takes: {', '.join(sorted(supported)) or 'no parameters'})"
        )
    bands = None
    if (text := _one(args, "bands")) is not None:
        bands = tuple(_int("bands", b, minimum=1) for b in text.split(","))
        if len(bands) not in (1, 3):
            raise BadParameter("bands takes 1 or 3 band numbers, such as bands=4,3,2")
    rescale = None
    if args.get("rescale"):
        ranges = []
        for raw in args["rescale"]:
            parts = _text("rescale", raw).split(",")
            if len(parts) != 2:
                raise BadParameter("rescale takes min,max (repeat it for each band)")
            lo, hi = (_number("rescale", p) for p in parts)
            if hi <= lo:
                raise BadParameter(f"rescale max must exceed min, got {lo},{hi}")
            ranges.append((lo, hi))
        rescale = tuple(ranges)
    slice_ = None
    if (text := _one(args, "slice")) is not None:
        slice_ = _int("slice", text)
    plane = _one(args, "plane")
    if plane is not None and plane not in PLANES:
        raise BadParameter(f"plane must be one of {', '.join(sorted(PLANES))}")
    window = level = None
    if (text := _one(args, "window")) is not None:
        window = _number("window", text)
        if window < 1:
            raise BadParameter("window (width) must be at least 1")
    if (text := _one(args, "level")) is not None:
        level = _number("level", text)
    preset = _one(args, "preset")
    return TileOptions(
        bands=bands,
        rescale=rescale,
        slice=slice_,
        plane=plane,
        window=window,
        level=level,
        preset=preset,
    )


def parse_tile_coords(z: str, x: str, y: str) -> tuple[int, int, int]:
    return _int("z", z), _int("x", x), _int("y", y)
