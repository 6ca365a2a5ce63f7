"""RTSTRUCT import: real structure sets written by rt-utils and MIM on a real CT phantom, and
synthetic ones (pydicom) on the synthetic CT phantom: holes, tilted contours, bad files, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
import shapely
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from annot.imports.rtstruct import RT_STRUCTURE_SET_STORAGE, clean_label
from tileserver.cli import main as cli_main
from tileserver.phantom import PhantomSpec, write_ct_phantom

SPEC = PhantomSpec(cols=64, rows=64, slices=12, pixel_spacing=0.8, slice_spacing=2.5)


def _post(server: Any, path: str, data: bytes) -> requests.Response:
    headers = {"Authorization": f"Bearer {server.token}"}
    return requests.post(server.url + path, data=data, headers=headers, timeout=60)


def _features(server: Any, image_id: str) -> list[dict[str, Any]]:
    r = server.get(f"/api/v1/images/{image_id}/annotations?crs=world&limit=1000")
    assert r.status_code == 200, r.text
    features: list[dict[str, Any]] = r.json()["features"]
    return features


def _same_ring(stored: list[list[float]], contour: np.ndarray) -> None:
    """A stored ring holds the contour's points, in order or reversed (closed once)."""
    ring = np.asarray(stored, dtype=float)
    assert np.array_equal(ring[0], ring[-1])
    ring = ring[:-1]
    assert ring.shape == contour.shape
    candidates = [np.roll(r, s, axis=0) for r in (ring, ring[::-1]) for s in range(len(ring))]
    assert min(np.abs(c - contour).max() for c in candidates) <= 1e-6


def _contours(ds: Any) -> list[np.ndarray]:
    return [
        np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
        for rc in ds.ROIContourSequence
        for c in rc.ContourSequence
    ]


def test_import_rtutils_structure_set(serve_dirs: Any, tmp_path: Path, shared_data: Path) -> None:
    folder = tmp_path / "images"
    shutil.copytree(shared_data / "dicom" / "ct_rtutils_phantom", folder / "ct")
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    path = shared_data / "dicom" / "rtstruct" / "rtutils_rt.dcm"
    body = path.read_bytes()
    url = f"/api/v1/images/{image_id}/import?format=rtstruct"

    r = _post(server, url + "&dry_run=1", body)
    assert r.status_code == 200, r.text
    report = r.json()
    # the inner contour lies inside the outer one: one polygon with a hole
    assert report["dry_run"] and report["rejected"] == [] and report["would_create"] == 1
    assert report["labels"] == {"ROI-1": 1} and report["new_labels"] == ["ROI-1"]
    (roi,) = report["source"]["rois"]
    assert roi["contours"] == 2 and roi["holes"] == 1 and roi["slices"] == [0]
    assert roi["color"] == "#a2885f"
    # the file's frame of reference is not the CT's (rt-utils quirk): accepted by series
    assert "references the image's series" in report["source"]["frame_of_reference"]
    assert _features(server, image_id) == []

    r = _post(server, url, body)
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 1
    (feature,) = _features(server, image_id)
    props = feature["properties"]
    assert props["label"] == "ROI-1" and props["kind"] == "polygon"
    assert props["attributes"]["roi_number"] == 1
    assert props["attributes"]["roi_display_color"] == [162, 136, 95]
    assert props["attributes"]["contour_geometric_type"] == "CLOSED_PLANAR"
    outer, inner = _contours(pydicom.dcmread(path))
    shell, hole = feature["geometry"]["coordinates"]
    _same_ring(shell, outer)
    _same_ring(hole, inner)
    # on the slice whose position matches z = 60, referencing that CT image
    cts = {
        float(d.ImagePositionPatient[2]): d
        for d in (pydicom.dcmread(p) for p in sorted((folder / "ct").iterdir()))
    }
    ct = cts[60.0]
    slices = sorted(cts)
    assert props["slice"] == slices.index(60.0) and props["plane"] == "axial"
    assert props["sop_instance_uid"] == str(ct.SOPInstanceUID)
    assert props["attributes"]["referenced_sop_instance_uids"] == [str(ct.SOPInstanceUID)]


