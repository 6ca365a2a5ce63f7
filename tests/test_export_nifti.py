"""NIfTI export of the real CT series: geometry against an independent IPP/IOP/PixelSpacing
computation, stored values with the modality LUT, and label voxels against the drawn shapes."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import requests
import shapely

from annot.export.coco import rasterise
from annot.model import Mask
from tileserver.cli import main as cli_main

SERIES = "ct_lung_pet_ct_dx_A0002_B40f"
POLY_A = [[100.5, 120.25], [300.0, 110.0], [280.75, 320.5], [120.0, 300.0], [100.5, 120.25]]
POLY_B = [[250.0, 100.0], [330.0, 100.0], [330.0, 180.0], [250.0, 180.0], [250.0, 100.0]]


def _post(server: Any, path: str, body: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {server.token}"}
    return requests.post(server.url + path, json=body, headers=headers, timeout=60)


def _series(folder: Path) -> list[pydicom.Dataset]:
    """The CT files sorted along the slice normal, read with pydicom alone."""
    files = [pydicom.dcmread(p) for p in folder.iterdir()]
    iop = np.asarray(files[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(files, key=lambda ds: float(np.asarray(ds.ImagePositionPatient, float) @ normal))


def _ras(ds: pydicom.Dataset, i: int, j: int) -> np.ndarray:
    """RAS mm of the centre of column i, row j of a slice, from its own DICOM attributes."""
    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    lps = ipp + i * dc * iop[:3] + j * dr * iop[3:]
    return lps * np.array([-1.0, -1.0, 1.0])


def _nifti(data: bytes) -> Any:
    """A .nii.gz read by nibabel from memory."""
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def test_nifti_export(serve_dirs: Any, tmp_path: Path, shared_data: Path) -> None:
    folder = tmp_path / "images"
    shutil.copytree(shared_data / "dicom" / SERIES, folder / SERIES)
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    url = f"/api/v1/images/{image_id}/annotations?crs=pixel"
    code = {"scheme": "SCT", "value": "27925004", "meaning": "Nodule"}
    assert _post(server, "/api/v1/projects/default/labels", {"name": "nodule", "code": code}).ok
    shapes = [("nodule", 3, POLY_A), ("nodule", 29, POLY_B), ("vessel", 3, POLY_B)]
    for label, k, poly in shapes:
        feat = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [poly]},
                "properties": {"label": label, "slice": k}}  # fmt: skip
        assert _post(server, url, feat).status_code == 201
    arr = np.zeros((20, 30), dtype=bool)
    arr[2:18, 4:26] = True
    mask = Mask.from_array(arr, col=40, row=400)
    feat = {"type": "Feature", "geometry": None,
            "properties": {"label": "vessel", "slice": 0, "mask": mask.to_json()}}  # fmt: skip
    assert _post(server, url, feat).status_code == 201
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10.5, 10.5]},
             "properties": {"label": "vessel", "slice": 5}}  # fmt: skip
    assert _post(server, url, point).status_code == 201

    r = server.get(f"/api/v1/images/{image_id}/export?format=nifti")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["Content-Disposition"].endswith('.nifti.zip"')
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert sorted(zf.namelist()) == ["image.nii.gz", "labels.json", "labels.nii.gz"]
        image = _nifti(zf.read("image.nii.gz"))
        labels = _nifti(zf.read("labels.nii.gz"))
        meta = json.loads(zf.read("labels.json"))

    series = _series(folder / SERIES)
    n = len(series)
    assert image.shape == labels.shape == (512, 512, n)
    assert np.array_equal(image.affine, labels.affine)
    assert image.header["sform_code"] == image.header["qform_code"] == 1
    assert np.allclose(image.header.get_qform(), image.affine, atol=1e-4)
    # voxel centres: corners of the first and last slices and a middle voxel
    for i, j, k in [(0, 0, 0), (511, 0, 0), (0, 511, 0), (511, 511, n - 1), (0, 0, n - 1),
                    (256, 137, n // 2), (17, 400, 7)]:  # fmt: skip
        ras = image.affine @ np.array([i, j, k, 1.0])
        assert np.allclose(ras[:3], _ras(series[k], i, j), atol=1e-4), (i, j, k)

    # image values: the stored values, and physical values through scl_slope/scl_inter
    slope, inter = image.dataobj.slope, image.dataobj.inter  # nibabel moves scl_* there
    assert (slope, inter) == (float(series[0].RescaleSlope), float(series[0].RescaleIntercept))
    assert image.get_data_dtype() == series[0].pixel_array.dtype
    for k in (0, 13, n - 1):
        stored = np.asarray(image.dataobj.get_unscaled()[:, :, k]).T
        assert np.array_equal(stored, series[k].pixel_array)
        hu = pydicom.pixels.apply_modality_lut(series[k].pixel_array, series[k])
        assert np.allclose(np.asarray(image.dataobj[:, :, k]).T, hu)

    # labels: taxonomy order (by name), the rasterised shapes, later classes over earlier ones
    classes = [c["label"] for c in meta["classes"]]
    assert classes == [None, "nodule", "vessel"]
    assert meta["classes"][1]["code"] == code
    assert meta["skipped"] == 1  # the point
    header_map = json.loads(labels.header.extensions[0].get_content())
    assert [c["label"] for c in header_map["classes"]] == classes
    assert labels.get_data_dtype() == np.uint8
    volume = np.asarray(labels.dataobj)
    expected = np.zeros((n, 512, 512), dtype=np.uint8)
    expected[3][rasterise(shapely.Polygon(POLY_A), 512, 512)] = 1
    expected[3][rasterise(shapely.Polygon(POLY_B), 512, 512)] = 2
    expected[29][rasterise(shapely.Polygon(POLY_B), 512, 512)] = 1
    expected[0, 400:420, 40:70] = 2 * arr
    assert np.array_equal(volume.transpose(2, 1, 0), expected)
    overlap = rasterise(shapely.Polygon(POLY_A), 512, 512) & rasterise(
        shapely.Polygon(POLY_B), 512, 512
    )
    assert meta["overlapping_voxels"] == int(overlap.sum()) > 0

    # volume=labels / volume=image: one .nii.gz each, the same data
    r = server.get(f"/api/v1/images/{image_id}/export?format=nifti&volume=labels")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/gzip"
    assert r.headers["Content-Disposition"].endswith('.labels.nii.gz"')
    alone = _nifti(r.content)
    assert np.array_equal(np.asarray(alone.dataobj), volume)
    assert np.array_equal(alone.affine, image.affine)
    r = server.get(f"/api/v1/images/{image_id}/export?format=nifti&volume=image")
    assert r.status_code == 200
    assert np.array_equal(
        np.asarray(_nifti(r.content).dataobj.get_unscaled())[:, :, 5].T, series[5].pixel_array
    )
    r = server.get(f"/api/v1/images/{image_id}/export?format=nifti&volume=mesh")
    assert r.status_code == 400 and "volume" in r.json()["message"]
    r = server.get(f"/api/v1/images/{image_id}/export?format=nifti&seg_type=binary")
    assert r.status_code == 400

    # the CLI writes the label volume alone
    out = tmp_path / "labels.nii.gz"
    db = f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}"
    args = [
        "export",
        "--image",
        image_id,
        "--format",
        "nifti",
        "--volume",
        "labels",
        "-o",
        str(out),
    ]
    assert cli_main([*args, "--data", str(folder), "--db", db]) == 0
    assert np.array_equal(np.asarray(nib.load(out).dataobj), volume)


def test_nifti_needs_a_volume(serve_dirs: Any, geo_dir: Path) -> None:
    server = serve_dirs(geo_dir)
    image_id = server.image_id("dem.tif")
    r = server.get(f"/api/v1/images/{image_id}/export?format=nifti")
    assert r.status_code == 400 and "volume" in r.json()["message"]


def test_nifti_of_multiframe_equals_its_series(
    serve_dirs: Any, tmp_path: Path, shared_data: Path
) -> None:
    """The enhanced multi-frame copy of a 3-file series exports the same voxels and affine."""
    folder = tmp_path / "images"
    for name in ("ct_dcmqi_23x38x3", "ct_dcmqi_23x38x3_legacy_enhanced"):
        shutil.copytree(shared_data / "dicom" / name, folder / name)
    server = serve_dirs(folder)
    images = []
    assert len(server.catalog.images) == 2
    for image_id in server.catalog.images:
        r = server.get(f"/api/v1/images/{image_id}/export?format=nifti&volume=image")
        assert r.status_code == 200, r.text
        images.append(_nifti(r.content))
    first, second = images  # the series and its multi-frame copy, in catalog order
    assert first.shape == second.shape == (23, 38, 3)
    assert np.allclose(first.affine, second.affine, atol=1e-4)
    assert np.array_equal(np.asarray(first.dataobj), np.asarray(second.dataobj))
    series = _series(folder / "ct_dcmqi_23x38x3")
    for img in images:
        for i, j, k in [(0, 0, 0), (22, 37, 2), (11, 20, 1)]:
            assert np.allclose((img.affine @ [i, j, k, 1.0])[:3], _ras(series[k], i, j), atol=1e-4)
        hu = pydicom.pixels.apply_modality_lut(series[1].pixel_array, series[1])
        assert np.allclose(np.asarray(img.dataobj[:, :, 1]).T, hu)


def test_nifti_irregular_series_is_reported(
    serve_dirs: Any, tmp_path: Path, shared_data: Path
) -> None:
    """pydicom's CT2 slices are irregularly spaced (one far outlier): one affine cannot hold
    them, labels.json says by how much, and the first and last slices stay exact."""
    folder = tmp_path / "images"
    shutil.copytree(shared_data / "dicom" / "ct_pydicom_ct2_tiny", folder / "ct2")
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    r = server.get(f"/api/v1/images/{image_id}/export?format=nifti")
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        meta = json.loads(zf.read("labels.json"))
        image = _nifti(zf.read("image.nii.gz"))
    (warning,) = meta["warnings"]
    assert "irregular slice spacing" in warning
    series = _series(folder / "ct2")
    for k in (0, len(series) - 1):
        assert np.allclose((image.affine @ [3, 5, k, 1.0])[:3], _ras(series[k], 3, 5), atol=1e-4)
