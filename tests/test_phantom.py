"""Synthetic thigh studies: DICOM validity, geometry contract, label alignment, reproducibility, speed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from sciatic.imaging.volume import read_volume
from sciatic.phantom import Cohort, HardCase, Manifest, PhantomOptions, generate
from sciatic.phantom.cohort import NERVE_CSA_MM2, draw_nerve_csa, plan_subjects
from sciatic.phantom.generate import MATRICES, SLICE_RANGE
from sciatic.phantom.geometry import PatientPosition, SeriesGeometry, rotation, scanner_axes

SEED = 11
SLICES = 10
# Warnings dciodvfy gives for the rescale tags, which the MR IOD does not list.
ALLOWED_WARNINGS = ("Rescale", "not present in standard DICOM IOD", "Modality LUT")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Manifest]:
    """Four subjects, one of each hard case, two per cohort."""
    root = tmp_path_factory.mktemp("phantom")
    manifest = generate(root / "dicom", 4, SEED, root / "labels", PhantomOptions(slices=SLICES, hard_fraction=1.0))
    return root / "dicom", root / "labels", manifest


def _read_series(directory: Path) -> list[pydicom.Dataset]:
    """The slices of a series sorted by position along the normal (docs/conventions.md)."""
    slices = [pydicom.dcmread(path) for path in sorted(directory.glob("*.dcm"))]
    orientation = np.array(slices[0].ImageOrientationPatient, float)
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(slices, key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, float))))


def _affine_from_headers(slices: list[pydicom.Dataset]) -> NDArray[np.float64]:
    """The conventions.md affine, computed independently of the phantom's own geometry code."""
    orientation = np.array(slices[0].ImageOrientationPatient, float)
    r, c = orientation[:3], orientation[3:]
    dr, dc = (float(v) for v in slices[0].PixelSpacing)
    first = np.array(slices[0].ImagePositionPatient, float)
    last = np.array(slices[-1].ImagePositionPatient, float)
    ds = float(np.linalg.norm(last - first)) / (len(slices) - 1)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = r * dc, c * dr, np.cross(r, c) * ds, first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _ring_contrast(image: NDArray[np.float64], mask: NDArray[np.bool_]) -> float:
    """Mean of the one-pixel in-plane ring around ``mask`` minus the mean inside it."""
    ring = ndimage.binary_dilation(mask, np.ones((3, 3, 1), bool)) & ~mask
    return float(image[ring].mean() - image[mask].mean())


def test_manifest_records_cohorts_hard_cases_and_nerve_size(study: tuple[Path, Path, Manifest]) -> None:
    dicom_dir, labels_dir, manifest = study
    assert Manifest.read(dicom_dir) == manifest
    assert sorted(s.cohort for s in manifest.subjects) == ["control", "control", "patient", "patient"]
    assert sorted(k for s in manifest.subjects for k in s.hard_cases) == sorted(k.value for k in HardCase)
    for subject in manifest.subjects:
        assert (subject.rows, subject.columns, subject.slices) == (256, 256, SLICES)
        assert (labels_dir / f"{subject.series_instance_uid}.nii.gz").is_file()
        assert len(list((dicom_dir / subject.dicom_dir).glob("*.dcm"))) == SLICES
        if HardCase.PARTIAL_COVERAGE.value in subject.hard_cases:
            assert 0 < subject.nerve_slices_in_view < SLICES
        else:
            assert subject.nerve_slices_in_view == SLICES
            assert subject.mask_csa_mm2 == pytest.approx(subject.nerve_csa_mm2, rel=0.15)


def test_every_file_passes_dciodvfy(study: tuple[Path, Path, Manifest]) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy not found: install Debian's dicom3tools (`make system-deps`)")
    dicom_dir, _, _ = study
    files = sorted(dicom_dir.rglob("*.dcm"))
    assert len(files) == 4 * SLICES
    for path in files:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        lines = (result.stdout + result.stderr).splitlines()
        assert lines[0].strip() == "MRImage", lines
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{path}: {errors}"
        warnings = [line for line in lines if line.startswith("Warning")]
        unexpected = [w for w in warnings if not any(allowed in w for allowed in ALLOWED_WARNINGS)]
        assert not unexpected, f"{path}: {unexpected}"


