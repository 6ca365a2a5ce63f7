"""Errors raised by the annotation library."""


class AnnotError(Exception):
    """Base class of every annotation library error."""


class CoordinateError(AnnotError):
    """A coordinate could not be transformed (outside the CRS's area, NaN, wrong dimension)."""


class NotFound(AnnotError):
    """No annotation, project, label, change or snapshot with that name or id."""


class PermissionDenied(AnnotError):
    """The user's role does not allow this action."""


class VersionConflict(AnnotError):
    """Someone else changed the annotation first (a failed If-Match)."""


class Conflict(AnnotError):
    """The request conflicts with the current state (a name already taken, a later change)."""


class BadRequest(AnnotError):
    """A malformed request: bad JSON, a missing field, an unknown coordinate system."""


class TooLarge(AnnotError):
    """A body, a geometry or a batch is larger than the limits allow."""


class ValidationError(AnnotError):
    """Content that cannot be stored; ``details`` go into the JSON error body."""

    def __init__(self, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, object] = details or {}


class InvalidGeometry(ValidationError):
    """A geometry that is not valid: ``details`` carry the reason, ``repair`` a valid shape."""

    def __init__(
        self, message: str, details: dict[str, object] | None = None, repair: object = None
    ) -> None:
        super().__init__(message, details)
        self.repair = repair  # a shapely geometry in pixel coordinates, or None


class UnknownLabel(ValidationError):
    """A label that a locked taxonomy does not have, or a geometry type the label forbids."""
