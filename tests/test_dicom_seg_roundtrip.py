"""DICOM-SEG export and import round trips on real CT series (dciodvfy, dcmdump, highdicom), and
import of real SEGs written by other tools (dcmqi, highdicom)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests
import shapely

from annot.export.coco import rasterise
from annot.model import Mask
from tileserver.cli import main as cli_main

SERIES = "ct_lung_pet_ct_dx_A0002_B40f"
ROWS = COLS = 512

# (label, slice, polygon in pixel coordinates)
SHAPES: list[tuple[str, int, list[list[float]]]] = [
    (
        "nodule",
        10,
        [[100.5, 120.25], [300.0, 110.0], [280.75, 320.5], [120.0, 300.0], [100.5, 120.25]],
    ),
    ("nodule", 12, [[200.0, 200.0], [260.5, 210.0], [240.0, 270.25], [200.0, 200.0]]),
    (
        "vessel",
        12,
        [[250.0, 100.0], [330.0, 100.0], [330.0, 180.0], [250.0, 180.0], [250.0, 100.0]],
    ),
]
VESSEL_MASK_SLICE = 14


def _vessel_mask() -> Mask:
    arr = np.zeros((30, 40), dtype=bool)
    arr[3:25, 5:35] = True
    arr[10:15, 10:20] = False  # a hole
    return Mask.from_array(arr, col=200, row=250)


def _post(server: Any, path: str, body: Any = None, data: bytes | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {server.token}"}
    if data is not None:
        return requests.post(server.url + path, data=data, headers=headers, timeout=60)
    return requests.post(server.url + path, json=body, headers=headers, timeout=60)


def _copy(tmp_path: Path, shared_data: Path, *series: str) -> Path:
    folder = tmp_path / "images"
    for name in series:
        shutil.copytree(shared_data / "dicom" / name, folder / name)
    return folder


def _expected(label: str, slice_: int) -> np.ndarray:
    """The rasterised pixels of every shape of ``label`` on ``slice_`` (independently)."""
    out = np.zeros((ROWS, COLS), dtype=bool)
    for name, k, poly in SHAPES:
        if (name, k) == (label, slice_):
            out |= rasterise(shapely.Polygon(poly), COLS, ROWS)
    if (label, slice_) == ("vessel", VESSEL_MASK_SLICE):
        m = _vessel_mask()
        out[m.row : m.row + m.height, m.col : m.col + m.width] |= m.to_array()
    return out


def _draw(server: Any, image_id: str) -> None:
    code = {"scheme": "SCT", "value": "27925004", "meaning": "Nodule"}
    r = _post(server, "/api/v1/projects/default/labels", {"name": "nodule", "code": code})
    assert r.status_code in (200, 201), r.text
    url = f"/api/v1/images/{image_id}/annotations?crs=pixel"
    for label, k, poly in SHAPES:
        feat = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [poly]},
                "properties": {"label": label, "slice": k}}  # fmt: skip
        r = _post(server, url, feat)
        assert r.status_code == 201, r.text
    feat = {"type": "Feature", "geometry": None,
            "properties": {"label": "vessel", "slice": VESSEL_MASK_SLICE, "mask": _vessel_mask().to_json()}}  # fmt: skip
    r = _post(server, url, feat)
    assert r.status_code == 201, r.text


def _imported_masks(server: Any, image_id: str) -> dict[tuple[str, int], np.ndarray]:
    """The masks that an import created, united per (label, slice), as full slices."""
    r = server.get(f"/api/v1/images/{image_id}/annotations?crs=pixel&limit=1000")
    assert r.status_code == 200, r.text
    out: dict[tuple[str, int], np.ndarray] = {}
    for f in r.json()["features"]:
        p = f["properties"]
        if "segment_number" not in p["attributes"]:
            continue
        m = Mask.from_json(p["mask"])
        full = out.setdefault((p["label"], p["slice"]), np.zeros((ROWS, COLS), dtype=bool))
        full[m.row : m.row + m.height, m.col : m.col + m.width] |= m.to_array()
    return out


def _slice_masks(
    server: Any, image_id: str, rows: int, cols: int
) -> dict[tuple[str, int], np.ndarray]:
    got = server.get(f"/api/v1/images/{image_id}/annotations?crs=pixel&limit=1000").json()
    out: dict[tuple[str, int], np.ndarray] = {}
    for f in got["features"]:
        p = f["properties"]
        m = Mask.from_json(p["mask"])
        full = out.setdefault((p["label"], p["slice"]), np.zeros((rows, cols), dtype=bool))
        full[m.row : m.row + m.height, m.col : m.col + m.width] |= m.to_array()
    return out


def _bytes(ds: pydicom.Dataset) -> bytes:
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.count_nonzero(a & b)) / float(np.count_nonzero(a) + np.count_nonzero(b))


def _dciodvfy_errors(path: Path) -> list[str]:
    v = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [ln for ln in (v.stdout + v.stderr).splitlines() if ln.startswith("Error")]


def _seg_position(seg: Any, index: int, row: int, col: int) -> np.ndarray:
    """LPS of pixel (row, col) of SEG frame ``index``, from the SEG's own plane position."""
    frame = seg.PerFrameFunctionalGroupsSequence[index]
    shared = seg.SharedFunctionalGroupsSequence[0]
    ipp = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    return ipp + col * dc * iop[:3] + row * dr * iop[3:]


