"""Review: a reviewer accepts or rejects an annotation, with a comment.

``POST /api/v1/annotations/{aid}/review`` with ``{"decision": "accept" | "reject", "comment":
"..."}`` sets the status (``accepted`` / ``rejected``) through the store's ordinary update, so
the change is versioned (``If-Match`` is honoured, a lost update answers 412) and it appears in
the annotation's history as an update by the reviewer. The decision itself -- decision, comment,
reviewer and time -- is kept in the annotation's attributes as ``review`` (the latest) and
appended to ``reviews`` (every decision, oldest first), so no schema change is needed; the
feature's ``properties.review`` shows the latest one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tornado.routing
import tornado.web

from annot.errors import BadRequest
from annot.model import Annotation, Content, Status
from annot.storage.base import now
from annot.users import Role
from tileserver.web.annotations import AnnotBaseHandler, parse_if_match, row_id

DECISIONS = {"accept": Status.accepted, "reject": Status.rejected}
MAX_COMMENT = 4000
MAX_KEPT_REVIEWS = 50  # the oldest decisions drop out of ``reviews`` past this many


def parse_decision(data: Any) -> tuple[Status, str]:
    """The status a review body asks for and its comment; a rejection must say why."""
    if not isinstance(data, dict):
        raise BadRequest('the body is {"decision": "accept" | "reject", "comment": "..."}')
    decision = data.get("decision")
    if decision not in DECISIONS:
        raise BadRequest('decision must be "accept" or "reject"')
    comment = data.get("comment", "")
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise BadRequest("comment must be a string")
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise BadRequest(f"comment is {len(comment)} characters; at most {MAX_COMMENT}")
    if decision == "reject" and not comment:
        raise BadRequest("a rejection needs a comment saying what to fix")
    return DECISIONS[decision], comment


def reviewed_content(current: Annotation, status: Status, comment: str, reviewer: str) -> Content:
    """The annotation's content with the new status and the decision recorded."""
    record = {
        "decision": "accept" if status is Status.accepted else "reject",
        "status": status.value,
        "comment": comment,
        "reviewer": reviewer,
        "at": now(),
        "version": current.version + 1,
    }
    attributes = dict(current.content.attributes)
    earlier = attributes.get("reviews")
    reviews = list(earlier) if isinstance(earlier, list) else []
    reviews.append(record)
    attributes["review"] = record
    attributes["reviews"] = reviews[-MAX_KEPT_REVIEWS:]
    return dataclasses.replace(current.content, status=status, attributes=attributes)


class ReviewHandler(AnnotBaseHandler):
    """POST a decision on one annotation (reviewers and admins of its project)."""

    async def post(self, aid: str) -> None:
        current = await self.call(self.ctx.store.get, row_id(aid, "annotation"))
        self.require(current.project, Role.reviewer)
        expected = parse_if_match(self.request.headers.get("If-Match"))
        status, comment = parse_decision(self.body_json(1 << 20))
        frame, crs = self.frame_and_crs(current.image_id)
        content = reviewed_content(current, status, comment, self.current_user.name)
        updated = await self.call(
            self.ctx.store.update, current.id, content, expected, self.current_user.name
        )
        self.write_feature(updated, frame, crs)


def review_routes(deps: dict[str, Any]) -> list[tornado.routing.URLSpec]:
    return [
        tornado.web.url(r"/api/v1/annotations/(\d+)/review", ReviewHandler, deps, name="review"),
    ]


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI path item of the review route (for ``tileserver.web.openapi``)."""
    return {
        "/api/v1/annotations/{aid}/review": {
            "post": {
                "summary": "Accept or reject an annotation (reviewers and admins)",
                "description": (
                    "Sets the status to accepted or rejected and records the decision, comment, "
                    "reviewer and time in properties.review (the latest), attributes.reviews "
                    "(all) and the history. A rejection needs a comment. Errors: 400 bad body, "
                    "401, 403 not a reviewer, 404, 412 If-Match (someone changed it first)."
                ),
                "parameters": [
                    {
                        "name": "aid",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                        "description": "annotation id",
                    },
                    {
                        "name": "crs",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "default": "world"},
                        "description": "world | pixel | EPSG:n (of the Feature answered)",
                    },
                    {
                        "name": "If-Match",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": 'the ETag ("3") or the version',
                    },
                ],
                "requestBody": {
                    "required": True,
                    "description": '{"decision": "accept" | "reject", "comment": "..."}',
                },
                "responses": {"200": {"description": "the reviewed Feature (ETag = version)"}},
            }
        }
    }
