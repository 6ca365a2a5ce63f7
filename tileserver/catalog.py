"""The catalog: every image found below the registered data folders, by stable id.

Only files inside a data folder are ever opened: the scan does not follow symbolic links out of
the folder, hidden folders (such as ``.tessera/``) are skipped, and requests name images by id,
never by path. A file that cannot be opened is logged with its reason and skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from tileserver.errors import ImageNotFound, TileServerError, UnsupportedFile
from tileserver.readers.base import ImageSource
from tileserver.readers.dicom_index import is_dicom_candidate
from tileserver.readers.tiff import open_tiff
from tileserver.readers.tiffcheck import is_tiff
from tileserver.readers.zarr_source import (
    ZARR_IMAGE,
    NGFFSource,
    zarr_folder_kind,
    zarr_metadata_files,
)

log = logging.getLogger(__name__)

TIFF_SUFFIXES = {".tif", ".tiff", ".gtiff"}
# Formats that GDAL could open but that can reference other files: never served.
REFUSED_SUFFIXES = {".vrt", ".ovr", ".aux", ".xml", ".msk"}

SourceFactory = Callable[[str, Path, str], ImageSource]


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class Catalog:
    roots: list[Path]
    images: dict[str, ImageSource] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)

    def get(self, image_id: str) -> ImageSource:
        try:
            return self.images[image_id]
        except KeyError:
            raise ImageNotFound(f"no image with id {image_id!r}") from None

    def close(self) -> None:
        for source in self.images.values():
            source.close()


def slug(relpath: str) -> str:
    stem = relpath.rsplit(".", 1)[0] if "." in Path(relpath).name else relpath
    s = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    return s[:100] or "image"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def iter_candidate_files(root: Path) -> Iterator[Path]:
    """Regular files below ``root`` (sorted, hidden entries skipped), never leaving ``root``.

    An OME-NGFF zarr folder (``.zattrs``/``zarr.json`` with ``multiscales``) is one image: it is
    yielded as a folder and not descended into; nor is any other zarr array or group.
    """
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        folder = Path(dirpath)
        kind = zarr_folder_kind(folder)
        if kind is not None:
            dirnames[:] = []
            if kind == ZARR_IMAGE and _inside(folder, root):
                yield folder
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_file() and _inside(path, root):
                yield path


def factory_for(path: Path) -> SourceFactory | None:
    """Pick a source by suffix and magic bytes; None means 'not an image format we serve'."""
    if path.is_dir():
        return NGFFSource if zarr_folder_kind(path) == ZARR_IMAGE else None
    suffix = path.suffix.lower()
    if suffix in REFUSED_SUFFIXES:
        return None
    if suffix in TIFF_SUFFIXES or is_tiff(path):
        return open_tiff
    return None


def _version_stat(path: Path) -> os.stat_result:
    """What an image's version comes from: the file, or a zarr folder's metadata file."""
    if path.is_dir():
        metas = [p.stat() for p in zarr_metadata_files(path)]
        if metas:
            return max(metas, key=lambda st: st.st_mtime_ns)
    return path.stat()


def scan(roots: list[Path], progress: bool = False) -> Catalog:
    """Register every servable image below ``roots``."""
    resolved = [Path(r).resolve() for r in roots]
    for root in resolved:
        if not root.is_dir():
            raise TileServerError(f"data folder {root} does not exist or is not a folder")
    catalog = Catalog(resolved)
    files = [(root, p) for root in resolved for p in iter_candidate_files(root)]
    dicom_files: list[tuple[Path, str]] = []
    for root, path in tqdm(files, desc="scanning", unit="file", disable=not progress):
        rel = path.relative_to(root).as_posix() if path != root else root.name
        # Before the TIFF check: a DICOM preamble may look like a TIFF header.
        if (
            not path.is_dir()
            and path.suffix.lower() not in TIFF_SUFFIXES
            and is_dicom_candidate(path)
        ):
            dicom_files.append((path, rel if len(resolved) == 1 else f"{root.name}/{rel}"))
            continue  # DICOM files are grouped into series after the walk
        factory = factory_for(path)
        if factory is None:
            continue
        image_id = slug(rel if len(resolved) == 1 else f"{root.name}/{rel}")
        if image_id in catalog.images:
            image_id = f"{image_id}-{hashlib.sha1(str(path).encode()).hexdigest()[:6]}"
        try:
            source = factory(image_id, path, rel)
            st = _version_stat(path)
            source.info.version = f"{st.st_mtime_ns:x}-{st.st_size:x}"
            catalog.images[image_id] = source
        except UnsupportedFile as exc:
            catalog.skipped.append(SkippedFile(rel, str(exc)))
            log.warning("skipped %s: %s", rel, exc)
        except Exception as exc:  # a broken file must never stop the server starting
            catalog.skipped.append(SkippedFile(rel, f"cannot be read: {exc}"))
            log.warning("skipped %s: cannot be read: %s", rel, exc)
    if dicom_files:
        _add_dicom(catalog, dicom_files, progress)
    return catalog


def _add_dicom(catalog: Catalog, files: list[tuple[Path, str]], progress: bool) -> None:
    """Group DICOM files into images (series, multi-frame objects, single images)."""
    from tileserver.readers.dicom import scan_dicom
    from tileserver.server import state_dir  # late: the server module imports this one

    try:
        state: Path | None = state_dir(catalog.roots[0])
    except OSError as exc:
        log.warning("no state folder (%s): DICOM headers are not indexed", exc)
        state = None

    def make_id(name: str) -> str:
        image_id, n = slug(name), 0
        while image_id in catalog.images:
            n += 1
            image_id = f"{slug(name)}-{hashlib.sha1(f'{name}{n}'.encode()).hexdigest()[:6]}"
        return image_id

    sources, skipped = scan_dicom(files, state, make_id, progress)
    for source in sources:
        catalog.images[source.info.id] = source
    catalog.skipped.extend(SkippedFile(name, reason) for name, reason in skipped)
