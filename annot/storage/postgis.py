"""PostgreSQL/PostGIS store, for scale: a GiST index on the geometry, one connection per thread.

Same behaviour as the SQLite store (one test suite runs against both). Geometries are PostGIS
``geometry`` values with SRID 0, in each image's storage frame (images have different CRSs);
3D shapes keep their z. Writes take a transaction-scoped advisory lock per annotation, so a
version check and its update cannot interleave; batches are written with COPY in one
transaction (a killed client leaves nothing behind).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
import shapely

from annot.errors import Conflict, NotFound, VersionConflict
from annot.features import GeometryTexts, properties_text
from annot.model import Action, Annotation, Change, Content, Snapshot
from annot.storage.base import (
    ANNOTATION_COLUMNS,
    BOUND_KEYS,
    CONTENT_KEYS,
    FeaturePage,
    Filter,
    ImageChange,
    Region,
    annotation_to_record,
    check_page,
    decode_rows,
    encode_content,
    encode_many,
    image_change,
    label_columns,
    label_from_row,
    make_change,
    move_image_rows,
    now,
    project_from,
    resolve_labels,
    text_columns,
)
from annot.taxonomy import (
    DEFAULT_PROJECT,
    Label,
    Project,
    ancestors,
    auto_color,
    check_project_name,
)
from annot.users import Role, User, check_user_name, hash_token, new_token

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('annotator', 'reviewer', 'admin')),
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    instructions TEXT NOT NULL DEFAULT '',
    locked BOOLEAN NOT NULL DEFAULT false,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    color TEXT NOT NULL,
    code TEXT,
    kinds TEXT,
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (project, name)
);
CREATE TABLE IF NOT EXISTS members (
    project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('annotator', 'reviewer', 'admin')),
    PRIMARY KEY (project, user_id)
);
CREATE TABLE IF NOT EXISTS image_projects (
    image_id TEXT PRIMARY KEY,
    project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS annotations (
    id BIGSERIAL PRIMARY KEY,
    image_id TEXT NOT NULL,
    project TEXT NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    geom geometry,
    mask TEXT,
    keypoints TEXT,
    attributes TEXT NOT NULL,
    placement TEXT,
    status TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL,
    minx DOUBLE PRECISION, miny DOUBLE PRECISION, maxx DOUBLE PRECISION,
    maxy DOUBLE PRECISION, minz DOUBLE PRECISION, maxz DOUBLE PRECISION,
    props TEXT NOT NULL DEFAULT '{}'
);
ALTER TABLE annotations ADD COLUMN IF NOT EXISTS gkey TEXT,
    ADD COLUMN IF NOT EXISTS gworld BYTEA, ADD COLUMN IF NOT EXISTS gpixel BYTEA;
CREATE INDEX IF NOT EXISTS annotations_image ON annotations (image_id, id);
CREATE INDEX IF NOT EXISTS annotations_project ON annotations (project, id);
CREATE INDEX IF NOT EXISTS annotations_geom ON annotations USING gist (geom);
CREATE TABLE IF NOT EXISTS changes (
    id BIGSERIAL PRIMARY KEY,
    annotation_id BIGINT NOT NULL,
    image_id TEXT NOT NULL,
    project TEXT NOT NULL,
    action TEXT NOT NULL,
    "user" TEXT NOT NULL,
    at TEXT NOT NULL,
    version INTEGER NOT NULL,
    before TEXT,
    undoes BIGINT
);
CREATE INDEX IF NOT EXISTS changes_annotation ON changes (annotation_id, id);
CREATE INDEX IF NOT EXISTS changes_image ON changes (image_id, id);
CREATE TABLE IF NOT EXISTS snapshots (
    id BIGSERIAL PRIMARY KEY,
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    count BIGINT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    UNIQUE (project, name)
);
CREATE TABLE IF NOT EXISTS snapshot_annotations (
    snapshot_id BIGINT NOT NULL REFERENCES snapshots(id),
    id BIGINT NOT NULL,
    image_id TEXT NOT NULL,
    project TEXT NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    geom geometry,
    mask TEXT,
    keypoints TEXT,
    attributes TEXT NOT NULL,
    placement TEXT,
    status TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (snapshot_id, id)
);
"""

