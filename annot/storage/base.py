"""The storage interface shared by the SQLite and PostGIS stores, and their common encoding.

Geometries are stored as WKB (float64, exact) in the image's storage frame, with their bounds
``(minx, miny, maxx, maxy, minz, maxz)`` in a spatial index. Spatial queries select what
intersects a region (2D, x/y) whose bounds are given, and overlaps a z range for volumes; both
stores answer the same thing (GEOS decides ``intersects`` in both).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from annot.errors import BadRequest, Conflict, ValidationError
from annot.features import GeometryTexts
from annot.model import (
    Action,
    Annotation,
    Change,
    Content,
    Kind,
    Mask,
    Placement,
    Snapshot,
    Status,
    bounds3,
)
from annot.taxonomy import DEFAULT_PROJECT, Concept, Label, Project
from annot.users import Role, User

MAX_PAGE = 10_000
log = logging.getLogger(__name__)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class FeaturePage:
    """Query results as columns, for writing features fast: ids, geometries (storage frame,
    a NumPy object array) and each annotation's GeoJSON properties as JSON text (stored with
    the annotation, see ``annot.features.properties_text``)."""

    ids: list[int]
    geometries: npt.NDArray[np.object_]
    properties: list[str]
    # the kept geometry text in the requested crs (``annot.features.CachedTexts``) per row,
    # None where there is none for the image's current frame; None when not asked for
    texts: list[bytes | None] | None = None


@dataclass(frozen=True)
class ImageChange:
    """One entry of an image's change log without the annotation's former content: what the
    live feed polls (``Store.changes_after``). ``version`` is 0 when the change deleted it."""

    id: int
    annotation_id: int
    action: Action
    user: str
    at: str
    version: int


@dataclass(frozen=True)
class Region:
    """What a spatial query selects: ``bounds`` (minx, miny, maxx, maxy, minz, maxz) in the
    storage frame, and optionally an exact 2D ``shape`` (within those x/y bounds) to intersect."""

    bounds: tuple[float, float, float, float, float, float]
    shape: BaseGeometry | None = None


@dataclass(frozen=True)
class Filter:
    """What a listing keeps besides where annotations are: any of ``labels`` (a label keeps its
    sub-labels too: ``vehicle`` keeps ``vehicle/car``), any of ``statuses``, ``authors`` and
    ``kinds``; an empty tuple keeps every value. Both stores apply it in SQL, so pages stay
    full and cursors stay valid."""

    labels: tuple[str, ...] = ()
    statuses: tuple[Status, ...] = ()
    authors: tuple[str, ...] = ()
    kinds: tuple[Kind, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.labels or self.statuses or self.authors or self.kinds)

    def sql(self, ph: str, alias: str = "") -> tuple[str, list[Any]]:
        """`` AND ...`` conditions (empty when the filter keeps all) and their parameters, for
        placeholders ``ph`` (``?`` or ``%s``) on columns of the table named ``alias``."""
        col = f"{alias}." if alias else ""
        parts: list[str] = []
        params: list[Any] = []
        if self.labels:
            # substr, not LIKE: labels may hold % and _, and SQLite's LIKE ignores case
            tests = []
            for name in self.labels:
                tests.append(
                    f"{col}label = {ph} OR substr({col}label, 1, CAST({ph} AS INTEGER)) = {ph}"
                )
                params += [name, len(name) + 1, name + "/"]
            parts.append("(" + " OR ".join(tests) + ")")
        for column, values in (
            ("status", self.statuses),
            ("author", self.authors),
            ("kind", self.kinds),
        ):
            if values:
                parts.append(f"{col}{column} IN ({', '.join([ph] * len(values))})")
                params += [str(v) for v in values]
        return "".join(f" AND {p}" for p in parts), params


class Store(Protocol):
    # Set by the server: the geometry texts to keep with each annotation written (see
    # ``annot.features.CachedTexts``); None keeps none (listings then compute them).
    geometry_texts: GeometryTexts | None

    # users
    def add_user(self, name: str, role: Role, token: str | None = None) -> tuple[User, str]:
        """Create a user (or give an existing one a new token); returns it and its token."""
        ...

    def user_for_token(self, token: str) -> User | None: ...

    def user_by_name(self, name: str) -> User | None: ...

    def count_users(self, role: Role | None = None) -> int: ...

    # projects, taxonomies, members
    def get_project(self, name: str) -> Project:
        """The project (``default`` is created on first use); NotFound for another name."""
        ...

    def list_projects(self) -> list[Project]: ...

    def create_project(self, name: str, instructions: str = "") -> Project: ...

    def update_project(
        self, name: str, instructions: str | None = None, locked: bool | None = None
    ) -> Project: ...

    def put_label(self, project: str, label: Label) -> Project: ...

    def delete_label(self, project: str, name: str) -> Project: ...

    def set_member(self, project: str, user: str, role: Role | None) -> None: ...

    def members(self, project: str) -> list[tuple[User, Role]]: ...

    def membership(self, project: str, user_id: int) -> Role | None: ...

    # images in projects (an image not assigned is in ``default``)
    def image_projects(self) -> dict[str, str]:
        """``{image id: project}`` of every image assigned to a project other than default."""
        ...

    def image_project(self, image_id: str) -> str: ...

    def move_image(self, image_id: str, project: str) -> int:
        """Put the image and its annotations in ``project``; returns how many annotations
        moved. Labels the target lacks are copied over from the source project, unless the
        target's taxonomy is locked: then Conflict names them and nothing changes."""
        ...

    # annotations
    def add(
        self, image_id: str, project: str, contents: Sequence[Content], user: str
    ) -> list[Annotation]:
        """Store all of ``contents`` or none (labels checked against the taxonomy)."""
        ...

    def get(self, aid: int) -> Annotation: ...

    def update(
        self, aid: int, content: Content, expected_version: int | None, user: str
    ) -> Annotation:
        """Replace an annotation's content; VersionConflict unless at ``expected_version``."""
        ...

    def delete(self, aid: int, expected_version: int | None, user: str) -> None: ...

    def query(
        self,
        image_id: str,
        region: Region | None = None,
        after: int = 0,
        limit: int = 1000,
        where: Filter | None = None,
    ) -> list[Annotation]:
        """Annotations of an image by id (> ``after``), those intersecting ``region`` if given
        (then tags, having no geometry, are left out) and kept by ``where``."""
        ...

    def query_page(
        self,
        image_id: str,
        region: Region,
        after: int = 0,
        limit: int = 1000,
        cached: tuple[str, str] | None = None,
        where: Filter | None = None,
    ) -> FeaturePage:
        """``query`` with a region, as columns (the fast path of the HTTP listing); with
        ``cached=(key, crs)`` (``annot.features.cached_column``) also the geometry texts kept
        for that frame key and crs (``FeaturePage.texts``)."""
        ...

    def query_bounds(self, image_id: str, region: Region) -> FeaturePage:
        """Every annotation whose bounds meet ``region.bounds`` (2D: x and y), in one read,
        not paged and with no exact shape test: what the vector tiles read per tile."""
        ...

    def count(self, image_id: str) -> int: ...

    # history
    def history(self, aid: int) -> list[Change]: ...

    def get_change(self, change_id: int) -> Change: ...

    def changes_after(self, image_id: str, after: int, limit: int = 1000) -> list[ImageChange]:
        """The image's changes with an id above ``after``, oldest first. Ids grow in commit
        order within an image (both stores serialise an image's change log), so a reader that
        remembers the last id it saw misses none."""
        ...

    def last_change(self, image_id: str) -> int:
        """The id of the image's latest change (0 if none): grows with every write."""
        ...

    def undo(self, change_id: int, user: str) -> Annotation | None:
        """Revert one change (only the latest change of its annotation); returns the restored
        annotation, or None when undoing a creation deleted it."""
        ...

    # snapshots
    def create_snapshot(
        self, project: str, name: str, user: str, description: str = ""
    ) -> Snapshot: ...

    def list_snapshots(self, project: str) -> list[Snapshot]: ...

    def snapshot_annotations(
        self, project: str, name: str, after: int = 0, limit: int = 1000
    ) -> list[Annotation]: ...

    def close(self) -> None: ...


