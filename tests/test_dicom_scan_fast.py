"""The fast header reader gives exactly pydicom's result, or gives up and lets pydicom decide."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from sciatic.config import Settings
from sciatic.dicom import scan_fast
from sciatic.dicom.scan import DicomHeader, _read_header, read_header
from sciatic.dicom.scan_fast import fast_header
from sciatic.errors import InputRefusedError, ReasonCode
from tests._dicom_synthetic import enhanced_dataset, mr_dataset, save, slice_pixels

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom-real"


def _pydicom_result(path: Path, data: bytes) -> DicomHeader | InputRefusedError:
    try:
        return _read_header(path, io.BytesIO(data), len(data))
    except InputRefusedError as exc:
        return exc


def _check(path: Path, data: bytes) -> bool:
    """Assert the fast reader agrees with pydicom; return whether it took the file (did not give up)."""
    fast = fast_header(path, data, len(data))
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


def _outcome(path: Path, data: bytes | None, fast: bool) -> DicomHeader | ReasonCode:
    try:
        return read_header(path, data, fast=fast)
    except InputRefusedError as exc:
        return exc.reason


def test_fast_false_reads_with_pydicom_only_and_gives_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = [min(d.glob("*.dcm")) for d in sorted(REAL_DATA.iterdir()) if d.is_dir() and any(d.glob("*.dcm"))]
    frames = [slice_pixels(4, 4, k) for k in range(2)]
    paths = [
        _image(tmp_path, PatientComments="cohort=control", StudyDate="20240101"),
        _image(tmp_path, "odd.dcm", PatientID="Müller"),
        _image(tmp_path, "ct.dcm", Modality="CT"),
        save(enhanced_dataset(frames, [(0.0, 0.0, 3.0 * k) for k in range(2)]), tmp_path / "mf.dcm"),
        *real,
    ]
    fast = [(_outcome(path, None, True), _outcome(path, path.read_bytes(), True)) for path in paths]
    assert sum(fast_header(path, path.read_bytes(), path.stat().st_size) is not None for path in paths) >= 2
    assert sum(isinstance(outcome, DicomHeader) for outcome, _ in fast) >= 6

    def no_fast_reader(*args: object) -> None:
        raise AssertionError("fast=False must not use the fast reader")

    monkeypatch.setattr(scan_fast, "fast_header", no_fast_reader)
    for path, (from_file, from_bytes) in zip(paths, fast, strict=True):
        slow = _outcome(path, None, False)
        assert slow == from_file == from_bytes == _outcome(path, path.read_bytes(), False), path
        if isinstance(slow, DicomHeader):
            assert isinstance(from_file, DicomHeader) and slow.patient_id == from_file.patient_id


def test_fast_false_refuses_alike(tmp_path: Path) -> None:
    data = _image(tmp_path, Modality="CT").read_bytes()
    for content, reason in ((data, ReasonCode.NOT_MR), (data[:-10], ReasonCode.TRUNCATED)):
        path = tmp_path / "refused.dcm"
        path.write_bytes(content)
        for fast in (True, False):
            for given in (None, content):
                with pytest.raises(InputRefusedError) as refused:
                    read_header(path, given, fast=fast)
                assert refused.value.reason is reason


def test_fast_header_reader_setting_defaults_to_true() -> None:
    field = Settings.model_fields["fast_header_reader"]
    assert field.annotation is bool and field.default is True