SELECT_COLUMNS = ANNOTATION_COLUMNS.replace(" geom,", " ST_AsBinary(geom),")
CHANGE_COLUMNS = 'id, annotation_id, image_id, project, action, "user", at, version, before, undoes'
SNAPSHOT_COLUMNS = "project, name, created_by, created_at, count, description"
COPY_COLUMNS = (
    "id, image_id, project, kind, label, geom, mask, keypoints, attributes, placement, status, "
    "author, created_at, updated_by, updated_at, version, minx, miny, maxx, maxy, minz, maxz, "
    "props, gkey, gworld, gpixel"
)
COPY_THRESHOLD = 50
IMAGE_LOG_LOCK = 7217  # first key of the per-image change-log locks (two-int4 key space)


def _region_sql(
    columns: str,
    image_id: str,
    region: Region,
    after: int,
    limit: int,
    where: Filter | None = None,
) -> tuple[str, list[Any]]:
    """What meets the region's bounds (GiST), intersects its shape if given and is kept by
    ``where``, by id."""
    x0, y0, x1, y1, z0, z1 = region.bounds
    keep, keep_params = (where or Filter()).sql("%s")
    exact = keep + " "
    params: list[Any] = [x0, y0, x1, y1, image_id, x0, x1, y0, y1, z0, z1, after, *keep_params]
    if region.shape is not None:
        exact += "AND ST_Intersects(geom, ST_GeomFromWKB(%s)) "
        params.append(shapely.to_wkb(region.shape))
    params.append(limit)
    sql = (
        f"SELECT {columns} FROM annotations "
        "WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s) AND image_id = %s "
        "AND maxx >= %s AND minx <= %s AND maxy >= %s AND miny <= %s "
        "AND maxz >= %s AND minz <= %s AND id > %s"
        f"{exact}ORDER BY id LIMIT %s"
    )
    return sql, params


class PostgisStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.geometry_texts: GeometryTexts | None = None
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        conn = self._conn()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7216)")  # one schema creator at a time
            have = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").fetchone()
            if have is None:
                conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            conn.execute(SCHEMA)

    def _conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.url, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self._conn()
        with conn.transaction():
            yield conn

    # --- users ---------------------------------------------------------------------------

    def add_user(self, name: str, role: Role, token: str | None = None) -> tuple[User, str]:
        check_user_name(name)
        token = token or new_token()
        with self._write() as conn:
            row = conn.execute(
                "INSERT INTO users (name, role, token_hash) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET role = excluded.role, "
                "token_hash = excluded.token_hash RETURNING id",
                (name, role.value, hash_token(token)),
            ).fetchone()
        assert row is not None
        return User(int(row[0]), name, role), token

    def user_for_token(self, token: str) -> User | None:
        row = (
            self._conn()
            .execute("SELECT id, name, role FROM users WHERE token_hash = %s", (hash_token(token),))
            .fetchone()
        )
        return None if row is None else User(int(row[0]), str(row[1]), Role(row[2]))

    def user_by_name(self, name: str) -> User | None:
        row = (
            self._conn()
            .execute("SELECT id, name, role FROM users WHERE name = %s", (name,))
            .fetchone()
        )
        return None if row is None else User(int(row[0]), str(row[1]), Role(row[2]))

    def count_users(self, role: Role | None = None) -> int:
        if role is None:
            row = self._conn().execute("SELECT count(*) FROM users").fetchone()
        else:
            row = (
                self._conn()
                .execute("SELECT count(*) FROM users WHERE role = %s", (role.value,))
                .fetchone()
            )
        assert row is not None
        return int(row[0])

    # --- projects ------------------------------------------------------------------------

    def _project(self, conn: psycopg.Connection[Any], name: str) -> Project:
        row = conn.execute(
            "SELECT name, instructions, locked FROM projects WHERE name = %s", (name,)
        ).fetchone()
        if row is None:
            if name != DEFAULT_PROJECT:
                raise NotFound(f"no project {name!r}")
            conn.execute(
                "INSERT INTO projects (name, created_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (name, now()),
            )
            row = (name, "", False)
        labels = conn.execute(
            "SELECT name, color, code, kinds, description FROM labels WHERE project = %s",
            (name,),
        ).fetchall()
        return project_from(row[0], row[1], bool(row[2]), [label_from_row(r) for r in labels])

    def get_project(self, name: str) -> Project:
        with self._write() as conn:
            return self._project(conn, name)

    def list_projects(self) -> list[Project]:
        self.get_project(DEFAULT_PROJECT)
        conn = self._conn()
        names = conn.execute("SELECT name FROM projects ORDER BY name").fetchall()
        return [self._project(conn, n[0]) for n in names]

    def create_project(self, name: str, instructions: str = "") -> Project:
        check_project_name(name)
        with self._write() as conn:
            row = conn.execute(
                "INSERT INTO projects (name, instructions, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING name",
                (name, instructions, now()),
            ).fetchone()
            if row is None:
                raise Conflict(f"project {name!r} exists already")
            return self._project(conn, name)

    def update_project(
        self, name: str, instructions: str | None = None, locked: bool | None = None
    ) -> Project:
        with self._write() as conn:
            self._project(conn, name)
            if instructions is not None:
                conn.execute(
                    "UPDATE projects SET instructions = %s WHERE name = %s", (instructions, name)
                )
            if locked is not None:
                conn.execute("UPDATE projects SET locked = %s WHERE name = %s", (locked, name))
            return self._project(conn, name)

    def _insert_labels(
        self, conn: psycopg.Connection[Any], project: str, labels: list[Label]
    ) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO labels (project, name, color, code, kinds, description) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (project, name) DO UPDATE SET "
                "color = excluded.color, code = excluded.code, kinds = excluded.kinds, "
                "description = excluded.description",
                [(project, *label_columns(label)) for label in labels],
            )

    def put_label(self, project: str, label: Label) -> Project:
        with self._write() as conn:
            p = self._project(conn, project)
            missing = [Label(n, auto_color(n)) for n in ancestors(label.name) if n not in p.labels]
            self._insert_labels(conn, project, [*missing, label])
            return self._project(conn, project)

    def delete_label(self, project: str, name: str) -> Project:
        prefix = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
        with self._write() as conn:
            p = self._project(conn, project)
            if name not in p.labels:
                raise NotFound(f"no label {name!r} in project {project!r}")
            row = conn.execute(
                "SELECT count(*) FROM annotations WHERE project = %s "
                "AND (label = %s OR label LIKE %s)",
                (project, name, prefix),
            ).fetchone()
            used = int(row[0]) if row else 0
            if used:
                raise Conflict(
                    f"label {name!r} (or a label below it) is used by {used} annotations"
                )
            conn.execute(
                "DELETE FROM labels WHERE project = %s AND (name = %s OR name LIKE %s)",
                (project, name, prefix),
            )
            return self._project(conn, project)

    def set_member(self, project: str, user: str, role: Role | None) -> None:
        with self._write() as conn:
            self._project(conn, project)
            row = conn.execute("SELECT id FROM users WHERE name = %s", (user,)).fetchone()
            if row is None:
                raise NotFound(f"no user {user!r}")
            if role is None:
                conn.execute(
                    "DELETE FROM members WHERE project = %s AND user_id = %s", (project, row[0])
                )
            else:
                conn.execute(
                    "INSERT INTO members (project, user_id, role) VALUES (%s, %s, %s) "
                    "ON CONFLICT (project, user_id) DO UPDATE SET role = excluded.role",
                    (project, row[0], role.value),
                )

    def members(self, project: str) -> list[tuple[User, Role]]:
        self.get_project(project)
        rows = (
            self._conn()
            .execute(
                "SELECT u.id, u.name, u.role, m.role FROM members m JOIN users u "
                "ON u.id = m.user_id WHERE m.project = %s ORDER BY u.name",
                (project,),
            )
            .fetchall()
        )
        return [(User(int(r[0]), r[1], Role(r[2])), Role(r[3])) for r in rows]

    def membership(self, project: str, user_id: int) -> Role | None:
        row = (
            self._conn()
            .execute(
                "SELECT role FROM members WHERE project = %s AND user_id = %s", (project, user_id)
            )
            .fetchone()
        )
        return None if row is None else Role(row[0])

    # --- images in projects ----------------------------------------------------------------

    def image_projects(self) -> dict[str, str]:
        rows = self._conn().execute("SELECT image_id, project FROM image_projects").fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def image_project(self, image_id: str) -> str:
        row = (
            self._conn()
            .execute("SELECT project FROM image_projects WHERE image_id = %s", (image_id,))
            .fetchone()
        )
        return DEFAULT_PROJECT if row is None else str(row[0])

    def move_image(self, image_id: str, project: str) -> int:
        with self._write() as conn:
            return move_image_rows(conn, "%s", image_id, self._project(conn, project))

    # --- annotations ---------------------------------------------------------------------

    def _get(self, conn: psycopg.Connection[Any], aid: int) -> Annotation:
        row = conn.execute(
            f"SELECT {SELECT_COLUMNS} FROM annotations WHERE id = %s", (aid,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no annotation {aid}")
        return decode_rows([row])[0]

    def _log(self, conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> None:
        # One writer at a time per image from here to the commit, so that an image's change
        # ids grow in commit order and a reader polling "id > the last seen" misses none.
        # Taken last in the transaction (after any per-annotation lock): no lock cycles.
        for image_id in sorted({r[1] for r in rows}):
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (IMAGE_LOG_LOCK, image_id)
            )
        sql = (
            'COPY changes (annotation_id, image_id, project, action, "user", at, version, '
            "before, undoes) FROM STDIN"
        )
        if len(rows) >= COPY_THRESHOLD:
            with conn.cursor().copy(sql) as copy:
                for r in rows:
                    copy.write_row(r)
            return
        with conn.cursor() as cur:
            cur.executemany(
                'INSERT INTO changes (annotation_id, image_id, project, action, "user", at, '
                "version, before, undoes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )

    def _insert(
        self,
        conn: psycopg.Connection[Any],
        image_id: str,
        project: str,
        contents: Sequence[Content],
        user: str,
        at: str,
        ids: Sequence[int] | None = None,
        meta: tuple[str, str, int] | None = None,
    ) -> list[int]:
        author, created_at, version = meta or (user, at, 1)
        if ids is None:
            rows = conn.execute(
                "SELECT nextval('annotations_id_seq') FROM generate_series(1, %s)",
                (len(contents),),
            ).fetchall()
            ids = [int(r[0]) for r in rows]
        values = []
        texts = text_columns(self.geometry_texts, image_id, contents)
        for aid, content, cols, text in zip(
            ids, contents, encode_many(contents), texts, strict=True
        ):
            a = Annotation(aid, image_id, project, content, author, created_at, user, at, version)
            geom = cols["geom"]
            values.append(
                (
                    aid,
                    image_id,
                    project,
                    *(cols[k] for k in CONTENT_KEYS[:2]),
                    geom.hex() if geom is not None else None,
                    *(cols[k] for k in CONTENT_KEYS[3:]),
                    author,
                    created_at,
                    user,
                    at,
                    version,
                    *(cols[k] for k in BOUND_KEYS),
                    properties_text(a),
                    *text,
                )
            )
        if len(values) >= COPY_THRESHOLD:
            with conn.cursor().copy(f"COPY annotations ({COPY_COLUMNS}) FROM STDIN") as copy:
                for v in values:
                    copy.write_row(v)
        else:
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO annotations ({COPY_COLUMNS}) VALUES ({', '.join(['%s'] * 26)})",
                    values,
                )
        return list(ids)

    def add(
        self, image_id: str, project: str, contents: Sequence[Content], user: str
    ) -> list[Annotation]:
        at = now()
        with self._write() as conn:
            p = self._project(conn, project)
            new_labels = resolve_labels(p, contents)
            if new_labels:
                self._insert_labels(conn, project, new_labels)
            ids = self._insert(conn, image_id, project, contents, user, at)
            self._log(
                conn,
                [
                    (aid, image_id, project, Action.create.value, user, at, 1, None, None)
                    for aid in ids
                ],
            )
        return [
            Annotation(aid, image_id, project, c, user, at, user, at, 1)
            for aid, c in zip(ids, contents, strict=True)
        ]

    def get(self, aid: int) -> Annotation:
        return self._get(self._conn(), aid)

    def _check_version(self, current: Annotation, expected: int | None) -> None:
        if expected is not None and current.version != expected:
            raise VersionConflict(
                f"annotation {current.id} is at version {current.version}, not {expected}: "
                "someone else changed it; fetch it again and reapply your change"
            )

    def _locked_get(self, conn: psycopg.Connection[Any], aid: int) -> Annotation:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (aid,))
        return self._get(conn, aid)

    def _replace(
        self,
        conn: psycopg.Connection[Any],
        current: Annotation,
        content: Content,
        user: str,
        at: str,
    ) -> Annotation:
        cols = encode_content(content)
        version = current.version + 1
        updated = Annotation(
            current.id,
            current.image_id,
            current.project,
            content,
            current.author,
            current.created_at,
            user,
            at,
            version,
        )
        conn.execute(
            "UPDATE annotations SET kind = %s, label = %s, geom = ST_GeomFromWKB(%s), "
            "mask = %s, keypoints = %s, attributes = %s, placement = %s, status = %s, "
            "updated_by = %s, updated_at = %s, version = %s, minx = %s, miny = %s, maxx = %s, "
            "maxy = %s, minz = %s, maxz = %s, props = %s, gkey = %s, gworld = %s, gpixel = %s "
            "WHERE id = %s",
            (
                *(cols[k] for k in CONTENT_KEYS),
                user,
                at,
                version,
                *(cols[k] for k in BOUND_KEYS),
                properties_text(updated),
                *text_columns(self.geometry_texts, current.image_id, [content])[0],
                current.id,
            ),
        )
        return updated

    def update(
        self, aid: int, content: Content, expected_version: int | None, user: str
    ) -> Annotation:
        at = now()
        with self._write() as conn:
            current = self._locked_get(conn, aid)
            self._check_version(current, expected_version)
            p = self._project(conn, current.project)
            new_labels = resolve_labels(p, [content])
            if new_labels:
                self._insert_labels(conn, current.project, new_labels)
            updated = self._replace(conn, current, content, user, at)
            self._log(
                conn,
                [
                    (
                        aid,
                        current.image_id,
                        current.project,
                        Action.update.value,
                        user,
                        at,
                        updated.version,
                        annotation_to_record(current),
                        None,
                    )
                ],
            )
        return updated

    def delete(self, aid: int, expected_version: int | None, user: str) -> None:
        at = now()
        with self._write() as conn:
            current = self._locked_get(conn, aid)
            self._check_version(current, expected_version)
            conn.execute("DELETE FROM annotations WHERE id = %s", (aid,))
            self._log(
                conn,
                [
                    (
                        aid,
                        current.image_id,
                        current.project,
                        Action.delete.value,
                        user,
                        at,
                        0,
                        annotation_to_record(current),
                        None,
                    )
                ],
            )

    def query(
        self,
        image_id: str,
        region: Region | None = None,
        after: int = 0,
        limit: int = 1000,
        where: Filter | None = None,
    ) -> list[Annotation]:
        check_page(after, limit)
        conn = self._conn()
        if region is None:
            keep, keep_params = (where or Filter()).sql("%s")
            rows = conn.execute(
                f"SELECT {SELECT_COLUMNS} FROM annotations WHERE image_id = %s AND id > %s"
                f"{keep} ORDER BY id LIMIT %s",
                (image_id, after, *keep_params, limit),
            ).fetchall()
            return decode_rows(rows)
        cur = conn.execute(*_region_sql(SELECT_COLUMNS, image_id, region, after, limit, where))
        return decode_rows(cur.fetchall())

    def query_page(
        self,
        image_id: str,
        region: Region,
        after: int = 0,
        limit: int = 1000,
        cached: tuple[str, str] | None = None,
        where: Filter | None = None,
    ) -> FeaturePage:
        check_page(after, limit)
        text = "NULL"
        if cached is not None:
            key, crs = cached
            if crs not in ("world", "pixel") or not (len(key) == 16 and key.isalnum()):
                raise ValueError(f"not a geometry text key and crs: {cached!r}")
            text = f"CASE WHEN gkey = '{key}' THEN g{crs} END"
        columns = f"id, ST_AsBinary(geom), props, {text}"
        sql, params = _region_sql(columns, image_id, region, after, limit, where)
        # Binary results: WKB and the kept texts arrive as bytes, not hex to decode.
        rows = self._conn().execute(sql, params, binary=True).fetchall()
        return FeaturePage(
            [r[0] for r in rows],
            shapely.from_wkb([r[1] for r in rows]) if rows else np.empty(0, dtype=object),
            [r[2] for r in rows],
            [r[3] for r in rows] if cached is not None else None,
        )

    def query_bounds(self, image_id: str, region: Region) -> FeaturePage:
        x0, y0, x1, y1, _, _ = region.bounds
        rows = (
            self._conn()
            .execute(
                "SELECT id, ST_AsBinary(geom), props FROM annotations "
                "WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s) AND image_id = %s ORDER BY id",
                (x0, y0, x1, y1, image_id),
            )
            .fetchall()
        )
        geoms = shapely.from_wkb([r[1] for r in rows]) if rows else np.empty(0, dtype=object)
        return FeaturePage([r[0] for r in rows], geoms, [r[2] for r in rows])

    def count(self, image_id: str) -> int:
        row = (
            self._conn()
            .execute("SELECT count(*) FROM annotations WHERE image_id = %s", (image_id,))
            .fetchone()
        )
        assert row is not None
        return int(row[0])

    # --- history -------------------------------------------------------------------------

    def history(self, aid: int) -> list[Change]:
        rows = (
            self._conn()
            .execute(
                f"SELECT {CHANGE_COLUMNS} FROM changes WHERE annotation_id = %s ORDER BY id",
                (aid,),
            )
            .fetchall()
        )
        if not rows:
            raise NotFound(f"no annotation {aid}")
        return [make_change(r) for r in rows]

    def get_change(self, change_id: int) -> Change:
        row = (
            self._conn()
            .execute(f"SELECT {CHANGE_COLUMNS} FROM changes WHERE id = %s", (change_id,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no change {change_id}")
        return make_change(row)

    def changes_after(self, image_id: str, after: int, limit: int = 1000) -> list[ImageChange]:
        rows = (
            self._conn()
            .execute(
                'SELECT id, annotation_id, action, "user", at, version FROM changes '
                "WHERE image_id = %s AND id > %s ORDER BY id LIMIT %s",
                (image_id, after, limit),
            )
            .fetchall()
        )
        return [image_change(r) for r in rows]

    def last_change(self, image_id: str) -> int:
        row = (
            self._conn()
            .execute("SELECT max(id) FROM changes WHERE image_id = %s", (image_id,))
            .fetchone()
        )
        return int(row[0] or 0) if row is not None else 0

    def undo(self, change_id: int, user: str) -> Annotation | None:
        at = now()
        with self._write() as conn:
            row = conn.execute(
                "SELECT annotation_id FROM changes WHERE id = %s", (change_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no change {change_id}")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (int(row[0]),))
            change = make_change(
                conn.execute(
                    f"SELECT {CHANGE_COLUMNS} FROM changes WHERE id = %s", (change_id,)
                ).fetchone()
                or ()
            )
            latest = conn.execute(
                "SELECT max(id) FROM changes WHERE annotation_id = %s", (change.annotation_id,)
            ).fetchone()
            if latest is None or latest[0] != change.id:
                raise Conflict(
                    f"change {change.id} is not the latest change of annotation "
                    f"{change.annotation_id}: undo the later changes first"
                )
            cur_row = conn.execute(
                f"SELECT {SELECT_COLUMNS} FROM annotations WHERE id = %s",
                (change.annotation_id,),
            ).fetchone()
            current = decode_rows([cur_row])[0] if cur_row else None
            before = change.before
            result: Annotation | None
            record: str | None
            if before is None:
                assert current is not None
                conn.execute("DELETE FROM annotations WHERE id = %s", (current.id,))
                record, version, result = annotation_to_record(current), 0, None
            elif current is None:
                self._insert(
                    conn,
                    before.image_id,
                    before.project,
                    [before.content],
                    user,
                    at,
                    ids=[before.id],
                    meta=(before.author, before.created_at, before.version + 1),
                )
                result = Annotation(
                    before.id,
                    before.image_id,
                    before.project,
                    before.content,
                    before.author,
                    before.created_at,
                    user,
                    at,
                    before.version + 1,
                )
                record, version = None, result.version
            else:
                result = self._replace(conn, current, before.content, user, at)
                record, version = annotation_to_record(current), result.version
            self._log(
                conn,
                [
                    (
                        change.annotation_id,
                        change.image_id,
                        change.project,
                        Action.undo.value,
                        user,
                        at,
                        version,
                        record,
                        change.id,
                    )
                ],
            )
        return result

    # --- snapshots -----------------------------------------------------------------------

    def create_snapshot(
        self, project: str, name: str, user: str, description: str = ""
    ) -> Snapshot:
        check_project_name(name)
        at = now()
        with self._write() as conn:
            self._project(conn, project)
            row = conn.execute(
                "INSERT INTO snapshots (project, name, created_by, created_at, count, "
                "description) VALUES (%s, %s, %s, %s, 0, %s) ON CONFLICT DO NOTHING RETURNING id",
                (project, name, user, at, description),
            ).fetchone()
            if row is None:
                raise Conflict(f"snapshot {name!r} exists already: snapshots never change")
            sid = int(row[0])
            cur = conn.execute(
                f"INSERT INTO snapshot_annotations (snapshot_id, {ANNOTATION_COLUMNS}) "
                f"SELECT %s, {ANNOTATION_COLUMNS} FROM annotations WHERE project = %s",
                (sid, project),
            )
            n = cur.rowcount
            conn.execute("UPDATE snapshots SET count = %s WHERE id = %s", (n, sid))
        return Snapshot(project, name, user, at, n, description)

    def list_snapshots(self, project: str) -> list[Snapshot]:
        self.get_project(project)
        rows = (
            self._conn()
            .execute(
                f"SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE project = %s ORDER BY id",
                (project,),
            )
            .fetchall()
        )
        return [Snapshot(r[0], r[1], r[2], r[3], int(r[4]), r[5]) for r in rows]

    def snapshot_annotations(
        self, project: str, name: str, after: int = 0, limit: int = 1000
    ) -> list[Annotation]:
        check_page(after, limit)
        conn = self._conn()
        row = conn.execute(
            "SELECT id FROM snapshots WHERE project = %s AND name = %s", (project, name)
        ).fetchone()
        if row is None:
            raise NotFound(f"no snapshot {name!r} in project {project!r}")
        rows = conn.execute(
            f"SELECT {SELECT_COLUMNS} FROM snapshot_annotations WHERE snapshot_id = %s "
            "AND id > %s ORDER BY id LIMIT %s",
            (row[0], after, limit),
        ).fetchall()
        return decode_rows(rows)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
