"""DICOM SEG export and import: identical masks on the source grid, dciodvfy, foreign SEGs, sending to a PACS."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.uid import generate_uid

from sciatic.dicom.receiver import serve
from sciatic.dicom.scan import read_header
from sciatic.dicom.scu import SendError, send
from sciatic.dicom.seg import (
    ANATOMICAL_STRUCTURE,
    SCIATIC_NERVE,
    SEGMENTATION_STORAGE,
    export_seg,
    read_seg,
    seg_reference,
)
from sciatic.dicom.series import SeriesPlan, plan_series
from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.evaluation.qc import dice
from sciatic.imaging.volume import read_volume, write_volume
from sciatic.phantom.generate import PhantomOptions, generate
from tests._dicom_synthetic import (
    AXIAL,
    AXIAL_PRONE,
    enhanced_dataset,
    oblique,
    save,
    slice_pixels,
    stack_positions,
    write_stack,
)
from tests.conftest import REAL_DICOM
from tests.test_receiver import free_port

FEET_FIRST_SUPINE = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FEET_FIRST_PRONE = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
PATIENT = {
    "PatientName": "Phantom^Seg",
    "PatientBirthDate": "19800101",
    "PatientSex": "O",
    "StudyDate": "20240108",
    "StudyTime": "083000",
    "AccessionNumber": "ACC1",
    "StudyID": "1",
    "ReferringPhysicianName": "",
    "Manufacturer": "Synthetic",
}
GEOMETRIES = {
    "axial": {"orientation": AXIAL, "PatientPosition": "HFS"},
    "oblique": {"orientation": oblique((0.2, -0.15, 0.35)), "PatientPosition": "HFS"},
    "prone": {"orientation": AXIAL_PRONE, "PatientPosition": "HFP"},
    "feet-first": {"orientation": FEET_FIRST_SUPINE, "PatientPosition": "FFS"},
    "feet-first-prone": {"orientation": FEET_FIRST_PRONE, "PatientPosition": "FFP"},
}


def _dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail("dciodvfy not found: install Debian's dicom3tools (`apt-get install dicom3tools`)")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]


def _plan(paths: list[Path]) -> SeriesPlan:
    return plan_series([read_header(p) for p in paths])


def _nerve(shape: tuple[int, int, int], seed: int = 0) -> NDArray[np.uint8]:
    """A drifting ellipse through the slices (one slice left empty), plus a little noise: asymmetric on purpose."""
    x, y, z = shape
    i, j = np.mgrid[0:x, 0:y]
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=np.uint8)
    for k in range(z):
        ci, cj = x * 0.3 + k * 0.5, y * 0.6 - k * 0.3
        mask[:, :, k] = ((i - ci) / (0.2 * x)) ** 2 + ((j - cj) / (0.12 * y)) ** 2 <= 1
    mask[:, :, 1] = 0
    mask |= (rng.random(shape) > 0.98).astype(np.uint8)
    return mask


def _export(paths: list[Path], mask: NDArray[np.uint8], out: Path, **kwargs: Any) -> Path:
    plan = _plan(paths)
    export_seg(mask, plan.affine, paths, out, model_name="sciatic-unet", model_version="7", **kwargs)
    return out


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_round_trip_is_identical_and_valid(tmp_path: Path, name: str) -> None:
    geometry = dict(GEOMETRIES[name])
    orientation = geometry.pop("orientation")
    paths = write_stack(
        tmp_path / "src",
        orientation=orientation,
        count=7,
        rows=22,
        columns=18,
        order=[4, 0, 6, 2, 5, 1, 3],  # file names and instance numbers not in slice order
        **geometry,
        **PATIENT,
    )
    plan = _plan(paths)
    mask = _nerve(plan.shape)
    out = _export(paths, mask, tmp_path / "seg.dcm")
    back = read_seg(out, paths)
    np.testing.assert_array_equal(back.data, mask)
    assert back.data.dtype == np.uint8
    np.testing.assert_array_equal(back.affine, plan.affine)
    assert dice(back.data.astype(bool), mask.astype(bool)) == 1.0
    errors, _ = _dciodvfy(out)
    assert errors == []
    # the frames lie on the source images: each references its own instance at its own position
    ds = pydicom.dcmread(out)
    by_uid = {read_header(p).sop_instance_uid: read_header(p) for p in paths}
    for frame in ds.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        header = by_uid[source.ReferencedSOPInstanceUID]
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert header.frames[0].position is not None
        np.testing.assert_allclose(position, header.frames[0].position, atol=1e-4)


def test_seg_describes_the_nerve_and_the_model(tmp_path: Path) -> None:
    paths = write_stack(tmp_path / "src", count=4, rows=12, columns=10, **PATIENT)
    plan = _plan(paths)
    out = _export(paths, _nerve(plan.shape), tmp_path / "seg.dcm", series_description="Nerve by U-Net v7")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == SEGMENTATION_STORAGE and ds.SegmentationType == "BINARY"
    (segment,) = ds.SegmentSequence
    assert segment.SegmentLabel == "Sciatic nerve" and segment.SegmentAlgorithmType == "AUTOMATIC"
    code = segment.SegmentedPropertyTypeCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == (SCIATIC_NERVE.value, "SCT")
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("sciatic-unet", "7")
    source = pydicom.dcmread(paths[0])
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ds.SeriesDescription == "Nerve by U-Net v7"
    reference = seg_reference(out)
    assert reference.referenced_series_instance_uid == plan.series_instance_uid
    assert set(reference.referenced_sop_instance_uids) == {str(pydicom.dcmread(p).SOPInstanceUID) for p in paths}
    assert [s.is_sciatic_nerve for s in reference.segments] == [True]


def test_phantom_series_round_trip(tmp_path: Path) -> None:
    """Phantom studies (random patient positions, obliquity, ascending or descending acquisition)."""
    manifest = generate(
        tmp_path / "phantom",
        4,
        seed=11,
        labels_dir=tmp_path / "labels",
        options=PhantomOptions(matrix=(64, 64), slices=8),
    )
    positions = set()
    for record in manifest.subjects:
        paths = sorted((tmp_path / "phantom" / record.patient_id).glob("*.dcm"))
        positions.add(str(pydicom.dcmread(paths[0]).PatientPosition))
        truth = read_volume(tmp_path / "labels" / f"{read_header(paths[0]).series_instance_uid}.nii.gz")
        plan = _plan(paths)
        np.testing.assert_allclose(truth.affine, plan.affine, atol=1e-4)
        out = export_seg(
            truth.data.astype(np.uint8), truth.affine, paths, tmp_path / f"{record.patient_id}.dcm",
            model_name="phantom-truth", model_version="0",
        ).path  # fmt: skip
        back = read_seg(out, plan)
        np.testing.assert_array_equal(back.data, truth.data)
        np.testing.assert_array_equal(back.affine, plan.affine)
        assert _dciodvfy(out)[0] == []
    assert len(positions) >= 2, positions


def test_enhanced_multiframe_source(tmp_path: Path) -> None:
    positions = stack_positions(AXIAL, (0.0, 0.0, 0.0), 3.0, 5)
    order = [3, 0, 4, 1, 2]  # frames stored out of slice order
    ds = enhanced_dataset([slice_pixels(10, 8, k) for k in order], [positions[k] for k in order])
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.FrameOfReferenceUID = generate_uid()
    path = save(ds, tmp_path / "enhanced.dcm")
    plan = _plan([path])
    mask = _nerve(plan.shape, seed=3)
    out = _export([path], mask, tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_seg(out, [path]).data, mask)
    assert _dciodvfy(out)[0] == []


def test_empty_mask_round_trip(tmp_path: Path) -> None:
    paths = write_stack(tmp_path / "src", count=3, **PATIENT)
    plan = _plan(paths)
    out = _export(paths, np.zeros(plan.shape, np.uint8), tmp_path / "seg.dcm")
    assert not read_seg(out, paths).data.any()
    assert _dciodvfy(out)[0] == []


def test_mask_must_be_on_the_source_grid(tmp_path: Path) -> None:
    paths = write_stack(tmp_path / "src", count=4)
    plan = _plan(paths)
    with pytest.raises(InputRefusedError) as shape:
        export_seg(
            np.zeros((3, 3, 3), np.uint8), plan.affine, paths, tmp_path / "a.dcm", model_name="m", model_version="1"
        )
    shifted = plan.affine.copy()
    shifted[0, 3] += 1.0
    with pytest.raises(InputRefusedError) as affine:
        export_seg(
            np.zeros(plan.shape, np.uint8), shifted, paths, tmp_path / "b.dcm", model_name="m", model_version="1"
        )
    assert shape.value.reason == affine.value.reason == ReasonCode.GEOMETRY_MISMATCH
    assert not (tmp_path / "a.dcm").exists() and not (tmp_path / "b.dcm").exists()


def test_positions_place_frames_when_references_do_not_resolve(tmp_path: Path) -> None:
    """A SEG of the same images re-sent with new UIDs, and one without frame references (another tool's)."""
    common = {"orientation": oblique((0.1, 0.3, -0.2)), "count": 6, "rows": 16, "columns": 14, **PATIENT}
    original = write_stack(tmp_path / "a", **common)
    resent = write_stack(tmp_path / "b", **common)  # same geometry, new SOP and series UIDs
    mask = _nerve(_plan(original).shape, seed=5)
    out = _export(original, mask, tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_seg(out, resent).data, mask)

    ds = pydicom.dcmread(out)
    for frame in ds.PerFrameFunctionalGroupsSequence:
        del frame.DerivationImageSequence
    del ds.ReferencedSeriesSequence
    ds.save_as(tmp_path / "bare.dcm")
    np.testing.assert_array_equal(read_seg(tmp_path / "bare.dcm", original).data, mask)
    assert seg_reference(tmp_path / "bare.dcm").referenced_series_instance_uid is None


def test_seg_off_the_grid_is_refused(tmp_path: Path) -> None:
    paths = write_stack(tmp_path / "a", count=4, rows=12, columns=10, **PATIENT)
    moved = write_stack(tmp_path / "b", count=4, rows=12, columns=10, origin=(-20.0, 15.3, 40.0), **PATIENT)
    other_matrix = write_stack(tmp_path / "c", count=4, rows=10, columns=10, **PATIENT)
    out = _export(paths, _nerve(_plan(paths).shape), tmp_path / "seg.dcm")
    ds = pydicom.dcmread(out)
    for frame in ds.PerFrameFunctionalGroupsSequence:
        del frame.DerivationImageSequence
    ds.save_as(tmp_path / "bare.dcm")
    for source, seg in ((moved, tmp_path / "bare.dcm"), (moved, out), (other_matrix, out)):
        with pytest.raises(InputRefusedError) as refused:
            read_seg(seg, source)
        assert refused.value.reason == ReasonCode.GEOMETRY_MISMATCH, refused.value


def test_segment_choice_in_a_foreign_multi_segment_seg(tmp_path: Path) -> None:
    paths = write_stack(tmp_path / "src", count=4, rows=12, columns=10, **PATIENT)
    plan = _plan(paths)
    nerve, other = _nerve(plan.shape, seed=1), _nerve(plan.shape, seed=2)[::-1].copy()
    sources = [pydicom.dcmread(p) for p in sorted(paths, key=lambda p: read_header(p).frames[0].position[2])]  # type: ignore[index]
    for source in sources:
        source.SliceThickness = "3"

    def description(number: int, label: str, code: hd.sr.CodedConcept | Any) -> hd.seg.SegmentDescription:
        return hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=code,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )

    def foreign(labels: list[tuple[str, Any]], name: str) -> Path:
        stacked = np.stack([nerve.transpose(2, 1, 0), other.transpose(2, 1, 0)], axis=-1)
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=stacked[..., : len(labels)][..., ::-1] if name == "swapped" else stacked[..., : len(labels)],
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description(n + 1, label, code) for n, (label, code) in enumerate(labels)],
            series_instance_uid=hd.UID(),
            series_number=50,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="Viewer",
            manufacturer_model_name="Viewer",
            software_versions="1",
            device_serial_number="1",
            content_creator_name="Rater^Anne",
        )
        seg.save_as(tmp_path / f"{name}.dcm")
        return tmp_path / f"{name}.dcm"

    femur = hd.sr.CodedConcept("71341001", "SCT", "Femur")
    # the nerve is found by its code even when it is segment 2
    swapped = foreign([("Femur", femur), ("Nerve", SCIATIC_NERVE)], "swapped")
    np.testing.assert_array_equal(read_seg(swapped, paths).data, nerve)
    assert seg_reference(swapped).content_creator == "Rater^Anne"
    # two segments, neither the nerve: refused unless one is named
    unknown = foreign([("ROI 1", femur), ("ROI 2", femur)], "unknown")
    with pytest.raises(InputRefusedError) as refused:
        read_seg(unknown, paths)
    assert refused.value.reason == ReasonCode.UNUSABLE_SEG
    np.testing.assert_array_equal(read_seg(unknown, paths, segment_number=2).data, other)


