"""A fast DICOM header reader for plain uncompressed images, checked against pydicom.

``fast_header`` walks the elements of uncompressed little-endian files itself
(explicit or implicit VR) and decodes only the tags listed in ``_FAST_TAGS``,
then builds the header with the same ``_build_header`` as the pydicom path. It
gives up (returns ``None``) on anything it does not know to decode exactly as
pydicom does: other transfer syntaxes, multi-frame functional groups,
non-ASCII or multi-valued text, any sign of damage. Then pydicom reads the file
(``sciatic.dicom.scan``), and it alone decides every refusal. Indexing is 3-4x
faster this way; tests/test_dicom_scan_fast.py checks it against pydicom.

``sciatic.dicom.scan`` imports this module inside ``read_header``, not at its
top, because this module builds on it.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import pydicom

from sciatic.dicom.scan import (
    _FLOAT_PIXEL_TAGS,
    _ITEM_TAG,
    _LONG_LENGTH_VRS,
    _MAGIC,
    _PIXEL_DATA_TAG,
    _SEQUENCE_DELIMITER_TAG,
    _UNDEFINED_LENGTH,
    PREAMBLE_LENGTH,
    DicomHeader,
    _build_header,
)

__all__ = ["FAST_HEAD_BYTES", "fast_header"]

FAST_HEAD_BYTES = 1 << 16  # header bytes read at once; a longer header goes to pydicom
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_ELEMENT = struct.Struct("<HH2sH")  # group, element, VR, short length (explicit VR)
_IMPLICIT_ELEMENT = struct.Struct("<HHL")  # group, element, length (implicit VR; also items)
_LONG_LENGTH = struct.Struct("<L")
_US = struct.Struct("<H")
_SHORT_LENGTH_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL", b"SS",
    b"ST", b"TM", b"UI", b"UL", b"US",
}  # fmt: skip
_ITEM_DELIMITER_TAG = 0xFFFEE00D
_MULTI_FRAME_TAGS = {0x52009229, 0x52009230}  # Shared / PerFrame FunctionalGroupsSequence
_SPECIFIC_CHARACTER_SET_TAG = 0x00080005
# Character sets in which printable ASCII bytes decode to the same text as in ASCII.
_ASCII_COMPATIBLE_CHARSETS = {
    "", "ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 126", "ISO_IR 127", "ISO_IR 138",
    "ISO_IR 144", "ISO_IR 148", "ISO_IR 166", "ISO_IR 192", "ISO_IR 203", "GB18030", "GBK",
}  # fmt: skip
# The tags _build_header reads from a classic image, with the VR each must have.
_FAST_TAGS: dict[int, tuple[str, bytes]] = {
    0x00080008: ("ImageType", b"CS"),
    0x00080016: ("SOPClassUID", b"UI"),
    0x00080018: ("SOPInstanceUID", b"UI"),
    0x00080020: ("StudyDate", b"DA"),
    0x00080060: ("Modality", b"CS"),
    0x00081030: ("StudyDescription", b"LO"),
    0x0008103E: ("SeriesDescription", b"LO"),
    0x00100020: ("PatientID", b"LO"),
    0x00180015: ("BodyPartExamined", b"CS"),
    0x00180020: ("ScanningSequence", b"CS"),
    0x00180022: ("ScanOptions", b"CS"),
    0x00180023: ("MRAcquisitionType", b"CS"),
    0x00180080: ("RepetitionTime", b"DS"),
    0x00180081: ("EchoTime", b"DS"),
    0x00104000: ("PatientComments", b"LT"),
    0x0020000D: ("StudyInstanceUID", b"UI"),
    0x0020000E: ("SeriesInstanceUID", b"UI"),
    0x00200011: ("SeriesNumber", b"IS"),
    0x00200012: ("AcquisitionNumber", b"IS"),
    0x00200013: ("InstanceNumber", b"IS"),
    0x00200032: ("ImagePositionPatient", b"DS"),
    0x00200037: ("ImageOrientationPatient", b"DS"),
    0x00200052: ("FrameOfReferenceUID", b"UI"),
    0x00200060: ("Laterality", b"CS"),
    0x00200062: ("ImageLaterality", b"CS"),
    0x00201002: ("ImagesInAcquisition", b"IS"),
    0x00280002: ("SamplesPerPixel", b"US"),
    0x00280004: ("PhotometricInterpretation", b"CS"),
    0x00280008: ("NumberOfFrames", b"IS"),
    0x00280010: ("Rows", b"US"),
    0x00280011: ("Columns", b"US"),
    0x00280030: ("PixelSpacing", b"DS"),
    0x00280100: ("BitsAllocated", b"US"),
    0x00280101: ("BitsStored", b"US"),
    0x00280103: ("PixelRepresentation", b"US"),
    0x00281052: ("RescaleIntercept", b"DS"),
    0x00281053: ("RescaleSlope", b"DS"),
}
_META_TAGS = {0x00020000: "FileMetaInformationGroupLength", 0x00020002: "MediaStorageSOPClassUID"}
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_PRINTABLE_TEXT = re.compile(rb"[\x20-\x7e\t\n\f\r]*")  # LT may hold line breaks
_IS_VALUE = re.compile(r"\s*[+-]?\d{1,12}\s*")
_DS_VALUE = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


class _GiveUp(Exception):
    """The fast reader cannot promise pydicom's result for this file."""


