"""Export and import of an image's annotations as files (formats: ``tileserver.formats``).

- ``GET /api/v1/images/{id}/export?format=NAME[&labels=a,b][&status=draft,accepted][&OPTION=...]``
  answers the file as an attachment, streamed in chunks from a spooled temporary file.
- ``POST /api/v1/images/{id}/import?format=NAME[&dry_run=1][&crs=EPSG:n][&label=NAME]`` takes
  the file as the body; answers a report (201 when stored, 200 for a dry run, 422 listing every
  rejected feature when any was rejected, then nothing is stored).
"""

from __future__ import annotations

import tempfile
from typing import Any

import tornado.routing
import tornado.web

from annot.export.geojson import parse_labels, parse_statuses, select
from annot.imports import geojson as geojson_import
from annot.users import Role
from tileserver.formats import ExportJob, export_format, import_format
from tileserver.web.annotations import AnnotBaseHandler

MAX_IMPORT_BYTES = 64 * 1024 * 1024
SPOOL_BYTES = 16 * 1024 * 1024  # exports larger than this go to a temporary file
CHUNK_BYTES = 1024 * 1024
EXPORT_ARGS = ("format", "labels", "status")  # the rest are the format's own options


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


class ExportHandler(AnnotBaseHandler):
    async def get(self, image_id: str) -> None:
        project_name = self.project_of_image(image_id)
        self.require(project_name, Role.annotator)
        fmt = export_format(self.get_query_argument("format", None))
        frame = self.frame(image_id)
        options = {
            k: self.get_query_argument(k)
            for k in self.request.query_arguments
            if k not in EXPORT_ARGS and not k.startswith("_")
        }
        fmt.check(frame, options)
        labels = parse_labels(self.get_query_argument("labels", None))
        statuses = parse_statuses(self.get_query_argument("status", None))
        source = self.ctx.catalog.get(image_id)
        store = self.ctx.store
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as out:

            def run() -> int | None:
                job = ExportJob(
                    image_id=image_id,
                    image_name=source.info.name,
                    frame=frame,
                    source=source,
                    project=store.get_project(project_name),
                    annotations=select(store, image_id, labels, statuses),
                    options=options,
                )
                return fmt.write(job, out)  # type: ignore[arg-type]

            skipped = await self.call(run)
            if skipped:
                # annotations the format cannot hold (tags, points, other planes): say how many
                self.set_header("X-Tessera-Skipped", str(skipped))
            media_type, suffix = fmt.media(options)
            self.set_header("Content-Type", media_type)
            self.set_header("Content-Disposition", f'attachment; filename="{image_id}{suffix}"')
            self.set_header("Content-Length", str(out.tell()))
            out.seek(0)
            while chunk := out.read(CHUNK_BYTES):
                self.write(chunk)
                await self.flush()
        self.finish()


class ImportHandler(AnnotBaseHandler):
    async def post(self, image_id: str) -> None:
        project_name = self.project_of_image(image_id)
        role = self.require(project_name, Role.annotator)
        fmt = import_format(self.get_query_argument("format", None))
        frame = self.frame(image_id)
        dry_run = _flag(self.get_query_argument("dry_run", None))
        default_label = self.get_query_argument("label", None)
        body = self.body_bytes(limit=MAX_IMPORT_BYTES)
        source = self.ctx.catalog.get(image_id)
        found = await self.call(
            fmt.read, body, frame, source.info.name, source, self.get_query_argument("crs", None)
        )
        project = await self.call(self.ctx.store.get_project, project_name)
        result = await self.call(
            geojson_import.plan, found.collection, frame, project, found.crs, default_label
        )
        for c in result.contents:
            self.check_edit(role, None, c)
        source_report = {"source": found.summary} if found.summary else {}
        if not result.ok:
            report: dict[str, Any] = result.to_json(dry_run=dry_run) | source_report
            self.write_json(report, status=200 if dry_run else 422)
            return
        if dry_run:
            self.write_json(result.to_json(dry_run=True) | source_report)
            return
        created = await self.call(
            geojson_import.apply,
            result,
            self.ctx.store,
            image_id,
            project_name,
            self.current_user.name,
        )
        self.write_json(result.to_json(created=created) | source_report, status=201)


def export_routes(deps: dict[str, Any]) -> list[tornado.routing.URLSpec]:
    image = r"/api/v1/images/([^/]+)"
    return [
        tornado.web.url(image + r"/export", ExportHandler, deps, name="export"),
        tornado.web.url(image + r"/import", ImportHandler, deps, name="import"),
    ]
