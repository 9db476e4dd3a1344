"""Phantom v2: series, DICOM validity, eligibility, exact truth grid, partial-volume truth, bifurcation, bytes."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from sciatic.cli import main
from sciatic.config import Settings
from sciatic.db.enums import Cohort, EligibilityReason
from sciatic.dicom.convert import convert_directory
from sciatic.dicom.eligibility import SeriesFacts, assess
from sciatic.dicom.scan import DicomHeader, read_header
from sciatic.errors import ReasonCode
from sciatic.imaging.volume import Volume, read_volume
from sciatic.phantom import Manifest, PhantomOptions, generate
from sciatic.phantom.geometry import PatientPosition
from sciatic.phantom.v2 import ManifestV2, PhantomV2Options, SubjectRecordV2, generate_v2
from sciatic.phantom.v2.body import draw_body, draw_frame, place_slab, split_levels
from sciatic.phantom.v2.contrast import Contrast, draw_levels
from sciatic.phantom.v2.generate import draw_pd, render_pd
from sciatic.phantom.v2.nerve import lens_area, union_area
from sciatic.phantom.v2.plan import (
    NERVE_CSA_MEDIAN_MM2,
    FieldOfView,
    Side,
    SubjectPlanV2,
    draw_nerve_csa,
    plan_subjects_v2,
)
from sciatic.phantom.v2.planes import Orientation, Stack, directions
from sciatic.phantom.v2.preview import save_preview
from sciatic.phantom.v2.render import Sampling, render_stack
from sciatic.phantom.v2.sites import SITE_B
from sciatic.phantom.v2.truth import converted_order, label_volume

SEED = 5
SUBJECTS = 4
# dciodvfy warnings we accept: the optional rescale tags (not in the MR IOD) and the localizer's ImageType term.
ALLOWED_WARNINGS = ("Rescale", "not present in standard DICOM IOD", "Modality LUT", "<LOCALIZER> for value 3")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ManifestV2]:
    """Four subjects: two patients, two bilateral, two with the split in view, one fat-sat, one 3D."""
    root = tmp_path_factory.mktemp("phantom_v2")
    manifest = generate_v2(root / "dicom", SUBJECTS, SEED, root / "labels", PhantomV2Options())
    return root / "dicom", root / "labels", manifest


def _fractions(options: PhantomV2Options) -> dict[str, float]:
    return {
        "patient_fraction": options.patient_fraction,
        "bilateral_fraction": options.bilateral_fraction,
        "bifurcation_fraction": options.bifurcation_fraction,
        "fat_sat_fraction": options.fat_sat_fraction,
        "three_d_fraction": options.three_d_fraction,
    }


def _series(dicom_dir: Path, subject: SubjectRecordV2, kind: str) -> list[pydicom.Dataset]:
    (record,) = [s for s in subject.series if s.kind == kind]
    return [pydicom.dcmread(path) for path in sorted((dicom_dir / record.dicom_dir).glob("*.dcm"))]


def _side_of(volume: Volume, side: str) -> NDArray[np.bool_]:
    """The mask's voxels on the patient's ``side``: RAS x > 0 is the patient's right (DICOM LPS x < 0)."""
    i, j, k = np.indices(volume.shape)
    x = volume.affine[0, 0] * i + volume.affine[0, 1] * j + volume.affine[0, 2] * k + volume.affine[0, 3]
    mask = volume.data > 0
    return np.asarray(mask & ((x > 0) if side == "R" else (x < 0)), np.bool_)


