"""Deterministic demo data: a synthetic satellite scene as a georeferenced COG, and a synthetic
CT phantom as a DICOM series (``ct_phantom/``, see ``tileserver.phantom``).

The scene has fields, a river, roads and buildings (rectangles) so that it is worth annotating,
and the same generator makes the benchmark's large COG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy
from rasterio.transform import from_origin

DEMO_CRS = "EPSG:32618"  # UTM 18N, as the real Landsat sample
DEMO_ORIGIN = (300_000.0, 2_750_000.0)  # Bahamas, near the Landsat sample


def synthetic_scene(size: int, seed: int = 7, block: int = 512) -> npt.NDArray[np.uint8]:
    """A (3, size, size) uint8 RGB scene; identical output for identical arguments."""
    rng = np.random.default_rng(seed)
    scene = np.empty((3, size, size), dtype=np.uint8)
    # Low-frequency field pattern: a coarse grid of field colours, upsampled.
    cells = max(2, size // 256)
    palette = np.array(
        [[86, 120, 60], [120, 140, 70], [150, 130, 90], [70, 100, 50], [170, 160, 120]],
        dtype=np.uint8,
    )
    fields = palette[rng.integers(0, len(palette), (cells, cells))]
    cell = -(-size // cells)
    yy = np.arange(size)
    river_centre = size * (0.5 + 0.2 * np.sin(yy / size * 6.0))
    for r0 in range(0, size, block):  # by row blocks: memory stays small for 8192^2
        r1 = min(size, r0 + block)
        rows = np.arange(r0, r1)
        base = fields[(rows // cell)[:, None], (np.arange(size) // cell)[None, :]]
        noise = rng.integers(-12, 13, (r1 - r0, size, 1), dtype=np.int16)
        tile = np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        dist = np.abs(np.arange(size)[None, :] - river_centre[r0:r1, None])
        tile[dist < size * 0.02] = (40, 70, 110)
        road_rows = (rows % (size // 8)) < max(2, size // 1024)
        tile[road_rows, :] = (200, 200, 195)
        road_cols = (np.arange(size) % (size // 8)) < max(2, size // 1024)
        tile[:, road_cols] = (200, 200, 195)
        scene[:, r0:r1] = np.moveaxis(tile, -1, 0)
    # Buildings: bright rectangles with a darker outline.
    n_buildings = (size // 64) ** 2 // 4
    xs = rng.integers(0, size - 40, n_buildings)
    ys = rng.integers(0, size - 40, n_buildings)
    ws = rng.integers(8, 40, n_buildings)
    hs = rng.integers(8, 40, n_buildings)
    roofs = rng.integers(150, 250, (n_buildings, 3))
    for x, y, w, h, roof in zip(xs, ys, ws, hs, roofs, strict=True):
        scene[:, y : y + h, x : x + w] = 60
        scene[:, y + 1 : y + h - 1, x + 1 : x + w - 1] = roof[:, None, None]
    return scene


def write_cog(
    path: Path,
    size: int = 4096,
    resolution: float = 0.5,
    seed: int = 7,
    block: int = 512,
    compress: str = "DEFLATE",
) -> Path:
    """Write the synthetic scene as a COG (internal ``block`` tiles, overviews down to 256)."""
    data = synthetic_scene(size, seed)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": DEMO_CRS,
        "transform": from_origin(*DEMO_ORIGIN, resolution, resolution),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data)
            ds.colorinterp = [
                rasterio.enums.ColorInterp.red,
                rasterio.enums.ColorInterp.green,
                rasterio.enums.ColorInterp.blue,
            ]
        with mem.open() as src:
            rio_copy(
                src,
                str(path),
                driver="COG",
                BLOCKSIZE=block,
                COMPRESS=compress,
                OVERVIEWS="AUTO",
                OVERVIEW_RESAMPLING="AVERAGE",
                NUM_THREADS="ALL_CPUS",
            )
    return path


def make_demo(folder: Path) -> Path:
    """Create the demo data set in ``folder`` (kept if already there); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    scene = folder / "satellite" / "synthetic_scene.tif"
    if not scene.exists():
        write_cog(scene)
    phantom = folder / "ct_phantom"
    if not (phantom / "CT0001.dcm").exists():
        from tileserver.phantom import DEMO_PHANTOM, write_ct_phantom

        write_ct_phantom(phantom, DEMO_PHANTOM)
    return folder
