"""The storage interface shared by the SQLite and PostGIS stores."""

from __future__ import annotations

from typing import Protocol

from annot.users import Role, User


class Store(Protocol):
    def add_user(self, name: str, role: Role, token: str | None = None) -> tuple[User, str]:
        """Create a user (or give an existing one a new token); returns it and its token."""
        ...

    def user_for_token(self, token: str) -> User | None: ...

    def count_users(self, role: Role | None = None) -> int: ...

    def close(self) -> None: ...