def test_manifest_records_every_kind_of_subject(study: tuple[Path, Path, ManifestV2]) -> None:
    dicom_dir, labels_dir, manifest = study
    assert ManifestV2.read(dicom_dir) == manifest and manifest.version == 2
    subjects = manifest.subjects
    assert sorted(s.cohort for s in subjects) == ["control", "control", "patient", "patient"]
    assert sorted(s.field_of_view for s in subjects) == ["bilateral", "bilateral", "unilateral", "unilateral"]
    assert sum(s.bifurcation for s in subjects) == 2
    assert sum(s.fat_sat for s in subjects) == 1 and sum(s.acquisition == "3D" for s in subjects) == 1
    for s in subjects:
        assert [r.kind for r in s.series] == ["localizer", "t1_coronal", "pd_axial"]
        assert (labels_dir / f"{s.series_instance_uid}.nii.gz").is_file()
        assert s.patient_position in ("HFS", "FFS") and 0 <= s.fatty_infiltration_grade <= 3
        assert 12 <= s.snr <= 35
        sides = sorted(side.side for side in s.sides)
        if s.field_of_view == "bilateral":
            assert sides == ["L", "R"] and s.laterality == "B"
            assert 0.85 <= s.pixel_spacing_mm[0] <= 1.1
        else:
            assert sides == [s.laterality] and s.laterality in ("R", "L")
            assert 0.6 <= s.pixel_spacing_mm[0] <= 0.8
        if s.acquisition == "2D":
            assert 3.0 <= s.slice_thickness_mm <= 5.0 and s.slice_spacing_mm >= s.slice_thickness_mm
        else:
            assert 0.9 <= s.slice_thickness_mm <= 1.2 and s.slice_spacing_mm == s.slice_thickness_mm
        for side in s.sides:
            assert side.nerve_slices_in_view == s.slices
            assert (side.bifurcation_z_mm is not None) == s.bifurcation


def test_every_file_passes_dciodvfy(study: tuple[Path, Path, ManifestV2]) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy not found: install Debian's dicom3tools (`make system-deps`)")
    dicom_dir, _, manifest = study
    files = sorted(dicom_dir.rglob("*.dcm"))
    assert len(files) == sum(r.images for s in manifest.subjects for r in s.series)
    for path in files:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        lines = (result.stdout + result.stderr).splitlines()
        assert lines[0].strip() == "MRImage", lines
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{path}: {errors}"
        warnings = [line for line in lines if line.startswith("Warning")]
        unexpected = [w for w in warnings if not any(allowed in w for allowed in ALLOWED_WARNINGS)]
        assert not unexpected, f"{path}: {unexpected}"


def test_headers_describe_each_series(study: tuple[Path, Path, ManifestV2]) -> None:
    dicom_dir, _, manifest = study
    sop_uids: set[str] = set()
    for s in manifest.subjects:
        localizer, t1, pd = (_series(dicom_dir, s, kind) for kind in ("localizer", "t1_coronal", "pd_axial"))
        every = [*localizer, *t1, *pd]
        assert {ds.StudyInstanceUID for ds in every} == {s.study_instance_uid}
        assert {ds.FrameOfReferenceUID for ds in every} == {s.frame_of_reference_uid}
        assert {ds.PatientID for ds in every} == {s.patient_id}
        assert {ds.PatientComments for ds in every} == {f"cohort={s.cohort}"}
        assert {ds.PatientPosition for ds in every} == {s.patient_position}
        for ds in every:  # unilateral: Laterality R/L; bilateral: no Laterality, ImageLaterality B
            assert ds.get("Laterality", "") == ("" if s.laterality == "B" else s.laterality)
            assert ds.get("ImageLaterality", "") == ("B" if s.laterality == "B" else "")
        sop_uids.update(ds.SOPInstanceUID for ds in every)
        # the localizer: three planes, ImageType LOCALIZER, gradient echo
        assert all("LOCALIZER" in ds.ImageType for ds in localizer) and len(localizer) == 9
        normals = {
            tuple(np.round(np.abs(np.cross(*np.reshape(ds.ImageOrientationPatient, (2, 3)))))) for ds in localizer
        }
        assert normals == {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)}
        # the T1 coronal: TR about 500 ms, TE about 12 ms, slices facing front to back
        assert 450 <= float(t1[0].RepetitionTime) <= 650 and 10 <= float(t1[0].EchoTime) <= 14
        assert abs(np.cross(*np.reshape(t1[0].ImageOrientationPatient, (2, 3)))[1]) > 0.95
        # the PD axial series
        head = pd[0]
        assert float(head.RepetitionTime) >= 1000 and float(head.EchoTime) <= 50
        assert head.MRAcquisitionType == s.acquisition and len(pd) == s.slices
        assert ("FS" in head.get("ScanOptions", [])) == s.fat_sat
        assert [float(v) for v in head.PixelSpacing] == s.pixel_spacing_mm
        assert float(head.SliceThickness) == s.slice_thickness_mm
        assert (head.Rows, head.Columns) == (s.rows, s.columns)
        assert abs(np.cross(*np.reshape(head.ImageOrientationPatient, (2, 3)))[2]) > np.cos(np.deg2rad(15))
    assert len(sop_uids) == sum(r.images for s in manifest.subjects for r in s.series)


