"""``tessera export`` and ``tessera import``: the HTTP export and import, from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from annot.errors import BadRequest
from annot.export.coco import coco_to_features, export_coco
from annot.export.dicom_seg import dicom_bytes, export_dicom_seg, source_paths
from annot.export.geojson import export_geojson, parse_labels, parse_statuses, select
from annot.export.masks import export_masks
from annot.features import dumps
from annot.frames import ImageFrame, VolumeFrame, frame_from_metadata
from annot.imports import geojson as geojson_import
from annot.storage import Store, open_store
from annot.taxonomy import DEFAULT_PROJECT
from tileserver.catalog import scan
from tileserver.server import default_db_url, state_dir


def _open(args: argparse.Namespace) -> tuple[ImageFrame, Store, str, Any]:
    roots: list[Path] = [p.resolve() for p in args.data]
    catalog = scan(roots)
    source = catalog.get(args.image)
    info = source.info
    frame = frame_from_metadata(info.width, info.height, info.extra)
    url = args.db or default_db_url(state_dir(roots[0]))
    return frame, open_store(url), info.name, source


def _advance(bar: tqdm[Any]) -> Callable[[int], None]:
    """A progress callback that moves ``bar`` on by n steps."""

    def advance(n: int) -> None:
        bar.update(n)

    return advance


def run_export(args: argparse.Namespace) -> int:
    frame, store, name, source = _open(args)
    try:
        labels = parse_labels(args.labels)
        statuses = parse_statuses(args.status)
        total = store.count(args.image)
        with tqdm(total=total, unit="annotation", desc="export", disable=None) as bar:
            found = select(store, args.image, labels, statuses, progress=_advance(bar))
        if args.format == "masks":
            body = export_masks(found, frame, store.get_project(DEFAULT_PROJECT), args.image)
        elif args.format == "dicom-seg":
            if not isinstance(frame, VolumeFrame):
                raise BadRequest("--format dicom-seg needs a DICOM volume")
            project = store.get_project(DEFAULT_PROJECT)
            seg = export_dicom_seg(found, frame, source_paths(source), project)
            body = dicom_bytes(seg.dataset)
        elif args.format == "coco":
            project = store.get_project(DEFAULT_PROJECT)
            doc = export_coco(found, frame, project, args.image, name, args.segmentation)
            body = dumps(doc)
        else:
            body = export_geojson(found, frame, args.crs)
    finally:
        store.close()
    args.output.write_bytes(body)
    print(f"{len(found)} annotation(s) written to {args.output}", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BadRequest(f"cannot read {args.path}: {exc}") from None
    frame, store, name, _ = _open(args)
    crs = args.crs
    if args.format == "coco":
        data, crs = coco_to_features(data, name), "pixel"
    try:
        project = store.get_project(DEFAULT_PROJECT)
        n = len(data.get("features") or []) if isinstance(data, dict) else 0
        with tqdm(total=n, unit="feature", desc="check", disable=None) as bar:
            result = geojson_import.plan(
                data, frame, project, crs, args.label, progress=_advance(bar)
            )
        for r in result.rejected:
            print(f"rejected feature {r.index} ({r.label}): {r.reason}", file=sys.stderr)
        if args.dry_run or not result.ok:
            print(json.dumps(result.to_json(dry_run=args.dry_run), indent=1))
            return 0 if result.ok else 1
        created = geojson_import.apply(result, store, args.image, DEFAULT_PROJECT, args.user)
    finally:
        store.close()
    print(json.dumps(result.to_json(created=created)))
    return 0
