"""Live collaboration: ``GET /api/v1/images/{id}/live`` is a WebSocket that pushes the image's
annotation changes (created, updated, deleted) as they are stored, with who made them.

The server may run several processes (``--workers N``) and several servers may share one
PostGIS database, so in-process events would miss most writes. Each process instead polls the
store's change log (``Store.changes_after``: one indexed query per watched image every
``POLL_SECONDS``), shared by all of that process's sockets watching the image. Polling rather
than PostgreSQL LISTEN/NOTIFY: it works the same on SQLite (the default store, shared by
``--workers`` processes) and on PostGIS, needs no extra connection per process nor triggers in
the schema, and a poll is what a NOTIFY receiver would have to run anyway to read the change.
Both stores keep an image's change ids in commit order, so "id > last seen" misses nothing.

Messages (JSON text): first ``{"type": "hello", "user": NAME, "cursor": N, "process": PID}``
(the server process the socket landed on), then
``{"type": "changes", "cursor": N, "events": [...]}`` where each event is ``{"action":
"created" | "updated" | "deleted", "id", "version", "user" (who made the change), "at",
"change" (its id), "feature" (the stored Feature in pixel coordinates, null when deleted)}``;
several changes of one annotation within a poll come as one event with its latest state. More
than ``MAX_EVENTS`` changes in one poll (a bulk import) send ``{"type": "reload", "cursor": N}``
instead. The sender's own changes come back too: a client recognises them by id and version.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import tornado.routing
import tornado.web
import tornado.websocket
from tornado.ioloop import IOLoop, PeriodicCallback

from annot.errors import AnnotError, NotFound, PermissionDenied
from annot.features import dumps, feature_dicts
from annot.frames import PIXEL, ImageFrame
from annot.model import Action, Annotation
from annot.storage import Store
from annot.storage.base import ImageChange
from annot.taxonomy import at_least, effective_role
from annot.users import Role, User
from tileserver.errors import ImageNotFound
from tileserver.web.annotations import _frame
from tileserver.web.errors import status_for
from tileserver.web.handlers import SESSION_COOKIE, ServerContext, bearer_token

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
MAX_EVENTS = 200
IMAGE = r"/api/v1/images/([^/]+)"


def read_events(
    store: Store, image_id: str, frame: ImageFrame, after: int
) -> tuple[list[dict[str, Any]] | None, int]:
    """The events after change ``after`` and the new cursor; None for "too many: reload".

    Runs in the executor: plain store calls, no tornado objects.
    """
    changes = store.changes_after(image_id, after, MAX_EVENTS + 1)
    if not changes:
        return [], after
    if len(changes) > MAX_EVENTS:
        return None, store.last_change(image_id)
    latest: dict[int, ImageChange] = {}
    for c in changes:
        latest.pop(c.annotation_id, None)  # keep change order: the latest goes last
        latest[c.annotation_id] = c
    events = []
    for c in latest.values():
        current: Annotation | None = None
        if c.version > 0:
            try:
                current = store.get(c.annotation_id)
            except NotFound:
                current = None  # deleted since: a later poll reports it
        action = "deleted" if current is None else "created"
        if current is not None and c.action is not Action.create:
            action = "updated"
        events.append(
            {
                "action": action,
                "id": c.annotation_id,
                "version": current.version if current is not None else 0,
                "user": c.user,
                "at": c.at,
                "change": c.id,
                "feature": feature_dicts([current], frame, PIXEL)[0] if current else None,
            }
        )
    return events, changes[-1].id


class LiveHub:
    """One per process: the sockets watching each image and one poller for all of them."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.watchers: dict[str, set[LiveHandler]] = {}
        self.cursors: dict[str, int] = {}
        self._timer: PeriodicCallback | None = None
        self._polling = False

    async def join(self, image_id: str, socket: LiveHandler) -> int:
        if image_id not in self.cursors:
            cursor = await IOLoop.current().run_in_executor(
                self.ctx.executor, self.ctx.store.last_change, image_id
            )
            self.cursors.setdefault(image_id, cursor)
        self.watchers.setdefault(image_id, set()).add(socket)
        if self._timer is None:
            self._timer = PeriodicCallback(self.poll, POLL_SECONDS * 1000)
            self._timer.start()
        return self.cursors[image_id]

    def leave(self, image_id: str, socket: LiveHandler) -> None:
        sockets = self.watchers.get(image_id)
        if sockets is None:
            return
        sockets.discard(socket)
        if not sockets:
            del self.watchers[image_id]
            self.cursors.pop(image_id, None)
        if not self.watchers and self._timer is not None:
            self._timer.stop()
            self._timer = None

    async def poll(self) -> None:
        if self._polling:
            return  # a slow store: skip a beat rather than pile polls up
        self._polling = True
        try:
            for image_id in list(self.watchers):
                await self._poll_image(image_id)
        finally:
            self._polling = False

    async def _poll_image(self, image_id: str) -> None:
        source = self.ctx.catalog.images.get(image_id)
        if source is None or image_id not in self.cursors:
            return
        frame = _frame(image_id, source.info.version, source)
        try:
            events, cursor = await IOLoop.current().run_in_executor(
                self.ctx.executor,
                read_events,
                self.ctx.store,
                image_id,
                frame,
                self.cursors[image_id],
            )
        except Exception:  # a failing store must not stop the poller; the next beat retries
            log.exception("live feed of image %s", image_id)
            return
        if image_id not in self.cursors:
            return  # everyone left meanwhile
        if events is not None and not events:
            return
        self.cursors[image_id] = cursor
        message = (
            dumps({"type": "reload", "cursor": cursor})
            if events is None
            else dumps({"type": "changes", "cursor": cursor, "events": events})
        ).decode()
        for socket in list(self.watchers.get(image_id, ())):
            socket.send(message)


