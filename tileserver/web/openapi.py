"""The OpenAPI 3.1 document served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from tileserver import __version__


def param(
    name: str, where: str, schema: dict[str, Any], desc: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": desc,
    }


def _chips_params() -> list[dict[str, Any]]:
    """The chips export's options (``annot.export.chips``)."""
    number, integer, text = {"type": "number"}, {"type": "integer"}, {"type": "string"}
    return [
        param(name, "query", schema, "chips: " + what)
        for name, schema, what in (
            ("size", integer, "chip side in pixels (default 512)"),
            ("resolution", number, "chip pixel size in the image's CRS units"),
            ("level", integer, "or the file's pyramid level (0: full resolution)"),
            ("overlap", integer, "pixels shared by neighbouring chips (default 0)"),
            ("mode", {"enum": ["annotated", "grid"]}, "annotated chips only (default) or all"),
            ("chip_format", {"enum": ["geotiff", "png"]}, "chip files (default geotiff)"),
            ("split", text, "train,val,test fractions (default 0.8,0.1,0.1)"),
            ("split_by", {"enum": ["area", "image"]}, "hash key of the split (default area)"),
            ("seed", integer, "seed of the split hash (default 0)"),
            ("cell", number, "split_by=area: cell side in CRS units (default 4 chips)"),
            ("bands", text, "1-based bands to keep (default all)"),
        )
    ]


ERROR = {"$ref": "#/components/schemas/Error"}
INT = {"type": "integer", "minimum": 0}
TILE_QUERY = [
    param(
        "bands",
        "query",
        {"type": "string", "example": "4,3,2"},
        "1-based bands to show: one (grey) or three (RGB)",
    ),
    param(
        "rescale",
        "query",
        {"type": "string", "example": "0,3000"},
        "min,max mapped onto 0..255; repeat once per shown band, or give once for all",
    ),
    param("slice", "query", INT, "volumes: 0-based slice index along the plane's normal"),
    param("plane", "query", {"enum": ["axial", "coronal", "sagittal"]}, "volumes: view plane"),
    param("window", "query", {"type": "number"}, "DICOM window width (VOI LUT)"),
    param("level", "query", {"type": "number"}, "DICOM window centre"),
    param("preset", "query", {"type": "string"}, "named window preset (brain, lung, bone...)"),
]


