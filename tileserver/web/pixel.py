"""``GET /api/v1/images/{id}/pixel?col=&row=&slice=&plane=``: the raw value under a pixel.

Answers the modality value (Hounsfield units for CT) of the pixel containing ``(col, row)`` (pixel
coordinates: the first pixel's centre is (0.5, 0.5)) on a slice of a plane, and its patient
coordinates (LPS mm) when the image has a geometry; for the viewer's cursor read-out and tests.
Register with ``routes.extend(pixel_routes(deps))`` in ``make_app``.
"""

from __future__ import annotations

from typing import Any

import tornado.routing
import tornado.web
from tornado.ioloop import IOLoop

from tileserver.errors import BadParameter
from tileserver.web.handlers import BaseHandler
from tileserver.web.params import PLANES, _int, _number, _one

PIXEL_PARAMS = {"col", "row", "slice", "plane"}


class PixelHandler(BaseHandler):
    async def get(self, image_id: str) -> None:
        source = self.image_source(image_id)
        value_at = getattr(source, "value_at", None)
        if value_at is None:
            raise BadParameter("pixel values are not available for this image")
        args = self.request.query_arguments
        unknown = sorted(k for k in args if k not in PIXEL_PARAMS and not k.startswith("_"))
        if unknown:
            raise BadParameter(
                f"unknown parameter(s) {', '.join(unknown)}; give col, row, slice, plane"
            )
        col_text, row_text = _one(args, "col"), _one(args, "row")
        if col_text is None or row_text is None:
            raise BadParameter("give col and row (pixel coordinates)")
        col, row = _number("col", col_text), _number("row", row_text)
        slice_text = _one(args, "slice")
        slice_ = _int("slice", slice_text) if slice_text is not None else None
        plane = _one(args, "plane")
        if plane is not None and plane not in PLANES:
            raise BadParameter(f"plane must be one of {', '.join(sorted(PLANES))}")
        for name, value in (("slice", slice_), ("plane", plane)):
            if value is not None and name not in source.supported_options:
                raise BadParameter(f"{name} does not apply to this image")
        result: dict[str, Any] = await IOLoop.current().run_in_executor(
            self.ctx.executor, value_at, col, row, slice_, plane
        )
        self.write_json(result)


def pixel_routes(deps: dict[str, Any]) -> list[tornado.routing.URLSpec]:
    return [
        tornado.web.url(r"/api/v1/images/([^/]+)/pixel", PixelHandler, deps, name="pixel"),
    ]
