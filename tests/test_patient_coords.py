"""Pixel <-> patient (LPS mm) mapping of DICOM volumes against an independent computation."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annot.patient import (
    PLANES,
    PatientVolume,
    VolumeGeometry,
    geometry_from_dicom,
    patient_to_plane,
    plane_geometry,
    plane_grid,
    plane_to_patient,
)
from tileserver.catalog import scan
from tileserver.phantom import PhantomSpec, write_ct_phantom

REAL_SERIES = ["ct_lung_pet_ct_dx_A0002_B40f", "mr_adc_ge_dcmqi_20slice"]


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("TESSERA_STATE_DIR", str(path))
    return path


def independent(folder: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(IPP, row direction, column direction, PixelSpacing) per file, sorted along the normal,
    straight from pydicom."""
    out = []
    for p in sorted(folder.iterdir()):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        out.append((ipp, iop[:3], iop[3:], np.array([float(v) for v in ds.PixelSpacing])))
    normal = np.cross(out[0][1], out[0][2])
    out.sort(key=lambda t: float(t[0] @ normal))
    return out


def source_for(folder: Path):
    catalog = scan([folder])
    assert len(catalog.images) == 1, catalog.images
    return next(iter(catalog.images.values()))


@pytest.mark.parametrize("series", REAL_SERIES)
def test_slice_order_and_pixel_corners_match_ipp_iop_spacing(
    shared_data: Path, series: str
) -> None:
    folder = shared_data / "dicom" / series
    src = source_for(folder)
    ref = independent(folder)
    meta = src.info.to_json()
    assert meta["slices"] == len(ref)
    assert meta["kind"] == "dicom-volume"
    # Slice order: by position along the normal, whatever the file names or instance numbers.
    np.testing.assert_allclose(meta["slice_positions"], [r[0] for r in ref], atol=1e-9)
    np.testing.assert_allclose(meta["origin"], ref[0][0], atol=1e-9)
    w, h = meta["width"], meta["height"]
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h], [0.5, 0.5], [17.25, 3.5]], dtype=float)
    volume = PatientVolume.from_metadata(w, h, meta)
    # One orientation for the volume: the lowest slice's. The files agree to 1e-8 (DS rounding);
    # each slice keeps its own ImagePositionPatient and PixelSpacing.
    _, rowdir, coldir, _ = ref[0]
    assert max(np.abs(np.r_[r[1], r[2]] - np.r_[rowdir, coldir]).max() for r in ref) < 1e-7
    for k, (ipp, _, _, ps) in enumerate(ref):
        # DICOM: PixelSpacing = [between rows, between columns]; the first pixel's centre is IPP.
        expected = (
            ipp + (corners[:, :1] - 0.5) * ps[1] * rowdir + (corners[:, 1:] - 0.5) * ps[0] * coldir
        )
        got = plane_to_patient(src.geometry, corners[:, 0], corners[:, 1], k)
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
        pts = np.column_stack([corners, np.full(len(corners), k)])
        np.testing.assert_allclose(
            volume.pixel_to_lps(pts, meta["acquisition_plane"]), expected, atol=1e-6, rtol=0
        )
        back = np.column_stack(patient_to_plane(src.geometry, expected))
        np.testing.assert_allclose(back, pts, atol=1e-6, rtol=0)
    # Slice 0 is the lowest along the normal row x column.
    normal = np.cross(ref[0][1], ref[0][2])
    heights = [float(r[0] @ normal) for r in ref]
    assert heights == sorted(heights)
    assert np.allclose(meta["direction"][2], normal / np.linalg.norm(normal), atol=1e-6)


def test_mr_file_names_are_not_position_order(shared_data: Path) -> None:
    folder = shared_data / "dicom" / "mr_adc_ge_dcmqi_20slice"
    src = source_for(folder)
    order = [f.path.name for f in src.frames]
    assert order != sorted(order)  # 000006 lies between 000003 and 000004 (MANIFEST)
    assert order.index("000006.dcm") in (
        order.index("000003.dcm") + 1,
        order.index("000003.dcm") - 1,
    )