def _viewer_seg(paths: list[Path], mask: NDArray[np.uint8], out: Path, kind: str = "BINARY", **kwargs: Any) -> Path:
    """A SEG another tool (highdicom) made: frames in the order of ``paths``, empty ones left out."""
    sources = [pydicom.dcmread(p) for p in paths]
    slice_of = {s.path: k for k, s in enumerate(_plan(paths).slices)}
    order = [slice_of[p] for p in paths]
    for source in sources:
        source.SliceThickness = "3"
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask.transpose(2, 1, 0)[order],
        segmentation_type=hd.seg.SegmentationTypeValues[kind],
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="Nerve",
                segmented_property_category=ANATOMICAL_STRUCTURE,
                segmented_property_type=SCIATIC_NERVE,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=50,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Viewer",
        manufacturer_model_name="Viewer",
        software_versions="1",
        device_serial_number="1",
        **kwargs,
    )
    seg.save_as(out)
    return out


def test_foreign_seg_with_frames_out_of_order_and_gaps(tmp_path: Path) -> None:
    """Frames stored in file order (not slice order), only slices 0, 2 and 5 drawn, no SpacingBetweenSlices."""
    paths = write_stack(
        tmp_path / "src", orientation=oblique((0.2, -0.1, 0.3)), count=7, rows=12, columns=10,
        order=[4, 0, 6, 2, 5, 1, 3], **PATIENT,
    )  # fmt: skip
    mask = _nerve(_plan(paths).shape, seed=4)
    mask[:, :, [1, 3, 4, 6]] = 0
    out = _viewer_seg(paths, mask, tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_seg(out, paths).data, mask)
    ds = pydicom.dcmread(out)
    assert ds.NumberOfFrames == 3
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices
    ds.save_as(tmp_path / "no-spacing.dcm")
    np.testing.assert_array_equal(read_seg(tmp_path / "no-spacing.dcm", paths).data, mask)
    for frame in ds.PerFrameFunctionalGroupsSequence:
        del frame.DerivationImageSequence
    del ds.ReferencedSeriesSequence
    ds.save_as(tmp_path / "bare.dcm")
    np.testing.assert_array_equal(read_seg(tmp_path / "bare.dcm", paths).data, mask)


