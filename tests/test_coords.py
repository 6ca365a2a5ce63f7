"""GeoTIFF pixel <-> CRS <-> WGS84 transforms of annot.coords against rasterio and pyproj."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from annot.coords import GeoReference
from annot.errors import CoordinateError

GEO_FILES = [
    "RGB.byte.tif",
    "cog.tif",
    "cogeo.tif",
    "dem.tif",
    "cog_scale_epsg4326.tif",
    "sample_geotiff.tif",
    "201404_13SED190110_201404_0x1500m_CL_1_mask.tif",
]


def georef_of(path: Path) -> GeoReference:
    with rasterio.open(path) as ds:
        t = ds.transform
        return GeoReference((t.a, t.b, t.c, t.d, t.e, t.f), ds.crs.to_wkt())


@pytest.mark.parametrize("name", GEO_FILES)
def test_pixel_centres_agree_with_rasterio(geo_dir: Path, name: str) -> None:
    g = georef_of(geo_dir / name)
    with rasterio.open(geo_dir / name) as ds:
        rows = np.array([0, 0, ds.height - 1, ds.height // 2])
        cols = np.array([0, ds.width - 1, ds.width - 1, ds.width // 3])
        xs, ys = rasterio.transform.xy(ds.transform, rows, cols, offset="center")
        # Contract: the centre of the first pixel is (0.5, 0.5).
        gx, gy = g.pixel_to_crs(cols + 0.5, rows + 0.5)
        np.testing.assert_allclose(gx, xs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(gy, ys, rtol=0, atol=1e-6)
        lon, lat = g.pixel_to_wgs84(cols + 0.5, rows + 0.5)
        t = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
        elon, elat = t.transform(np.asarray(xs), np.asarray(ys))
        np.testing.assert_allclose(lon, elon, atol=1e-12)
        np.testing.assert_allclose(lat, elat, atol=1e-12)


@pytest.mark.parametrize("name", GEO_FILES)
def test_round_trip_pixel_wgs84_pixel(geo_dir: Path, name: str) -> None:
    g = georef_of(geo_dir / name)
    rng = np.random.default_rng(1)
    cols, rows = rng.uniform(0, 700, 200), rng.uniform(0, 700, 200)
    back_c, back_r = g.wgs84_to_pixel(*g.pixel_to_wgs84(cols, rows))
    np.testing.assert_allclose(back_c, cols, atol=1e-6)
    np.testing.assert_allclose(back_r, rows, atol=1e-6)
    for epsg in ("EPSG:3857", "EPSG:4326"):
        c2, r2 = g.pixel_from(epsg, *g.pixel_to(epsg, cols, rows))
        np.testing.assert_allclose(c2, cols, atol=1e-6)
        np.testing.assert_allclose(r2, rows, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    a=st.floats(0.01, 1000),
    e=st.floats(-1000, -0.01),
    b=st.floats(-5, 5),
    d=st.floats(-5, 5),
    c=st.floats(-1e6, 1e6),
    f=st.floats(-1e7, 1e7),
    col=st.floats(-1e4, 1e5),
    row=st.floats(-1e4, 1e5),
)
def test_affine_round_trip_property(a, e, b, d, c, f, col, row) -> None:
    if abs(a * e - b * d) < 1e-3:
        return
    g = GeoReference((a, b, c, d, e, f), "EPSG:32618")
    x, y = g.pixel_to_crs(col, row)
    c2, r2 = g.crs_to_pixel(x, y)
    scale = max(1.0, abs(x) / abs(a), abs(y) / abs(e))
    assert abs(c2 - col) <= 1e-9 * scale and abs(r2 - row) <= 1e-9 * scale


def test_singular_transform_and_untransformable_points_raise() -> None:
    with pytest.raises(CoordinateError):
        GeoReference((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), "EPSG:4326")
    g = GeoReference((1.0, 0.0, 0.0, 0.0, -1.0, 0.0), "EPSG:4326")
    with pytest.raises(CoordinateError):
        g.pixel_to("EPSG:3857", [0.0], [-100.0])  # latitude 100 degrees


def test_annot_imports_nothing_from_the_web_or_the_tile_server() -> None:
    root = Path(__file__).resolve().parent.parent / "annot"
    banned = {"tornado", "tileserver", "requests", "http"}
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
