"""Pixel values and dtypes, atomic NIfTI writing, and directory conversion with series.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless, generate_uid

from sciatic.dicom.convert import convert_directory, convert_series, load_volume
from sciatic.dicom.scan import read_header
from sciatic.dicom.series import plan_series
from sciatic.errors import FileRefusedError, ReasonCode
from sciatic.imaging.volume import Volume, is_remembered, read_volume, read_volume_known, write_volume
from sciatic.storage import atomic_write, sha256_file
from tests._dicom_synthetic import AXIAL, mr_dataset, save, slice_pixels, stack_positions, write_stack


def _convert(paths: list[Path]) -> Volume:
    return convert_series([read_header(p) for p in paths])


def _stack_with(
    tmp_path: Path, slopes: list[float | None], intercepts: list[float | None], dtype: type = np.uint16
) -> list[Path]:
    uid = generate_uid()
    positions = stack_positions(AXIAL, (0, 0, 0), 2.0, len(slopes))
    return [
        save(
            mr_dataset(slice_pixels(3, 2, k, dtype), series_uid=uid, position=positions[k], slope=s, intercept=i),
            tmp_path / f"{k}.dcm",
        )
        for k, (s, i) in enumerate(zip(slopes, intercepts, strict=True))
    ]


def test_per_slice_rescale_gives_float32(tmp_path: Path) -> None:
    slopes, intercepts = [1.0, 2.5, 0.5], [0.0, -10.0, 3.25]
    volume = _convert(_stack_with(tmp_path, slopes, intercepts))  # type: ignore[arg-type]
    assert volume.data.dtype == np.float32
    for k in range(3):
        expected = slice_pixels(3, 2, k).T.astype(np.float64) * slopes[k] + intercepts[k]
        np.testing.assert_allclose(volume.data[:, :, k], expected, rtol=1e-6)


def test_identity_rescale_keeps_stored_dtype(tmp_path: Path) -> None:
    volume = _convert(_stack_with(tmp_path, [None, 1.0, 1.0], [None, 0.0, 0.0]))
    assert volume.data.dtype == np.uint16
    np.testing.assert_array_equal(volume.data[:, :, 2], slice_pixels(3, 2, 2).T)


def test_integral_intercept_moves_to_a_signed_dtype_that_fits(tmp_path: Path) -> None:
    volume = _convert(_stack_with(tmp_path, [1.0, 1.0], [-1024.0, -1024.0]))
    assert volume.data.dtype == np.int16
    np.testing.assert_array_equal(volume.data[:, :, 1], slice_pixels(3, 2, 1).T.astype(np.int32) - 1024)


def test_integral_intercept_beyond_16_bits_widens(tmp_path: Path) -> None:
    volume = _convert(_stack_with(tmp_path, [1.0, 1.0], [70000.0, 0.0]))
    assert volume.data.dtype == np.uint32
    assert volume.data[0, 0, 0] == 70000


def test_signed_pixels(tmp_path: Path) -> None:
    paths = _stack_with(tmp_path, [None, None], [None, None], dtype=np.int16)
    volume = _convert(paths)
    assert volume.data.dtype == np.int16


def test_rle_compressed_series(tmp_path: Path) -> None:
    uid = generate_uid()
    positions = stack_positions(AXIAL, (0, 0, 0), 2.0, 3)
    paths = []
    for k in range(3):
        ds = mr_dataset(slice_pixels(8, 8, k), series_uid=uid, position=positions[k])
        ds.compress(RLELossless, generate_instance_uid=False)
        paths.append(save(ds, tmp_path / f"{k}.dcm"))
    volume = _convert(paths)
    np.testing.assert_array_equal(volume.data[:, :, 1], slice_pixels(8, 8, 1).T)


def test_undecodable_pixels_name_the_file(tmp_path: Path) -> None:
    paths = write_stack(tmp_path, count=3)
    bad = mr_dataset(
        slice_pixels(5, 4, 0),
        series_uid=read_header(paths[0]).series_instance_uid,
        position=(-20, 15, 49),
        pixel_spacing=(0.8, 0.6),
    )
    bad.file_meta.TransferSyntaxUID = RLELossless
    bad.PixelData = encapsulate([b"\x01\x02\x03\x04" * 4])  # not an RLE segment table
    bad["PixelData"].VR = "OB"
    paths.append(save(bad, tmp_path / "bad.dcm"))
    plan = plan_series([read_header(p) for p in paths])
    with pytest.raises(FileRefusedError) as info:
        load_volume(plan)
    assert info.value.reason is ReasonCode.UNREADABLE_PIXELS
    assert info.value.path == tmp_path / "bad.dcm"


# --- NIfTI -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32])
def test_nifti_round_trip_is_exact(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(0)
    data: NDArray[Any] = (rng.random((7, 5, 3)) * 200).astype(dtype)
    affine = np.array([[-0.6, 0.1, 0, 10], [0, 0.8, 0.2, -5], [0.1, 0, 3.0, 7], [0, 0, 0, 1]]).astype(np.float32)
    volume = Volume(data, affine.astype(np.float64))
    digest = write_volume(volume, tmp_path / "v.nii.gz")
    assert digest == sha256_file(tmp_path / "v.nii.gz")
    back = read_volume(tmp_path / "v.nii.gz")
    assert back.data.dtype == data.dtype
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_array_equal(back.affine, volume.affine)
    assert nib.load(tmp_path / "v.nii.gz").header.get_sform(coded=True)[1] == 1  # type: ignore[attr-defined]
    assert write_volume(volume, tmp_path / "again.nii.gz") == digest  # reproducible bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.nii.gz", "v.nii.gz"]  # no temporary left


def test_converted_volume_round_trips_through_nifti(tmp_path: Path) -> None:
    volume = _convert(write_stack(tmp_path / "dcm", count=4, pixel_spacing=(0.7, 0.9)))
    write_volume(volume, tmp_path / "v.nii.gz")
    back = read_volume(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(back.data, volume.data)
    np.testing.assert_array_equal(back.affine, volume.affine)


def test_a_volume_written_here_is_read_from_memory_exactly_as_from_its_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    affine = np.array([[-0.6, 0.1, 0, 10.123456789], [0, 0.8, 0.2, -5], [0.1, 0, 3.0, 7], [0, 0, 0, 1]])
    original = rng.random((6, 5, 4)).astype(np.float32)
    digest = write_volume(Volume(original, affine), tmp_path / "v.nii.gz")
    original[0, 0, 0] = -1.0  # the caller changes its array afterwards
    remembered = read_volume_known(tmp_path / "v.nii.gz", digest)
    from_file = read_volume(tmp_path / "v.nii.gz")
    assert remembered is not from_file and remembered.data.dtype == from_file.data.dtype
    np.testing.assert_array_equal(remembered.data, from_file.data)
    np.testing.assert_array_equal(remembered.affine, from_file.affine)  # as stored: float32 precision
    assert not remembered.data.flags.writeable
    assert read_volume_known(tmp_path / "v.nii.gz", "0" * 64).data.flags.writeable  # unknown: from the file
    assert read_volume_known(tmp_path / "v.nii.gz", None) is not remembered


def test_a_verified_read_is_remembered_for_the_next_step(tmp_path: Path) -> None:
    path = tmp_path / "other.nii.gz"
    nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4)).to_filename(path)
    digest = sha256_file(path)
    assert not is_remembered(digest)
    first = read_volume_known(path, digest)  # not verified by the caller: read, not remembered
    assert not is_remembered(digest) and first.data.flags.writeable
    checked = read_volume_known(path, digest, verified=True)
    assert is_remembered(digest)
    again = read_volume_known(path, digest)
    assert again is not checked and not again.data.flags.writeable  # a read-only copy, from memory
    np.testing.assert_array_equal(again.data, read_volume(path).data)
    np.testing.assert_array_equal(again.affine, read_volume(path).affine)


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "v.nii.gz"
    target.write_bytes(b"old")

    def explode(fp: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["v.nii.gz"]


def test_volume_must_be_3d() -> None:
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 2)), np.eye(4))


# --- directory conversion ---------------------------------------------------


def test_convert_directory_reports_every_series_and_file(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    good = write_stack(src / "study" / "good", series_uid="1.2.3.10", count=4, order=[3, 1, 0, 2])
    (src / "study" / "good" / "copy.dcm").write_bytes(good[0].read_bytes())  # an identical duplicate
    uid4d = "1.2.3.20"
    write_stack(src / "4d" / "t1", series_uid=uid4d, count=3)
    write_stack(src / "4d" / "t2", series_uid=uid4d, count=3)
    (src / "notes.txt").write_text("hello\n")
    truncated = src / "cut.dcm"
    truncated.write_bytes(good[1].read_bytes()[:400])

    report = convert_directory(src, out)

    by_uid = {s.series_instance_uid: s for s in report.series}
    assert by_uid["1.2.3.10"].status == "converted"
    assert by_uid["1.2.3.20"].reason is ReasonCode.MULTI_VOLUME
    assert {(f.path.name, f.reason) for f in report.refused_files} == {
        ("notes.txt", ReasonCode.NOT_DICOM),
        ("cut.dcm", ReasonCode.TRUNCATED),
    }
    doc = json.loads((out / "series.json").read_text())
    assert doc["format_version"] == 1
    entry = next(s for s in doc["series"] if s["series_instance_uid"] == "1.2.3.10")
    assert entry["output"] == "1.2.3.10.nii.gz"
    assert entry["shape"] == [4, 5, 4]
    assert entry["dtype"] == "uint16"
    assert entry["sha256"] == sha256_file(out / "1.2.3.10.nii.gz")
    assert entry["duplicate_files"] == ["study/good/copy.dcm"]
    assert len(entry["files"]) == 4
    np.testing.assert_allclose(entry["voxel_size"], [0.6, 0.8, 3.0], atol=1e-5)
    volume = read_volume(out / "1.2.3.10.nii.gz")
    np.testing.assert_array_equal(np.array(entry["affine"]), volume.affine)
    refused = next(s for s in doc["series"] if s["series_instance_uid"] == "1.2.3.20")
    assert refused["status"] == "refused" and refused["reason"] == "multi_volume" and refused["output"] is None
    assert {f["path"]: f["reason"] for f in doc["refused_files"]} == {"notes.txt": "not_dicom", "cut.dcm": "truncated"}


def test_convert_directory_is_repeatable_and_skips_its_own_output(tmp_path: Path) -> None:
    src = tmp_path / "in"
    write_stack(src, series_uid="1.2.3.30", count=3)
    first = convert_directory(src, src / "nifti")
    second = convert_directory(src, src / "nifti")
    assert second.refused_files == ()
    assert first.series[0].sha256 == second.series[0].sha256


def test_convert_directory_needs_a_source(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        convert_directory(tmp_path / "missing", tmp_path / "out")
