"""Conversion of real scanner DICOM (../shared/data/dicom-real) against dcm2niix's reference volumes.

Both conversions are compared in world space: each is reoriented to the closest
canonical orientation, then voxel values must be equal and affines agree
within 1e-3 (see that folder's README).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray

from sciatic.dicom.convert import ConversionReport, SeriesOutcome, convert_directory, convert_series
from sciatic.dicom.scan import read_header
from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.imaging.volume import read_volume
from tests._dicom_synthetic import read_pixels

nib: Any = nibabel  # partially annotated

REAL_DICOM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom-real"
SINGLE_VOLUME_FOLDERS = [
    "t1_sag_hfs",
    "t1_sag_hfp",
    "t1_sag_hfdl",
    "t1_sag_hfdr",
    "xa30_classic_5001",
    "xa30_classic_6001",
    "xa30_enhanced_5",
    "xa30_enhanced_6",
    "siemens_gre_fieldmap",
]
AFFINE_TOLERANCE = 1e-3


def _require_real_data() -> Path:
    if not (REAL_DICOM / "reference").is_dir():
        pytest.fail(
            f"real DICOM test data is missing: expected {REAL_DICOM} with reference/ inside "
            "(the dcm_qa sets and dcm2niix references described in its README.md)"
        )
    return REAL_DICOM


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ConversionReport:
    return convert_directory(_require_real_data(), tmp_path_factory.mktemp("real-nifti"))


def _outcome_for(report: ConversionReport, folder: str) -> SeriesOutcome:
    matches = [s for s in report.series if all(p.parent.name == folder for p in s.files)]
    assert len(matches) == 1, f"{folder}: expected one series, found {len(matches)}"
    return matches[0]


def _canonical(data: NDArray[Any], affine: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    img = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    return np.asanyarray(img.dataobj), img.affine


def _reference(folder: str) -> tuple[NDArray[Any], NDArray[Any]]:
    img = nib.load(REAL_DICOM / "reference" / f"{folder}.nii.gz")
    return np.asanyarray(img.dataobj), img.affine


@pytest.mark.parametrize("folder", SINGLE_VOLUME_FOLDERS)
def test_series_equals_dcm2niix_reference(report: ConversionReport, folder: str) -> None:
    outcome = _outcome_for(report, folder)
    assert outcome.status == "converted", f"{folder} refused: {outcome.reason} {outcome.detail}"
    assert outcome.output is not None
    volume = read_volume(outcome.output)
    mine, mine_affine = _canonical(volume.data, volume.affine)
    ref, ref_affine = _canonical(*_reference(folder))
    assert mine.shape == ref.shape
    np.testing.assert_array_equal(mine.astype(np.float64), ref.astype(np.float64))
    np.testing.assert_allclose(mine_affine, ref_affine, atol=AFFINE_TOLERANCE)


def test_philips_4d_series_is_refused_as_multi_volume(report: ConversionReport) -> None:
    outcome = _outcome_for(report, "philips_epi")
    assert outcome.status == "refused"
    assert outcome.reason is ReasonCode.MULTI_VOLUME
    assert "3 volumes of 9 slices" in (outcome.detail or "")


def test_philips_time_points_each_equal_the_reference_volume() -> None:
    """The oblique Philips geometry, one time point at a time, against the 4D reference.

    dcm2niix stores Philips' private floating-point scaling; we apply the DICOM
    RescaleSlope/Intercept, so stored values are compared.
    """
    by_time: defaultdict[int, list[Path]] = defaultdict(list)
    for path in sorted((_require_real_data() / "philips_epi").glob("*.dcm")):
        by_time[int(pydicom.dcmread(path, stop_before_pixels=True).TemporalPositionIdentifier)].append(path)
    assert sorted(by_time) == [1, 2, 3]
    ref_img = nib.load(REAL_DICOM / "reference" / "philips_epi.nii.gz")
    ref_stored = np.asanyarray(ref_img.dataobj.get_unscaled())
    for t, paths in by_time.items():
        headers = [read_header(p) for p in paths]
        volume = convert_series(headers)
        slope = headers[0].frames[0].rescale_slope
        mine, mine_affine = _canonical(volume.data / slope, volume.affine)
        ref, ref_affine = _canonical(ref_stored[..., t - 1], ref_img.affine)
        np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-3)
        np.testing.assert_allclose(mine_affine, ref_affine, atol=AFFINE_TOLERANCE)


def test_all_nine_transfer_syntaxes_decode_to_identical_pixels() -> None:
    paths = sorted((_require_real_data() / "transfer_syntax").glob("*.dcm"))
    assert len(paths) == 9
    headers = [read_header(p) for p in paths]
    assert len({h.transfer_syntax_uid for h in headers}) >= 7
    first = read_pixels(headers[0])
    assert first.shape == (1, 384, 384) and first.any()
    for header in headers[1:]:
        np.testing.assert_array_equal(read_pixels(header), first, err_msg=header.transfer_syntax_uid)


def test_transfer_syntax_folder_is_refused_as_one_position(report: ConversionReport) -> None:
    outcome = _outcome_for(report, "transfer_syntax")
    assert outcome.reason is ReasonCode.DUPLICATE_POSITIONS


def test_non_dicom_files_are_reported_not_fatal(report: ConversionReport) -> None:
    names = {f.path.name: f.reason for f in report.refused_files}
    assert names["README.md"] is ReasonCode.NOT_DICOM
    assert names["t1_sag_hfs.nii.gz"] is ReasonCode.NOT_DICOM
    assert report.report_path.is_file()


@pytest.mark.parametrize("relative", ["xa30_enhanced_5/0063.dcm", "transfer_syntax/9.dcm", "transfer_syntax/3.dcm"])
def test_truncated_real_files_are_refused(tmp_path: Path, relative: str) -> None:
    whole = (_require_real_data() / relative).read_bytes()
    cut = tmp_path / "cut.dcm"
    for length in np.linspace(0, len(whole) - 1, 40).astype(int):
        cut.write_bytes(whole[:length])
        with pytest.raises(InputRefusedError) as info:
            read_header(cut)
        assert info.value.reason in {ReasonCode.TRUNCATED, ReasonCode.NOT_DICOM}, (length, info.value)