def test_seg_export_import_roundtrip(serve_dirs: Any, tmp_path: Path, shared_data: Path) -> None:
    folder = _copy(tmp_path, shared_data, SERIES)
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    info = server.get(f"/api/v1/images/{image_id}").json()
    uids = info["sop_instance_uids"]
    _draw(server, image_id)
    keys = sorted({(label, k) for label, k, _ in SHAPES} | {("vessel", VESSEL_MASK_SLICE)})

    r = server.get(f"/api/v1/images/{image_id}/export?format=dicom-seg")
    assert r.status_code == 200, r.text
    seg_bytes = r.content
    path = tmp_path / "seg.dcm"
    path.write_bytes(seg_bytes)
    assert _dciodvfy_errors(path) == []
    d = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, check=True)
    assert "SegmentSequence" in d.stdout and "91723000" in d.stdout  # vessel: the default code

    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "BINARY"
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["nodule", "vessel"]
    vessel = seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0]
    assert (vessel.CodeValue, vessel.CodingSchemeDesignator) == ("91723000", "SCT")
    # only the frames that contain their segment: one per (segment, slice) drawn
    assert int(seg.NumberOfFrames) == len(keys)
    by_uid = {u: k for k, u in enumerate(uids)}
    found = set()
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        pixels = seg.get_stored_frame(i, as_index=True).astype(bool)
        assert pixels.any(), f"frame {i + 1} is empty"
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        src = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        key = (labels[number - 1], by_uid[src])
        found.add(key)
        assert np.array_equal(pixels, _expected(*key)), key
    assert found == set(keys)

    # a known voxel: its position from the SEG's plane positions is the CT's voxel position
    # (independently from the source file) and lies inside the stored LPS polygon
    index = next(
        i for i, it in enumerate(seg.PerFrameFunctionalGroupsSequence)
        if by_uid[it.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID] == 10
    )  # fmt: skip
    rows, cols = np.nonzero(seg.get_stored_frame(index, as_index=True))
    row, col = int(rows[len(rows) // 2]), int(cols[len(cols) // 2])
    lps = _seg_position(seg, index, row, col)
    ct = next(
        ds for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in (folder / SERIES).iterdir())
        if ds.SOPInstanceUID == uids[10]
    )  # fmt: skip
    ipp = np.asarray(ct.ImagePositionPatient, dtype=float)
    iop = np.asarray(ct.ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in ct.PixelSpacing)
    assert np.allclose(lps, ipp + col * dc * iop[:3] + row * dr * iop[3:], atol=1e-4)
    world = server.get(f"/api/v1/images/{image_id}/annotations?crs=world&limit=1000").json()
    (poly,) = [
        f for f in world["features"]
        if f["properties"]["label"] == "nodule" and f["properties"]["slice"] == 10
    ]  # fmt: skip
    ring = np.asarray(poly["geometry"]["coordinates"][0], dtype=float)
    assert np.allclose((ring - lps) @ np.cross(iop[:3], iop[3:]), 0.0, atol=1e-4)  # same plane
    in_plane = shapely.Polygon(np.column_stack([(ring - ipp) @ iop[:3], (ring - ipp) @ iop[3:]]))
    assert in_plane.contains(shapely.Point((lps - ipp) @ iop[:3], (lps - ipp) @ iop[3:]))

    # import it back: a dry run reports per segment, then the masks are the drawn pixels
    url = f"/api/v1/images/{image_id}/import?format=dicom-seg"
    r = _post(server, url + "&dry_run=1", data=seg_bytes)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["dry_run"] and report["created"] == 0 and report["rejected"] == []
    segments = {s["segment_label"]: s for s in report["source"]["segments"]}
    assert segments["nodule"]["annotations"] == 2 and segments["nodule"]["slices"] == [10, 12]
    assert segments["vessel"]["annotations"] == 2 and segments["vessel"]["slices"] == [12, 14]
    assert segments["nodule"]["pixels"] == sum(int(_expected("nodule", k).sum()) for k in (10, 12))
    assert segments["nodule"]["property_type"]["value"] == "27925004"
    assert _imported_masks(server, image_id) == {}  # nothing stored by the dry run
    r = _post(server, url, data=seg_bytes)
    assert r.status_code == 201, r.text
    assert r.json()["created"] == len(keys)
    imported = _imported_masks(server, image_id)
    assert sorted(imported) == keys
    for key in keys:
        assert _dice(imported[key], _expected(*key)) == 1.0, key
        assert np.array_equal(imported[key], _expected(*key)), key
    one = server.get(f"/api/v1/images/{image_id}/annotations?crs=pixel&limit=1000").json()
    attrs = next(f["properties"]["attributes"] for f in one["features"] if f["properties"]["label"] == "nodule" and "segment_number" in f["properties"]["attributes"])  # fmt: skip
    assert attrs["segmented_property_type"] == {
        "scheme": "SCT",
        "value": "27925004",
        "meaning": "Nodule",
    }

    # corrupt bytes: 400; a truncated SEG: 400
    r = _post(server, url, data=b"\x00" * 200 + b"not a DICOM file")
    assert r.status_code == 400 and r.json()["error"] == "bad_request", r.text
    r = _post(server, url, data=seg_bytes[: len(seg_bytes) // 2])
    assert r.status_code == 400, r.text
    # a SEG of another acquisition (the dcmqi liver SEG): 422 naming the frame of reference
    r = _post(server, url, data=(shared_data / "seg" / "dcmqi_liver.dcm").read_bytes())
    assert r.status_code == 422, r.text
    assert "frame of reference" in r.json()["message"]
    # the same through the CLI's dry run: it fails, storing nothing
    db = f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}"
    args = ["import", str(path), "--image", image_id, "--format", "dicom-seg", "--dry-run"]
    assert cli_main([*args, "--data", str(folder), "--db", db]) == 0


def test_fractional_seg_roundtrip(serve_dirs: Any, tmp_path: Path, shared_data: Path) -> None:
    folder = _copy(tmp_path, shared_data, SERIES)
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    _draw(server, image_id)
    r = server.get(f"/api/v1/images/{image_id}/export?format=dicom-seg&seg_type=fractional")
    assert r.status_code == 200, r.text
    path = tmp_path / "fractional.dcm"
    path.write_bytes(r.content)
    assert _dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "FRACTIONAL"
    assert seg.SegmentationFractionalType == "PROBABILITY"
    assert int(seg.NumberOfFrames) == 4
    assert (
        server.get(f"/api/v1/images/{image_id}/export?format=dicom-seg&seg_type=soft").status_code
        == 400
    )
    r = _post(server, f"/api/v1/images/{image_id}/import?format=dicom-seg", data=path.read_bytes())
    assert r.status_code == 201, r.text
    assert r.json()["source"]["fractional_threshold"] == 0.5
    imported = _imported_masks(server, image_id)
    assert len(imported) == 4
    for key, mask in imported.items():
        assert np.array_equal(mask, _expected(*key)), key

    # the CLI writes a fractional SEG too
    out = tmp_path / "cli.dcm"
    db = f"sqlite:///{tmp_path / 'state0' / 'tessera.db'}"
    args = ["export", "--image", image_id, "--format", "dicom-seg", "--seg-type", "fractional"]
    assert cli_main([*args, "-o", str(out), "--data", str(folder), "--db", db]) == 0
    assert hd.seg.segread(out).SegmentationType == "FRACTIONAL"


@pytest.mark.parametrize(
    ("series", "seg_file"),
    [
        ("ct_liver_dcmqi_3slice", "dcmqi_liver.dcm"),
        ("ct_dcmqi_23x38x3", "dcmqi_23x38x3_label.seg"),
        ("ct_pydicom_ct2_tiny", "highdicom_seg_image_ct_binary.dcm"),
        ("ct_pydicom_ct2_tiny", "highdicom_seg_image_ct_binary_overlap.dcm"),
    ],
)
def test_import_real_seg(
    serve_dirs: Any, tmp_path: Path, shared_data: Path, series: str, seg_file: str
) -> None:
    """SEGs written by dcmqi and highdicom import onto their source series; each slice's mask is
    what highdicom reads for the instance the frame references (we place frames by position)."""
    folder = _copy(tmp_path, shared_data, series)
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    info = server.get(f"/api/v1/images/{image_id}").json()
    uids = info["sop_instance_uids"]
    body = (shared_data / "seg" / seg_file).read_bytes()
    r = _post(server, f"/api/v1/images/{image_id}/import?format=dicom-seg", data=body)
    assert r.status_code == 201, r.text
    seg = hd.seg.segread(shared_data / "seg" / seg_file)
    referenced = [u for _, _, u in seg.get_source_image_uids() if u in uids]
    numbers = list(seg.segment_numbers)
    expected = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=referenced,
        segment_numbers=numbers,
        ignore_spatial_locations=True,  # dcmqi does not say that spatial locations are kept
    ).astype(bool)
    got = _slice_masks(server, image_id, int(info["height"]), int(info["width"]))
    want = {}
    for c, number in enumerate(numbers):
        desc = seg.get_segment_description(number)
        for n, uid in enumerate(referenced):
            if expected[n, :, :, c].any():
                want[(desc.segment_label, uids.index(uid))] = expected[n, :, :, c]
    assert want and sorted(got) == sorted(want)
    for key, mask in want.items():
        assert np.array_equal(got[key], mask), key
    features = server.get(f"/api/v1/images/{image_id}/annotations?crs=pixel&limit=1000").json()
    for f in features["features"]:
        attrs = f["properties"]["attributes"]
        desc = seg.get_segment_description(attrs["segment_number"])
        assert f["properties"]["label"] == desc.segment_label
        assert attrs["segmented_property_type"]["value"] == desc.segmented_property_type.value


def test_import_true_fractional_seg(serve_dirs: Any, tmp_path: Path, shared_data: Path) -> None:
    """highdicom's truly fractional CT SEG, thresholded at 0.5."""
    folder = _copy(tmp_path, shared_data, "ct_pydicom_ct2_tiny")
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    info = server.get(f"/api/v1/images/{image_id}").json()
    uids = info["sop_instance_uids"]
    path = shared_data / "seg" / "highdicom_seg_image_ct_true_fractional.dcm"
    seg = hd.seg.segread(path)
    r = _post(
        server,
        f"/api/v1/images/{image_id}/import?format=dicom-seg&dry_run=1",
        data=path.read_bytes(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["source"]["segmentation_type"] == "FRACTIONAL"
    assert "0.5" in r.json()["source"]["note"]
    r = _post(server, f"/api/v1/images/{image_id}/import?format=dicom-seg", data=path.read_bytes())
    assert r.status_code == 201, r.text
    referenced = [u for _, _, u in seg.get_source_image_uids()]
    values = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=referenced,
        segment_numbers=[1],
        rescale_fractional=True,
        ignore_spatial_locations=True,
    )[..., 0]
    got = server.get(f"/api/v1/images/{image_id}/annotations?crs=pixel&limit=1000").json()
    masks = {}
    for f in got["features"]:
        m = Mask.from_json(f["properties"]["mask"])
        full = np.zeros((info["height"], info["width"]), dtype=bool)
        full[m.row : m.row + m.height, m.col : m.col + m.width] = m.to_array()
        masks[f["properties"]["slice"]] = full
    assert masks
    for n, uid in enumerate(referenced):
        inside = values[n] >= 0.5
        assert np.array_equal(masks.get(uids.index(uid), np.zeros_like(inside)), inside), uid
    # truly fractional, and the threshold decided: some pixels are in (0, 0.5), some in [0.5, 1)
    assert np.any((values > 0) & (values < 0.5)) and np.any((values >= 0.5) & (values < 1))


def test_import_onto_multiframe_target(serve_dirs: Any, tmp_path: Path, shared_data: Path) -> None:
    """dcmqi's SEG of the 3-file series also lands on the enhanced multi-frame copy of it (same
    frame of reference, another series): frames are placed by position, not by reference."""
    series, enhanced = "ct_dcmqi_23x38x3", "ct_dcmqi_23x38x3_legacy_enhanced"
    server = serve_dirs(_copy(tmp_path, shared_data, series, enhanced))
    ids = {Path(s.info.name).parts[0]: i for i, s in server.catalog.images.items()}
    body = (shared_data / "seg" / "dcmqi_23x38x3_label.seg").read_bytes()
    found = []
    for name in (series, enhanced):
        image_id = ids[name]
        r = _post(server, f"/api/v1/images/{image_id}/import?format=dicom-seg", data=body)
        assert r.status_code == 201, r.text
        found.append(_slice_masks(server, image_id, 38, 23))
    assert found[0] and sorted(found[0]) == sorted(found[1])
    for key, mask in found[0].items():
        assert np.array_equal(mask, found[1][key]), key


def test_import_labelmap_seg(serve_dirs: Any, tmp_path: Path, shared_data: Path) -> None:
    """A LABELMAP SEG (highdicom) gives each segment the pixels holding its number."""
    series = "ct_dcmqi_23x38x3"
    folder = _copy(tmp_path, shared_data, series)
    server = serve_dirs(folder)
    (image_id,) = list(server.catalog.images)
    uids = server.get(f"/api/v1/images/{image_id}").json()["sop_instance_uids"]
    sources = {
        str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, (folder / series).iterdir())
    }
    ordered = [sources[u] for u in uids]  # slice order
    labels = np.zeros((3, 38, 23), dtype=np.uint8)
    labels[0, 5:20, 3:12] = 1
    labels[2, 10:30, 8:20] = 2
    labels[2, 12:16, 9:11] = 1
    category = hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=name, segmented_property_category=category,
            segmented_property_type=hd.sr.CodedConcept(code, "SCT", name),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, name, code in ((1, "Liver", "10200004"), (2, "Kidney", "64033007"))
    ]  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=ordered, pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=2,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test",
        manufacturer_model_name="test", software_versions="0", device_serial_number="0",
    )  # fmt: skip
    r = _post(server, f"/api/v1/images/{image_id}/import?format=dicom-seg", data=_bytes(seg))
    assert r.status_code == 201, r.text
    assert r.json()["source"]["segmentation_type"] == "LABELMAP"
    got = _slice_masks(server, image_id, 38, 23)
    assert sorted(got) == [("Kidney", 2), ("Liver", 0), ("Liver", 2)]
    for (name, k), mask in got.items():
        assert np.array_equal(mask, labels[k] == {"Liver": 1, "Kidney": 2}[name]), (name, k)


