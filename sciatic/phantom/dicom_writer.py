"""Write a synthetic series as MR Image Storage files, one per slice (explicit VR little endian)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage

from sciatic.phantom.acquisition import Acquisition, PhaseEncoding
from sciatic.phantom.geometry import DIRECTION_DECIMALS, POSITION_DECIMALS, SeriesGeometry
from sciatic.phantom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

MANUFACTURER = "sciatic"
MODEL_NAME = "synthetic thigh phantom"
SOFTWARE_VERSION = "sciatic.phantom 1"


@dataclass(frozen=True)
class SeriesIdentity:
    """Patient, study and series identifiers and dates of one synthetic study."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    age: str
    weight_kg: float
    comments: str  # PatientComments, carries the cohort
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_uids: tuple[str, ...]
    study_date: str
    study_time: str
    accession_number: str
    laterality: str  # "R" or "L"


def _ds(value: float, decimals: int) -> str:
    """Format a number as a DICOM DS string (at most 16 characters)."""
    text = f"{round(value, decimals):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _series_attributes(
    identity: SeriesIdentity, geometry: SeriesGeometry, acquisition: Acquisition, window_centre: float
) -> Dataset:
    """Attributes shared by every slice of the series."""
    ds = Dataset()
    # SOP common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.InstanceCreationDate = identity.study_date
    ds.InstanceCreationTime = identity.study_time
    ds.SOPClassUID = MRImageStorage
    # General study
    ds.StudyDate = identity.study_date
    ds.SeriesDate = identity.study_date
    ds.AcquisitionDate = identity.study_date
    ds.ContentDate = identity.study_date
    ds.StudyTime = identity.study_time
    ds.SeriesTime = identity.study_time
    ds.AcquisitionTime = identity.study_time
    ds.ContentTime = identity.study_time
    ds.AccessionNumber = identity.accession_number
    ds.Modality = "MR"
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = "Synthetic"
    ds.ReferringPhysicianName = ""
    ds.StationName = "PHANTOM"
    ds.StudyDescription = "MR THIGH NERVE"
    ds.SeriesDescription = "PD 3D AX THIGH"
    ds.ManufacturerModelName = MODEL_NAME
    # Patient
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.PatientAge = identity.age
    ds.PatientWeight = _ds(identity.weight_kg, 1)
    ds.PatientComments = identity.comments
    # MR acquisition
    ds.BodyPartExamined = "THIGH"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.SequenceName = "*tse3d1_43"
    ds.AngioFlag = "N"
    ds.SliceThickness = _ds(geometry.slice_spacing, 4)
    ds.RepetitionTime = "1500"
    ds.EchoTime = "32"
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = "123.2"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = "3"
    ds.SpacingBetweenSlices = _ds(geometry.slice_spacing, 4)
    pe_count = geometry.columns if acquisition.phase_encoding is PhaseEncoding.ROW else geometry.rows
    ds.NumberOfPhaseEncodingSteps = str(pe_count)
    ds.EchoTrainLength = "43"
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = "434"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.ProtocolName = "PD 3D AX THIGH"
    ds.TransmitCoilName = "Body"
    ds.ReceiveCoilName = "Flex Large"
    if acquisition.phase_encoding is PhaseEncoding.ROW:
        ds.AcquisitionMatrix = [0, geometry.rows, geometry.columns, 0]
    else:
        ds.AcquisitionMatrix = [geometry.columns, 0, 0, geometry.rows]
    ds.InPlanePhaseEncodingDirection = acquisition.phase_encoding.value
    ds.FlipAngle = "120"
    ds.PatientPosition = geometry.position.value
    # Identifiers and geometry
    ds.StudyInstanceUID = identity.study_uid
    ds.SeriesInstanceUID = identity.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = "3"
    ds.AcquisitionNumber = "1"
    ds.ImageOrientationPatient = [
        _ds(x, DIRECTION_DECIMALS) for x in (*geometry.row_direction, *geometry.column_direction)
    ]
    ds.FrameOfReferenceUID = identity.frame_of_reference_uid
    ds.Laterality = identity.laterality
    ds.PositionReferenceIndicator = ""
    # Image pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = geometry.rows
    ds.Columns = geometry.columns
    ds.PixelSpacing = [_ds(geometry.row_spacing, 6), _ds(geometry.column_spacing, 6)]
    ds.BitsAllocated = 16
    ds.BitsStored = acquisition.bits_stored
    ds.HighBit = acquisition.bits_stored - 1
    ds.PixelRepresentation = 0
    # Window values apply after the rescale (modality LUT).
    centre = window_centre * acquisition.rescale_slope
    ds.WindowCenter = _ds(centre, 1)
    ds.WindowWidth = _ds(max(2.0 * centre, 1.0), 1)
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = _ds(acquisition.rescale_slope, 4)
    return ds


def _instance(
    shared: Dataset, identity: SeriesIdentity, geometry: SeriesGeometry, k: int, pixels: NDArray[np.uint16]
) -> Dataset:
    """One slice: the shared attributes plus its own UID, number, position and pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = UID(identity.sop_uids[k])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds = Dataset()
    ds.file_meta = meta
    for element in shared:
        ds.add(element)  # shared elements are never modified, so sharing the objects is safe
    ds.SOPInstanceUID = identity.sop_uids[k]
    ds.InstanceNumber = str(k + 1)
    position = geometry.image_position(k)
    ds.ImagePositionPatient = [_ds(p, POSITION_DECIMALS) for p in position]
    ds.SliceLocation = _ds(float(np.dot(position, geometry.normal)), POSITION_DECIMALS)
    ds.add_new(0x7FE00010, "OW", pixels.astype("<u2", copy=False).tobytes())
    return ds


def write_series(
    directory: Path,
    identity: SeriesIdentity,
    geometry: SeriesGeometry,
    acquisition: Acquisition,
    pixels: NDArray[np.uint16],
) -> list[Path]:
    """Write ``pixels`` (slices, rows, columns in acquisition order) as ``IM00001.dcm``, ..."""
    directory.mkdir(parents=True, exist_ok=True)
    window_centre = float(np.percentile(pixels.ravel()[::5], 60))
    shared = _series_attributes(identity, geometry, acquisition, window_centre)
    paths = []
    for k in range(geometry.slices):
        path = directory / f"IM{k + 1:05d}.dcm"
        dataset = _instance(shared, identity, geometry, k, pixels[k])
        dcmwrite(path, dataset, enforce_file_format=True)
        paths.append(path)
    return paths