# --- the row encoding both stores share -------------------------------------------------------

ANNOTATION_COLUMNS = (
    "id, image_id, project, kind, label, geom, mask, keypoints, attributes, placement, status, "
    "author, created_at, updated_by, updated_at, version"
)


def encode_content(content: Content) -> dict[str, Any]:
    """The columns of a content (``geom`` as WKB bytes, JSON columns as text, bounds)."""
    geom = content.geometry
    bounds: tuple[float | None, ...] = (None,) * 6
    wkb: bytes | None = None
    if geom is not None:
        wkb = shapely.to_wkb(geom, include_srid=False)
        bounds = bounds3(geom)
    return {
        "kind": content.kind.value,
        "label": content.label,
        "geom": wkb,
        "mask": json.dumps(content.mask.to_json()) if content.mask else None,
        "keypoints": json.dumps(list(content.keypoints)) if content.keypoints else None,
        "attributes": json.dumps(dict(content.attributes), allow_nan=False),
        "placement": json.dumps(content.placement.to_json()) if content.placement else None,
        "status": content.status.value,
        "minx": bounds[0],
        "miny": bounds[1],
        "maxx": bounds[2],
        "maxy": bounds[3],
        "minz": bounds[4],
        "maxz": bounds[5],
    }


CONTENT_KEYS = ("kind", "label", "geom", "mask", "keypoints", "attributes", "placement", "status")
BOUND_KEYS = ("minx", "miny", "maxx", "maxy", "minz", "maxz")