def _facts(headers: list[DicomHeader]) -> SeriesFacts:
    """What the ingest gives the eligibility rules, from the headers (the localizer never converts)."""
    first = headers[0]
    orientation = first.frames[0].orientation
    assert orientation is not None
    normal = np.cross(orientation[:3], orientation[3:])
    return SeriesFacts(
        series_instance_uid=first.series_instance_uid,
        description=first.series_description,
        image_types=frozenset(value for header in headers for value in header.image_type),
        n_slices=len(headers),
        slice_normal=(float(normal[0]), float(normal[1]), float(normal[2])),
        repetition_time_ms=first.repetition_time_ms,
        echo_time_ms=first.echo_time_ms,
        scanning_sequence=first.scanning_sequence,
        scan_options=first.scan_options,
        body_part=first.body_part,
    )


def test_only_the_pd_axial_series_is_eligible(study: tuple[Path, Path, ManifestV2]) -> None:
    dicom_dir, _, manifest = study
    rules = Settings().eligibility_rules()
    for s in manifest.subjects:
        by_series: dict[str, list[DicomHeader]] = defaultdict(list)
        for path in sorted((dicom_dir / s.dicom_dir).rglob("*.dcm")):
            header = read_header(path)
            by_series[header.series_instance_uid].append(header)
        kinds = {r.series_instance_uid: r.kind for r in s.series}
        for uid, headers in by_series.items():
            verdict = assess(_facts(headers), rules)
            if kinds[uid] == "pd_axial":
                assert verdict.eligible, (s.patient_id, s.fat_sat, verdict.detail)
            else:
                assert not verdict.eligible, (kinds[uid], verdict.detail)
                expected = {"localizer": {EligibilityReason.LOCALIZER}}.get(
                    kinds[uid], {EligibilityReason.NOT_AXIAL, EligibilityReason.NOT_PD}
                )
                assert verdict.reason in expected, verdict.detail


def test_conversion_gives_the_truth_grid(study: tuple[Path, Path, ManifestV2], tmp_path: Path) -> None:
    """The converted PD volume and the truth mask share shape and affine; the localizer is refused."""
    dicom_dir, labels_dir, manifest = study
    for s in manifest.subjects:
        report = convert_directory(dicom_dir / s.dicom_dir, tmp_path / s.patient_id)
        outcomes = {o.series_instance_uid: o for o in report.series}
        kinds = {r.kind: r.series_instance_uid for r in s.series}
        pd = outcomes[kinds["pd_axial"]]
        assert pd.status == "converted" and pd.output is not None, pd.detail
        volume = read_volume(pd.output)
        truth = read_volume(labels_dir / f"{s.series_instance_uid}.nii.gz")
        assert truth.data.dtype == np.uint8 and set(np.unique(truth.data)) == {0, 1}
        assert volume.shape == truth.shape == (s.columns, s.rows, s.slices)
        np.testing.assert_allclose(volume.affine, truth.affine, atol=1e-6)
        np.testing.assert_allclose(np.array(s.affine), truth.affine, atol=1e-5)
        assert outcomes[kinds["t1_coronal"]].status == "converted"
        assert outcomes[kinds["localizer"]].reason is ReasonCode.MIXED_ORIENTATION