def test_fractional_seg_counts_from_one_half(tmp_path: Path) -> None:
    paths = write_stack(tmp_path / "src", count=4, rows=12, columns=10, **PATIENT)
    nerve = _nerve(_plan(paths).shape, seed=6)
    weak = _nerve(_plan(paths).shape, seed=7) & ~nerve
    fractions = np.where(nerve == 1, 0.75, np.where(weak == 1, 0.25, 0.0)).astype(np.float32)
    out = _viewer_seg(paths, fractions, tmp_path / "seg.dcm", kind="FRACTIONAL", max_fractional_value=255)
    assert pydicom.dcmread(out).SegmentationType == "FRACTIONAL"
    np.testing.assert_array_equal(read_seg(out, paths).data, nerve)


def test_frames_off_their_references_or_their_slices_are_refused(tmp_path: Path) -> None:
    paths = write_stack(tmp_path / "src", count=5, rows=12, columns=10, **PATIENT)
    mask = _nerve(_plan(paths).shape, seed=8)
    out = _export(paths, mask, tmp_path / "seg.dcm")
    # two frames swap the images they reference (their positions stay)
    ds = pydicom.dcmread(out)
    frames = ds.PerFrameFunctionalGroupsSequence
    derivations = [frame.DerivationImageSequence for frame in frames]
    frames[0].DerivationImageSequence, frames[-1].DerivationImageSequence = derivations[-1], derivations[0]
    ds.save_as(tmp_path / "swapped.dcm")
    # one frame moved by a column within its plane (axial: along x, columns 0.6 mm apart)
    ds = pydicom.dcmread(out)
    plane = ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]
    x, y, z = (float(v) for v in plane.ImagePositionPatient)
    plane.ImagePositionPatient = [x + 0.6, y, z]
    ds.save_as(tmp_path / "moved.dcm")
    for name in ("swapped.dcm", "moved.dcm"):
        with pytest.raises(InputRefusedError) as refused:
            read_seg(tmp_path / name, paths)
        assert refused.value.reason == ReasonCode.GEOMETRY_MISMATCH, refused.value


