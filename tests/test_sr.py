"""DICOM SR measurement report (TID 1500): the same numbers back through highdicom, dciodvfy, references to the SEG."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from sciatic.db.enums import QcStatus
from sciatic.dicom.scan import read_header
from sciatic.dicom.seg import SEGMENTATION_STORAGE, SegExport, export_seg
from sciatic.dicom.sr import COMPREHENSIVE_SR_STORAGE, QC_CODES, QUALITY, NerveMeasurements, export_sr, read_sr
from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.imaging.volume import read_volume
from sciatic.phantom.generate import PhantomOptions, generate
from tests.test_seg import _dciodvfy

NERVE = NerveMeasurements(
    volume_mm3=1234.567891234,
    covered_length_mm=36.0,
    csa_mean_mm2=34.29283745,
    csa_median_mm2=33.1,
    csa_max_mm2=45.00000001,
    signal_mean=812.125,
    qc_status=QcStatus.REVIEW,
    qc_flags=(("centroid_jump", "slices 3 -> 4: 12.3 mm"), ("slice_gap", "")),
)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], SegExport]:
    """A phantom series and the SEG of its nerve."""
    root = tmp_path_factory.mktemp("sr")
    manifest = generate(root / "dicom", 1, 11, labels_dir=root / "labels", options=PhantomOptions((64, 64), 8))
    (subject,) = manifest.subjects
    sources = sorted((root / "dicom" / subject.dicom_dir).glob("*.dcm"))
    label = read_volume(root / "labels" / subject.label_file)
    seg = export_seg(label.data, label.affine, sources, root / "seg.dcm", model_name="sciatic-unet", model_version="7")
    return sources, seg


def test_round_trip_gives_the_same_numbers_and_dciodvfy_finds_no_error(
    tmp_path: Path, case: tuple[list[Path], SegExport]
) -> None:
    sources, seg = case
    out = export_sr([NERVE], seg.path, sources, tmp_path / "sr.dcm", model_name="sciatic-unet", model_version="7")
    errors, _ = _dciodvfy(out.path)
    assert errors == []
    report = read_sr(out.path)
    assert report.groups == (NERVE,)
    assert (report.model_name, report.model_version) == ("sciatic-unet", "7")
    assert report.referenced_seg_uids == (seg.sop_instance_uid,) == (out.referenced_seg_uid,)
    assert set(report.source_sop_instance_uids) == {read_header(p).sop_instance_uid for p in sources}
    source = pydicom.dcmread(sources[0])
    assert report.study_instance_uid == source.StudyInstanceUID
    assert "not for diagnosis" in report.series_description


def test_report_structure_read_with_highdicom(tmp_path: Path, case: tuple[list[Path], SegExport]) -> None:
    sources, seg = case
    out = export_sr([NERVE], seg.path, sources, tmp_path / "sr.dcm", model_name="sciatic-unet", model_version="7")
    sr = hd.sr.srread(out.path)
    assert sr.SOPClassUID == COMPREHENSIVE_SR_STORAGE and sr.Modality == "SR"
    source = pydicom.dcmread(sources[0])
    for keyword in (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "AccessionNumber",
    ):
        assert sr[keyword].value == source[keyword].value, keyword
    assert sr.SeriesInstanceUID not in (source.SeriesInstanceUID, seg.series_instance_uid)
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    segment = group.referenced_segment
    assert segment.referenced_sop_class_uid == SEGMENTATION_STORAGE
    assert segment.referenced_sop_instance_uid == seg.sop_instance_uid
    assert segment.referenced_segment_numbers == [1]
    assert group.tracking_identifier == "Sciatic nerve"
    assert group.finding_type.value == "52022001"
    (evaluation,) = group.get_qualitative_evaluations(name=QUALITY)
    assert evaluation.value == QC_CODES[QcStatus.REVIEW]
    units = {(m.name.meaning, m.unit.value) for m in group.get_measurements()}
    assert units == {("Volume", "mm3"), ("Area", "mm2"), ("Length", "mm"), ("MR signal intensity", "[arb'U]")}
    (observer,) = sr.content.get_observer_contexts()
    assert observer.observer_type == pydicom.sr.codedict.codes.DCM.Device
    # the SEG and the source images are the report's evidence
    evidence = {uid for _, _, uid, _ in sr.get_evidence()}
    assert {seg.sop_instance_uid, *(read_header(p).sop_instance_uid for p in sources)} == evidence


@pytest.mark.parametrize("status", [*QcStatus, None])
def test_every_qc_status_and_an_empty_mask_come_back(
    tmp_path: Path, case: tuple[list[Path], SegExport], status: QcStatus | None
) -> None:
    sources, seg = case
    empty = NerveMeasurements(volume_mm3=0.0, covered_length_mm=0.0, qc_status=status, qc_flags=(("empty_mask", ""),))
    out = export_sr([empty], seg.path, sources, tmp_path / "sr.dcm", model_name="m", model_version="1")
    assert read_sr(out.path).groups == (empty,)
    assert _dciodvfy(out.path)[0] == []


def test_one_group_per_nerve_with_its_side(tmp_path: Path, case: tuple[list[Path], SegExport]) -> None:
    sources, seg = case
    left = NerveMeasurements(volume_mm3=100.0, covered_length_mm=10.0, csa_mean_mm2=10.0, side="left")
    right = NerveMeasurements(volume_mm3=200.0, covered_length_mm=20.0, csa_mean_mm2=10.0, side="right")
    out = export_sr([left, right], seg.path, sources, tmp_path / "sr.dcm", model_name="m", model_version="1")
    report = read_sr(out.path)
    assert report.groups == (left, right)
    assert [g.label for g in report.groups] == ["Sciatic nerve (left)", "Sciatic nerve (right)"]
    assert _dciodvfy(out.path)[0] == []


def test_a_missing_segment_or_a_file_that_is_no_seg_is_refused(
    tmp_path: Path, case: tuple[list[Path], SegExport]
) -> None:
    sources, seg = case
    second = NerveMeasurements(volume_mm3=1.0, covered_length_mm=1.0, segment_number=2)
    with pytest.raises(InputRefusedError) as missing:
        export_sr([second], seg.path, sources, tmp_path / "sr.dcm", model_name="m", model_version="1")
    assert missing.value.reason is ReasonCode.UNUSABLE_SEG
    with pytest.raises(InputRefusedError) as not_seg:
        export_sr([NERVE], sources[0], sources, tmp_path / "sr.dcm", model_name="m", model_version="1")
    assert not_seg.value.reason is ReasonCode.UNUSABLE_SEG
    assert not (tmp_path / "sr.dcm").exists()
    with pytest.raises(InputRefusedError) as not_sr:
        read_sr(seg.path)
    assert not_sr.value.reason is ReasonCode.UNREADABLE_FILE
