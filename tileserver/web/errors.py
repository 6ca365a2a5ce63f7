"""One table maps library errors to HTTP statuses; a 500 is always a bug."""

from __future__ import annotations

from annot.errors import (
    AnnotError,
    BadRequest,
    Conflict,
    InvalidGeometry,
    NotFound,
    PermissionDenied,
    TooLarge,
    UnknownLabel,
    VersionConflict,
)
from tileserver.errors import (
    BadParameter,
    ImageNotFound,
    ImageReadError,
    TileOutOfBounds,
    UnsupportedFile,
)

# (status, error code) per exception class; the first matching class in order wins.
ERROR_STATUS: list[tuple[type[Exception], int, str]] = [
    (ImageNotFound, 404, "not_found"),
    (TileOutOfBounds, 404, "tile_out_of_bounds"),
    (BadParameter, 400, "bad_parameter"),
    (UnsupportedFile, 422, "unsupported_file"),
    (ImageReadError, 422, "image_unreadable"),
    (NotFound, 404, "not_found"),
    (PermissionDenied, 403, "forbidden"),
    (VersionConflict, 412, "precondition_failed"),
    (Conflict, 409, "conflict"),
    (BadRequest, 400, "bad_request"),
    (TooLarge, 413, "too_large"),
    (InvalidGeometry, 422, "invalid_geometry"),
    (UnknownLabel, 422, "unknown_label"),
    (AnnotError, 422, "invalid"),
]


def status_for(exc: BaseException) -> tuple[int, str] | None:
    for cls, status, code in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, code
    return None