def test_headers_identify_subjects_and_carry_the_cohort(study: tuple[Path, Path, Manifest]) -> None:
    dicom_dir, _, manifest = study
    sop_uids: set[str] = set()
    for subject in manifest.subjects:
        slices = _read_series(dicom_dir / subject.dicom_dir)
        assert {ds.PatientID for ds in slices} == {subject.patient_id}
        assert {ds.SeriesInstanceUID for ds in slices} == {subject.series_instance_uid}
        assert {ds.StudyInstanceUID for ds in slices} == {subject.study_instance_uid}
        assert {ds.PatientComments for ds in slices} == {f"cohort={subject.cohort}"}
        assert {ds.PatientPosition for ds in slices} == {subject.patient_position}
        assert slices[0].file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert slices[0].SOPClassUID == pydicom.uid.MRImageStorage
        assert 12 <= slices[0].BitsStored <= 16 and slices[0].PixelRepresentation == 0
        assert int(np.max([ds.pixel_array.max() for ds in slices])) < 2 ** slices[0].BitsStored
        sop_uids.update(ds.SOPInstanceUID for ds in slices)
        # The orientation follows the patient position, turned by at most a few degrees.
        r0, c0 = scanner_axes(PatientPosition(subject.patient_position))
        orientation = np.array(slices[0].ImageOrientationPatient, float)
        assert np.dot(orientation[:3], r0) > np.cos(np.deg2rad(15))
        assert np.dot(orientation[3:], c0) > np.cos(np.deg2rad(15))
    assert len(sop_uids) == 4 * SLICES
    assert len({s.patient_id for s in manifest.subjects}) == 4


def test_label_has_the_conventions_affine_of_the_headers(study: tuple[Path, Path, Manifest]) -> None:
    dicom_dir, labels_dir, manifest = study
    for subject in manifest.subjects:
        slices = _read_series(dicom_dir / subject.dicom_dir)
        label = read_volume(labels_dir / f"{subject.series_instance_uid}.nii.gz")
        assert label.data.dtype == np.uint8 and set(np.unique(label.data)) <= {0, 1}
        assert label.shape == (slices[0].Columns, slices[0].Rows, len(slices))
        np.testing.assert_allclose(label.affine, _affine_from_headers(slices), atol=1e-4)
        np.testing.assert_allclose(np.array(subject.affine), label.affine, atol=1e-5)


def test_label_aligns_with_the_nerve_in_the_headers_stack(study: tuple[Path, Path, Manifest]) -> None:
    """Inside the mask the nerve is darker than its bright fat rim; a shifted mask shows no rim."""
    dicom_dir, labels_dir, manifest = study
    for subject in manifest.subjects:
        slices = _read_series(dicom_dir / subject.dicom_dir)
        volume = np.stack([ds.pixel_array for ds in slices], axis=-1).transpose(1, 0, 2).astype(float)
        volume /= np.percentile(volume, 99.5)
        mask = read_volume(labels_dir / f"{subject.series_instance_uid}.nii.gz").data > 0
        contrast = _ring_contrast(volume, mask)
        assert contrast > 0.08, subject.hard_cases
        for axis in (0, 1):
            for shift in (-4, 4):
                assert _ring_contrast(volume, np.roll(mask, shift, axis=axis)) < contrast - 0.1


