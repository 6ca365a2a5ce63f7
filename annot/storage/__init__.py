"""Storage behind one small interface, with SQLite (default) and PostGIS implementations."""

from __future__ import annotations

from pathlib import Path

from annot.errors import AnnotError
from annot.storage.base import Filter, Region, Store
from annot.storage.sqlite import SqliteStore

__all__ = ["Filter", "Region", "SqliteStore", "Store", "open_store"]


def open_store(url: str) -> Store:
    """Open a store from ``sqlite:///PATH`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url[len("sqlite:///") :]))
    if url.startswith(("postgresql://", "postgres://")):
        from annot.storage.postgis import PostgisStore

        return PostgisStore(url)
    raise AnnotError(f"unknown database URL {url!r}: use sqlite:///PATH or postgresql://...")
