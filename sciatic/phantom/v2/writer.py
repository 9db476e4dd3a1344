"""Write a v2 series as MR Image Storage files, one per image (explicit VR little endian).

A series is a list of images, each with its own stack (so a three-plane localizer
mixes orientations) and its stored pixels; study and patient attributes are shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage

from sciatic.phantom.acquisition import PhaseEncoding
from sciatic.phantom.dicom_writer import MANUFACTURER, MODEL_NAME
from sciatic.phantom.geometry import DIRECTION_DECIMALS, POSITION_DECIMALS, PatientPosition
from sciatic.phantom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from sciatic.phantom.v2.planes import Stack
from sciatic.phantom.v2.scanner import Protocol, Storage

SOFTWARE_VERSION = "sciatic.phantom 2"


@dataclass(frozen=True)
class StudyIdentity:
    """Patient and study attributes shared by every series of a subject."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    age: str
    weight_kg: float
    comments: str  # PatientComments, carries the cohort
    study_uid: str
    frame_of_reference_uid: str
    study_date: str
    study_seconds: int  # StudyTime, seconds after midnight
    accession_number: str
    position: PatientPosition
    laterality: str  # Laterality: "R" or "L"; "" for both thighs (then ImageLaterality "B" instead)


@dataclass(frozen=True)
class Image:
    """One stored image: acquisition slice ``k`` of ``stack`` and its pixels (rows, columns)."""

    stack: Stack
    k: int
    pixels: NDArray[np.uint16]


def ds_text(value: float, decimals: int) -> str:
    """A number as a DICOM DS string (at most 16 characters)."""
    text = f"{round(value, decimals):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _time(seconds: int) -> str:
    return f"{seconds // 3600 % 24:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"


def _shared(study: StudyIdentity, series_uid: str, protocol: Protocol, storage: Storage, first: Stack) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(protocol.image_type)
    ds.SOPClassUID = MRImageStorage
    series_time = _time(study.study_seconds + 240 * protocol.series_number)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ds.InstanceCreationDate = study.study_date
    ds.StudyTime = _time(study.study_seconds)
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ds.InstanceCreationTime = series_time
    ds.AccessionNumber = study.accession_number
    ds.Modality = "MR"
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = "Synthetic"
    ds.ReferringPhysicianName = ""
    ds.StationName = "PHANTOM"
    ds.StudyDescription = "MR THIGH NERVE"
    ds.SeriesDescription = protocol.description
    ds.ManufacturerModelName = MODEL_NAME
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.PatientAge = study.age
    ds.PatientWeight = ds_text(study.weight_kg, 1)
    ds.PatientComments = study.comments
    ds.BodyPartExamined = "THIGH"
    ds.ScanningSequence = list(protocol.scanning_sequence)
    ds.SequenceVariant = list(protocol.sequence_variant)
    ds.ScanOptions = list(protocol.scan_options) if protocol.scan_options else ""
    ds.MRAcquisitionType = protocol.acquisition_type
    ds.SequenceName = protocol.sequence_name
    ds.AngioFlag = "N"
    ds.RepetitionTime = ds_text(protocol.repetition_time_ms, 2)
    ds.EchoTime = ds_text(protocol.echo_time_ms, 2)
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = "123.2"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = "3"
    pe_count = first.columns if protocol.phase_encoding is PhaseEncoding.ROW else first.rows
    ds.NumberOfPhaseEncodingSteps = str(pe_count)
    ds.EchoTrainLength = str(protocol.echo_train_length)
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = ds_text(protocol.pixel_bandwidth, 1)
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.ProtocolName = protocol.description
    ds.TransmitCoilName = "Body"
    ds.ReceiveCoilName = "Body" if protocol.contrast.value == "localizer" else "Flex Large"
    if protocol.phase_encoding is PhaseEncoding.ROW:
        ds.AcquisitionMatrix = [0, first.rows, first.columns, 0]
    else:
        ds.AcquisitionMatrix = [first.columns, 0, 0, first.rows]
    ds.InPlanePhaseEncodingDirection = protocol.phase_encoding.value
    ds.FlipAngle = ds_text(protocol.flip_angle_deg, 1)
    ds.PatientPosition = study.position.value
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = str(protocol.series_number)
    ds.AcquisitionNumber = "1"
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    if study.laterality:
        ds.Laterality = study.laterality
    else:
        ds.ImageLaterality = "B"  # both thighs; Laterality has no value for that
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = storage.bits_stored
    ds.HighBit = storage.bits_stored - 1
    ds.PixelRepresentation = 0
    return ds


def _instance(shared: Dataset, sop_uid: str, number: int, image: Image, slope: float | None) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds = Dataset()
    ds.file_meta = meta
    for element in shared:
        ds.add(element)  # shared elements are never modified, so sharing the objects is safe
    stack = image.stack
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = str(number)
    ds.SliceThickness = ds_text(stack.thickness, 4)
    ds.SpacingBetweenSlices = ds_text(stack.slice_spacing, 4)
    position = stack.image_position(image.k)
    ds.ImagePositionPatient = [ds_text(p, POSITION_DECIMALS) for p in position]
    ds.ImageOrientationPatient = [
        ds_text(x, DIRECTION_DECIMALS) for x in (*stack.row_direction, *stack.column_direction)
    ]
    ds.SliceLocation = ds_text(float(np.dot(position, stack.normal)), POSITION_DECIMALS)
    ds.Rows = stack.rows
    ds.Columns = stack.columns
    ds.PixelSpacing = [ds_text(stack.row_spacing, 6), ds_text(stack.column_spacing, 6)]
    centre = float(np.percentile(image.pixels.ravel()[::5], 60)) * (slope or 1.0)
    ds.WindowCenter = ds_text(centre, 1)
    ds.WindowWidth = ds_text(max(2.0 * centre, 1.0), 1)
    if slope is not None:
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = ds_text(slope, 4)
        ds.RescaleType = "US"
    ds.add_new(0x7FE00010, "OW", image.pixels.astype("<u2", copy=False).tobytes())
    return ds


def write_series(
    directory: Path,
    study: StudyIdentity,
    series_uid: str,
    sop_uids: Sequence[str],
    protocol: Protocol,
    storage: Storage,
    images: Sequence[Image],
) -> list[Path]:
    """Write ``images`` as ``IM00001.dcm ...`` (in the order given, numbered from 1)."""
    directory.mkdir(parents=True, exist_ok=True)
    shared = _shared(study, series_uid, protocol, storage, images[0].stack)
    paths = []
    for number, (sop_uid, image) in enumerate(zip(sop_uids, images, strict=True), start=1):
        path = directory / f"IM{number:05d}.dcm"
        dcmwrite(path, _instance(shared, sop_uid, number, image, storage.rescale_slope), enforce_file_format=True)
        paths.append(path)
    return paths