def encode_many(contents: Sequence[Content]) -> list[dict[str, Any]]:
    """``encode_content`` for many at once (WKB and bounds computed in vectorised calls)."""
    n = len(contents)
    geoms = np.array([c.geometry for c in contents], dtype=object)
    present = np.array([g is not None for g in geoms], dtype=bool)
    wkbs: list[bytes | None] = [None] * n
    bounds = np.full((n, 6), np.nan)
    if present.any():
        idx = np.flatnonzero(present)
        g = geoms[idx]
        for i, w in zip(idx.tolist(), shapely.to_wkb(g, include_srid=False), strict=True):
            wkbs[i] = w
        bounds[idx, :4] = shapely.bounds(g)
        bounds[idx, 4:] = 0.0
        z = idx[shapely.has_z(g)]
        if len(z):
            coords, which = shapely.get_coordinates(geoms[z], include_z=True, return_index=True)
            zmin = np.full(len(z), np.inf)
            zmax = np.full(len(z), -np.inf)
            np.minimum.at(zmin, which, coords[:, 2])
            np.maximum.at(zmax, which, coords[:, 2])
            bounds[z, 4], bounds[z, 5] = zmin, zmax
    if np.isnan(bounds[present]).any():
        raise ValidationError("a geometry is empty or has NaN coordinates")
    out = []
    for i, c in enumerate(contents):
        b = bounds[i].tolist() if present[i] else [None] * 6
        out.append(
            {
                "kind": c.kind.value,
                "label": c.label,
                "geom": wkbs[i],
                "mask": json.dumps(c.mask.to_json()) if c.mask else None,
                "keypoints": json.dumps(list(c.keypoints)) if c.keypoints else None,
                "attributes": json.dumps(dict(c.attributes), allow_nan=False)
                if c.attributes
                else "{}",
                "placement": json.dumps(c.placement.to_json()) if c.placement else None,
                "status": c.status.value,
                **dict(zip(BOUND_KEYS, b, strict=True)),
            }
        )
    return out


