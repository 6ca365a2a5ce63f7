"""Projects, their label taxonomies and their members' roles.

Labels are paths (``vehicle/car/sedan``): the parent of a label is its path without the last
part, and every ancestor of a label is itself a label. A project's taxonomy is *open* (a new
label is added on first use, with its ancestors) until an admin *locks* it; a locked taxonomy
rejects unknown labels. A label may restrict the geometry types it can be drawn as.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from annot.errors import BadRequest, UnknownLabel
from annot.model import Kind
from annot.users import Role, User

DEFAULT_PROJECT = "default"
PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LABEL_PART = re.compile(r"^[^/\x00-\x1f]{1,100}$")
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
PALETTE: tuple[str, ...] = (
    *("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0"),
    *("#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000"),
)
ROLE_RANK = {Role.annotator: 1, Role.reviewer: 2, Role.admin: 3}


@dataclass(frozen=True)
class Concept:
    """A coded concept (DICOM's code sequence): coding scheme, code value and meaning."""

    scheme: str
    value: str
    meaning: str

    def to_json(self) -> dict[str, str]:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}

    @classmethod
    def from_json(cls, data: Any) -> Concept:
        try:
            return cls(str(data["scheme"]), str(data["value"]), str(data["meaning"]))
        except (KeyError, TypeError) as exc:
            raise BadRequest("a code is {'scheme': ..., 'value': ..., 'meaning': ...}") from exc


@dataclass(frozen=True)
class Label:
    name: str  # a path: "vehicle/car/sedan"
    color: str
    code: Concept | None = None
    kinds: frozenset[Kind] | None = None  # None: any geometry type
    description: str = ""

    @property
    def parent(self) -> str | None:
        return self.name.rsplit("/", 1)[0] if "/" in self.name else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parent": self.parent,
            "color": self.color,
            "code": self.code.to_json() if self.code else None,
            "kinds": sorted(k.value for k in self.kinds) if self.kinds is not None else None,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], default_color: str = PALETTE[0]) -> Label:
        if not isinstance(data, Mapping) or "name" not in data:
            raise BadRequest("a label is an object with at least a 'name'")
        name = check_label_name(str(data["name"]))
        color = str(data.get("color") or default_color)
        if not COLOR.match(color):
            raise BadRequest(f"colour {color!r} must be '#rrggbb'")
        kinds = data.get("kinds")
        try:
            kind_set = None if kinds is None else frozenset(Kind(k) for k in kinds)
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"kinds must be a list of {[k.value for k in Kind]}") from exc
        code = Concept.from_json(data["code"]) if data.get("code") else None
        return cls(name, color, code, kind_set, str(data.get("description", "")))


def check_label_name(name: str) -> str:
    parts = name.split("/")
    if not name or not all(LABEL_PART.match(p) and p.strip() == p for p in parts):
        raise UnknownLabel(
            f"invalid label {name[:120]!r}: use 1-100 characters per '/'-separated part, "
            "without control characters or surrounding spaces",
            {"label": name[:120]},
        )
    return name


def ancestors(name: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def auto_color(name: str) -> str:
    return PALETTE[sum(name.encode()) % len(PALETTE)]


@dataclass(frozen=True)
class Project:
    name: str
    instructions: str = ""  # markdown
    locked: bool = False
    labels: Mapping[str, Label] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instructions": self.instructions,
            "locked": self.locked,
            "labels": [self.labels[k].to_json() for k in sorted(self.labels)],
        }

    def resolve(self, label: str, kind: Kind) -> list[Label]:
        """Check ``label`` for ``kind``; returns the labels an open taxonomy must add.

        Raises ``UnknownLabel`` for an unknown label in a locked taxonomy, or a geometry type
        the label does not allow.
        """
        check_label_name(label)
        known = self.labels.get(label)
        if known is not None:
            if known.kinds is not None and kind not in known.kinds:
                allowed = ", ".join(sorted(k.value for k in known.kinds))
                raise UnknownLabel(
                    f"label {label!r} cannot be a {kind.value}: it allows {allowed}",
                    {"label": label, "allowed_kinds": sorted(k.value for k in known.kinds)},
                )
            return []
        if self.locked:
            raise UnknownLabel(
                f"label {label!r} is not in the locked taxonomy of project {self.name!r}",
                {"label": label, "known_labels": sorted(self.labels)[:200]},
            )
        return [Label(n, auto_color(n)) for n in [*ancestors(label), label] if n not in self.labels]


def check_project_name(name: str) -> str:
    if not PROJECT_NAME.match(name):
        raise BadRequest(
            f"invalid project name {name[:80]!r}: 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


def effective_role(user: User, project: str, membership: Role | None) -> Role | None:
    """The role ``user`` has in ``project``: global admins are admins everywhere; an explicit
    membership counts otherwise; everyone is a member of ``default`` with their global role."""
    if user.role is Role.admin:
        return Role.admin
    if membership is not None:
        return membership
    if project == DEFAULT_PROJECT:
        return user.role
    return None


def at_least(role: Role | None, needed: Role) -> bool:
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[needed]
