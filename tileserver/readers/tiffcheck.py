"""Cheap structural checks of a TIFF before GDAL sees it.

A file named .tif must really be a TIFF (not a VRT or another format that can point at other
files), and every strip or tile it declares must lie inside the file (a truncated download is
caught at start, not at the first tile request).
"""

from __future__ import annotations

from pathlib import Path

import tifffile

from tileserver.errors import UnsupportedFile

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in TIFF_MAGICS
    except OSError:
        return False


def check_tiff_file(path: Path) -> None:
    """Raise UnsupportedFile if ``path`` is not a TIFF or its pixel data runs past the end."""
    if not is_tiff(path):
        raise UnsupportedFile(f"{path.name}: not a TIFF file (bad magic bytes)")
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                offsets = page.dataoffsets  # type: ignore[union-attr]
                counts = page.databytecounts  # type: ignore[union-attr]
                ends = [o + c for o, c in zip(offsets, counts, strict=False) if c]
                if ends and max(ends) > size:
                    raise UnsupportedFile(
                        f"{path.name}: truncated ({size} bytes, pixel data declared up to "
                        f"{max(ends)}); re-copy the file"
                    )
    except UnsupportedFile:
        raise
    except Exception as exc:  # tifffile raises many types on malformed input
        raise UnsupportedFile(f"{path.name}: malformed TIFF ({exc})") from exc