KINDS = {k.value: k for k in Kind}
STATUSES = {k.value: k for k in Status}


def decode_row(row: Sequence[Any], geometry: BaseGeometry | None = None) -> Annotation:
    """An annotation from a row in ``ANNOTATION_COLUMNS`` order (``geometry`` if decoded)."""
    (aid, image_id, project, kind, label, geom, mask, keypoints, attributes, placement) = row[:10]
    status, author, created_at, updated_by, updated_at, version = row[10:16]
    if geometry is None and geom is not None:
        geometry = shapely.from_wkb(bytes(geom))
    content = Content(
        KINDS[kind],
        label,
        geometry,
        Mask.from_json(json.loads(mask)) if mask else None,
        tuple(json.loads(keypoints)) if keypoints else (),
        json.loads(attributes) if attributes and attributes != "{}" else {},
        Placement.from_json(json.loads(placement)) if placement else None,
        STATUSES[status],
    )
    return Annotation(
        aid, image_id, project, content, author, created_at, updated_by, updated_at, version
    )


def decode_rows(rows: Sequence[Sequence[Any]]) -> list[Annotation]:
    """Many rows at once (WKB decoded in one vectorised call)."""
    if not rows:
        return []
    geoms = shapely.from_wkb([r[5] for r in rows])
    return [decode_row(r, g) for r, g in zip(rows, geoms, strict=True)]


def annotation_to_record(a: Annotation) -> str:
    """A whole annotation as JSON text (history and snapshots keep these)."""
    c = a.content
    return json.dumps(
        {
            "id": a.id,
            "image_id": a.image_id,
            "project": a.project,
            "kind": c.kind.value,
            "label": c.label,
            "geom": shapely.to_wkb(c.geometry, hex=True) if c.geometry is not None else None,
            "mask": c.mask.to_json() if c.mask else None,
            "keypoints": list(c.keypoints),
            "attributes": dict(c.attributes),
            "placement": c.placement.to_json() if c.placement else None,
            "status": c.status.value,
            "author": a.author,
            "created_at": a.created_at,
            "updated_by": a.updated_by,
            "updated_at": a.updated_at,
            "version": a.version,
        }
    )


def record_to_annotation(text: str) -> Annotation:
    d = json.loads(text)
    content = Content(
        kind=Kind(d["kind"]),
        label=d["label"],
        geometry=shapely.from_wkb(d["geom"]) if d["geom"] else None,
        mask=Mask.from_json(d["mask"]) if d["mask"] else None,
        keypoints=tuple(d["keypoints"]),
        attributes=d["attributes"],
        placement=Placement.from_json(d["placement"]) if d["placement"] else None,
        status=Status(d["status"]),
    )
    return Annotation(
        d["id"],
        d["image_id"],
        d["project"],
        content,
        d["author"],
        d["created_at"],
        d["updated_by"],
        d["updated_at"],
        d["version"],
    )


def make_change(row: Sequence[Any]) -> Change:
    """A change from ``(id, annotation_id, image_id, project, action, user, at, version,
    before, undoes)``."""
    cid, aid, image_id, project, action, user, at, version, before, undoes = row
    return Change(
        int(cid),
        int(aid),
        image_id,
        project,
        Action(action),
        user,
        at,
        int(version),
        record_to_annotation(before) if before else None,
        int(undoes) if undoes is not None else None,
    )


def image_change(row: Sequence[Any]) -> ImageChange:
    """From ``(id, annotation_id, action, user, at, version)``."""
    cid, aid, action, user, at, version = row
    return ImageChange(int(cid), int(aid), Action(action), user, at, int(version))


def project_from(name: str, instructions: str, locked: bool, labels: Sequence[Label]) -> Project:
    return Project(name, instructions, bool(locked), {label.name: label for label in labels})