def test_truth_area_per_side_matches_the_manifest(study: tuple[Path, Path, ManifestV2]) -> None:
    """Per thigh, the mask (partial-volume fraction >= 0.5) has about the nerve's partial-volume area."""
    _, labels_dir, manifest = study
    for s in manifest.subjects:
        truth = read_volume(labels_dir / f"{s.series_instance_uid}.nii.gz")
        pixel_area = s.pixel_spacing_mm[0] * s.pixel_spacing_mm[1]
        assert sum(_side_of(truth, side.side).sum() for side in s.sides) == truth.data.sum()
        for side in s.sides:
            mask = _side_of(truth, side.side)
            areas = mask.sum(axis=(0, 1)) * pixel_area
            assert np.all(areas > 0)
            assert float(areas.mean()) == pytest.approx(side.mask_csa_mm2, abs=0.01)
            # the fraction threshold neither grows nor shrinks the nerve: a few per cent, at most
            assert side.mask_csa_mm2 == pytest.approx(side.true_csa_mm2, rel=0.06)
            assert (side.centroid_ras_mm[0] > 0) == (side.side == "R")
            # the slab lies across the mid-to-distal thigh: the area stays near the designed trunk CSA
            assert 0.6 < side.true_csa_mm2 / side.designed_csa_mm2 < 1.8
    by_cohort: dict[str, list[float]] = defaultdict(list)
    for s in manifest.subjects:
        by_cohort[s.cohort].extend(side.designed_csa_mm2 for side in s.sides)
    assert min(by_cohort["patient"]) > max(by_cohort["control"])


def test_the_truth_lies_on_the_nerve(study: tuple[Path, Path, ManifestV2], tmp_path: Path) -> None:
    """Voxel by voxel: the converted PD volume is the painted signal (plus coil shading and noise) and the
    truth is the painted nerve fraction >= 0.5, both in the converter's (column, row, sorted slice) order."""
    dicom_dir, labels_dir, manifest = study
    plans = plan_subjects_v2(SUBJECTS, SEED, **_fractions(PhantomV2Options()))
    for s, plan in zip(manifest.subjects, plans, strict=True):
        (pd,) = [r for r in s.series if r.kind == "pd_axial"]
        (outcome,) = convert_directory(dicom_dir / pd.dicom_dir, tmp_path / s.patient_id).series
        assert outcome.output is not None
        image = read_volume(outcome.output).data.astype(float)
        draw = draw_pd(plan, SEED, PhantomV2Options())
        painted = render_pd(draw)
        signal = converted_order(painted.signal, draw.stack).astype(float)
        assert np.corrcoef(image.ravel(), signal.ravel())[0, 1] > 0.9, s.patient_id
        body = signal > 0.2  # inside the thighs, where the anatomy's detail decides the match
        matched = np.corrcoef(image[body], signal[body])[0, 1]
        assert matched > 0.8
        for shift in (-3, 3):
            for axis in (0, 1):
                moved = np.roll(signal, shift, axis=axis)
                assert np.corrcoef(image[body], moved[body])[0, 1] < matched - 0.1
        truth = read_volume(labels_dir / f"{s.series_instance_uid}.nii.gz").data > 0
        nerve = np.any([fraction >= 0.5 for fraction in painted.nerve.values()], axis=0)
        np.testing.assert_array_equal(truth, label_volume(nerve, draw.stack) > 0)
        assert sorted(side.value for side in painted.nerve) == sorted(side.side for side in s.sides)