def test_coronal_plane_of_the_lung_ct_has_square_pixels(shared_data: Path) -> None:
    src = source_for(shared_data / "dicom" / "ct_lung_pet_ct_dx_A0002_B40f")
    meta = src.info.to_json()
    sx, sy, sz = meta["spacing"]
    assert sz == pytest.approx(8.0)
    assert sx == pytest.approx(sy)
    cor = meta["planes"]["coronal"]
    assert cor["width"] == 512
    assert cor["height"] == round(30 * 8.0 / sx)
    assert cor["slices"] == 512
    assert cor["spacing"][0] == pytest.approx(sx)
    assert cor["spacing"][1] == pytest.approx(30 * 8.0 / cor["height"])
    # Head up, patient left on the right: +x along a row, -z down a column.
    np.testing.assert_allclose(cor["direction"][0], [1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(cor["direction"][1], [0, 0, -1], atol=1e-9)
    sag = meta["planes"]["sagittal"]
    assert (sag["width"], sag["height"], sag["slices"]) == (512, cor["height"], 512)
    np.testing.assert_allclose(sag["direction"][0], [0, 1, 0], atol=1e-9)
    np.testing.assert_allclose(sag["direction"][1], [0, 0, -1], atol=1e-9)
    ax = meta["planes"]["axial"]
    assert (ax["width"], ax["height"], ax["slices"]) == (512, 512, 30)
    # The top edge of the coronal plane is the top face of the highest slice's slab.
    ref = independent(shared_data / "dicom" / "ct_lung_pet_ct_dx_A0002_B40f")
    top = plane_to_patient(src.geometry, 0.5, 0.0, 0, "coronal")
    assert top[2] == pytest.approx(ref[-1][0][2] + 4.0, abs=1e-6)
    bottom = plane_to_patient(src.geometry, 0.5, cor["height"], 0, "coronal")
    assert bottom[2] == pytest.approx(ref[0][0][2] - 4.0, abs=1e-6)


@pytest.mark.parametrize("series", REAL_SERIES)
def test_plane_geometries_are_right_handed_and_affine(shared_data: Path, series: str) -> None:
    src = source_for(shared_data / "dicom" / series)
    rng = np.random.default_rng(3)
    for plane in PLANES:
        g = plane_geometry(src.geometry, plane)
        d = np.asarray(g.direction)
        assert np.linalg.det(d) == pytest.approx(1.0, abs=1e-3)
        w, h, n = g.shape
        pts = rng.uniform([0, 0, 0], [w, h, n - 1], size=(20, 3))
        via_grid = plane_to_patient(src.geometry, pts[:, 0], pts[:, 1], pts[:, 2], plane)
        affine = (
            np.asarray(g.origin)
            + (pts[:, :1] - 0.5) * g.spacing[0] * d[0]
            + (pts[:, 1:2] - 0.5) * g.spacing[1] * d[1]
            + pts[:, 2:] * g.spacing[2] * d[2]
        )
        np.testing.assert_allclose(via_grid, affine, atol=5e-3)  # real IPPs: regular to ~1e-3 mm


@settings(max_examples=60, deadline=None)
@given(
    tilt=st.floats(-40, 40),
    plane=st.sampled_from(PLANES),
    col=st.floats(0, 40),
    row=st.floats(0, 30),
    frac=st.floats(0, 1),
)
def test_plane_round_trip(tilt: float, plane: str, col: float, row: float, frac: float) -> None:
    spec = PhantomSpec(cols=40, rows=30, slices=12, tilt_deg=tilt)
    geom = geometry_from_dicom(
        [spec.position(k) for k in range(spec.slices)],
        [*spec.orientation[0], *spec.orientation[1]],
        [spec.pixel_spacing, spec.pixel_spacing],
        spec.rows,
        spec.cols,
    )
    grid = plane_grid(geom, plane)
    c, r = col / 40 * grid.shape[0], row / 30 * grid.shape[1]
    s = frac * (grid.shape[2] - 1)
    xyz = plane_to_patient(geom, c, r, s, plane)
    back = patient_to_plane(geom, xyz, plane)
    np.testing.assert_allclose([float(v) for v in back], [c, r, s], atol=1e-6)


def test_irregular_stack_uses_each_slice_position() -> None:
    ipp = [[0, 0, 0], [0, 0, 2.0], [0, 0, 4.0], [0, 0, 10.0]]  # a gap after slice 2
    geom = geometry_from_dicom(ipp, [1, 0, 0, 0, 1, 0], [0.5, 0.5], 8, 8)
    assert geom.spacing[2] == pytest.approx(2.0)
    for k, p in enumerate(ipp):
        np.testing.assert_allclose(plane_to_patient(geom, 0.5, 0.5, k), p, atol=1e-12)
    np.testing.assert_allclose(plane_to_patient(geom, 0.5, 0.5, 2.5), [0, 0, 7.0], atol=1e-12)
    assert float(patient_to_plane(geom, [0.25, 0.25, 7.0])[2]) == pytest.approx(2.5)


def test_oblique_phantom_maps_sphere_centres_to_their_hu(tmp_path: Path) -> None:
    spec = PhantomSpec(cols=48, rows=48, slices=30, tilt_deg=25.0)
    write_ct_phantom(tmp_path / "data" / "oblique", spec)
    src = source_for(tmp_path / "data")
    ipp0 = np.asarray(src.info.extra["origin"])
    np.testing.assert_allclose(ipp0, spec.position(0), atol=1e-5)
    for name, (centre, _radius, hu) in spec.sphere_centres().items():
        for plane in PLANES:
            c, r, s = (float(v) for v in patient_to_plane(src.geometry, centre, plane))
            got = src.value_at(c, r, round(s), plane)
            assert got["value"] == pytest.approx(hu), (name, plane, c, r, s)
            # The reported patient position is the pixel centre, within a pixel of the sphere centre.
            assert np.linalg.norm(np.asarray(got["patient"]) - centre) < 2.5


def test_volume_geometry_validates() -> None:
    eye = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        VolumeGeometry((0, 0, 0), (0.0, 1.0, 1.0), eye, (2, 2, 2))
    with pytest.raises(ValueError, match="parallel"):
        VolumeGeometry((0, 0, 0), (1, 1, 1), ((1, 0, 0), (1, 0, 0), (0, 0, 1)), (2, 2, 2))


def test_annot_patient_imports_no_server_code() -> None:
    tree = ast.parse((Path(__file__).parent.parent / "annot" / "patient.py").read_text())
    names = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert names <= {"__future__", "itertools", "dataclasses", "typing", "numpy"}