def _tile_path(summary: str, extra_desc: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "description": extra_desc + " Responses carry ETag and Cache-Control; a matching "
            "If-None-Match answers 304. Parameters that do not apply answer 400.",
            "parameters": [
                param("id", "path", {"type": "string"}, "image id"),
                param("z", "path", INT, "zoom level"),
                param("x", "path", INT, "column of tiles"),
                param("y", "path", INT, "row of tiles"),
                param("format", "path", {"enum": ["png", "jpg", "webp"]}, "output format"),
                *TILE_QUERY,
            ],
            "responses": {
                "200": {
                    "description": "the tile",
                    "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                },
                "304": {"description": "not modified"},
                "400": {
                    "description": "bad parameter",
                    "content": {"application/json": {"schema": ERROR}},
                },
                "401": {
                    "description": "no valid token",
                    "content": {"application/json": {"schema": ERROR}},
                },
                "404": {
                    "description": "unknown image or tile outside the pyramid",
                    "content": {"application/json": {"schema": ERROR}},
                },
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    # Imported here: the annotation handlers import the handler module, which imports this one.
    from tileserver.formats import EXPORTS, IMPORTS
    from tileserver.web.agreement import openapi_paths as agreement_paths
    from tileserver.web.annotations import openapi_paths
    from tileserver.web.checks import openapi_paths as checks_paths
    from tileserver.web.config import openapi_paths as config_paths
    from tileserver.web.live import openapi_paths as live_paths
    from tileserver.web.review import openapi_paths as review_paths
    from tileserver.web.segment import openapi_paths as segment_paths
    from tileserver.web.vector_tiles import openapi_paths as vector_tile_paths

    image_id = param("id", "path", {"type": "string"}, "image id")
    json_ok = {"description": "OK", "content": {"application/json": {}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tessera",
            "version": __version__,
            "description": "Tiles and annotations for very large images.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {
                "get": {"summary": "liveness", "security": [], "responses": {"200": json_ok}}
            },
            "/api/v1/openapi.json": {
                "get": {"summary": "this document", "security": [], "responses": {"200": json_ok}}
            },
            "/api/v1/session": {
                "get": {"summary": "the signed-in user", "responses": {"200": json_ok}}
            },
            "/api/v1/images": {
                "get": {
                    "summary": "list images (admins also see skipped files)",
                    "responses": {"200": json_ok},
                }
            },
            "/api/v1/images/{id}": {
                "get": {
                    "summary": "image metadata: size, pyramid, dtype, bands, georeference or "
                    "patient geometry",
                    "parameters": [image_id],
                    "responses": {"200": json_ok},
                }
            },
            "/api/v1/images/{id}/tilejson.json": {
                "get": {
                    "summary": "TileJSON 3.0 of the native pyramid or of WebMercatorQuad",
                    "parameters": [
                        image_id,
                        param("tms", "query", {"enum": ["native", "WebMercatorQuad"]}, "grid"),
                        param("format", "query", {"enum": ["png", "jpg", "webp"]}, "format"),
                    ],
                    "responses": {"200": json_ok},
                }
            },
            "/api/v1/images/{id}/pixel": {
                "get": {
                    "summary": "the value under a pixel (all bands; HU for CT) and its world "
                    "coordinates (CRS and lon/lat, or patient LPS mm)",
                    "parameters": [
                        image_id,
                        param("col", "query", {"type": "number"}, "pixel column", True),
                        param("row", "query", {"type": "number"}, "pixel row", True),
                        param("slice", "query", INT, "volumes: slice index"),
                        param(
                            "plane",
                            "query",
                            {"enum": ["axial", "coronal", "sagittal"]},
                            "volumes: view plane",
                        ),
                    ],
                    "responses": {"200": json_ok},
                }
            },
            "/api/v1/images/{id}/tiles/{z}/{x}/{y}.{format}": _tile_path(
                "native pixel pyramid tile",
                "z=0 is the coarsest level (whole image in one tile); the highest z is full "
                "resolution; x right, y down; edge tiles are padded (transparent in PNG/WebP).",
            ),
            "/api/v1/images/{id}/tiles/WebMercatorQuad/{z}/{x}/{y}.{format}": _tile_path(
                "OGC WebMercatorQuad tile (georeferenced images)",
                "Pixels outside the image are transparent in PNG/WebP.",
            ),
            "/api/v1/images/{id}/export": {
                "get": {
                    "summary": "export annotations as a file: GeoJSON (RFC 7946 WGS84, or "
                    "crs=image|EPSG:n|pixel), GeoPackage or FlatGeobuf (2D images; the image's "
                    "CRS unless crs=world|EPSG:n|pixel), COCO, DICOM-SEG, a ZIP of PNG masks or "
                    "NIfTI (volumes: a ZIP of image.nii.gz, labels.nii.gz and labels.json, or "
                    "one), or training chips (2D: a ZIP of image chips, index masks, COCO per "
                    "split and a manifest)",
                    "parameters": [
                        image_id,
                        param(
                            "format",
                            "query",
                            {"enum": list(EXPORTS)},
                            "format",
                            True,
                        ),
                        param(
                            "crs",
                            "query",
                            {"type": "string"},
                            "GeoJSON (default world), gpkg, fgb (default image): "
                            "world, image, EPSG:n, pixel",
                        ),
                        param("labels", "query", {"type": "string"}, "labels (and sub-labels)"),
                        param("status", "query", {"type": "string"}, "statuses, comma-separated"),
                        param("segmentation", "query", {"enum": ["polygon", "rle"]}, "COCO"),
                        param("seg_type", "query", {"enum": ["binary", "fractional"]}, "DICOM-SEG"),
                        param(
                            "volume",
                            "query",
                            {"enum": ["both", "image", "labels"]},
                            "NIfTI: a ZIP of both (default), or one .nii.gz",
                        ),
                        *_chips_params(),
                    ],
                    "responses": {"200": {"description": "the file (attachment)"}},
                }
            },
            "/api/v1/images/{id}/import": {
                "post": {
                    "summary": "import GeoJSON (any CRS), GeoPackage or FlatGeobuf (the first "
                    "layer, in its CRS), COCO or DICOM-SEG (volumes: one mask "
                    "per segment per slice, placed by position; the frame of reference must "
                    "match, else 422); all or nothing, with a dry run that lists every rejected "
                    "feature and why (and, for a SEG, what each segment holds)",
                    "parameters": [
                        image_id,
                        param(
                            "format",
                            "query",
                            {"enum": list(IMPORTS)},
                            "format",
                            True,
                        ),
                        param("dry_run", "query", {"type": "boolean"}, "report only"),
                        param("crs", "query", {"type": "string"}, "CRS of the file"),
                        param(
                            "label", "query", {"type": "string"}, "label for unlabelled features"
                        ),
                    ],
                    "responses": {"201": json_ok, "200": json_ok, "422": json_ok},
                }
            },
            **openapi_paths(),
            **config_paths(),
            **vector_tile_paths(),
            **live_paths(),
            **review_paths(),
            **checks_paths(),
            **agreement_paths(),
            **segment_paths(),
        },
    }