def test_seg_off_the_image_grid_is_refused(
    serve_dirs: Any, tmp_path: Path, shared_data: Path
) -> None:
    """Same frame of reference but another pixel spacing, or frames between slices: 422."""
    server = serve_dirs(_copy(tmp_path, shared_data, "ct_dcmqi_23x38x3"))
    (image_id,) = list(server.catalog.images)
    url = f"/api/v1/images/{image_id}/import?format=dicom-seg"
    path = shared_data / "seg" / "dcmqi_23x38x3_label.seg"
    coarse = pydicom.dcmread(path)
    measures = coarse.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    measures.PixelSpacing = [2 * float(v) for v in measures.PixelSpacing]
    r = _post(server, url, data=_bytes(coarse))
    assert r.status_code == 422 and "pixel grid" in r.json()["message"], r.text
    between = pydicom.dcmread(path)
    iop = np.asarray(
        between.SharedFunctionalGroupsSequence[0]
        .PlaneOrientationSequence[0]
        .ImageOrientationPatient,
        dtype=float,
    )
    normal = np.cross(iop[:3], iop[3:])
    kept = between.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    step = float(kept.get("SpacingBetweenSlices") or kept.SliceThickness)
    position = between.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    ipp = np.asarray(position.ImagePositionPatient, dtype=float) + normal * 0.3 * step
    position.ImagePositionPatient = [round(float(v), 4) for v in ipp]
    r = _post(server, url, data=_bytes(between))
    assert r.status_code == 422 and "pixel grid" in r.json()["message"], r.text
    assert server.get(f"/api/v1/images/{image_id}/annotations?crs=pixel").json()["features"] == []
    r = _post(server, url, data=path.read_bytes())
    assert r.status_code == 201, r.text