class _Decoded(dict[str, Any]):
    """The elements ``_build_header`` reads, decoded to the values pydicom would give, by keyword."""

    def __init__(self, file_meta: dict[str, Any]) -> None:
        super().__init__()
        self.file_meta = file_meta
        self.pixel_length: int | None = None  # bytes of the (native) pixel data


def fast_header(path: Path, head: bytes, file_size: int) -> DicomHeader | None:
    """The header of a plain classic image from its first bytes, or ``None`` to let pydicom decide."""
    if not _fast_reader_applies():
        return None
    try:
        found = _fast_elements(head, file_size)
        if found is None:
            return None
        return _build_header(path, found, file_size, _PIXEL_DATA_TAG, found.pixel_length)
    except Exception:  # _GiveUp, a refusal, anything odd: pydicom reads it again and decides
        return None


def _fast_reader_applies() -> bool:
    """The fast reader mirrors pydicom's default value conversion; other settings go to pydicom."""
    config = pydicom.config
    return not (
        config.settings.reading_validation_mode == config.RAISE
        or config.use_DS_numpy
        or config.use_IS_numpy
        or config.use_DS_decimal
        or config.datetime_conversion
        or config.use_none_as_empty_text_VR_value
    )


def _fast_elements(head: bytes, file_size: int) -> _Decoded | None:
    """Walk the file meta and the dataset up to complete native pixel data; ``None`` for anything else."""
    if len(head) < PREAMBLE_LENGTH + 4 or head[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] != _MAGIC:
        return None
    end = len(head)
    meta_raw: dict[int, bytes] = {}
    pos = PREAMBLE_LENGTH + 4
    while True:  # file meta: explicit VR little endian, group 0002
        if pos + 8 > end:
            return None
        group, element, vr, length = _ELEMENT.unpack_from(head, pos)
        if group != 2:
            break
        if vr in _SHORT_LENGTH_VRS:
            value = pos + 8
        elif vr in _LONG_LENGTH_VRS and vr != b"SQ":
            if pos + 12 > end:
                return None
            (length,) = _LONG_LENGTH.unpack_from(head, pos + 8)
            value = pos + 12
        else:
            return None
        if value + length > end:
            return None
        meta_raw[group << 16 | element] = head[value : value + length]
        pos = value + length
    syntax = meta_raw.get(0x00020010)
    if syntax is None:
        return None
    syntax_uid = _text(syntax, "UI")
    if syntax_uid == _EXPLICIT_LE:
        explicit = True
    elif syntax_uid == _IMPLICIT_LE:
        explicit = False
        vr_bytes = head[pos + 4 : pos + 6]
        if len(vr_bytes) == 2 and 0x40 < vr_bytes[0] < 0x5B and 0x40 < vr_bytes[1] < 0x5B:
            return None  # pydicom would take the dataset for explicit VR
    else:
        return None
    meta: dict[str, Any] = {"TransferSyntaxUID": syntax_uid}
    if 0x00020000 in meta_raw:
        (meta_length,) = _LONG_LENGTH.unpack(meta_raw[0x00020000])
        if PREAMBLE_LENGTH + len(_MAGIC) + 12 + meta_length > file_size:
            return None
        meta[_META_TAGS[0x00020000]] = meta_length
    if 0x00020002 in meta_raw:
        meta[_META_TAGS[0x00020002]] = _decode(meta_raw[0x00020002], b"UI")
    if pos >= end or head[pos : pos + 2] == b"\x00\x00":
        return None  # empty dataset or a command set: pydicom decides

    raw: dict[int, bytes] = {}
    previous = -1
    while True:  # the dataset, up to the pixel data
        if pos + 8 > end:
            return None
        if explicit:
            group, element, vr, length = _ELEMENT.unpack_from(head, pos)
            tag = group << 16 | element
            if tag == _PIXEL_DATA_TAG:
                if vr not in _LONG_LENGTH_VRS or pos + 12 > end:
                    return None
                (length,) = _LONG_LENGTH.unpack_from(head, pos + 8)
                value = pos + 12
                break
            if vr in _SHORT_LENGTH_VRS:
                value = pos + 8
            elif vr in _LONG_LENGTH_VRS:
                if pos + 12 > end:
                    return None
                (length,) = _LONG_LENGTH.unpack_from(head, pos + 8)
                value = pos + 12
            else:
                return None
        else:
            group, element, length = _IMPLICIT_ELEMENT.unpack_from(head, pos)
            tag = group << 16 | element
            vr = b""
            value = pos + 8
            if tag == _PIXEL_DATA_TAG:
                break
        if tag <= previous or tag > _PIXEL_DATA_TAG or tag in _FLOAT_PIXEL_TAGS or tag in _MULTI_FRAME_TAGS:
            return None
        previous = tag
        if length == _UNDEFINED_LENGTH:
            if explicit and vr != b"SQ":
                return None
            pos = _skip_undefined_sequence(head, value, explicit, 0)
            continue
        if value + length > end:
            return None
        wanted = _FAST_TAGS.get(tag)
        if wanted is not None:
            if explicit and vr != wanted[1]:
                return None
            raw[tag] = head[value : value + length]
        elif (
            tag == _SPECIFIC_CHARACTER_SET_TAG
            and _text(head[value : value + length], "CS") not in _ASCII_COMPATIBLE_CHARSETS
        ):
            return None
        pos = value + length
    if length == _UNDEFINED_LENGTH or value + length > file_size:
        return None  # compressed or truncated pixel data: pydicom checks it
    found = _Decoded(meta)
    found.pixel_length = length
    for tag, data in raw.items():
        keyword, vr = _FAST_TAGS[tag]
        found[keyword] = _decode(data, vr)
    return found