def label_from_row(row: Sequence[Any]) -> Label:
    """From ``(name, color, code JSON, kinds JSON, description)``."""
    name, color, code, kinds, description = row
    return Label(
        name,
        color,
        Concept.from_json(json.loads(code)) if code else None,
        frozenset(Kind(k) for k in json.loads(kinds)) if kinds else None,
        description or "",
    )


def label_columns(label: Label) -> tuple[str, str, str | None, str | None, str]:
    return (
        label.name,
        label.color,
        json.dumps(label.code.to_json()) if label.code else None,
        json.dumps(sorted(k.value for k in label.kinds)) if label.kinds is not None else None,
        label.description,
    )


TextColumns = tuple[str | None, bytes | None, bytes | None]


def text_columns(
    fn: GeometryTexts | None, image_id: str, contents: Sequence[Content]
) -> list[TextColumns]:
    """``(gkey, gworld, gpixel)`` to store with each of ``contents`` (all None when none are
    kept for the image, or computing them failed: listings then compute them)."""
    none: list[TextColumns] = [(None, None, None)] * len(contents)
    if fn is None or not contents:
        return none
    try:
        texts = fn(image_id, [c.geometry for c in contents])
    except Exception:  # a cache must never fail a write
        log.exception("geometry texts of image %s", image_id)
        return none
    if texts is None:
        return none
    return [(texts.key, w, p) for w, p in zip(texts.world, texts.pixel, strict=True)]


def check_page(after: int, limit: int) -> None:
    if limit < 1 or limit > MAX_PAGE:
        raise BadRequest(f"limit must be 1..{MAX_PAGE}")
    if after < 0:
        raise BadRequest("cursor must be a non-negative id")


def resolve_labels(project: Project, contents: Sequence[Content]) -> list[Label]:
    """Labels to add to an open taxonomy for ``contents`` (UnknownLabel if locked)."""
    labels = dict(project.labels)
    new: dict[str, Label] = {}
    seen: set[tuple[str, Kind]] = set()
    for c in contents:
        if (c.label, c.kind) in seen:
            continue
        seen.add((c.label, c.kind))
        current = Project(project.name, project.instructions, project.locked, labels)
        for label in current.resolve(c.label, c.kind):
            labels[label.name] = new[label.name] = label
    return list(new.values())


def move_image_rows(conn: Any, ph: str, image_id: str, target: Project) -> int:
    """``Store.move_image`` inside the caller's write transaction, in SQL both stores speak
    (``ph`` is the driver's placeholder); returns how many annotations moved."""
    row = conn.execute(
        f"SELECT project FROM image_projects WHERE image_id = {ph}", (image_id,)
    ).fetchone()
    source = DEFAULT_PROJECT if row is None else str(row[0])
    used = {
        str(r[0])
        for r in conn.execute(
            f"SELECT DISTINCT label FROM annotations WHERE image_id = {ph}", (image_id,)
        ).fetchall()
    }
    missing = sorted(used - set(target.labels))
    if missing and target.locked:
        raise Conflict(
            f"project {target.name!r} has a locked taxonomy without the labels "
            f"{', '.join(missing)} used on this image: add them first"
        )
    for name in missing:
        conn.execute(
            "INSERT INTO labels (project, name, color, code, kinds, description) "
            f"SELECT {ph}, name, color, code, kinds, description FROM labels "
            f"WHERE project = {ph} AND name = {ph} ON CONFLICT DO NOTHING",
            (target.name, source, name),
        )
    conn.execute(
        f"INSERT INTO image_projects (image_id, project) VALUES ({ph}, {ph}) "
        "ON CONFLICT (image_id) DO UPDATE SET project = excluded.project",
        (image_id, target.name),
    )
    moved = conn.execute(
        f"UPDATE annotations SET project = {ph} WHERE image_id = {ph}", (target.name, image_id)
    ).rowcount
    return int(moved)
