"""Errors raised by the annotation library."""


class AnnotError(Exception):
    """Base class of every annotation library error."""


class CoordinateError(AnnotError):
    """A coordinate could not be transformed (outside the CRS's area, NaN, wrong dimension)."""
