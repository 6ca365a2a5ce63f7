"""RT Structure Set export of annotations drawn on a real CT series, checked by dciodvfy, dcmtk,
pydicom and a round trip through the RTSTRUCT import."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
import shapely

from annot.model import Mask
from tileserver.cli import main as cli_main

SERIES = "ct_dcmqi_23x38x3"  # 3 axial slices of 38 rows x 23 columns, 0.7 mm pixels
# DS auto-formatting keeps 16 characters: coordinates |x| < 1000 mm keep 11 decimals, so the
# rounding error is at most 5e-12 mm (measured over 200 000 random values)
DS_TOLERANCE_MM = 1e-11

SHELL = [[1.25, 2.5], [20.5, 3.0], [19.75, 30.5], [2.0, 29.0], [1.25, 2.5]]
HOLE = [[6.0, 10.0], [12.0, 10.0], [12.0, 20.0], [6.0, 20.0], [6.0, 10.0]]
TRIANGLE = [[3.5, 4.5], [15.25, 6.0], [8.0, 18.75], [3.5, 4.5]]
LINE = [[2.0, 33.0], [10.5, 35.25], [21.0, 31.0]]
POINT = [11.5, 24.25]
CORONAL = {"type": "Polygon", "coordinates": [[[1, 0.2], [10, 0.5], [5, 1.8], [1, 0.2]]]}


@pytest.fixture
def ct_copy(tmp_path: Path, shared_data: Path) -> Path:
    folder = tmp_path / "images"
    shutil.copytree(shared_data / "dicom" / SERIES, folder / SERIES)
    return folder


def _post(server: Any, path: str, body: Any = None, data: bytes | None = None) -> Any:
    headers = {"Authorization": f"Bearer {server.token}"}
    return requests.post(server.url + path, json=body, data=data, headers=headers, timeout=60)


def _features(server: Any, image_id: str) -> list[dict[str, Any]]:
    r = server.get(f"/api/v1/images/{image_id}/annotations?crs=world&limit=1000")
    assert r.status_code == 200, r.text
    features: list[dict[str, Any]] = r.json()["features"]
    return features


def _feature(geometry: Any, label: str, slice_: int, **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": geometry,
        "properties": {"label": label, "slice": slice_, **props},
    }


def _check_file(path: Path) -> None:
    v = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    lines = (v.stdout + v.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert errors == [], "\n".join(errors)
    # the only warnings allowed: person names copied verbatim from the source series, which
    # dciodvfy flags the same way there ("Anonymous", "Unknown": one component, no "^")
    warnings = [
        ln for ln in lines if ln.startswith("Warning") and "Retired Person Name form" not in ln
    ]
    assert warnings == [], "\n".join(warnings)
    d = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, check=True)
    assert "ROIContourSequence" in d.stdout and "RTSTRUCT" in d.stdout


def _ring_error(contour: np.ndarray, stored: list[list[float]]) -> float:
    """How far a contour is from a stored ring (closed once), in order or reversed (the API
    answers GeoJSON ring orientation), from any start."""
    ring = np.asarray(stored, dtype=float)[:-1]
    assert ring.shape == contour.shape
    candidates = [np.roll(r, s, axis=0) for r in (ring, ring[::-1]) for s in range(len(ring))]
    return float(min(np.abs(c - contour).max() for c in candidates))


def _shape(f: dict[str, Any]) -> Any:
    return shapely.geometry.shape(f["geometry"])


def _iou(a: Any, b: Any) -> float:
    # polygons in LPS on one axial slice: compare their (x, y) footprint
    a2 = shapely.force_2d(a)
    b2 = shapely.force_2d(b)
    return float(a2.intersection(b2).area / a2.union(b2).area)


def test_rtstruct_export(
    serve_dirs: Any, ct_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve_dirs(ct_copy)
    (image_id,) = list(server.catalog.images)
    info = server.get(f"/api/v1/images/{image_id}").json()
    uids = info["sop_instance_uids"]
    colours = {"liver": "#12ab34", "lesion": "#c80a64", "seed": "#0000ff", "vessel": "#808000"}
    for name, colour in colours.items():
        r = _post(server, "/api/v1/projects/default/labels", {"name": name, "color": colour})
        assert r.status_code in (200, 201), r.text
    url = f"/api/v1/images/{image_id}/annotations?crs=pixel"
    attrs = {"attributes": {"rt_roi_interpreted_type": "ORGAN"}}
    mask_arr = np.zeros((6, 5), dtype=bool)
    mask_arr[1:5, 1:4] = True
    mask_arr[2, 2] = False  # a hole
    mask = Mask.from_array(mask_arr, col=14, row=28)
    for feat in (
        _feature({"type": "Polygon", "coordinates": [SHELL, HOLE]}, "liver", 0, **attrs),
        _feature({"type": "Polygon", "coordinates": [TRIANGLE]}, "lesion", 2),
        _feature({"type": "LineString", "coordinates": LINE}, "vessel", 2),
        _feature({"type": "Point", "coordinates": POINT}, "seed", 0),
        _feature(None, "vessel", 1, mask=mask.to_json()),
        _feature(CORONAL, "lesion", 5, plane="coronal"),  # not on an acquisition slice
    ):
        r = _post(server, url, feat)
        assert r.status_code == 201, r.text
    stored = _features(server, image_id)

    r = server.get(f"/api/v1/images/{image_id}/export?format=rtstruct")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/dicom"
    assert r.headers["X-Tessera-Skipped"] == "1"  # the coronal polygon: no acquisition slice
    path = tmp_path / "rt.dcm"
    path.write_bytes(r.content)
    _check_file(path)

    ds = pydicom.dcmread(path)
    src = pydicom.dcmread(next((ct_copy / SERIES).iterdir()))
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert "1 annotation(s) skipped" in ds.StructureSetDescription  # the coronal one
    (for_ref,) = ds.ReferencedFrameOfReferenceSequence
    assert for_ref.FrameOfReferenceUID == src.FrameOfReferenceUID
    series_ref = for_ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series_ref.SeriesInstanceUID == src.SeriesInstanceUID
    assert sorted(i.ReferencedSOPInstanceUID for i in series_ref.ContourImageSequence) == sorted(
        uids
    )
    rois = {int(r.ROINumber): r for r in ds.StructureSetROISequence}
    names = {n: str(r.ROIName) for n, r in rois.items()}
    assert sorted(names.values()) == sorted(colours)
    assert all(r.ROIGenerationAlgorithm == "MANUAL" for r in rois.values())
    assert {r.ReferencedFrameOfReferenceUID for r in rois.values()} == {src.FrameOfReferenceUID}
    kinds = {names[int(o.ReferencedROINumber)]: o.RTROIInterpretedType for o in
             ds.RTROIObservationsSequence}  # fmt: skip
    assert kinds == {"liver": "ORGAN", "lesion": "", "seed": "", "vessel": ""}
    contours: dict[str, list[Any]] = {}
    for rc in ds.ROIContourSequence:
        name = names[int(rc.ReferencedROINumber)]
        colour = "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rc.ROIDisplayColor))
        assert colour == colours[name]
        for c in rc.ContourSequence:
            (ref,) = c.ContourImageSequence
            assert ref.ReferencedSOPInstanceUID in uids
            assert ref.ReferencedSOPClassUID == src.SOPClassUID
            pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
            assert len(pts) == int(c.NumberOfContourPoints)
            assert all(len(str(v)) <= 16 for v in c.ContourData)
            contours.setdefault(name, []).append((c.ContourGeometricType, pts, ref))
    # ContourData = the stored world coordinates, to the DS precision
    by_label = {f["properties"]["label"]: f for f in stored if f["properties"]["plane"] == "axial"}
    liver, lesion, seed = by_label["liver"], by_label["lesion"], by_label["seed"]
    line = next(f for f in stored if f["properties"]["kind"] == "polyline")
    (shell, hole) = contours["liver"]
    for (kind, pts, ref), ring in zip((shell, hole), liver["geometry"]["coordinates"], strict=True):
        assert kind == "CLOSED_PLANAR" and ref.ReferencedSOPInstanceUID == uids[0]
        assert _ring_error(pts, ring) <= DS_TOLERANCE_MM
    ((kind, pts, ref),) = contours["lesion"]
    assert kind == "CLOSED_PLANAR" and ref.ReferencedSOPInstanceUID == uids[2]
    assert _ring_error(pts, lesion["geometry"]["coordinates"][0]) <= DS_TOLERANCE_MM
    ((kind, pts, _),) = contours["seed"]
    assert kind == "POINT"
    assert np.abs(pts[0] - np.asarray(seed["geometry"]["coordinates"])).max() <= DS_TOLERANCE_MM
    vessel = sorted(contours["vessel"], key=lambda t: str(t[0]))
    assert [k for k, _, _ in vessel] == ["CLOSED_PLANAR", "CLOSED_PLANAR", "OPEN_PLANAR"]
    assert np.abs(vessel[2][1] - np.asarray(line["geometry"]["coordinates"])).max() <= (
        DS_TOLERANCE_MM
    )
    # the mask traced along pixel edges: its outer ring and its one-pixel hole
    traced = shapely.Polygon(vessel[0][1][:, :2])
    inner = shapely.Polygon(vessel[1][1][:, :2])
    spacing = float(src.PixelSpacing[0]) * float(src.PixelSpacing[1])
    areas = sorted([traced.area, inner.area])
    assert areas == pytest.approx([spacing, 12 * spacing])

    # round trip: the import on a fresh server gives back the same shapes and labels
    fresh = serve_dirs(ct_copy)
    r = _post(fresh, f"/api/v1/images/{image_id}/import?format=rtstruct", data=path.read_bytes())
    assert r.status_code == 201, r.text
    back = _features(fresh, image_id)
    assert len(back) == 5  # liver, lesion, line, point, the traced mask (one polygon)
    assert sorted(f["properties"]["label"] for f in back) == sorted(
        ["liver", "lesion", "vessel", "vessel", "seed"]
    )
    for f in (liver, lesion):
        (g,) = [b for b in back if b["properties"]["label"] == f["properties"]["label"]]
        assert g["properties"]["sop_instance_uid"] == f["properties"]["sop_instance_uid"]
        assert len(g["geometry"]["coordinates"]) == len(f["geometry"]["coordinates"])
        assert _iou(_shape(g), _shape(f)) > 0.9999
    (g,) = [b for b in back if b["properties"]["kind"] == "polyline"]
    assert _shape(g).hausdorff_distance(_shape(line)) < 1e-6
    (g,) = [b for b in back if b["properties"]["label"] == "seed"]
    assert _shape(g).distance(_shape(seed)) < 1e-6 and g["properties"]["kind"] == "point"
    (g,) = [b for b in back if b["properties"]["kind"] == "polygon" and
            b["properties"]["label"] == "vessel"]  # fmt: skip
    assert shapely.force_2d(_shape(g)).area == pytest.approx(11 * spacing)

    # the CLI writes the same structure set from the server's database
    out = tmp_path / "cli.dcm"
    db = f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}"
    args = ["export", "--image", image_id, "--format", "rtstruct", "-o", str(out)]
    assert cli_main([*args, "--data", str(ct_copy), "--db", db]) == 0
    assert "1 annotation(s) left out: format=rtstruct" in capsys.readouterr().err
    _check_file(out)
    again = pydicom.dcmread(out)
    assert sorted(str(r.ROIName) for r in again.StructureSetROISequence) == sorted(colours)


def test_rtstruct_export_needs_a_volume(serve_dirs: Any, tmp_path: Path, make_raster: Any) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    make_raster(np.full((1, 64, 64), 7, np.uint8), name="plain.tif", folder=folder)
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    r = server.get(f"/api/v1/images/{image_id}/export?format=rtstruct")
    assert r.status_code == 400, r.text
    assert "format=rtstruct needs a DICOM volume" in r.json()["message"]
