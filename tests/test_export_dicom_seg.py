"""DICOM-SEG export of annotations drawn on a real CT series, checked by dciodvfy, dcmdump and
highdicom."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests
import shapely
from PIL import Image

from annot.export.coco import rasterise
from annot.model import Mask
from tileserver.cli import main as cli_main

SERIES = "ct_lung_pet_ct_dx_A0002_B40f"


@pytest.fixture
def ct_copy(tmp_path: Path, shared_data: Path) -> Path:
    folder = tmp_path / "images"
    shutil.copytree(shared_data / "dicom" / SERIES, folder / SERIES)
    return folder


def _post(server: Any, path: str, body: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {server.token}"}
    return requests.post(server.url + path, json=body, headers=headers, timeout=60)


POLY = [[100.5, 120.25], [300.0, 110.0], [280.75, 320.5], [120.0, 300.0], [100.5, 120.25]]


def test_dicom_seg_export(serve_dirs: Any, ct_copy: Path, tmp_path: Path) -> None:
    server = serve_dirs(ct_copy)
    (image_id,) = list(server.catalog.images)
    info = server.get(f"/api/v1/images/{image_id}").json()
    uids = info["sop_instance_uids"]
    # a coded label for the nodule, an uncoded one for the mask
    code = {"scheme": "SCT", "value": "27925004", "meaning": "Nodule"}
    r = _post(server, "/api/v1/projects/default/labels", {"name": "nodule", "code": code})
    assert r.status_code in (200, 201), r.text
    url = f"/api/v1/images/{image_id}/annotations?crs=pixel"
    feat = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [POLY]},
            "properties": {"label": "nodule", "slice": 12}}  # fmt: skip
    assert _post(server, url, feat).status_code == 201
    mask_arr = np.zeros((30, 40), dtype=bool)
    mask_arr[3:25, 5:35] = True
    mask = Mask.from_array(mask_arr, col=200, row=250)
    feat = {"type": "Feature", "geometry": None,
            "properties": {"label": "vessel", "slice": 14, "mask": mask.to_json()}}  # fmt: skip
    assert _post(server, url, feat).status_code == 201, _post(server, url, feat).text
    r = server.get(f"/api/v1/images/{image_id}/export?format=dicom-seg")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/dicom"
    path = tmp_path / "seg.dcm"
    path.write_bytes(r.content)

    # dciodvfy: no errors
    v = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [ln for ln in (v.stdout + v.stderr).splitlines() if ln.startswith("Error")]
    assert errors == [], "\n".join(errors)
    # dcmdump reads it
    d = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, check=True)
    assert "SegmentSequence" in d.stdout and "27925004" in d.stdout

    seg = hd.seg.segread(path)
    src = pydicom.dcmread(next((ct_copy / SERIES).iterdir()))
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert int(seg.NumberOfFrames) == 2  # only the frames containing a segment
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["nodule", "vessel"]
    nodule = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (nodule.CodeValue, nodule.CodingSchemeDesignator) == ("27925004", "SCT")
    referenced = {u for _, _, u in seg.get_source_image_uids()}
    assert {uids[12], uids[14]} <= referenced
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[uids[12], uids[14]], segment_numbers=[1, 2]
    )
    rows, cols = int(src.Rows), int(src.Columns)
    expected_poly = rasterise(shapely.Polygon(POLY), cols, rows)
    assert np.array_equal(pixels[0, :, :, 0].astype(bool), expected_poly)
    assert not pixels[0, :, :, 1].any()
    expected_mask = np.zeros((rows, cols), dtype=bool)
    expected_mask[250:280, 200:240] = mask_arr
    assert np.array_equal(pixels[1, :, :, 1].astype(bool), expected_mask)
    assert not pixels[1, :, :, 0].any()

    assert server.get(f"/api/v1/images/{image_id}/export?format=nrrd").status_code == 400

    # format=masks: one PNG per label and slice, the same pixels
    r = server.get(f"/api/v1/images/{image_id}/export?format=masks")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        index = json.loads(zf.read("index.json"))
        files = {(m["label"], m["slice"]): m["file"] for m in index["masks"]}
        assert set(files) == {("nodule", 12), ("vessel", 14)}
        png = np.asarray(Image.open(io.BytesIO(zf.read(files[("nodule", 12)])))) > 0
        assert np.array_equal(png, expected_poly)
        png = np.asarray(Image.open(io.BytesIO(zf.read(files[("vessel", 14)])))) > 0
        assert np.array_equal(png, expected_mask)

    # the CLI writes the same segmentation from the server's database
    out = tmp_path / "cli.dcm"
    db = f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}"
    args = ["export", "--image", image_id, "--format", "dicom-seg", "-o", str(out)]
    assert cli_main([*args, "--data", str(ct_copy), "--db", db]) == 0
    again = hd.seg.segread(out)
    assert int(again.NumberOfFrames) == 2
    assert [s.SegmentLabel for s in again.SegmentSequence] == ["nodule", "vessel"]


def test_dicom_seg_export_multiframe_source(
    serve_dirs: Any, tmp_path: Path, shared_data: Path
) -> None:
    """A SEG of an enhanced (legacy converted) multi-frame CT references the source's frames."""
    folder = tmp_path / "images"
    name = "ct_dcmqi_23x38x3_legacy_enhanced"
    shutil.copytree(shared_data / "dicom" / name, folder / name)
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    info = server.get(f"/api/v1/images/{image_id}").json()
    assert info["slices"] == 3
    poly = [[2.2, 3.1], [20.3, 5.7], [15.6, 30.3], [2.2, 3.1]]  # no pixel centre on an edge
    url = f"/api/v1/images/{image_id}/annotations?crs=pixel"
    feat = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [poly]},
            "properties": {"label": "liver", "slice": 1}}  # fmt: skip
    assert _post(server, url, feat).status_code == 201
    r = server.get(f"/api/v1/images/{image_id}/export?format=dicom-seg")
    assert r.status_code == 200, r.text
    path = tmp_path / "mf.seg.dcm"
    path.write_bytes(r.content)
    v = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [ln for ln in (v.stdout + v.stderr).splitlines() if ln.startswith("Error")]
    assert errors == [], "\n".join(errors)
    seg = hd.seg.segread(path)
    assert int(seg.NumberOfFrames) == 1
    (item,) = seg.PerFrameFunctionalGroupsSequence
    source = item.DerivationImageSequence[0].SourceImageSequence[0]
    src = pydicom.dcmread(next((folder / name).iterdir()))
    assert source.ReferencedSOPInstanceUID == src.SOPInstanceUID
    # the frame is the source frame at slice 1 (sorted along the normal), at its position
    normal = np.cross(*np.reshape(np.asarray(src.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float), (2, 3)))
    heights = [float(np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float) @ normal) for f in src.PerFrameFunctionalGroupsSequence]
    middle = int(np.argsort(heights)[1])
    assert int(source.ReferencedFrameNumber) == middle + 1
    seg_ipp = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    src_ipp = np.asarray(src.PerFrameFunctionalGroupsSequence[middle].PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    assert np.allclose(seg_ipp, src_ipp, atol=1e-4)
    expected = rasterise(shapely.Polygon(poly), int(src.Columns), int(src.Rows))
    assert np.array_equal(seg.get_stored_frame(1).astype(bool), expected)