def test_invalid_reference_is_rejected(serve_dirs: Any, tmp_path: Path, shared_data: Path) -> None:
    """MIM's structure set has contours at z = 70, on an image the series does not hold."""
    folder = tmp_path / "images"
    shutil.copytree(shared_data / "dicom" / "ct_rtutils_phantom", folder / "ct")
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    body = (shared_data / "dicom" / "rtstruct" / "mim_invalid_reference_rt.dcm").read_bytes()
    url = f"/api/v1/images/{image_id}/import?format=rtstruct"
    r = _post(server, url + "&dry_run=1", body)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["would_create"] == 0 and report["valid"] == 8
    assert [x["id"] for x in report["rejected"]] == [
        f"ROI {n} (ROI-{n}) contour 1" for n in range(1, 5)
    ]
    assert all("outside the volume" in x["reason"] for x in report["rejected"])
    # MIM writes ROI-4 with keyholes: each becomes a polygon with a hole
    rois = {roi["roi_name"]: roi for roi in report["source"]["rois"]}
    assert rois["ROI-4"]["keyholes"] == 2 and rois["ROI-4"]["holes"] == 2
    assert len(report["source"]["off_slice"]) == 4
    assert any("not in this series" in n for n in report["source"]["notes"])
    r = _post(server, url, body)
    assert r.status_code == 422, r.text
    assert len(r.json()["rejected"]) == 4
    assert "outside the volume" in r.json()["rejected"][0]["reason"]
    assert _features(server, image_id) == []