class LiveHandler(tornado.websocket.WebSocketHandler):
    """The WebSocket of one image's live changes (see the module docstring).

    Authenticated like every route (``Authorization: Bearer``, the session cookie, or
    ``?token=`` since browsers cannot set headers on a WebSocket); the role is checked before
    the upgrade, so a refused connection gets a JSON 401/403/404. Browsers' cross-origin
    WebSockets are refused by tornado's ``check_origin``, which keeps the cookie safe.
    """

    def initialize(self, ctx: ServerContext, hub: LiveHub) -> None:
        self.ctx = ctx
        self.hub = hub
        self.image_id: str | None = None

    def get_current_user(self) -> User | None:
        token = bearer_token(self.request.headers)
        if token is not None:
            return self.ctx.user_for_token(token) if token else None
        token_arg = self.get_query_argument("token", None)
        if token_arg:
            return self.ctx.user_for_token(token_arg)
        cookie = self.get_signed_cookie(SESSION_COOKIE, max_age_days=30)
        return self.ctx.user_for_token(cookie.decode()) if cookie else None

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="tessera"')
        self.finish(json.dumps({"error": code, "message": message}))

    async def get(self, *args: Any, **kwargs: Any) -> None:
        image_id = str(args[0])
        user = self.current_user
        if user is None:
            self._refuse(401, "unauthorized", "a valid token or session cookie is required")
            return
        try:
            self.ctx.catalog.get(image_id)
            self._check_role(user, image_id)
        except (ImageNotFound, AnnotError) as exc:
            status, code = status_for(exc) or (400, "bad_request")
            self._refuse(status, code, str(exc))
            return
        self.image_id = image_id
        await super().get(*args, **kwargs)

    def _check_role(self, user: User, image_id: str) -> None:
        project = self.ctx.store.image_project(image_id)
        membership = None if user.is_admin else self.ctx.store.membership(project, user.id)
        role = effective_role(user, project, membership)
        if role is None or not at_least(role, Role.annotator):
            raise PermissionDenied(f"you may not see the annotations of project {project!r}")

    async def open(self, *args: str, **kwargs: str) -> None:
        assert self.image_id is not None
        cursor = await self.hub.join(self.image_id, self)
        user: User = self.current_user
        hello = {"type": "hello", "user": user.name, "cursor": cursor, "process": os.getpid()}
        self.send(json.dumps(hello))

    def on_message(self, message: str | bytes) -> None:
        pass  # the feed is one-way; clients may send keep-alives

    def on_close(self) -> None:
        if self.image_id is not None:
            self.hub.leave(self.image_id, self)

    def send(self, message: str) -> None:
        try:
            self.write_message(message)
        except tornado.websocket.WebSocketClosedError:
            self.on_close()


def live_routes(deps: dict[str, Any]) -> list[tornado.routing.URLSpec]:
    """The live route, with this process's hub (make_app runs once per process)."""
    hub = LiveHub(deps["ctx"])
    return [tornado.web.url(IMAGE + r"/live", LiveHandler, {**deps, "hub": hub}, name="live")]


def openapi_paths() -> dict[str, Any]:
    """OpenAPI path item of the live route (for ``tileserver.web.openapi``)."""
    return {
        "/api/v1/images/{id}/live": {
            "get": {
                "summary": "WebSocket: the image's annotation changes as they are stored",
                "description": (
                    "Upgrade to a WebSocket. Auth: the session cookie, Authorization: Bearer, "
                    "or ?token=. Messages: hello {user, cursor}; changes {cursor, events: "
                    "[{action created|updated|deleted, id, version, user, at, change, feature "
                    "(pixel coordinates) or null}]}; reload {cursor} after a bulk change. "
                    "Changes reach every server's sockets within about 250 ms (each process "
                    "polls the store's change log). Errors before the upgrade: 401, 403, 404."
                ),
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "token",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "a bearer token, for clients that cannot send headers",
                    },
                ],
                "responses": {"101": {"description": "switching to the WebSocket protocol"}},
            }
        }
    }
