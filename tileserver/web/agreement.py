"""Agreement between annotators: ``GET /api/v1/projects/{project}/agreement``.

Reviewers and admins of the project. The annotations come from the live store (each image of
the project, filtered by status and author in SQL) or from a snapshot (``snapshot=NAME``); the
statistics are computed by ``annot.agreement`` in the executor. Query parameters: ``image``
(one image of the project; default all), ``label`` (a label and its sub-labels), ``snapshot``,
``status`` and ``author`` (commas or repeats), ``iou_threshold`` (default 0.5) and
``point_tolerance`` (in the response's ``units``; default 10 image pixels).
"""

from __future__ import annotations

import math
from typing import Any

from annot.agreement import DEFAULT_IOU_THRESHOLD, Options, agreement
from annot.errors import BadRequest
from annot.frames import ImageFrame
from annot.model import Annotation, Status
from annot.storage import Filter
from annot.storage.base import MAX_PAGE
from annot.taxonomy import DEFAULT_PROJECT
from annot.users import Role
from tileserver.web.annotations import AnnotBaseHandler, enum_values
from tileserver.web.openapi import param


def _number(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {value[:40]!r}") from None
    if not math.isfinite(number):
        raise BadRequest(f"{name} must be a finite number")
    return number


def _listed(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for text in values for v in text.split(",") if v.strip()))


def load_annotations(
    store: Any, project: str, images: list[str], snapshot: str | None, where: Filter
) -> list[Annotation]:
    """The annotations to compare (runs in the executor): every page of each image's query,
    or of the snapshot, kept by ``where``'s statuses and authors."""
    out: list[Annotation] = []
    if snapshot is not None:
        wanted = set(images)
        after = 0
        while True:
            page = store.snapshot_annotations(project, snapshot, after, MAX_PAGE)
            for a in page:
                if (
                    a.image_id in wanted
                    and (not where.statuses or a.content.status in where.statuses)
                    and (not where.authors or a.author in where.authors)
                ):
                    out.append(a)
            if len(page) < MAX_PAGE:
                return out
            after = page[-1].id
    for image_id in images:
        after = 0
        while True:
            page = store.query(image_id, None, after, MAX_PAGE, where)
            out.extend(page)
            if len(page) < MAX_PAGE:
                break
            after = page[-1].id
    return out


def snapshot_images(store: Any, project: str, snapshot: str) -> set[str]:
    images: set[str] = set()
    after = 0
    while True:
        page = store.snapshot_annotations(project, snapshot, after, MAX_PAGE)
        images.update(a.image_id for a in page)
        if len(page) < MAX_PAGE:
            return images
        after = page[-1].id


