"""Safe header reads: every bad file gives InputRefusedError with a reason, never another exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, RLELossless, generate_uid

from sciatic.dicom.scan import ImageLayout, read_header
from sciatic.errors import FileRefusedError, InputRefusedError, ReasonCode
from tests._dicom_synthetic import AXIAL, enhanced_dataset, mr_dataset, read_pixels, save, slice_pixels, stack_positions


def _image(tmp_path: Path, name: str = "im.dcm", **kwargs: object) -> Path:
    return save(mr_dataset(slice_pixels(6, 5, 0), series_uid="1.2.3.9", **kwargs), tmp_path / name)  # type: ignore[arg-type]


def _refusal(path: Path) -> ReasonCode:
    with pytest.raises(InputRefusedError) as info:
        read_header(path)
    assert isinstance(info.value, FileRefusedError)
    assert info.value.path == path
    assert info.value.detail
    return info.value.reason


def test_reads_classic_header(tmp_path: Path) -> None:
    path = _image(tmp_path, slope=2.0, intercept=-5.0, position=(1.0, 2.0, 3.0))
    header = read_header(path)
    assert header.layout is ImageLayout.SINGLE_FRAME
    assert (header.rows, header.columns, header.number_of_frames) == (6, 5, 1)
    assert header.series_instance_uid == "1.2.3.9"
    assert header.frames[0].position == (1.0, 2.0, 3.0)
    assert header.frames[0].orientation == AXIAL
    assert (header.frames[0].rescale_slope, header.frames[0].rescale_intercept) == (2.0, -5.0)
    assert "P001" not in repr(header)  # the patient ID stays out of logs


def test_reads_enhanced_header(tmp_path: Path) -> None:
    positions = stack_positions(AXIAL, (0, 0, 0), 2.0, 3)
    ds = enhanced_dataset([slice_pixels(4, 3, k) for k in range(3)], positions, slopes=[1.0, 2.0, 3.0])
    header = read_header(save(ds, tmp_path / "enh.dcm"))
    assert header.layout is ImageLayout.MULTI_FRAME
    assert header.number_of_frames == 3
    assert [f.position for f in header.frames] == positions
    assert [f.rescale_slope for f in header.frames] == [1.0, 2.0, 3.0]
    assert all(f.pixel_spacing == (0.8, 0.6) and f.orientation == AXIAL for f in header.frames)


def test_enhanced_frame_count_must_match_functional_groups(tmp_path: Path) -> None:
    positions = stack_positions(AXIAL, (0, 0, 0), 2.0, 3)
    ds = enhanced_dataset([slice_pixels(4, 3, k) for k in range(3)], positions)
    del ds.PerFrameFunctionalGroupsSequence[2]
    assert _refusal(save(ds, tmp_path / "enh.dcm")) is ReasonCode.MISSING_GEOMETRY


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, world\n", b"\x00" * 1000, b"P" * 128 + b"DICM", b"\x00" * 128 + b"DICM" + b"\xff" * 300],
    ids=["empty", "text", "zeros", "magic-only", "garbage-after-magic"],
)
def test_non_dicom_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(content)
    assert _refusal(path) in {ReasonCode.NOT_DICOM, ReasonCode.TRUNCATED}


def test_text_file_is_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    assert _refusal(path) is ReasonCode.NOT_DICOM


def test_truncated_files_are_refused_at_every_cut(tmp_path: Path) -> None:
    whole = _image(tmp_path).read_bytes()
    cut = tmp_path / "cut.dcm"
    for length in [*range(132, len(whole), 7), len(whole) - 1]:
        cut.write_bytes(whole[:length])
        assert _refusal(cut) is ReasonCode.TRUNCATED, length


def test_truncated_compressed_file_is_refused(tmp_path: Path) -> None:
    ds = mr_dataset(slice_pixels(16, 16, 0), series_uid="1.2.3.9")
    ds.compress(RLELossless, generate_instance_uid=False)
    whole = save(ds, tmp_path / "rle.dcm").read_bytes()
    read_header(tmp_path / "rle.dcm")
    cut = tmp_path / "cut.dcm"
    for length in range(len(whole) - 200, len(whole), 9):
        cut.write_bytes(whole[:length])
        assert _refusal(cut) is ReasonCode.TRUNCATED, length


def test_non_mr_is_refused(tmp_path: Path) -> None:
    assert _refusal(_image(tmp_path, modality="CT")) is ReasonCode.NOT_MR


def test_object_without_pixels_is_not_an_image(tmp_path: Path) -> None:
    ds = mr_dataset(slice_pixels(4, 4, 0), series_uid="1.2.3.9")
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.4.2")  # MR Spectroscopy
    assert _refusal(save(ds, tmp_path / "spectro.dcm")) is ReasonCode.NOT_IMAGE


def test_missing_series_uid_is_refused(tmp_path: Path) -> None:
    ds = mr_dataset(slice_pixels(4, 4, 0), series_uid="1.2.3.9")
    del ds.SeriesInstanceUID
    assert _refusal(save(ds, tmp_path / "nouid.dcm")) is ReasonCode.MISSING_UID


def test_colour_image_is_unsupported(tmp_path: Path) -> None:
    ds = mr_dataset(slice_pixels(4, 4, 0), series_uid="1.2.3.9")
    ds.set_pixel_data(np.zeros((4, 4, 3), np.uint8), "RGB", 8, generate_instance_uid=False)
    assert _refusal(save(ds, tmp_path / "rgb.dcm")) is ReasonCode.UNSUPPORTED_PIXELS


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    assert _refusal(tmp_path / "gone.dcm") is ReasonCode.UNREADABLE_FILE


def test_geometry_tags_may_be_absent_in_the_header(tmp_path: Path) -> None:
    header = read_header(_image(tmp_path, orientation=None, position=None, sop_uid=generate_uid()))
    assert header.frames[0].orientation is None and header.frames[0].position is None


def test_deflated_file_is_read(tmp_path: Path) -> None:
    ds = mr_dataset(slice_pixels(6, 5, 2), series_uid="1.2.3.9")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = read_header(save(ds, tmp_path / "deflated.dcm"))
    np.testing.assert_array_equal(read_pixels(header)[0], slice_pixels(6, 5, 2))
