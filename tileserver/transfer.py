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
from annot.export.geojson import parse_labels, parse_statuses, select
from annot.frames import ImageFrame, frame_from_metadata
from annot.imports import geojson as geojson_import
from annot.storage import Store, open_store
from tileserver.catalog import scan
from tileserver.formats import ExportFormat, ExportJob, export_format, import_format
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


def _options(fmt: ExportFormat, args: argparse.Namespace) -> dict[str, str]:
    """The format's options from the flags of the same names that were given."""
    found = {}
    for name in fmt.options:
        value = getattr(args, name.replace("-", "_"), None)
        if value is not None:
            found[name] = str(value)
    return found


def run_export(args: argparse.Namespace) -> int:
    fmt = export_format(args.format)
    frame, store, name, source = _open(args)
    options = _options(fmt, args)
    fmt.check(frame, options)
    try:
        labels = parse_labels(args.labels)
        statuses = parse_statuses(args.status)
        total = store.count(args.image)
        with tqdm(total=total, unit="annotation", desc="select", disable=None) as bar:
            found = select(store, args.image, labels, statuses, progress=_advance(bar))
        project = store.get_project(store.image_project(args.image))
    finally:
        store.close()
    with tqdm(unit="step", desc=f"write {fmt.name}", disable=None) as bar:
        job = ExportJob(
            image_id=args.image,
            image_name=name,
            frame=frame,
            source=source,
            project=project,
            annotations=found,
            options=options,
            progress=_advance(bar),
        )
        with args.output.open("wb") as out:
            skipped = fmt.write(job, out) or 0
    print(f"{len(found) - skipped} annotation(s) written to {args.output}", file=sys.stderr)
    if skipped:
        print(
            f"{skipped} annotation(s) left out: format={fmt.name} cannot hold them "
            "(for example tags, or shapes off the acquisition plane)",
            file=sys.stderr,
        )
    return 0


def run_import(args: argparse.Namespace) -> int:
    fmt = import_format(args.format)
    try:
        body = args.path.read_bytes()
    except OSError as exc:
        raise BadRequest(f"cannot read {args.path}: {exc}") from None
    frame, store, name, source = _open(args)
    try:
        found = fmt.read(body, frame, name, source, args.crs)
        project = store.get_project(store.image_project(args.image))
        n = len(found.collection.get("features") or [])
        with tqdm(total=n, unit="feature", desc="check", disable=None) as bar:
            result = geojson_import.plan(
                found.collection, frame, project, found.crs, args.label, progress=_advance(bar)
            )
        for r in result.rejected:
            print(f"rejected feature {r.index} ({r.label}): {r.reason}", file=sys.stderr)
        source_report = {"source": found.summary} if found.summary else {}
        if args.dry_run or not result.ok:
            print(json.dumps(result.to_json(dry_run=args.dry_run) | source_report, indent=1))
            return 0 if result.ok else 1
        created = geojson_import.apply(result, store, args.image, project.name, args.user)
    finally:
        store.close()
    print(json.dumps(result.to_json(created=created) | source_report))
    return 0
