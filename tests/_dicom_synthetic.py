"""Small synthetic MR DICOM files for the conversion tests, written with pydicom."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AXIAL_PRONE = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
AXIAL_DECUBITUS_LEFT = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0)


if TYPE_CHECKING:
    from sciatic.dicom.scan import DicomHeader


def oblique(angles: tuple[float, float, float]) -> tuple[float, ...]:
    """An orientation rotated from axial by the given x, y, z angles (radians)."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    return tuple(float(v) for v in np.concatenate([rot[:, 0], rot[:, 1]]))


def stack_positions(
    orientation: Sequence[float], origin: Sequence[float], spacing: float, count: int
) -> list[tuple[float, float, float]]:
    """Positions of ``count`` slices ``spacing`` mm apart along the orientation's normal."""
    normal = np.cross(orientation[:3], orientation[3:])
    return [tuple(float(v) for v in np.asarray(origin) + k * spacing * normal) for k in range(count)]  # type: ignore[misc]


def mr_dataset(
    pixels: NDArray[Any],
    *,
    series_uid: str,
    study_uid: str = "1.2.3.4",
    orientation: Sequence[float] | None = AXIAL,
    position: Sequence[float] | None = (0.0, 0.0, 0.0),
    pixel_spacing: Sequence[float] | None = (1.0, 1.0),
    instance_number: int = 1,
    slope: float | None = None,
    intercept: float | None = None,
    modality: str = "MR",
    sop_uid: str | None = None,
    **extra: Any,
) -> Dataset:
    """A classic single-frame MR image (Explicit VR Little Endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.3.4.5"
    ds.Modality = modality
    ds.PatientID = "P001"
    ds.SeriesDescription = "PD ax thigh"
    ds.SeriesNumber = 3
    ds.InstanceNumber = instance_number
    ds.AcquisitionNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    if orientation is not None:
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in orientation]
    if position is not None:
        ds.ImagePositionPatient = [f"{v:.10g}" for v in position]
    if pixel_spacing is not None:
        ds.PixelSpacing = [f"{v:.10g}" for v in pixel_spacing]
    if slope is not None:
        ds.RescaleSlope = f"{slope:.10g}"
    if intercept is not None:
        ds.RescaleIntercept = f"{intercept:.10g}"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    bits = pixels.dtype.itemsize * 8
    ds.set_pixel_data(pixels, "MONOCHROME2", bits, generate_instance_uid=False)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def slice_pixels(rows: int, columns: int, k: int, dtype: Any = np.uint16) -> NDArray[Any]:
    """A slice whose values encode (slice, row, column): 1000*k + 10*row + column."""
    r, c = np.mgrid[0:rows, 0:columns]
    values: NDArray[Any] = (1000 * k + 10 * r + c).astype(dtype)
    return values


def write_stack(
    directory: Path,
    *,
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-20.0, 15.0, 40.0),
    slice_spacing: float = 3.0,
    pixel_spacing: Sequence[float] = (0.8, 0.6),
    rows: int = 5,
    columns: int = 4,
    count: int = 4,
    series_uid: str | None = None,
    order: Sequence[int] | None = None,
    **extra: Any,
) -> list[Path]:
    """Write a classic stack; slice ``k`` (k-th position along the normal) has ``slice_pixels(k)``.

    ``order`` permutes which slice gets which InstanceNumber and file name.
    """
    series_uid = series_uid or generate_uid()
    positions = stack_positions(orientation, origin, slice_spacing, count)
    order = list(order) if order is not None else list(range(count))
    paths = []
    for number, k in enumerate(order, start=1):
        ds = mr_dataset(
            slice_pixels(rows, columns, k),
            series_uid=series_uid,
            orientation=orientation,
            position=positions[k],
            pixel_spacing=pixel_spacing,
            instance_number=number,
            **extra,
        )
        paths.append(save(ds, directory / f"IM{number:04d}.dcm"))
    return paths


def enhanced_dataset(
    frames: Sequence[NDArray[Any]],
    positions: Sequence[Sequence[float]],
    *,
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: Sequence[float] = (0.8, 0.6),
    slopes: Sequence[float] | None = None,
    series_uid: str | None = None,
) -> Dataset:
    """An Enhanced MR multi-frame image: orientation and spacing shared, position (and rescale) per frame."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "MR"
    ds.SeriesDescription = "PD ax enhanced"
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [f"{v:.10g}" for v in orientation]
    measures = Dataset()
    measures.PixelSpacing = [f"{v:.10g}" for v in pixel_spacing]
    measures.SliceThickness = "3"
    shared.PlaneOrientationSequence = DicomSequence([orient])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for index, position in enumerate(positions):
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [f"{v:.10g}" for v in position]
        item.PlanePositionSequence = DicomSequence([plane])
        if slopes is not None:
            transform = Dataset()
            transform.RescaleSlope = f"{slopes[index]:.10g}"
            transform.RescaleIntercept = "0"
            transform.RescaleType = "US"
            item.PixelValueTransformationSequence = DicomSequence([transform])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    stack = np.stack(frames)
    ds.set_pixel_data(stack, "MONOCHROME2", stack.dtype.itemsize * 8, generate_instance_uid=False)
    return ds


def read_pixels(header: DicomHeader) -> NDArray[Any]:
    """Stored (not rescaled) pixel values of every frame of one file, ``(frames, rows, columns)``."""
    from sciatic.dicom.convert import _decode_file

    return _decode_file(header.path, header.rows, header.columns)