def test_not_a_seg_is_refused(tmp_path: Path) -> None:
    paths = write_stack(tmp_path / "src", count=2)
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    for path in (paths[0], tmp_path / "junk.dcm"):
        with pytest.raises(InputRefusedError) as refused:
            seg_reference(path)
        assert refused.value.reason == ReasonCode.UNUSABLE_SEG


def test_round_trip_through_nifti_keeps_the_grid(tmp_path: Path) -> None:
    """mask -> NIfTI -> SEG -> mask: the affine written to NIfTI is the one the SEG is checked against."""
    paths = write_stack(tmp_path / "src", orientation=AXIAL_PRONE, count=5, rows=14, columns=12, **PATIENT)
    plan = _plan(paths)
    from sciatic.imaging.volume import Volume

    write_volume(Volume(_nerve(plan.shape), plan.affine), tmp_path / "mask.nii.gz")
    stored = read_volume(tmp_path / "mask.nii.gz")
    out = _export(paths, stored.data, tmp_path / "seg.dcm")
    back = read_seg(out, paths)
    np.testing.assert_array_equal(back.data, stored.data)
    np.testing.assert_array_equal(back.affine, stored.affine)


# --------------------------------------------------------------------------- sending


def test_send_seg_to_a_pacs(tmp_path: Path, storescp: tuple[int, Path]) -> None:
    port, folder = storescp
    paths = write_stack(tmp_path / "src", count=4, rows=12, columns=10, **PATIENT)
    out = _export(paths, _nerve(_plan(paths).shape), tmp_path / "seg.dcm")
    report = send([out], "127.0.0.1", port, "PACS", calling_ae="SCIATIC")
    assert report.ok and report.sent == [out]
    (stored,) = list(folder.iterdir())
    assert pydicom.dcmread(stored) == pydicom.dcmread(out)
    np.testing.assert_array_equal(read_seg(stored, paths).data, read_seg(out, paths).data)