def test_conversion_reproduces_the_phantom_affine_and_label(study: tuple[Path, Path, Manifest], tmp_path: Path) -> None:
    convert = pytest.importorskip("sciatic.dicom.convert")
    dicom_dir, labels_dir, manifest = study
    for subject in manifest.subjects:
        report = convert.convert_directory(dicom_dir / subject.dicom_dir, tmp_path / subject.patient_id)
        (outcome,) = report.series
        assert outcome.status == "converted", outcome.detail
        volume = read_volume(outcome.output)
        label = read_volume(labels_dir / f"{subject.series_instance_uid}.nii.gz")
        assert outcome.output.name == f"{subject.series_instance_uid}.nii.gz"
        assert volume.shape == label.shape
        np.testing.assert_allclose(volume.affine, label.affine, atol=1e-4)
        image = volume.data.astype(float) / np.percentile(volume.data, 99.5)
        assert _ring_contrast(image, label.data > 0) > 0.08


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    options = PhantomOptions(slices=3, hard_fraction=1.0, hard_kinds=(HardCase.MOTION,))
    runs = [generate(tmp_path / name / "dicom", 1, 5, tmp_path / name / "labels", options) for name in ("a", "b")]
    assert runs[0] == runs[1]
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 3 + 1 + 1
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = generate(tmp_path / "c", 1, 6, options=options)
    assert other.subjects[0].series_instance_uid != runs[0].subjects[0].series_instance_uid


def test_other_matrices_and_slice_counts(tmp_path: Path) -> None:
    fixed = generate(tmp_path / "fixed", 1, 3, tmp_path / "labels", PhantomOptions(matrix=(224, 256), slices=6))
    (subject,) = fixed.subjects
    assert (subject.rows, subject.columns, subject.slices) == (224, 256, 6)
    label = read_volume(tmp_path / "labels" / f"{subject.series_instance_uid}.nii.gz")
    assert label.shape == (256, 224, 6)
    drawn = generate(tmp_path / "random", 1, 4, options=PhantomOptions(matrix=None, slices=None)).subjects[0]
    assert (drawn.rows, drawn.columns) in MATRICES
    assert SLICE_RANGE[0] <= drawn.slices <= SLICE_RANGE[1]
    assert 0.6 <= drawn.pixel_spacing_mm[0] <= 0.8 and 3.0 <= drawn.slice_spacing_mm <= 5.0


def test_nerve_csa_by_cohort() -> None:
    rng = np.random.default_rng(0)
    for cohort in NERVE_CSA_MM2:
        draws = np.array([draw_nerve_csa(rng, cohort) for _ in range(4000)])
        mean, spread = NERVE_CSA_MM2[cohort]
        assert abs(draws.mean() - mean) < 0.05 * mean
        assert abs(draws.std() - spread) < 0.15 * spread
        assert draws.min() > 0


def test_plan_subjects_counts_and_rejects_bad_fractions() -> None:
    plans = plan_subjects(10, 1, patient_fraction=0.4, hard_fraction=0.2, hard_kinds=tuple(HardCase))
    assert sum(p.cohort is Cohort.PATIENT for p in plans) == 4
    assert sum(bool(p.hard_cases) for p in plans) == 2
    assert plan_subjects(10, 1, 0.4, 0.2, tuple(HardCase)) == plans
    assert not any(p.hard_cases for p in plan_subjects(5, 1, 0.5, 1.0, ()))
    with pytest.raises(ValueError):
        plan_subjects(3, 1, patient_fraction=1.5, hard_fraction=0.2, hard_kinds=())


@pytest.mark.parametrize("position", list(PatientPosition))
def test_body_coordinates_match_image_positions(position: PatientPosition) -> None:
    """The anatomy's left/posterior/superior axes are the patient axes turned by the obliquity."""
    geometry = SeriesGeometry(
        rows=6,
        columns=5,
        slices=4,
        row_spacing=0.7,
        column_spacing=0.75,
        slice_spacing=4.0,
        position=position,
        obliquity_deg=(3.0, -2.0, 4.0),
        centre=(-90.0, 20.0, -300.0),
        ascending=position is PatientPosition.HFS,
    )
    left, posterior, superior = geometry.body_coordinates()
    turned = rotation(geometry.obliquity_deg)
    r, c = geometry.row_direction, geometry.column_direction
    for k in range(geometry.slices):
        for j in range(geometry.rows):
            for i in range(geometry.columns):
                lps = geometry.image_position(k) + i * geometry.column_spacing * r + j * geometry.row_spacing * c
                body = turned.T @ (lps - np.array(geometry.centre))
                np.testing.assert_allclose(body, [left[i], posterior[j], superior[k]], atol=1e-3)
