"""Safe, cheap DICOM header reads into a frozen dataclass.

``read_header`` reads everything up to the pixel data (never the pixels
themselves), checks that the pixel data is present and complete, and returns a
``DicomHeader``. Every problem with the file raises ``FileRefusedError`` (an
``InputRefusedError`` that names the file); no other exception type escapes.

Two readers give the same result. With ``fast=True`` (the default) the fast
reader of ``sciatic.dicom.scan_fast`` tries first: it reads plain uncompressed
little-endian files itself and gives up on anything else, or on anything
odd. Then pydicom reads the file, and it alone decides every refusal.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from sciatic.errors import FileRefusedError, InputRefusedError, ReasonCode

if TYPE_CHECKING:  # scan_fast imports this module; at run time read_header imports it
    from sciatic.dicom.scan_fast import _Decoded

__all__ = [
    "PREAMBLE_LENGTH",
    "DicomHeader",
    "FrameGeometry",
    "ImageLayout",
    "Photometric",
    "PixelRepresentation",
    "read_header",
]

PREAMBLE_LENGTH = 128
_MAGIC = b"DICM"
_PIXEL_DATA_TAG = 0x7FE00010
_FLOAT_PIXEL_TAGS = {0x7FE00008, 0x7FE00009}
_ITEM_TAG = 0xFFFEE000
_SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
_UNDEFINED_LENGTH = 0xFFFFFFFF
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
# A DICOM UID (PS3.5 9.1): digits and dots, no empty component, no leading zero, at most 64 characters.
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_MAX = 64
#: One file may hold at most this many frames (the per-series limits of the settings come later).
MAX_FRAMES_PER_FILE = 65_536
# Control characters (NUL included) never leave the header reader: databases and logs refuse or mangle them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ImageLayout(StrEnum):
    """How the frames of an image object are stored."""

    SINGLE_FRAME = "single_frame"  # classic: one slice per file
    MULTI_FRAME = "multi_frame"  # enhanced: frames described by functional groups


class Photometric(StrEnum):
    """Supported photometric interpretations (grayscale only)."""

    MONOCHROME1 = "MONOCHROME1"
    MONOCHROME2 = "MONOCHROME2"


class PixelRepresentation(StrEnum):
    """Whether stored pixel values are signed."""

    UNSIGNED = "unsigned"
    SIGNED = "signed"


@dataclass(frozen=True, slots=True)
class FrameGeometry:
    """Geometry and value scaling of one 2D frame; ``None`` where a tag is absent or invalid.

    ``orientation`` is ImageOrientationPatient (row direction cosines, then
    column direction cosines, LPS); ``position`` is ImagePositionPatient of the
    first transmitted pixel (LPS, mm); ``pixel_spacing`` is PixelSpacing
    ``(between rows, between columns)`` in mm.
    """

    orientation: tuple[float, float, float, float, float, float] | None
    position: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0


@dataclass(frozen=True, slots=True)
class DicomHeader:
    """What the pipeline needs from one DICOM image file, read once."""

    path: Path
    file_size: int
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None
    patient_id: str | None = field(repr=False)  # PHI: only for pseudonymisation
    patient_comments: str | None = field(repr=False)  # free text: only parsed for ``cohort=...``
    study_date: str | None
    study_description: str
    series_description: str
    series_number: int | None
    acquisition_number: int | None
    instance_number: int | None
    images_in_acquisition: int | None
    image_type: tuple[str, ...]
    layout: ImageLayout
    photometric: Photometric
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: PixelRepresentation
    number_of_frames: int
    frames: tuple[FrameGeometry, ...]
    # acquisition facts the eligibility rules read (sciatic.dicom.eligibility)
    repetition_time_ms: float | None = None
    echo_time_ms: float | None = None
    scanning_sequence: tuple[str, ...] = ()
    scan_options: tuple[str, ...] = ()
    mr_acquisition_type: str = ""
    body_part: str = ""
    laterality: str = ""  # Laterality, else ImageLaterality: R, L, B or U

    @property
    def is_localizer(self) -> bool:
        """True when ImageType marks a localizer/scout image."""
        return "LOCALIZER" in self.image_type


def read_header(path: str | os.PathLike[str], data: bytes | None = None, *, fast: bool = True) -> DicomHeader:
    """Read one file's header (not its pixels); raise ``FileRefusedError`` if it is unusable.

    ``data``, when given, is the whole content of the file, already read (the
    ingest hashes the same bytes): the header is parsed from it and the file
    is not opened again. ``fast=False`` reads with pydicom only (setting
    ``fast_header_reader``); the result is the same.
    """
    from sciatic.dicom.scan_fast import FAST_HEAD_BYTES, fast_header  # here: scan_fast imports this module

    p = Path(path)
    if data is not None:
        header = fast_header(p, data, len(data)) if fast else None
        if header is not None:
            return header
        return _read_header(p, io.BytesIO(data), len(data))
    try:
        with open(p, "rb") as fp:
            file_size = os.fstat(fp.fileno()).st_size
            if fast:
                header = fast_header(p, fp.read(FAST_HEAD_BYTES), file_size)
                if header is not None:
                    return header
                fp.seek(0)
            return _read_header(p, fp, file_size)
    except InputRefusedError:
        raise
    except OSError as exc:
        if exc.errno is not None:  # the file system failed, not the parser
            raise FileRefusedError(p, ReasonCode.UNREADABLE_FILE, f"cannot read {p}: {exc.strerror}") from exc
        raise FileRefusedError(p, ReasonCode.NOT_DICOM, f"{p} cannot be parsed ({exc})") from exc


def _read_header(p: Path, fp: BinaryIO, file_size: int) -> DicomHeader:
    """The pydicom reader: the authority for every file, and for every refusal."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _read_dataset(p, fp, file_size)
            pixel_tag, pixel_length = _inspect_pixel_data(p, fp, ds, file_size)
            return _build_header(p, ds, file_size, pixel_tag, pixel_length)
    except InputRefusedError:
        raise
    except OSError as exc:
        if exc.errno is not None:  # the file system failed, not the parser
            raise FileRefusedError(p, ReasonCode.UNREADABLE_FILE, f"cannot read {p}: {exc.strerror}") from exc
        raise FileRefusedError(p, ReasonCode.NOT_DICOM, f"{p} cannot be parsed ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on malformed headers
        raise FileRefusedError(
            p, ReasonCode.NOT_DICOM, f"{p} has a DICOM header that cannot be parsed ({exc})"
        ) from exc


def _read_dataset(path: Path, fp: BinaryIO, file_size: int) -> Dataset:
    head = fp.read(PREAMBLE_LENGTH + len(_MAGIC))
    if head[PREAMBLE_LENGTH:] != _MAGIC:
        raise FileRefusedError(path, ReasonCode.NOT_DICOM, f"{path} is not a DICOM Part 10 file (no 'DICM' marker)")
    fp.seek(0)
    problem = "no transfer syntax in its file meta header"
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        meta_length = _int(ds.file_meta.get("FileMetaInformationGroupLength"))
        if meta_length is not None and PREAMBLE_LENGTH + len(_MAGIC) + 12 + meta_length > file_size:
            raise FileRefusedError(path, ReasonCode.TRUNCATED, f"{path} ends inside its file meta header")
        if "TransferSyntaxUID" in ds.file_meta:
            _check_last_element(path, ds, file_size)
            return ds
    except OSError as exc:
        if exc.errno is not None:
            raise
        problem = str(exc)
    except (InvalidDicomError, EOFError, struct.error, ValueError, KeyError, TypeError) as exc:
        problem = str(exc) or type(exc).__name__
    if fp.tell() >= file_size:  # the parser ran out of bytes
        raise FileRefusedError(path, ReasonCode.TRUNCATED, f"{path} ends inside its DICOM header ({problem})")
    raise FileRefusedError(path, ReasonCode.NOT_DICOM, f"{path} has a DICOM header that cannot be parsed ({problem})")


def _check_last_element(path: Path, ds: Dataset, file_size: int) -> None:
    """pydicom reads a value cut short by the end of the file without complaint; catch that."""
    if not ds:
        return
    raw = ds.get_item(max(ds.keys()))
    length = getattr(raw, "length", None)
    value_tell = getattr(raw, "value_tell", None)
    if (
        isinstance(length, int)
        and isinstance(value_tell, int)
        and length != _UNDEFINED_LENGTH
        and value_tell + length > file_size
    ):
        raise FileRefusedError(path, ReasonCode.TRUNCATED, f"{path} ends inside its DICOM header")


def _inspect_pixel_data(path: Path, fp: BinaryIO, ds: Dataset, file_size: int) -> tuple[int | None, int | None]:
    """The pixel data tag found after the header (``None`` if absent) and its length when native; check it is whole.

    The file position is where pydicom stopped: at the pixel data element, or
    at the end of the file when there is none.
    """
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if not syntax.is_transfer_syntax:
        raise FileRefusedError(path, ReasonCode.UNSUPPORTED_PIXELS, f"{path} has unknown transfer syntax {syntax}")
    if syntax.is_deflated:
        return _pixel_tag_of_full_read(fp), None
    implicit_vr, little_endian = ds.original_encoding
    start = fp.tell()
    raw = fp.read(12)
    if len(raw) < 8:
        return None, None
    endian = "<" if little_endian else ">"
    group, element = struct.unpack(endian + "HH", raw[:4])
    tag: int = group << 16 | element
    if tag != _PIXEL_DATA_TAG and tag not in _FLOAT_PIXEL_TAGS:
        return None, None
    if implicit_vr:
        (length,) = struct.unpack(endian + "L", raw[4:8])
        value_start = start + 8
    elif raw[4:6] in _LONG_LENGTH_VRS:
        if len(raw) < 12:
            raise FileRefusedError(path, ReasonCode.TRUNCATED, f"{path} ends inside its pixel data element")
        (length,) = struct.unpack(endian + "L", raw[8:12])
        value_start = start + 12
    else:
        (length,) = struct.unpack(endian + "H", raw[6:8])
        value_start = start + 8
    if length == _UNDEFINED_LENGTH:
        _check_fragments(path, fp, value_start, file_size, _int(ds.get("NumberOfFrames")) or 1)
        return tag, None
    if value_start + length > file_size:
        missing = value_start + length - file_size
        raise FileRefusedError(
            path, ReasonCode.TRUNCATED, f"{path} is truncated: {missing} bytes of pixel data are missing"
        )
    return tag, length


def _pixel_tag_of_full_read(fp: BinaryIO) -> int | None:
    fp.seek(0)
    full = pydicom.dcmread(fp)
    for tag in (_PIXEL_DATA_TAG, *_FLOAT_PIXEL_TAGS):
        if tag in full:
            return tag
    return None


def _check_fragments(path: Path, fp: BinaryIO, position: int, file_size: int, frames: int) -> None:
    """Walk the items of encapsulated pixel data (seeking, not reading) up to the delimiter."""
    items = 0
    while True:
        fp.seek(position)
        raw = fp.read(8)
        if len(raw) < 8:
            raise FileRefusedError(path, ReasonCode.TRUNCATED, f"{path} is truncated inside its compressed pixel data")
        group, element, length = struct.unpack("<HHL", raw)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER_TAG:
            break
        if tag != _ITEM_TAG or length == _UNDEFINED_LENGTH:
            raise FileRefusedError(path, ReasonCode.UNREADABLE_PIXELS, f"{path} has malformed compressed pixel data")
        position += 8 + length
        if position > file_size:
            raise FileRefusedError(path, ReasonCode.TRUNCATED, f"{path} is truncated inside its compressed pixel data")
        items += 1
    fragments = items - 1  # the first item is the basic offset table
    if fragments < frames:
        raise FileRefusedError(
            path, ReasonCode.UNREADABLE_PIXELS, f"{path} has {fragments} compressed fragments for {frames} frames"
        )


def _build_header(
    path: Path, ds: Dataset | _Decoded, file_size: int, pixel_tag: int | None, pixel_length: int | None = None
) -> DicomHeader:
    """The typed header; ``pixel_length`` is the byte length of native (uncompressed) pixel data."""
    sop_class = _str(ds.get("SOPClassUID")) or _str(ds.file_meta.get("MediaStorageSOPClassUID"))
    if pixel_tag is None:
        declared = (sop_class, _str(ds.file_meta.get("MediaStorageSOPClassUID")))
        if "Rows" in ds or any(_is_image_storage(uid) for uid in declared):
            raise FileRefusedError(
                path, ReasonCode.TRUNCATED, f"{path} is an image object that ends before its pixel data"
            )
        what = UID(sop_class).name if sop_class else "an object of unknown class"
        raise FileRefusedError(path, ReasonCode.NOT_IMAGE, f"{path} has no pixel data ({what})")
    modality = _str(ds.get("Modality"))
    if modality != "MR":
        raise FileRefusedError(path, ReasonCode.NOT_MR, f"{path} has modality {modality or 'missing'}, not MR")
    if pixel_tag != _PIXEL_DATA_TAG:
        raise FileRefusedError(path, ReasonCode.UNSUPPORTED_PIXELS, f"{path} stores floating-point pixel data")
    uids = {key: _str(ds.get(key)) for key in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")}
    for key, value in uids.items():
        if not value:
            raise FileRefusedError(path, ReasonCode.MISSING_UID, f"{path} has no {key}")
        if len(value) > _UID_MAX or not _UID_PATTERN.fullmatch(value):
            raise FileRefusedError(path, ReasonCode.MISSING_UID, f"{path} has an invalid {key} {value[:80]!r}")
    photometric = _photometric(path, ds)
    rows, columns = _int(ds.get("Rows")), _int(ds.get("Columns"))
    bits_allocated, bits_stored = _int(ds.get("BitsAllocated")), _int(ds.get("BitsStored"))
    if not rows or not columns or bits_allocated not in (8, 16, 32):
        raise FileRefusedError(
            path,
            ReasonCode.UNSUPPORTED_PIXELS,
            f"{path} has an unsupported image matrix or bit depth "
            f"(Rows={rows}, Columns={columns}, BitsAllocated={bits_allocated})",
        )
    multi_frame = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    number_of_frames = _int(ds.get("NumberOfFrames")) or 1
    if not 1 <= number_of_frames <= MAX_FRAMES_PER_FILE:
        raise FileRefusedError(
            path, ReasonCode.TOO_LARGE, f"{path} declares {number_of_frames} frames (at most {MAX_FRAMES_PER_FILE})"
        )
    if pixel_length is not None:
        expected = rows * columns * number_of_frames * (bits_allocated // 8)
        if pixel_length not in (expected, expected + 1):  # + 1: the pad byte of an odd length
            raise FileRefusedError(
                path,
                ReasonCode.UNREADABLE_PIXELS,
                f"{path} has {pixel_length} bytes of pixel data, but Rows x Columns x frames x bytes per pixel "
                f"= {rows} x {columns} x {number_of_frames} x {bits_allocated // 8} = {expected}",
            )
    repetition_time, echo_time = ds.get("RepetitionTime"), ds.get("EchoTime")
    if multi_frame:
        assert isinstance(ds, Dataset)  # the fast reader leaves multi-frame objects to pydicom
        frames = _enhanced_frames(path, ds, number_of_frames)
        repetition_time, echo_time = _enhanced_timing(ds)
    else:
        frames = _classic_frames(ds, number_of_frames)
    return DicomHeader(
        path=path,
        file_size=file_size,
        transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID")),
        sop_class_uid=sop_class,
        sop_instance_uid=uids["SOPInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        frame_of_reference_uid=_str(ds.get("FrameOfReferenceUID")) or None,
        patient_id=_str(ds.get("PatientID")) or None,
        patient_comments=_str(ds.get("PatientComments")) or None,
        study_date=_str(ds.get("StudyDate")) or None,
        study_description=_str(ds.get("StudyDescription")),
        series_description=_str(ds.get("SeriesDescription")),
        series_number=_int(ds.get("SeriesNumber")),
        acquisition_number=_int(ds.get("AcquisitionNumber")),
        instance_number=_int(ds.get("InstanceNumber")),
        images_in_acquisition=_int(ds.get("ImagesInAcquisition")),
        image_type=tuple(str(v).upper() for v in _values(ds.get("ImageType"))),
        layout=ImageLayout.MULTI_FRAME if multi_frame else ImageLayout.SINGLE_FRAME,
        photometric=photometric,
        rows=rows,
        columns=columns,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored or bits_allocated,
        pixel_representation=PixelRepresentation.SIGNED
        if _int(ds.get("PixelRepresentation")) == 1
        else PixelRepresentation.UNSIGNED,
        number_of_frames=number_of_frames,
        frames=frames,
        repetition_time_ms=_positive(repetition_time),
        echo_time_ms=_positive(echo_time),
        scanning_sequence=tuple(_str(v).upper() for v in _values(ds.get("ScanningSequence"))),
        scan_options=tuple(_str(v).upper() for v in _values(ds.get("ScanOptions")) if _str(v)),
        mr_acquisition_type=_str(ds.get("MRAcquisitionType")).upper(),
        body_part=_str(ds.get("BodyPartExamined")).upper()[:64],
        laterality=(_str(ds.get("Laterality")) or _str(ds.get("ImageLaterality"))).upper()[:1],
    )


def _photometric(path: Path, ds: Dataset | _Decoded) -> Photometric:
    samples = _int(ds.get("SamplesPerPixel")) or 1
    value = _str(ds.get("PhotometricInterpretation")) or "MONOCHROME2"
    if samples != 1 or value not in Photometric.__members__:
        raise FileRefusedError(
            path,
            ReasonCode.UNSUPPORTED_PIXELS,
            f"{path} is not a grayscale image ({value}, {samples} samples per pixel)",
        )
    return Photometric(value)


def _enhanced_timing(ds: Dataset) -> tuple[Any, Any]:
    """RepetitionTime and EffectiveEchoTime of an enhanced MR object (shared, else first frame's groups)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or [None]
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    lookup = _functional_group_lookup(per_frame[0] or Dataset(), shared_seq[0] if shared_seq else None)
    return (
        lookup("MRTimingAndRelatedParametersSequence", "RepetitionTime"),
        lookup("MREchoSequence", "EffectiveEchoTime"),
    )


def _positive(value: Any) -> float | None:
    """A positive number (ms) or None: a missing, empty, zero or unparsable value tells nothing."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _classic_frames(ds: Dataset | _Decoded, number_of_frames: int) -> tuple[FrameGeometry, ...]:
    frame = FrameGeometry(
        orientation=_orientation(ds.get("ImageOrientationPatient")),
        position=_position(ds.get("ImagePositionPatient")),
        pixel_spacing=_spacing(ds.get("PixelSpacing")),
        rescale_slope=_float(ds.get("RescaleSlope"), 1.0),
        rescale_intercept=_float(ds.get("RescaleIntercept"), 0.0),
    )
    if number_of_frames == 1:
        return (frame,)
    # a multi-frame object without functional groups has no per-frame position
    return tuple(FrameGeometry(frame.orientation, None, frame.pixel_spacing) for _ in range(number_of_frames))


def _enhanced_frames(path: Path, ds: Dataset, number_of_frames: int) -> tuple[FrameGeometry, ...]:
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared: Dataset | None = shared_seq[0] if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != number_of_frames:
        raise FileRefusedError(
            path,
            ReasonCode.MISSING_GEOMETRY,
            f"{path} declares {number_of_frames} frames but its per-frame functional groups describe {len(per_frame)}",
        )
    frames = []
    for item in per_frame:
        lookup = _functional_group_lookup(item, shared)
        frames.append(
            FrameGeometry(
                orientation=_orientation(lookup("PlaneOrientationSequence", "ImageOrientationPatient")),
                position=_position(lookup("PlanePositionSequence", "ImagePositionPatient")),
                pixel_spacing=_spacing(lookup("PixelMeasuresSequence", "PixelSpacing")),
                rescale_slope=_float(lookup("PixelValueTransformationSequence", "RescaleSlope"), 1.0),
                rescale_intercept=_float(lookup("PixelValueTransformationSequence", "RescaleIntercept"), 0.0),
            )
        )
    return tuple(frames)


def _functional_group_lookup(frame: Dataset, shared: Dataset | None) -> Callable[[str, str], Any]:
    """Return ``lookup(sequence, keyword)``: the per-frame value, else the shared one, else ``None``."""

    def lookup(sequence: str, keyword: str) -> Any:
        for group in (frame, shared):
            if group is None:
                continue
            seq = group.get(sequence)
            if seq and keyword in seq[0]:
                return seq[0].get(keyword)
        return None

    return lookup


def _is_image_storage(sop_class_uid: str) -> bool:
    return bool(sop_class_uid) and "Image Storage" in UID(sop_class_uid).name


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _str(value: Any) -> str:
    """A header value as clean text: control characters (NUL included) removed, spaces trimmed."""
    if value is None:
        return ""
    return _CONTROL.sub("", str(value)).strip()


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _float(value: Any, default: float) -> float:
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


def _orientation(value: Any) -> tuple[float, float, float, float, float, float] | None:
    v = _floats(value, 6)
    return None if v is None else (v[0], v[1], v[2], v[3], v[4], v[5])


def _position(value: Any) -> tuple[float, float, float] | None:
    v = _floats(value, 3)
    return None if v is None else (v[0], v[1], v[2])


def _spacing(value: Any) -> tuple[float, float] | None:
    v = _floats(value, 2)
    return None if v is None or v[0] <= 0 or v[1] <= 0 else (v[0], v[1])


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    """``count`` finite floats from a multi-valued element, else ``None``."""
    items = _values(value)
    if len(items) != count:
        return None
    try:
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None
    if not all(n == n and abs(n) != float("inf") for n in numbers):
        return None
    return numbers
