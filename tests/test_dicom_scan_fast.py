"""The fast header reader gives exactly pydicom's result, or gives up and lets pydicom decide."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from sciatic.dicom.scan import DicomHeader, _fast_header, _read_header, read_header
from sciatic.errors import InputRefusedError
from tests._dicom_synthetic import enhanced_dataset, mr_dataset, save, slice_pixels

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom-real"


def _pydicom_result(path: Path, data: bytes) -> DicomHeader | InputRefusedError:
    try:
        return _read_header(path, io.BytesIO(data), len(data))
    except InputRefusedError as exc:
        return exc


def _check(path: Path, data: bytes) -> bool:
    """Assert the fast reader agrees with pydicom; return whether it took the file (did not give up)."""
    fast = _fast_header(path, data, len(data))
    if fast is None:
        return False
    reference = _pydicom_result(path, data)
    assert isinstance(reference, DicomHeader), f"fast reader accepted what pydicom refuses: {reference}"
    assert fast == reference
    assert fast.patient_id == reference.patient_id
    return True


def _image(tmp_path: Path, name: str = "im.dcm", **extra: object) -> Path:
    ds = mr_dataset(slice_pixels(6, 5, 0), series_uid="1.2.3.9", slope=2.0, intercept=-5.0, **extra)  # type: ignore[arg-type]
    return save(ds, tmp_path / name)


def test_classic_image_is_read_fast_and_equal(tmp_path: Path) -> None:
    path = _image(tmp_path, PatientComments="cohort=control\r\nsecond line", StudyDate="20240101")
    assert _check(path, path.read_bytes())
    assert read_header(path) == read_header(path, path.read_bytes()) == _pydicom_result(path, path.read_bytes())


def test_implicit_vr_and_sequences_are_read_fast(tmp_path: Path) -> None:
    ds = mr_dataset(slice_pixels(4, 4, 1), series_uid="1.2.3.10")
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = DicomSequence([item, item])
    explicit = save(ds, tmp_path / "explicit.dcm")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit = save(ds, tmp_path / "implicit.dcm")
    for path in (explicit, implicit):
        assert _check(path, path.read_bytes())


@pytest.mark.parametrize(
    "extra",
    [
        {"SeriesDescription": "two\\values"},
        {"PatientID": "Müller"},
        {"InstanceNumber": "1.0"},
        {"PixelSpacing": ["1e-1", " 2.5 "]},
        {"ImageType": ["ORIGINAL ", "PRIMARY"]},
        {"ImageType": ""},
        {"RescaleSlope": ""},
        {"SeriesNumber": ""},
        {"SpecificCharacterSet": "ISO_IR 192", "PatientID": "Zoë"},
        {"SpecificCharacterSet": "ISO 2022 IR 87"},
        {"Modality": "CT"},
        {"SOPInstanceUID": "1.2.3..x y"},
    ],
)
def test_odd_values_agree_or_go_to_pydicom(tmp_path: Path, extra: dict[str, object]) -> None:
    path = _image(tmp_path, **extra)
    _check(path, path.read_bytes())


def test_enhanced_multi_frame_goes_to_pydicom(tmp_path: Path) -> None:
    frames = [slice_pixels(4, 4, k) for k in range(3)]
    path = save(enhanced_dataset(frames, [(0.0, 0.0, 3.0 * k) for k in range(3)]), tmp_path / "mf.dcm")
    assert not _check(path, path.read_bytes())
    assert read_header(path).number_of_frames == 3


def test_every_truncation_agrees(tmp_path: Path) -> None:
    data = _image(tmp_path, PatientComments="cohort=patient").read_bytes()
    for cut in range(len(data) + 1):
        assert _check(tmp_path / "cut.dcm", data[:cut]) == (cut == len(data))


def test_random_corruption_agrees(tmp_path: Path) -> None:
    data = _image(tmp_path).read_bytes()
    rng = random.Random(7)
    header_end = data.index(b"\xe0\x7f\x10\x00") + 12
    for _ in range(1500):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(header_end)] = rng.randrange(256)
        _check(tmp_path / "damaged.dcm", bytes(damaged))


def test_real_files_agree() -> None:
    files = sorted(p for p in REAL_DATA.rglob("*") if p.is_file() and not p.name.startswith("LICENSE"))
    assert files, f"no real DICOM files under {REAL_DATA}"
    fast = sum(_check(path, path.read_bytes()) for path in files)
    assert fast > 0
