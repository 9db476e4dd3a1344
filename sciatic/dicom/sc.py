"""DICOM Secondary Capture of a picture (the nerve outline burnt into the series' montage) for the PACS.

``export_sc`` writes an RGB picture as a Secondary Capture image in a new
series of the source study: patient and study copied from a source image, a
new SeriesInstanceUID, a SeriesDescription that says what it is, and the
source images referenced. Any viewer shows it; nothing needs to understand
SEG or SR.

Pure functions: no database; the picture, a source file and the grid's affine in.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import highdicom as hd
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from sciatic import __version__
from sciatic.dicom.seg import MANUFACTURER
from sciatic.storage import atomic_write

__all__ = ["ScExport", "export_sc", "patient_orientation"]

SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
DEFAULT_SERIES_NUMBER = 9903
DEFAULT_DESCRIPTION = "sciatic nerve overlay (research, not for diagnosis)"
_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))  # +/- along the LPS axes
_ORIENTATION_FLOOR = 1e-3  # direction cosines below this add no letter


@dataclass(frozen=True, slots=True)
class ScExport:
    """What ``export_sc`` wrote."""

    path: Path
    sha256: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str


def export_sc(
    picture: NDArray[np.uint8],
    source_files: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    *,
    orientation: tuple[str, str],
    model_name: str,
    model_version: str,
    sop_instance_uid: str | None = None,
    series_number: int = DEFAULT_SERIES_NUMBER,
    series_description: str = DEFAULT_DESCRIPTION,
) -> ScExport:
    """Write ``picture`` (rows, columns, 3) RGB ``uint8`` as a Secondary Capture in the source images' study.

    ``orientation`` is the picture's PatientOrientation (along a row, down a
    column; :func:`patient_orientation`). The file is written atomically.
    """
    pixels = np.ascontiguousarray(picture)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"an RGB uint8 picture (rows, columns, 3) is needed, got {pixels.dtype} {pixels.shape}")
    if not source_files:
        raise ValueError("a Secondary Capture of a series needs its source images")
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in source_files]
    reference = sources[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's notes on optional attributes
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=reference,
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=sop_instance_uid or hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            patient_orientation=(orientation[0][:1], orientation[1][:1]),  # highdicom takes one letter each
            transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
            series_description=series_description[:64],
            manufacturer_model_name=f"{model_name} {model_version}"[:64],
            software_versions=f"sciatic {__version__}",
        )
    sc.copy_patient_and_study_information(reference)
    # the thigh is paired: Laterality (type 2C) as the source series has it, else present and empty
    sc.Laterality = str(reference.get("Laterality", "") or "")
    if reference.get("BodyPartExamined"):
        sc.BodyPartExamined = reference.BodyPartExamined
    sc.PatientOrientation = list(orientation)
    sc.ConversionType = "SYN"  # a picture the software drew, not a captured screen
    sc.BurnedInAnnotation = "NO"
    sc.DerivationDescription = f"montage of the series with the sciatic nerve outline by {model_name} {model_version}"[
        :1024
    ]
    sc.SourceImageSequence = [_reference(ds) for ds in sources]
    target = Path(out_path)

    def write(handle: BinaryIO) -> None:
        sc.save_as(handle, enforce_file_format=True)

    digest = atomic_write(target, write)
    return ScExport(target, digest, str(sc.SOPInstanceUID), str(sc.SeriesInstanceUID), str(sc.StudyInstanceUID))


def _reference(ds: Any) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def patient_orientation(affine: NDArray[np.float64]) -> tuple[str, str]:
    """PatientOrientation of a montage of the grid with RAS+ ``affine``: (along a row, down a column).

    A montage tile shows ``volume[:, :, k].T``: along a row the grid's first
    axis, down a column its second (``docs/conventions.md``). Letters name
    the patient directions, largest component first.
    """
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)[:3, :3]
    return _letters(lps[:, 0]), _letters(lps[:, 1])


def _letters(direction: NDArray[np.float64]) -> str:
    unit = direction / np.linalg.norm(direction)
    order = np.argsort(-np.abs(unit))
    letters = [_LETTERS[a][0 if unit[a] > 0 else 1] for a in order if abs(unit[a]) >= _ORIENTATION_FLOOR]
    return "".join(letters)
