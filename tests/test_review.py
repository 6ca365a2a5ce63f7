"""The review route: reviewers accept or reject with a comment; annotators cannot; If-Match.

Runs on both stores through the ``api`` fixture of tests/test_annot_api.py (users admin, rev,
ann and ann2)."""

# ruff: noqa: F811
# (fixtures imported by name; test arguments shadow them.)
from __future__ import annotations

from typing import Any

from tests.pg import pg_database  # noqa: F401  (a fixture)
from tests.test_annot_api import RING, api, feature, pg_server, same_ring  # noqa: F401


def submitted(c: dict[str, Any], image: str, author: str = "ann") -> int:
    """A polygon by ``author``, submitted by them (version 2)."""
    r = c[author]("POST", f"/api/v1/images/{image}/annotations?crs=pixel", feature())
    assert r.status_code == 201, r.text
    aid = int(r.json()["id"])
    body = feature(status="submitted", attributes={"note": "kept"})
    r = c[author]("PUT", f"/api/v1/annotations/{aid}?crs=pixel", body, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["properties"]["status"] == "submitted"
    return aid


def test_a_reviewer_accepts_and_the_decision_is_recorded(api) -> None:
    srv, c = api
    image = srv.image_id("cog.tif")
    aid = submitted(c, image)
    path = f"/api/v1/annotations/{aid}/review?crs=pixel"
    r = c["rev"]("POST", path, {"decision": "accept", "comment": "  clean outline "}, headers={"If-Match": '"2"'})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"3"'
    props = r.json()["properties"]
    assert props["status"] == "accepted" and props["version"] == 3
    review = props["review"]
    assert (review["decision"], review["comment"], review["reviewer"]) == ("accept", "clean outline", "rev")
    assert props["created_at"] < review["at"] <= props["updated_at"]
    # the shape, the label and the author's own attributes are untouched
    assert same_ring(r.json()["geometry"]["coordinates"][0], RING, 1e-6)
    assert props["label"] == "building" and props["author"] == "ann"
    assert props["attributes"]["note"] == "kept"
    # a plain GET says the same
    got = c["ann"]("GET", f"/api/v1/annotations/{aid}?crs=pixel").json()["properties"]
    assert got["status"] == "accepted" and got["review"] == review
    # the history: the review is an update by the reviewer, after the annotator's submit
    changes = c["ann"]("GET", f"/api/v1/annotations/{aid}/history").json()["changes"]
    assert [(ch["action"], ch["user"], ch["version"]) for ch in changes] == [
        ("create", "ann", 1),
        ("update", "ann", 2),
        ("update", "rev", 3),
    ]
    assert changes[-1]["before"]["properties"]["status"] == "submitted"


def test_reject_needs_a_comment_and_every_decision_is_kept(api) -> None:
    srv, c = api
    image = srv.image_id("cog.tif")
    aid = submitted(c, image)
    path = f"/api/v1/annotations/{aid}/review?crs=pixel"
    no_comment = c["rev"]("POST", path, {"decision": "reject"})
    assert no_comment.status_code == 400 and "comment" in no_comment.json()["message"]
    r = c["admin"]("POST", path, {"decision": "reject", "comment": "misses the north wing"})
    assert r.status_code == 200, r.text
    assert r.json()["properties"]["status"] == "rejected"
    assert r.json()["properties"]["review"]["reviewer"] == "admin"
    # the annotator fixes it and submits again; a reviewer accepts
    fixed = feature(status="submitted")
    r = c["ann"]("PUT", f"/api/v1/annotations/{aid}?crs=pixel", fixed, headers={"If-Match": '"3"'})
    assert r.status_code == 200, r.text
    r = c["rev"]("POST", path, {"decision": "accept"}, headers={"If-Match": "4"})
    assert r.status_code == 200, r.text
    props = r.json()["properties"]
    assert props["review"]["comment"] == "" and props["status"] == "accepted"
    # the annotator's resubmission sent no attributes, so only the latest decision is kept
    assert [x["decision"] for x in props["attributes"]["reviews"]] == ["accept"]


def test_decisions_accumulate_while_attributes_are_kept(api) -> None:
    srv, c = api
    image = srv.image_id("cog.tif")
    aid = submitted(c, image)
    path = f"/api/v1/annotations/{aid}/review"
    assert c["rev"]("POST", path, {"decision": "reject", "comment": "too coarse"}).status_code == 200
    r = c["rev"]("POST", path, {"decision": "accept", "comment": "fine after all"})
    assert r.status_code == 200
    reviews = r.json()["properties"]["attributes"]["reviews"]
    assert [(x["decision"], x["comment"], x["version"]) for x in reviews] == [
        ("reject", "too coarse", 3),
        ("accept", "fine after all", 4),
    ]


def test_annotators_may_not_review_and_bad_requests_are_4xx(api) -> None:
    srv, c = api
    image = srv.image_id("cog.tif")
    aid = submitted(c, image)
    path = f"/api/v1/annotations/{aid}/review"
    for who in ("ann", "ann2"):
        r = c[who]("POST", path, {"decision": "accept", "comment": "mine is fine"})
        assert r.status_code == 403, (who, r.text)
        assert r.json()["error"] == "forbidden"
    assert c["anon"]("POST", path, {"decision": "accept"}).status_code == 401
    assert c["rev"]("POST", "/api/v1/annotations/999999/review", {"decision": "accept"}).status_code == 404
    for body in ({"decision": "maybe"}, {"comment": "x"}, ["accept"], {"decision": "accept", "comment": 3}):
        r = c["rev"]("POST", path, body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"] == "bad_request"
    r = c["rev"]("POST", path, data=b"{not json")
    assert r.status_code == 400
    r = c["rev"]("POST", path, {"decision": "accept", "comment": "x" * 4001})
    assert r.status_code == 400
    bad_etag = c["rev"]("POST", path, {"decision": "accept"}, headers={"If-Match": "v2"})
    assert bad_etag.status_code == 400
    # nothing above changed it
    got = c["ann"]("GET", f"/api/v1/annotations/{aid}").json()["properties"]
    assert got["status"] == "submitted" and got["version"] == 2 and "review" not in got


def test_a_stale_if_match_is_412_and_changes_nothing(api) -> None:
    srv, c = api
    image = srv.image_id("cog.tif")
    aid = submitted(c, image)
    # the annotator moves it (version 3) while the reviewer still looks at version 2
    moved = feature([[x + 5, y] for x, y in RING], status="submitted")
    r = c["ann"]("PUT", f"/api/v1/annotations/{aid}?crs=pixel", moved, headers={"If-Match": '"2"'})
    assert r.status_code == 200
    path = f"/api/v1/annotations/{aid}/review?crs=pixel"
    stale = c["rev"]("POST", path, {"decision": "accept"}, headers={"If-Match": '"2"'})
    assert stale.status_code == 412 and stale.json()["error"] == "precondition_failed"
    got = c["rev"]("GET", f"/api/v1/annotations/{aid}?crs=pixel").json()
    assert got["properties"]["status"] == "submitted" and got["properties"]["version"] == 3
    fresh = c["rev"]("POST", path, {"decision": "accept"}, headers={"If-Match": '"3"'})
    assert fresh.status_code == 200
    assert same_ring(fresh.json()["geometry"]["coordinates"][0], [[x + 5, y] for x, y in RING], 1e-6)


def test_openapi_documents_the_review_route() -> None:
    from tileserver.web.openapi import openapi_document

    item = openapi_document()["paths"]["/api/v1/annotations/{aid}/review"]
    assert "post" in item and "reviewer" in item["post"]["summary"]