def test_the_nerve_splits_into_a_larger_medial_tibial_and_a_lateral_peroneal_branch(
    study: tuple[Path, Path, ManifestV2],
) -> None:
    _, labels_dir, manifest = study
    for s in manifest.subjects:
        truth = read_volume(labels_dir / f"{s.series_instance_uid}.nii.gz")
        for side in s.sides:
            mask = _side_of(truth, side.side)
            pieces = [ndimage.label(mask[:, :, k]) for k in range(s.slices)]
            # the level of each slice at the nerve (slices are tilted a little)
            z = np.array([(truth.affine @ [*ndimage.center_of_mass(mask[:, :, k]), k, 1])[2] for k in range(s.slices)])
            counts = np.array([n for _, n in pieces])
            assert counts.min() >= 1 and counts.max() <= 2
            if side.bifurcation_z_mm is None:
                assert np.all(counts == 1)
                continue
            assert np.all(counts[z > side.bifurcation_z_mm + 8] == 1)
            apart = np.flatnonzero(z < side.bifurcation_z_mm - 8)
            assert apart.size and np.all(counts[apart] == 2)
            for k in apart:
                labels, _ = pieces[k]
                sizes = ndimage.sum(mask[:, :, k], labels, [1, 2])
                centres = ndimage.center_of_mass(mask[:, :, k], labels, [1, 2])
                x = [truth.affine[0, 0] * c[0] + truth.affine[0, 1] * c[1] + truth.affine[0, 3] for c in centres]
                larger, smaller = (0, 1) if sizes[0] >= sizes[1] else (1, 0)
                assert abs(x[larger]) < abs(x[smaller])  # medial: nearer the body's midline


def _one_thigh(rng: np.random.Generator, plan: SubjectPlanV2, extent: float) -> tuple[Any, Any, float, int]:
    """A one-thigh body around a slab of ``extent`` mm: (body, its leg, the slab's centre z, its grid row)."""
    frame = draw_frame(rng)
    z = place_slab(rng, plan, frame, extent)
    body, _ = draw_body(rng, plan, frame, split_levels(rng, plan, frame, (z - extent / 2, z + extent / 2)))
    (leg,) = body.legs
    return body, leg, z, body.grid.rows(z, z).start


def test_fat_saturation_darkens_fat_and_marrow() -> None:
    """Rendered without noise, subcutaneous fat is bright in PD and dark with fat saturation; muscle is not."""
    rng = np.random.default_rng(3)
    plan = SubjectPlanV2(0, Cohort.CONTROL, FieldOfView.UNILATERAL, (Side.RIGHT,), False, False, False, 0)
    body, leg, z, row = _one_thigh(rng, plan, 40.0)
    x, y = float(leg.axis_x.value[row]), float(leg.axis_y.value[row])
    r, c = directions(Orientation.AXIAL, PatientPosition.HFS, (0.0, 0.0, 0.0))
    stack = Stack(256, 256, 1, 0.75, 0.75, 4.0, 4.0, r, c, (x, y, z), True)
    images = {}
    for contrast in (Contrast.PD, Contrast.PD_FS):
        levels = draw_levels(np.random.default_rng(0), contrast, patient=False)
        images[contrast] = render_stack(np.random.default_rng(1), body, levels, stack, Sampling(2, 3)).signal[0]
    # along the lateral axis (patient right is -x, i.e. toward column 0 in HFS): skin, fat, then muscle
    depth = float(leg.radius_lateral.value[row]) - leg.skin_mm - float(leg.fat.value[row]) / 2
    fat_column = round(127.5 - depth / 0.75)
    muscle_column = round(127.5 - (depth - 25) / 0.75)
    pd, fs = images[Contrast.PD][128], images[Contrast.PD_FS][128]
    assert pd[fat_column] > 0.85 and fs[fat_column] < 0.2
    assert 0.3 < pd[muscle_column] < 0.6 and 0.3 < fs[muscle_column] < 0.6


