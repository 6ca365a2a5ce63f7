"""PostgreSQL/PostGIS for the tests: start the local server if needed, make fresh databases.

The server is the Debian cluster on 127.0.0.1:5432 (trust auth, user postgres). If it is not
running, ``ensure_server`` starts it with ``pg_ctlcluster``; tests never skip PostGIS.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_TABLES = (
    "snapshot_annotations, snapshots, changes, annotations, members, labels, projects, users"
)


def ensure_server() -> None:
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
        return
    except psycopg.OperationalError:
        pass
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"],
        check=False,
        capture_output=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def create_database() -> tuple[str, str]:
    """A fresh database with PostGIS; returns its name and URL."""
    ensure_server()
    name = f"tessera_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    return name, url


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('annotations')").fetchone()
        if exists and exists[0] is not None:
            conn.execute(f"TRUNCATE {PG_TABLES} RESTART IDENTITY CASCADE")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostGIS database for the session (dropped after); tests truncate it."""
    name, url = create_database()
    yield url
    drop_database(name)
