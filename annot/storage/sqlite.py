"""SQLite store (the embedded default): WAL mode, one connection per thread."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from annot.users import Role, User, check_user_name, hash_token, new_token

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('annotator', 'reviewer', 'admin')),
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def add_user(self, name: str, role: Role, token: str | None = None) -> tuple[User, str]:
        check_user_name(name)
        token = token or new_token()
        conn = self._conn()
        with conn:
            conn.execute(
                "INSERT INTO users (name, role, token_hash) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET role = excluded.role, "
                "token_hash = excluded.token_hash",
                (name, role.value, hash_token(token)),
            )
        row = conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
        return User(int(row[0]), name, role), token

    def user_for_token(self, token: str) -> User | None:
        row = (
            self._conn()
            .execute("SELECT id, name, role FROM users WHERE token_hash = ?", (hash_token(token),))
            .fetchone()
        )
        return None if row is None else User(int(row[0]), str(row[1]), Role(row[2]))

    def count_users(self, role: Role | None = None) -> int:
        if role is None:
            row = self._conn().execute("SELECT count(*) FROM users").fetchone()
        else:
            row = (
                self._conn()
                .execute("SELECT count(*) FROM users WHERE role = ?", (role.value,))
                .fetchone()
            )
        return int(row[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