def test_partial_volume_sampling_converges() -> None:
    """The nerve fraction comes from sub-pixel samples: finer sampling changes the area by well under a pixel ring."""
    rng = np.random.default_rng(8)
    plan = SubjectPlanV2(0, Cohort.PATIENT, FieldOfView.UNILATERAL, (Side.LEFT,), True, False, False, 1)
    body, leg, z, row = _one_thigh(rng, plan, 60.0)
    r, c = directions(Orientation.AXIAL, PatientPosition.FFS, (3.0, -2.0, 4.0))
    centre = (float(leg.axis_x.value[row]), float(leg.axis_y.value[row]), z)
    stack = Stack(224, 224, 3, 0.9, 0.9, 5.0, 5.0, r, c, centre, False)
    levels = draw_levels(np.random.default_rng(0), Contrast.PD, patient=True)
    coarse = render_stack(np.random.default_rng(1), body, levels, stack, Sampling(2, 3)).nerve[Side.LEFT]
    fine = render_stack(np.random.default_rng(1), body, levels, stack, Sampling(4, 7)).nerve[Side.LEFT]
    assert ((coarse > 0.05) & (coarse < 0.95)).sum() > 20  # partial-volume pixels along the outline
    area_coarse, area_fine = coarse.sum(axis=(1, 2)), fine.sum(axis=(1, 2))
    np.testing.assert_allclose(area_coarse, area_fine, rtol=0.02)
    assert np.abs(coarse - fine).max() < 0.25


def test_union_area_of_the_divisions() -> None:
    assert float(lens_area(np.array(2.0), np.array(1.0), np.array(0.5))) == pytest.approx(np.pi)  # inside
    assert float(lens_area(np.array(1.0), np.array(1.0), np.array(2.5))) == 0.0
    # two unit circles one radius apart: lens = 2pi/3 - sqrt(3)/2
    assert float(lens_area(np.array(1.0), np.array(1.0), np.array(1.0))) == pytest.approx(
        2 * np.pi / 3 - np.sqrt(3) / 2
    )
    # touching ellipses of one aspect ratio: the union is the sum of the two areas
    b_t, b_p, aspect = np.array(3.0), np.array(2.0), 1.6
    assert float(union_area(aspect, b_t, b_p, aspect * (b_t + b_p))) == pytest.approx(aspect * np.pi * 13.0)


def test_nerve_csa_medians_by_cohort() -> None:
    rng = np.random.default_rng(0)
    for cohort, (median, _) in NERVE_CSA_MEDIAN_MM2.items():
        draws = np.array([draw_nerve_csa(rng, cohort) for _ in range(4000)])
        assert float(np.median(draws)) == pytest.approx(median, rel=0.05)
    assert NERVE_CSA_MEDIAN_MM2[Cohort.CONTROL][0] == 43.0 and NERVE_CSA_MEDIAN_MM2[Cohort.PATIENT][0] == 136.0


def test_plan_counts_and_bad_fractions() -> None:
    plans = plan_subjects_v2(
        10,
        1,
        patient_fraction=0.4,
        bilateral_fraction=0.5,
        bifurcation_fraction=0.3,
        fat_sat_fraction=0.2,
        three_d_fraction=0.1,
    )
    assert sum(p.cohort is Cohort.PATIENT for p in plans) == 4
    assert sum(p.field_of_view is FieldOfView.BILATERAL for p in plans) == 5
    assert sum(p.bifurcation for p in plans) == 3 and sum(p.fat_sat for p in plans) == 2
    assert sum(p.three_d for p in plans) == 1
    assert all(len(p.sides) == (2 if p.field_of_view is FieldOfView.BILATERAL else 1) for p in plans)
    with pytest.raises(ValueError):
        plan_subjects_v2(
            3,
            1,
            patient_fraction=0.5,
            bilateral_fraction=1.5,
            bifurcation_fraction=0.5,
            fat_sat_fraction=0.5,
            three_d_fraction=0.5,
        )
    with pytest.raises(ValueError):
        PhantomV2Options(slices=3)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    options = PhantomV2Options(slices=8, bilateral_fraction=1.0, three_d_fraction=1.0)
    runs = [generate_v2(tmp_path / n / "dicom", 1, 9, tmp_path / n / "labels", options) for n in ("a", "b")]
    assert runs[0] == runs[1]
    files = [sorted(p.relative_to(tmp_path / n) for p in (tmp_path / n).rglob("*") if p.is_file()) for n in "ab"]
    assert files[0] == files[1] and len(files[0]) == 9 + runs[0].subjects[0].series[1].images + 8 + 1 + 1
    for rel in files[0]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = generate_v2(tmp_path / "c", 1, 10, options=options)
    assert other.subjects[0].series_instance_uid != runs[0].subjects[0].series_instance_uid


