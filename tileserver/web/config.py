"""``GET /api/v1/config``: what the viewer needs to know about this server's set-up.

Today that is the basemap given by ``tessera serve --basemap URL``: an XYZ tile URL template
(``https://host/{z}/{x}/{y}.png``) that the viewer draws under georeferenced images in its
WebMercator mode. Without the flag the answer's ``basemap`` is null and the viewer needs no
network beyond this server. Register with ``routes.extend(config_routes(deps))`` in ``make_app``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import tornado.routing
import tornado.web

from tileserver.web.handlers import BaseHandler

XYZ_PLACEHOLDERS = ("{z}", "{x}", "{y}")
_Y_FLIPPED = re.compile(r"\{-y\}")


def check_basemap_url(url: str) -> str:
    """The URL if it is an XYZ template the viewer can use, else ValueError saying why.

    An absolute http(s) URL or a path on this server, with ``{z}``, ``{x}`` and ``{y}`` (or
    ``{-y}``, TMS rows counted from the bottom, which OpenLayers also understands).
    """
    text = url.strip()
    if not text:
        raise ValueError("the basemap URL is empty")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") and not (parts.scheme == "" and text.startswith("/")):
        raise ValueError(f"the basemap URL must start with http://, https:// or / (got {text!r})")
    if parts.scheme and not parts.netloc:
        raise ValueError(f"the basemap URL has no host: {text!r}")
    normalized = _Y_FLIPPED.sub("{y}", text)
    missing = [p for p in XYZ_PLACEHOLDERS if p not in normalized]
    if missing:
        raise ValueError(
            f"the basemap URL needs the placeholders {{z}}, {{x}} and {{y}}; "
            f"{', '.join(missing)} missing in {text!r}"
        )
    return text


class ConfigHandler(BaseHandler):
    def get(self) -> None:
        basemap = self.ctx.basemap_url
        self.write_json({"basemap": {"url": basemap} if basemap else None})


def config_routes(deps: dict[str, Any]) -> list[tornado.routing.URLSpec]:
    return [tornado.web.url(r"/api/v1/config", ConfigHandler, deps, name="config")]


def openapi_paths() -> dict[str, Any]:
    """OpenAPI path item of the route (for ``tileserver.web.openapi``)."""
    return {
        "/api/v1/config": {
            "get": {
                "summary": "viewer set-up: the basemap XYZ URL template given by "
                "`tessera serve --basemap URL`, or null",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {
                                "example": {
                                    "basemap": {"url": "https://tiles.example/{z}/{x}/{y}.png"}
                                }
                            }
                        },
                    }
                },
            }
        }
    }