def _skip_undefined_sequence(head: bytes, pos: int, explicit: bool, depth: int) -> int:
    """Position after the delimiter of a sequence of undefined length that starts at ``pos``."""
    end = len(head)
    if depth > 8:
        raise _GiveUp
    while True:
        if pos + 8 > end:
            raise _GiveUp
        group, element, length = _IMPLICIT_ELEMENT.unpack_from(head, pos)
        tag = group << 16 | element
        pos += 8
        if tag == _SEQUENCE_DELIMITER_TAG:
            return pos
        if tag != _ITEM_TAG:
            raise _GiveUp
        if length != _UNDEFINED_LENGTH:
            pos += length
            continue
        while True:  # the elements of an item of undefined length, up to its delimiter
            if pos + 8 > end:
                raise _GiveUp
            group, element, vr, short = _ELEMENT.unpack_from(head, pos)
            tag = group << 16 | element
            if tag == _ITEM_DELIMITER_TAG:
                pos += 8
                break
            if not explicit:
                (length,) = _LONG_LENGTH.unpack_from(head, pos + 4)
                pos += 8
            elif vr in _SHORT_LENGTH_VRS:
                length = short
                pos += 8
            elif vr in _LONG_LENGTH_VRS and pos + 12 <= end:
                (length,) = _LONG_LENGTH.unpack_from(head, pos + 8)
                pos += 12
            else:
                raise _GiveUp
            if length == _UNDEFINED_LENGTH:
                if explicit and vr != b"SQ":
                    raise _GiveUp
                pos = _skip_undefined_sequence(head, pos, explicit, depth + 1)
            else:
                pos += length
        if pos > end:
            raise _GiveUp


def _text(data: bytes, vr: str) -> str:
    """An ASCII value as pydicom decodes it (trailing spaces and NULs removed)."""
    if not _PRINTABLE.fullmatch(data.rstrip(b"\x00")):
        raise _GiveUp
    return data.decode("ascii").rstrip("\x00 ")


def _decode(data: bytes, vr: bytes) -> Any:
    """The value pydicom gives for one element of ``_FAST_TAGS`` (``''`` when empty, as pydicom)."""
    if vr == b"US":
        if not data:
            return None
        if len(data) != 2:
            raise _GiveUp
        return _US.unpack(data)[0]
    if vr == b"LT":
        if not _PRINTABLE_TEXT.fullmatch(data.rstrip(b"\x00")):
            raise _GiveUp
        return data.decode("ascii").rstrip("\x00 ")
    text = _text(data, vr.decode())
    if vr == b"DS":
        items = text.strip().split("\\")
        numbers = [_ds(item) for item in items]
        return numbers[0] if len(numbers) == 1 else numbers
    if vr == b"CS":
        items = text.split("\\")
        return items[0] if len(items) == 1 else items
    if "\\" in text:  # a multi-valued UI, IS, DA, LO
        raise _GiveUp
    if vr == b"IS":
        if text.strip() == "":
            return text
        if not _IS_VALUE.fullmatch(text):
            raise _GiveUp
        return int(text)
    return text


def _ds(item: str) -> float | str:
    if item.strip() == "":
        return item
    if not _DS_VALUE.fullmatch(item):
        raise _GiveUp
    return float(item)