def _rtstruct(ct: list[Any], rois: list[tuple[str, list[int], list[tuple[str, Any]]]]) -> bytes:
    """A structure set on the CT datasets ``ct``; rois: (name, colour, [(type, points)])."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds = FileDataset("rt.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID = ct[0].StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "test"
    series = Dataset()
    series.SeriesInstanceUID = ct[0].SeriesInstanceUID
    series.ContourImageSequence = Sequence([_image_ref(c) for c in ct])
    study = Dataset()
    study.ReferencedSOPInstanceUID = ct[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    ref = Dataset()
    ref.FrameOfReferenceUID = ct[0].FrameOfReferenceUID
    ref.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    for number, (name, color, contours) in enumerate(rois, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        roi.ReferencedFrameOfReferenceUID = ct[0].FrameOfReferenceUID
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ROIDisplayColor = number, color
        rc.ContourSequence = Sequence()
        for kind, points in contours:
            c = Dataset()
            c.ContourGeometricType = kind
            pts = np.asarray(points, dtype=float)
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.6g}" for v in pts.ravel()]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = number, number
        obs.RTROIInterpretedType, obs.ROIInterpreter = "ORGAN", ""
        ds.RTROIObservationsSequence.append(obs)
    out = pydicom.filebase.DicomBytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _image_ref(ct: Any) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ct.SOPClassUID, ct.SOPInstanceUID
    return ref


def _square(z: float, half: float, cx: float = 0.0, cy: float = 0.0) -> list[list[float]]:
    return [
        [cx - half, cy - half, z],
        [cx + half, cy - half, z],
        [cx + half, cy + half, z],
        [cx - half, cy + half, z],
    ]


@pytest.fixture
def phantom(tmp_path: Path) -> tuple[Path, list[Any]]:
    folder = tmp_path / "images" / "phantom"
    paths = write_ct_phantom(folder, SPEC)
    return folder.parent, [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def test_ring_tilted_and_cli(serve_dirs: Any, tmp_path: Path, phantom: Any) -> None:
    folder, ct = phantom
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    z = [float(c.ImagePositionPatient[2]) for c in ct]
    url = f"/api/v1/images/{image_id}/import?format=rtstruct"
    ring = [("CLOSED_PLANAR", _square(z[5], 10.0)), ("CLOSED_PLANAR", _square(z[5], 4.0))]
    good = _rtstruct(
        ct,
        [
            ("Lung/left", [255, 0, 0], ring),
            ("marks", [0, 0, 255], [
                ("POINT", [[1.0, 2.0, z[3]]]),
                ("OPEN_PLANAR", [[-5.0, -5.0, z[4]], [5.0, 0.0, z[4]], [6.0, 6.0, z[4]]]),
                ("CLOSED_PLANAR", _square(z[7], 3.0, 10.0, 10.0)),
            ]),
        ],
    )  # fmt: skip
    r = _post(server, url + "&dry_run=1", good)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["rejected"] == [] and report["would_create"] == 4
    assert report["labels"] == {"Lung-left": 1, "marks": 3}
    assert report["source"]["frame_of_reference"] == "match"

    # the CLI: a dry run, then the import into the server's database
    db = f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}"
    path = tmp_path / "good_rt.dcm"
    path.write_bytes(good)
    args = ["import", str(path), "--image", image_id, "--format", "rtstruct"]
    assert cli_main([*args, "--dry-run", "--data", str(folder), "--db", db]) == 0
    assert _features(server, image_id) == []
    assert cli_main([*args, "--data", str(folder), "--db", db]) == 0
    features = _features(server, image_id)
    assert len(features) == 4
    (lung,) = [f for f in features if f["properties"]["label"] == "Lung-left"]
    props = lung["properties"]
    assert props["slice"] == 5 and props["sop_instance_uid"] == str(ct[5].SOPInstanceUID)
    assert props["attributes"]["roi_name"] == "Lung/left"
    assert props["attributes"]["rt_roi_interpreted_type"] == "ORGAN"
    shell, hole = lung["geometry"]["coordinates"]
    _same_ring(shell, np.asarray(ring[0][1]))
    _same_ring(hole, np.asarray(ring[1][1]))
    kinds = sorted(f["properties"]["kind"] for f in features)
    assert kinds == ["point", "polygon", "polygon", "polyline"]
    slices = {f["properties"]["kind"]: f["properties"]["slice"] for f in features}
    assert slices["point"] == 3 and slices["polyline"] == 4

    # a tilted contour and one between slices: rejected each with its reason, nothing stored
    tilted = [[-5.0, -5.0, z[2]], [5.0, -5.0, z[2]], [5.0, 5.0, z[3]], [-5.0, 5.0, z[3]]]
    bad = _rtstruct(
        ct,
        [
            ("tumour", [0, 255, 0], [
                ("CLOSED_PLANAR", _square(z[8], 5.0)),
                ("CLOSED_PLANAR", tilted),
                ("CLOSED_PLANAR", _square(z[9] + 1.0, 5.0)),
            ]),
        ],
    )  # fmt: skip
    r = _post(server, url + "&dry_run=1", bad)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["valid"] == 1 and report["would_create"] == 0
    assert [x["id"] for x in report["rejected"]] == [
        "ROI 1 (tumour) contour 2",
        "ROI 1 (tumour) contour 3",
    ]
    assert all("must lie on one slice" in x["reason"] for x in report["rejected"])
    reasons = [x["reason"] for x in report["source"]["off_slice"]]
    assert "tilted" in reasons[0] and "between axial slices" in reasons[1], reasons
    r = _post(server, url, bad)
    assert r.status_code == 422, r.text
    assert len(_features(server, image_id)) == 4


def test_bad_files(serve_dirs: Any, tmp_path: Path, phantom: Any) -> None:
    folder, ct = phantom
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    url = f"/api/v1/images/{image_id}/import?format=rtstruct"
    good = _rtstruct(ct, [("x", [1, 2, 3], [("CLOSED_PLANAR", _square(0.0, 3.0))])])
    for body in (b"\x00" * 200 + b"not a DICOM file", good[: len(good) // 2]):
        r = _post(server, url, body)
        assert r.status_code in (400, 422), r.text
    # a CT image is not a structure set
    ct_bytes = next((folder / "phantom").iterdir()).read_bytes()
    r = _post(server, url, ct_bytes)
    assert r.status_code == 400 and "not an RT Structure Set" in r.json()["message"], r.text
    # a structure set of another acquisition: 422 naming the frame of reference
    other = [pydicom.Dataset(c) for c in ct]
    for c in other:
        c.FrameOfReferenceUID, c.SeriesInstanceUID = generate_uid(), "1.2.3.4"
    r = _post(server, url, _rtstruct(other, [("x", [1, 2, 3], [])]))
    assert r.status_code == 422, r.text
    assert "frame of reference" in r.json()["message"]
    assert _features(server, image_id) == []
    message = json.dumps(r.json())
    assert "does not belong to this image" in message


def test_2d_image_is_refused(serve_dirs: Any, tmp_path: Path, make_raster: Any) -> None:
    folder = tmp_path / "geo"
    folder.mkdir()
    make_raster(np.full((1, 64, 64), 7, np.uint8), name="plain.tif", folder=folder)
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    r = _post(server, f"/api/v1/images/{image_id}/import?format=rtstruct", b"x")
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert "needs a DICOM volume" in message and "geojson" in message


def test_clean_label() -> None:
    assert clean_label("GTV/CTV ", 3) == "GTV-CTV"
    assert clean_label("\x01 ", 7) == "ROI-7"
    assert clean_label("x" * 150, 1) == "x" * 100


def test_keyhole_contour(serve_dirs: Any, tmp_path: Path, phantom: Any) -> None:
    """One ring joined to its hole by a zero-width channel: one polygon with a hole."""
    folder, ct = phantom
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    z = float(ct[6].ImagePositionPatient[2])
    keyhole = [
        [10, 0], [10, 10], [-10, 10], [-10, -10], [10, -10], [10, 0],
        [4, 0], [4, -4], [-4, -4], [-4, 4], [4, 4], [4, 0],
    ]  # fmt: skip
    bowtie = [[-5, -5], [5, 5], [5, -5], [-5, 5]]
    body = _rtstruct(
        ct,
        [
            ("keyhole", [9, 9, 9], [("CLOSED_PLANAR", [[x, y, z] for x, y in keyhole])]),
            ("bowtie", [9, 9, 9], [("CLOSED_PLANAR", [[x, y, z] for x, y in bowtie])]),
        ],
    )
    url = f"/api/v1/images/{image_id}/import?format=rtstruct"
    r = _post(server, url + "&dry_run=1", body)
    assert r.status_code == 200, r.text
    report = r.json()
    rois = {roi["roi_name"]: roi for roi in report["source"]["rois"]}
    assert rois["keyhole"]["keyholes"] == 1 and rois["keyhole"]["holes"] == 1
    assert rois["bowtie"]["keyholes"] == 0
    (rejected,) = report["rejected"]  # a crossing contour is not repaired
    assert rejected["label"] == "bowtie" and "Self-intersection" in rejected["reason"]
    # without the bow tie it is stored: one polygon of 20 x 20 mm less 8 x 8 mm, on slice 6
    body = _rtstruct(
        ct, [("keyhole", [9, 9, 9], [("CLOSED_PLANAR", [[x, y, z] for x, y in keyhole])])]
    )
    r = _post(server, url, body)
    assert r.status_code == 201, r.text
    (feature,) = _features(server, image_id)
    assert feature["properties"]["slice"] == 6
    shell, hole = (np.asarray(ring) for ring in feature["geometry"]["coordinates"])
    assert np.allclose(shell[:, 2], z, atol=1e-9) and np.allclose(hole[:, 2], z, atol=1e-9)
    polygon = shapely.Polygon(shell[:, :2], [hole[:, :2]])
    assert polygon.is_valid and abs(polygon.area - (400.0 - 64.0)) < 1e-6
