"""Export and import of an image's annotations as files (GeoJSON; more formats to come).

- ``GET /api/v1/images/{id}/export?format=geojson[&crs=world|image|EPSG:n|pixel][&labels=a,b]
  [&status=draft,accepted]`` answers the file as an attachment.
- ``POST /api/v1/images/{id}/import?format=geojson[&dry_run=1][&crs=EPSG:n][&label=NAME]`` takes
  a FeatureCollection; answers a report (201 when stored, 200 for a dry run, 422 listing every
  rejected feature when any was rejected, then nothing is stored).
"""

from __future__ import annotations

from typing import Any

import tornado.routing
import tornado.web

from annot.errors import BadRequest
from annot.export.coco import coco_to_features, export_coco
from annot.export.dicom_seg import dicom_bytes, export_dicom_seg, source_paths
from annot.export.geojson import export_geojson, parse_labels, parse_statuses, select
from annot.export.masks import export_masks
from annot.features import dumps
from annot.frames import VolumeFrame
from annot.imports import geojson as geojson_import
from annot.users import Role
from tileserver.web.annotations import AnnotBaseHandler

EXPORT_FORMATS = ("geojson", "coco", "dicom-seg", "masks")
IMPORT_FORMATS = ("geojson", "coco")
MAX_IMPORT_BYTES = 64 * 1024 * 1024


def _format(value: str | None, allowed: tuple[str, ...]) -> str:
    fmt = (value or "").lower()
    if fmt not in allowed:
        raise BadRequest(f"format must be one of {', '.join(allowed)}")
    return fmt


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


class ExportHandler(AnnotBaseHandler):
    async def get(self, image_id: str) -> None:
        project_name = self.project_of_image(image_id)
        self.require(project_name, Role.annotator)
        fmt = _format(self.get_query_argument("format", None), EXPORT_FORMATS)
        frame = self.frame(image_id)
        crs = self.get_query_argument("crs", None)
        labels = parse_labels(self.get_query_argument("labels", None))
        statuses = parse_statuses(self.get_query_argument("status", None))
        segmentation = self.get_query_argument("segmentation", "polygon")
        source = self.ctx.catalog.get(image_id)
        file_name = source.info.name
        store = self.ctx.store
        if fmt == "dicom-seg" and not isinstance(frame, VolumeFrame):
            raise BadRequest("format=dicom-seg needs a DICOM volume")

        def run() -> bytes:
            found = select(store, image_id, labels, statuses)
            if fmt == "coco":
                project = store.get_project(project_name)
                doc = export_coco(found, frame, project, image_id, file_name, segmentation)
                return dumps(doc)
            if fmt == "masks":
                project = store.get_project(project_name)
                return export_masks(found, frame, project, image_id)
            if fmt == "dicom-seg":
                assert isinstance(frame, VolumeFrame)
                project = store.get_project(project_name)
                seg = export_dicom_seg(found, frame, source_paths(source), project)
                return dicom_bytes(seg.dataset)
            return export_geojson(found, frame, crs)

        body = await self.call(run)
        if fmt == "coco":
            self.set_header("Content-Type", "application/json; charset=utf-8")
            name = f"{image_id}.coco.json"
        elif fmt == "masks":
            self.set_header("Content-Type", "application/zip")
            name = f"{image_id}.masks.zip"
        elif fmt == "dicom-seg":
            self.set_header("Content-Type", "application/dicom")
            name = f"{image_id}.seg.dcm"
        else:
            self.set_header("Content-Type", "application/geo+json; charset=utf-8")
            name = f"{image_id}.geojson"
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(body)


class ImportHandler(AnnotBaseHandler):
    async def post(self, image_id: str) -> None:
        project_name = self.project_of_image(image_id)
        role = self.require(project_name, Role.annotator)
        fmt = _format(self.get_query_argument("format", None), IMPORT_FORMATS)
        frame = self.frame(image_id)
        dry_run = _flag(self.get_query_argument("dry_run", None))
        crs = self.get_query_argument("crs", None)
        default_label = self.get_query_argument("label", None)
        data = self.body_json(limit=MAX_IMPORT_BYTES)
        project = await self.call(self.ctx.store.get_project, project_name)
        if fmt == "coco":
            data = coco_to_features(data, self.ctx.catalog.get(image_id).info.name)
            crs = "pixel"
        result = await self.call(geojson_import.plan, data, frame, project, crs, default_label)
        for c in result.contents:
            self.check_edit(role, None, c)
        if not result.ok:
            report: dict[str, Any] = result.to_json(dry_run=dry_run)
            self.write_json(report, status=200 if dry_run else 422)
            return
        if dry_run:
            self.write_json(result.to_json(dry_run=True))
            return
        created = await self.call(
            geojson_import.apply,
            result,
            self.ctx.store,
            image_id,
            project_name,
            self.current_user.name,
        )
        self.write_json(result.to_json(created=created), status=201)


def export_routes(deps: dict[str, Any]) -> list[tornado.routing.URLSpec]:
    image = r"/api/v1/images/([^/]+)"
    return [
        tornado.web.url(image + r"/export", ExportHandler, deps, name="export"),
        tornado.web.url(image + r"/import", ImportHandler, deps, name="import"),
    ]
