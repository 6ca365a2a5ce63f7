"""Errors raised by the tile server; `web/errors.py` maps each class to one HTTP status."""


class TileServerError(Exception):
    """Base class of every tile server error."""


class ImageNotFound(TileServerError):
    """No image with this id is registered."""


class TileOutOfBounds(TileServerError):
    """The requested tile lies outside the image's pyramid."""


class BadParameter(TileServerError):
    """A request parameter is malformed, out of range or does not apply to this image."""


class UnsupportedFile(TileServerError):
    """The file is not in an allowed format, or is corrupt or truncated."""


class ImageReadError(TileServerError):
    """Pixel data of a registered image could not be read (the file changed or is damaged)."""