def test_site_b_is_another_protocol_and_deterministic(tmp_path: Path) -> None:
    """site_b: coarser pixels, thicker slices, longer TE (still eligible PD), the nerve brighter than any other
    tissue; same bytes for the same seed, and other UIDs than the default site's."""
    options = PhantomV2Options(slices=10, fat_sat_fraction=0.5, three_d_fraction=0.5, other_series=False, site="site_b")
    runs = [generate_v2(tmp_path / n / "dicom", 4, 9, tmp_path / n / "labels", options) for n in ("a", "b")]
    assert runs[0] == runs[1] and runs[0].options["site"] == "site_b"
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    default = generate_v2(tmp_path / "default", 4, 9, options=replace(options, site="default"))
    assert "site" not in default.options  # default manifests are as before profiles existed
    rules = Settings().eligibility_rules()
    for s, d in zip(runs[0].subjects, default.subjects, strict=True):
        assert s.series_instance_uid != d.series_instance_uid and s.study_instance_uid != d.study_instance_uid
        low, high = SITE_B.unilateral_pixel_mm if s.field_of_view == "unilateral" else SITE_B.bilateral_pixel_mm
        assert low <= s.pixel_spacing_mm[0] == s.pixel_spacing_mm[1] <= high
        three_d = s.acquisition == "3D"
        te_low, te_high = SITE_B.echo_time_3d_ms if three_d else SITE_B.echo_time_2d_ms
        assert te_low <= s.echo_time_ms <= te_high
        if three_d:
            assert SITE_B.thickness_3d_mm[0] <= s.slice_thickness_mm <= SITE_B.thickness_3d_mm[1]
        else:
            assert s.slice_thickness_mm in SITE_B.thickness_2d_mm
        headers = [read_header(p) for p in sorted((tmp_path / "a" / "dicom" / s.dicom_dir).rglob("*.dcm"))]
        verdict = assess(_facts(headers), rules)
        assert verdict.eligible, (s.patient_id, verdict.detail)
    assert {s.acquisition for s in runs[0].subjects} == {"2D", "3D"}
    with pytest.raises(ValueError, match="unknown site"):
        PhantomV2Options(site="site_c")

    plans = plan_subjects_v2(4, SEED, **_fractions(PhantomV2Options(fat_sat_fraction=0.0)))
    for plan in plans:
        for site, brighter in (("default", False), ("site_b", True)):
            painted = render_pd(draw_pd(plan, SEED, PhantomV2Options(slices=6, site=site)))
            nerve = np.any([fraction >= 0.5 for fraction in painted.nerve.values()], axis=0)
            body = painted.signal > 0.2
            if brighter:  # site_b: the nerve outshines fat and muscle
                assert painted.signal[nerve].mean() > np.percentile(painted.signal[body], 95), plan
            else:  # default PD: fat is brighter than the nerve
                assert painted.signal[nerve].mean() < np.percentile(painted.signal[body], 90), plan