class AgreementHandler(AnnotBaseHandler):
    """GET the agreement between the annotators of a project's images (or one image)."""

    async def get(self, project: str) -> None:
        taxonomy = await self.call(self.ctx.store.get_project, project)
        self.require(project, Role.reviewer)
        arg = self.get_query_argument
        labels = [v for v in self.get_query_arguments("label") if v]
        if len(labels) > 1:
            raise BadRequest("give one label (its sub-labels are included)")
        label = labels[0] if labels else None
        if label is not None and not any(
            name == label or name.startswith(label + "/") for name in taxonomy.labels
        ):
            raise BadRequest(f"project {project!r} has no label {label[:100]!r}")
        iou = _number(arg("iou_threshold", None), "iou_threshold")
        options = Options(
            label=label,
            authors=_listed(self.get_query_arguments("author")),
            iou_threshold=DEFAULT_IOU_THRESHOLD if iou is None else iou,
            point_tolerance=_number(arg("point_tolerance", None), "point_tolerance"),
        )
        where = Filter(statuses=enum_values(self.get_query_arguments("status"), Status, "status"))
        snapshot = arg("snapshot", None) or None
        image = arg("image", None) or None

        if image is not None:
            self.ctx.catalog.get(image)  # 404 for an unknown image
        if snapshot is not None:
            in_scope = await self.call(snapshot_images, self.ctx.store, project, snapshot)
            images = sorted(i for i in in_scope if i in self.ctx.catalog.images)
            skipped = sorted(i for i in in_scope if i not in self.ctx.catalog.images)
            if image is not None:
                if image not in in_scope:
                    raise BadRequest(f"snapshot {snapshot!r} has no annotation of image {image}")
                images, skipped = [image], []
        else:
            placed = await self.call(self.ctx.store.image_projects)
            if image is not None:
                if placed.get(image, DEFAULT_PROJECT) != project:
                    raise BadRequest(f"image {image} is not in project {project!r}")
                images = [image]
            else:
                images = sorted(
                    i for i in self.ctx.catalog.images if placed.get(i, DEFAULT_PROJECT) == project
                )
            skipped = []
        frames: dict[str, ImageFrame] = {i: self.frame(i) for i in images}
        found = await self.call(load_annotations, self.ctx.store, project, images, snapshot, where)
        result = await self.call(agreement, found, frames, options, len(images) + len(skipped))
        body = result.to_json()
        body["skipped_images"] = sorted(set(body["skipped_images"]) | set(skipped))
        self.write_json(
            {
                "project": project,
                "parameters": {
                    "image": image,
                    "label": label,
                    "snapshot": snapshot,
                    "status": [s.value for s in where.statuses],
                    "author": list(options.authors),
                    "iou_threshold": options.iou_threshold,
                    "point_tolerance": options.point_tolerance,
                },
                **body,
            }
        )


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI path item of the agreement route (for ``tileserver.web.openapi``)."""
    kappa = (
        "{kappa, observed_agreement, chance_agreement, items, reason}: kappa is null with a "
        "reason when undefined (no item, or every rating in one category)"
    )
    return {
        "/api/v1/projects/{project}/agreement": {
            "get": {
                "summary": "Agreement between annotators (reviewers and admins)",
                "description": (
                    "Raters are the annotations' authors; an author rated an image when they "
                    "have any annotation on it (after status and author filters), and pairs "
                    "are compared on the images both rated. presence and tags: cohen_kappa per "
                    "annotator pair and fleiss_kappa over all, items (image, label) with the "
                    "category present/absent, and per_label (items: images); "
                    "tags.classification: items are images, the category the set of tags. "
                    f"Each kappa is {kappa}. shapes: per exact label (and, with label=, its "
                    "whole subtree: sublabels true), geometry (area | point) and annotator "
                    "pair [a, b]: count_a, count_b, matched (one to one: most matches, then "
                    "best IoU / least distance), missed (a's without match), extra (b's "
                    "without match), f1, and for areas iou, dice, hd95 (means over matched "
                    "pairs), hd95_max, area_dice (unions); for points mean_distance. Volumes "
                    "match shapes on the same slice of a plane only. Distances in units: m "
                    "for geographic and metre CRSs, the CRS unit otherwise, mm for volumes, "
                    "px without georeference. Errors: 400 bad parameter or image not in the "
                    "project, 401, 403 not a reviewer, 404 unknown project, image or snapshot."
                ),
                "parameters": [
                    param("project", "path", {"type": "string"}, "project name"),
                    param(
                        "image",
                        "query",
                        {"type": "string"},
                        "one image of the project (default all)",
                    ),
                    param("label", "query", {"type": "string"}, "one label, with its sub-labels"),
                    param(
                        "snapshot", "query", {"type": "string"}, "compare a snapshot's annotations"
                    ),
                    param(
                        "status",
                        "query",
                        {"type": "string"},
                        "keep these statuses (commas/repeats)",
                    ),
                    param("author", "query", {"type": "string"}, "compare only these authors"),
                    param(
                        "iou_threshold",
                        "query",
                        {"type": "number", "default": DEFAULT_IOU_THRESHOLD},
                        "IoU a match of areal shapes needs, in (0, 1]",
                    ),
                    param(
                        "point_tolerance",
                        "query",
                        {"type": "number"},
                        "how far matched points may be, in the response's units "
                        "(default 10 image pixels)",
                    ),
                ],
                "responses": {"200": {"description": "the agreement report (JSON)"}},
            }
        }
    }