def test_send_to_own_receiver_and_refusal(tmp_path: Path) -> None:
    paths = write_stack(tmp_path / "src", count=3)
    receiver = serve(port=free_port(), drop_dir=tmp_path / "drop", allowed_calling=["SCIATIC"], block=False)
    try:
        assert send(paths, "127.0.0.1", receiver.port, "SCIATIC", calling_ae="SCIATIC").sent == paths
        with pytest.raises(SendError):
            send(paths, "127.0.0.1", receiver.port, "SCIATIC", calling_ae="STRANGER")
        # a SEG is not an MR image: the receiver accepts no presentation context for it
        out = _export(paths, _nerve(_plan(paths).shape), tmp_path / "seg.dcm")
        with pytest.raises(SendError):
            send([out], "127.0.0.1", receiver.port, "SCIATIC", calling_ae="SCIATIC")
    finally:
        receiver.shutdown()
    assert len(list((tmp_path / "drop").glob("*.dcm"))) == 3


@pytest.mark.parametrize("folder", ["t1_sag_hfp", "t1_sag_hfdl", "xa30_enhanced_5"])
def test_real_scanner_series_round_trip(tmp_path: Path, folder: str) -> None:
    """Real scanner series (prone, decubitus, enhanced multi-frame) from ../shared/data/dicom-real."""
    source = REAL_DICOM / folder
    if not source.is_dir():
        pytest.fail(f"{source} is missing: the real-data tests need the shared DICOM folder")
    paths = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    plan = _plan(paths)
    mask = _nerve(plan.shape, seed=9)
    out = export_seg(mask, plan.affine, paths, tmp_path / "seg.dcm", model_name="m", model_version="1").path
    back = read_seg(out, plan)
    np.testing.assert_array_equal(back.data, mask)
    np.testing.assert_array_equal(back.affine, plan.affine)
    assert _dciodvfy(out)[0] == []