def test_v2_is_the_default_and_v1_stays_available(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI writes v2 unless asked for v1; v1 output is what the v1 generator writes."""
    assert main(["phantom", "-o", str(tmp_path / "cli2"), "--subjects", "1", "--slices", "10"]) == 0
    assert "v2 studies" in capsys.readouterr().out
    (subject,) = ManifestV2.read(tmp_path / "cli2").subjects
    assert subject.slices == 10 and len(subject.series) == 3
    v1 = ["phantom", "-o", str(tmp_path / "cli1"), "--version", "1", "--subjects", "1", "--seed", "2", "--slices", "6"]
    assert main(v1) == 0
    direct = generate(tmp_path / "direct", 1, 2, options=PhantomOptions(slices=6))
    assert Manifest.read(tmp_path / "cli1") == direct
    with pytest.raises(SystemExit, match="--version 2 only"):
        main([*v1, "--bilateral-fraction", "1"])
    with pytest.raises(SystemExit, match="--version 1 only"):
        main(["phantom", "-o", str(tmp_path / "cli3"), "--hard-fraction", "0.5"])


def test_preview_outlines_the_truth(study: tuple[Path, Path, ManifestV2], tmp_path: Path) -> None:
    dicom_dir, labels_dir, manifest = study
    s = manifest.subjects[0]
    (pd,) = [r for r in s.series if r.kind == "pd_axial"]
    label = labels_dir / f"{s.series_instance_uid}.nii.gz"
    png = save_preview(dicom_dir / pd.dicom_dir, label, tmp_path / "p.png", [s.slices // 2], 2)

    picture = matplotlib.image.imread(png)[:, :, :3]
    half = (picture.shape[1] - 8) // 2  # plain tile, 4-pixel gap (twice), outlined tile
    plain, outlined = picture[:, :half], picture[:, half + 8 :]
    red = (outlined[:, :, 0] > 0.9) & (outlined[:, :, 1] < 0.3)
    assert red.sum() > 20 and not ((plain[:, :, 0] > 0.9) & (plain[:, :, 1] < 0.3)).any()


def test_the_pipeline_sides_and_legs_agree_with_the_phantom(
    study: tuple[Path, Path, ManifestV2], tmp_path: Path
) -> None:
    """split_sides, the per-leg metrics and legs_in_view name each thigh as the phantom drew it."""
    from sciatic.evaluation.anatomy import legs_in_view
    from sciatic.evaluation.metrics import nerve_metrics_by_side

    dicom_dir, labels_dir, manifest = study
    names = {"R": "right", "L": "left"}
    for s in manifest.subjects:
        report = convert_directory(dicom_dir / s.dicom_dir, tmp_path / s.patient_id)
        (pd,) = [o for o in report.series if o.series_instance_uid == s.series_instance_uid]
        assert pd.output is not None
        volume = read_volume(pd.output)
        truth = read_volume(labels_dir / f"{s.series_instance_uid}.nii.gz")
        tag = s.laterality if s.field_of_view == "unilateral" else ""
        by_side = nerve_metrics_by_side(truth.data, truth.affine, volume.data, tag)
        assert {side.value for side in by_side} == {names[side.side] for side in s.sides}, s.patient_id
        for side in s.sides:
            measured = by_side[next(k for k in by_side if k.value == names[side.side])].series
            assert measured.csa_mean_mm2 == pytest.approx(side.mask_csa_mm2, rel=0.02)
            assert (measured.bifurcation_z_mm is not None) == (side.bifurcation_z_mm is not None)
        legs = legs_in_view(volume.data, volume.affine, tag)
        assert {leg.side.value for leg in legs} == {names[side.side] for side in s.sides}, s.patient_id
        for leg in legs:  # each nerve lies behind the centre of its thigh
            (side,) = [x for x in s.sides if names[x.side] == leg.side.value]
            assert side.centroid_ras_mm[1] < leg.centroid_ras_mm[1]


def test_one_uid_never_names_two_different_subjects(tmp_path: Path) -> None:
    """The same seed with another subject count draws other plans; those subjects get other UIDs."""
    options = PhantomV2Options(slices=6, other_series=False)
    one = generate_v2(tmp_path / "one", 1, 2026, options=options).subjects
    two = generate_v2(tmp_path / "two", 2, 2026, options=options).subjects
    again = generate_v2(tmp_path / "again", 2, 2026, options=options).subjects
    assert [s.series_instance_uid for s in two] == [s.series_instance_uid for s in again]
    uids = {s.series_instance_uid: s for s in two}
    for subject in one:
        same = uids.get(subject.series_instance_uid)
        assert same is None or same == subject
    assert one[0] != two[0]  # this seed draws subject 0 differently in the two runs (hence other UIDs)
