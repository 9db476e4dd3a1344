"""DICOM Segmentation (SEG) export and import of sciatic nerve masks.

``export_seg`` writes a BINARY SEG with one segment, "Sciatic nerve", whose
frames reference the source series' instances (and lie at their positions), so
a viewer overlays it on the source images. ``read_seg`` maps the frames of a
SEG, ours or another tool's, back onto the source grid of
``docs/conventions.md``: by the referenced SOP Instance UID (and frame number)
first, by the frame's position when the references do not resolve. Geometry
never gets resampled: a SEG whose frames do not fall on the source grid is
refused with ``GEOMETRY_MISMATCH``.

Pure functions: no database; the source series is given as its DICOM files
(or their ``SeriesPlan``).
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
from pydicom.sr.coding import Code

from sciatic import __version__
from sciatic.imaging.volume import Volume
from sciatic.dicom.scan import ImageLayout, read_header
from sciatic.dicom.series import LPS_TO_RAS, SeriesPlan, plan_series
from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.storage import atomic_write

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SCIATIC_NERVE = Code("52022001", "SCT", "Sciatic nerve")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
ARTIFICIAL_INTELLIGENCE = Code("123109", "DCM", "Artificial Intelligence")
SEGMENT_LABEL = "Sciatic nerve"
MANUFACTURER = "sciatic"
DEFAULT_SERIES_NUMBER = 9901
AFFINE_TOLERANCE_MM = 1e-3
_PATIENT_STUDY_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
)
POSITION_TOLERANCE = 0.1  # of a voxel, along each axis
ORIENTATION_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class SegExport:
    """What ``export_seg`` wrote."""

    path: Path
    sha256: str
    sop_instance_uid: str
    series_instance_uid: str
    referenced_series_instance_uid: str
    frames: int  # frames in the SEG (empty slices are left out)


@dataclass(frozen=True, slots=True)
class Segment:
    number: int
    label: str
    property_type: tuple[str, str, str]  # (code value, scheme, meaning)

    @property
    def is_sciatic_nerve(self) -> bool:
        code, scheme, _ = self.property_type
        return (code, scheme) == (SCIATIC_NERVE.value, SCIATIC_NERVE.scheme_designator) or (
            "sciatic" in self.label.lower()
        )


@dataclass(frozen=True, slots=True)
class SegReference:
    """Who a SEG object is about: enough to match it to a series without reading its pixels."""

    path: Path
    sop_instance_uid: str
    series_instance_uid: str  # the SEG's own series
    study_instance_uid: str
    referenced_series_instance_uid: str | None
    referenced_sop_instance_uids: tuple[str, ...]
    frame_of_reference_uid: str | None
    segmentation_type: str
    segments: tuple[Segment, ...]
    content_creator: str | None  # ContentCreatorName: a rater's name for a staff label
    content_label: str


# --------------------------------------------------------------------------- export


def export_seg(
    mask: NDArray[Any],
    affine: NDArray[np.float64],
    source_files: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    *,
    model_name: str,
    model_version: str,
    series_number: int = DEFAULT_SERIES_NUMBER,
    series_description: str = "Sciatic nerve segmentation",
    content_creator: str | None = None,
    manual: bool = False,
) -> SegExport:
    """Write ``mask`` (on the source series' grid) as a DICOM SEG referencing ``source_files``.

    ``mask`` is ``(columns, rows, slices)`` with slices along the normal, and
    ``affine`` the grid's RAS+ affine (both as in ``docs/conventions.md``);
    they must match the grid the source files plan to, else
    ``InputRefusedError(GEOMETRY_MISMATCH)``. ``model_name`` / ``model_version``
    become the segment's algorithm identification (``manual=True`` for a mask
    drawn by a person, then ``content_creator`` names them). The file is
    written atomically.
    """
    plan = plan_series([read_header(p) for p in source_files])
    _check_grid(mask, affine, plan)
    binary = np.asarray(mask) > 0
    if not np.isin(np.unique(np.asarray(mask)), (0, 1)).all():
        raise InputRefusedError(ReasonCode.GEOMETRY_MISMATCH, "a mask holds only 0 and 1")
    sources, frames = _source_frames(plan, binary)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=SCIATIC_NERVE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL
        if manual
        else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=None
        if manual
        else hd.AlgorithmIdentificationSequence(name=model_name, family=ARTIFICIAL_INTELLIGENCE, version=model_version),
        tracking_uid=hd.UID(),
        tracking_id=SEGMENT_LABEL,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's notes on optional attributes
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=f"{model_name} {model_version}"[:64],
            software_versions=f"sciatic {__version__}",
            device_serial_number=model_version[:64] or "unknown",
            content_description="Sciatic nerve segmentation"[:64],
            content_label="SCIATIC",
            content_creator_name=content_creator,
            omit_empty_frames=bool(binary.any()),  # an empty mask keeps its frames: a SEG needs one
        )
    seg.SeriesDescription = series_description[:64]
    target = Path(out_path)

    def write(handle: BinaryIO) -> None:
        seg.save_as(handle, enforce_file_format=True)

    digest = atomic_write(target, write)
    return SegExport(
        path=target,
        sha256=digest,
        sop_instance_uid=str(seg.SOPInstanceUID),
        series_instance_uid=str(seg.SeriesInstanceUID),
        referenced_series_instance_uid=plan.series_instance_uid,
        frames=int(seg.NumberOfFrames),
    )


def _check_grid(mask: NDArray[Any], affine: NDArray[np.float64], plan: SeriesPlan) -> None:
    if tuple(mask.shape) != plan.shape:
        raise InputRefusedError(
            ReasonCode.GEOMETRY_MISMATCH, f"the mask has shape {tuple(mask.shape)}, the source series {plan.shape}"
        )
    difference = float(np.abs(np.asarray(affine, dtype=np.float64) - plan.affine).max())
    if difference > AFFINE_TOLERANCE_MM:
        raise InputRefusedError(
            ReasonCode.GEOMETRY_MISMATCH,
            f"the mask's affine differs from the source series' by up to {difference:.4g} mm",
        )


def _source_frames(plan: SeriesPlan, binary: NDArray[np.bool_]) -> tuple[list[Dataset], NDArray[np.uint8]]:
    """Source datasets (headers only) and the SEG frames in the order highdicom pairs them."""
    # highdicom pairs frame i with source image i (single-frame images) or with frame i of one multi-frame image
    slices_of = {(s.path, s.frame): k for k, s in enumerate(plan.slices)}
    if len(plan.files) == 1:
        header = read_header(plan.files[0])
        order = [slices_of[(plan.files[0], f)] for f in range(header.number_of_frames)]
    else:
        multi = [p for p in plan.files if read_header(p).layout is ImageLayout.MULTI_FRAME]
        if multi:
            raise InputRefusedError(
                ReasonCode.MULTI_VOLUME,
                f"the series spans {len(plan.files)} files, {len(multi)} of them multi-frame; a SEG references "
                "one multi-frame image or single-frame images",
            )
        order = list(range(len(plan.slices)))
    files = [plan.files[0]] if len(plan.files) == 1 else [s.path for s in plan.slices]
    sources: list[Dataset] = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    for ds in sources:
        for keyword in _PATIENT_STUDY_TYPE2:  # type 2 in the SEG: present, possibly empty
            if keyword not in ds:
                setattr(ds, keyword, "")
        if "SharedFunctionalGroupsSequence" in ds:
            _share_common_groups(ds)
        elif "SliceThickness" not in ds:
            # optional in MR, needed by highdicom for the SEG's pixel measures: the slice spacing stands in
            ds.SliceThickness = f"{plan.voxel_size[2]:.6g}"
    frames = np.ascontiguousarray(binary.transpose(2, 1, 0)[order]).astype(np.uint8)  # (frame, row, column)
    return sources, frames


def _share_common_groups(ds: Dataset) -> None:
    """Copy per-frame pixel measures / orientation into the shared groups (highdicom reads them there).

    Only on the in-memory header; ``plan_series`` has already checked that
    every frame has the same spacing and orientation.
    """
    shared = ds.SharedFunctionalGroupsSequence[0]
    per_frame = _per_frame(ds)
    for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        if keyword not in shared and per_frame and all(keyword in item for item in per_frame):
            setattr(shared, keyword, per_frame[0][keyword].value)


# --------------------------------------------------------------------------- import


def seg_reference(seg_path: str | os.PathLike[str]) -> SegReference:
    """Read a SEG's header: the series it segments, its segments, its creator.

    Raises ``InputRefusedError(UNUSABLE_SEG)`` when the file is not a DICOM
    Segmentation.
    """
    path = Path(seg_path)
    ds = _read(path, stop_before_pixels=True)
    referenced_series = None
    referenced_sops: list[str] = []
    for series in ds.get("ReferencedSeriesSequence") or []:
        referenced_series = referenced_series or str(series.get("SeriesInstanceUID", "")) or None
        referenced_sops += [str(i.ReferencedSOPInstanceUID) for i in series.get("ReferencedInstanceSequence") or []]
    if not referenced_sops:
        referenced_sops = sorted({uid for frame in _per_frame(ds) for uid, _ in _frame_references(frame)})
    creator = ds.get("ContentCreatorName")
    return SegReference(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        referenced_series_instance_uid=referenced_series,
        referenced_sop_instance_uids=tuple(referenced_sops),
        frame_of_reference_uid=str(ds.FrameOfReferenceUID) if "FrameOfReferenceUID" in ds else None,
        segmentation_type=str(ds.get("SegmentationType", "")),
        segments=tuple(_segments(ds)),
        content_creator=str(creator) if creator else None,
        content_label=str(ds.get("ContentLabel", "")),
    )


def read_seg(
    seg_path: str | os.PathLike[str],
    source: SeriesPlan | Sequence[str | os.PathLike[str]],
    *,
    segment_number: int | None = None,
) -> Volume:
    """The SEG's nerve segment as a 0/1 ``uint8`` mask on the source series' grid, with its affine.

    ``source`` is the series' ``SeriesPlan`` or its DICOM files. The segment
    is ``segment_number`` when given, else the one coded or labelled as the
    sciatic nerve, else the only segment. Each frame lands on the slice whose
    SOP Instance UID (and frame number) it references; when that does not
    resolve, on the slice at the frame's ImagePositionPatient.

    Raises ``InputRefusedError``: ``UNUSABLE_SEG`` (not a SEG, no single nerve
    segment), ``GEOMETRY_MISMATCH`` (matrix, orientation or positions off the
    grid), ``UNMATCHED_LABEL`` (a frame matches no slice of this series).
    """
    path = Path(seg_path)
    plan = source if isinstance(source, SeriesPlan) else plan_series([read_header(p) for p in source])
    ds = _read(path, stop_before_pixels=False)
    number = _choose_segment(path, ds, segment_number)
    rows, columns = int(ds.Rows), int(ds.Columns)
    if (columns, rows) != (plan.columns, plan.rows):
        raise InputRefusedError(
            ReasonCode.GEOMETRY_MISMATCH,
            f"{path.name}: frames are {columns}x{rows}, the series' images {plan.columns}x{plan.rows}",
        )
    lps = LPS_TO_RAS @ plan.affine  # voxel (i, j, k) -> LPS mm
    _check_plane(path, ds, lps)
    slice_of = _slice_index(plan)
    pixels = _frame_pixels(path, ds, number)
    shared = _first(ds.get("SharedFunctionalGroupsSequence"))
    mask = np.zeros(plan.shape, dtype=np.uint8)
    inverse: NDArray[np.float64] = np.linalg.inv(lps).astype(np.float64)
    for index, frame in enumerate(_per_frame(ds)):
        if pixels[index] is None:
            continue  # another segment's frame
        k = _locate(path, index, frame, shared, slice_of, inverse, plan.shape[2])
        mask[:, :, k] |= pixels[index].T  # type: ignore[union-attr]
    return Volume(mask, plan.affine.copy())


def _read(path: Path, *, stop_before_pixels: bool) -> Dataset:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # pydicom raises many types on a broken file
        raise InputRefusedError(ReasonCode.UNUSABLE_SEG, f"{path.name} is not a readable DICOM file: {exc}") from exc
    if str(ds.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
        raise InputRefusedError(
            ReasonCode.UNUSABLE_SEG, f"{path.name} is not a DICOM Segmentation (SOP class {ds.get('SOPClassUID')})"
        )
    return ds


def _segments(ds: Dataset) -> list[Segment]:
    segments = []
    for item in ds.get("SegmentSequence") or []:
        code = _first(item.get("SegmentedPropertyTypeCodeSequence"))
        property_type = (
            (
                str(code.get("CodeValue", "")),
                str(code.get("CodingSchemeDesignator", "")),
                str(code.get("CodeMeaning", "")),
            )
            if code is not None
            else ("", "", "")
        )
        segments.append(Segment(int(item.SegmentNumber), str(item.get("SegmentLabel", "")), property_type))
    return segments


def _choose_segment(path: Path, ds: Dataset, segment_number: int | None) -> int:
    segments = _segments(ds)
    numbers = [s.number for s in segments]
    if segment_number is not None:
        if segment_number not in numbers:
            raise InputRefusedError(
                ReasonCode.UNUSABLE_SEG, f"{path.name} has no segment {segment_number} (it has {numbers})"
            )
        return segment_number
    nerve = [s for s in segments if s.is_sciatic_nerve]
    if len(nerve) == 1:
        return nerve[0].number
    if len(segments) == 1:
        return segments[0].number
    labels = ", ".join(f"{s.number}: {s.label!r}" for s in segments) or "none"
    raise InputRefusedError(
        ReasonCode.UNUSABLE_SEG,
        f"{path.name}: cannot tell which segment is the sciatic nerve (segments {labels}); label it "
        f"'{SEGMENT_LABEL}' or code it SCT {SCIATIC_NERVE.value}",
    )


def _frame_pixels(path: Path, ds: Dataset, number: int) -> list[NDArray[np.uint8] | None]:
    """Per frame: the 0/1 pixels of segment ``number``, or None when the frame is another segment's."""
    try:
        array = np.asarray(ds.pixel_array)
    except Exception as exc:  # a decoder's error
        raise InputRefusedError(ReasonCode.UNUSABLE_SEG, f"{path.name}: pixel data cannot be read ({exc})") from exc
    frames = array.reshape(-1, int(ds.Rows), int(ds.Columns))
    per_frame = _per_frame(ds)
    if len(per_frame) != len(frames):
        raise InputRefusedError(
            ReasonCode.UNUSABLE_SEG,
            f"{path.name}: {len(frames)} frames but {len(per_frame)} per-frame functional group items",
        )
    kind = str(ds.get("SegmentationType", "BINARY")).upper()
    result: list[NDArray[np.uint8] | None] = []
    for frame, item in zip(frames, per_frame, strict=True):
        if kind == "LABELMAP":
            result.append((frame == number).astype(np.uint8))
            continue
        ident = _first(item.get("SegmentIdentificationSequence"))
        if ident is None:
            shared = _first(ds.get("SharedFunctionalGroupsSequence"))
            ident = _first(shared.get("SegmentIdentificationSequence")) if shared is not None else None
        if ident is None or int(ident.ReferencedSegmentNumber) != number:
            result.append(None)
        elif kind == "FRACTIONAL":
            maximum = int(ds.get("MaximumFractionalValue", 255))
            result.append((2 * frame.astype(np.int64) >= maximum).astype(np.uint8))
        else:
            result.append((frame > 0).astype(np.uint8))
    return result


def _per_frame(ds: Dataset) -> list[Dataset]:
    items: list[Dataset] = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    return items


def _first(sequence: Any) -> Dataset | None:
    if not sequence:
        return None
    item: Dataset = sequence[0]
    return item


def _frame_references(frame: Dataset) -> list[tuple[str, int | None]]:
    """(ReferencedSOPInstanceUID, ReferencedFrameNumber or None) of a frame's source images."""
    references = []
    for derivation in frame.get("DerivationImageSequence") or []:
        for source in derivation.get("SourceImageSequence") or []:
            number = source.get("ReferencedFrameNumber")
            if isinstance(number, pydicom.multival.MultiValue):
                number = number[0] if len(number) == 1 else None
            references.append((str(source.ReferencedSOPInstanceUID), int(number) if number else None))
    return references


def _slice_index(plan: SeriesPlan) -> dict[tuple[str, int], int]:
    """(SOP Instance UID, 1-based frame number) -> slice index k."""
    uid_of = {p: read_header(p).sop_instance_uid for p in plan.files}
    return {(uid_of[s.path], s.frame + 1): k for k, s in enumerate(plan.slices)}


def _locate(
    path: Path,
    index: int,
    frame: Dataset,
    shared: Dataset | None,
    slice_of: dict[tuple[str, int], int],
    inverse: NDArray[np.float64],
    depth: int,
) -> int:
    """The slice a SEG frame belongs to: by reference, else by position; its position must agree."""
    by_reference = {slice_of.get((uid, number or 1)) for uid, number in _frame_references(frame)} - {None}
    position = _position(frame, shared)
    by_position = None
    if position is not None:
        i, j, k = (inverse @ np.append(position, 1.0))[:3]
        nearest = round(float(k))
        on_grid = max(abs(i), abs(j), abs(k - nearest)) <= POSITION_TOLERANCE
        if not on_grid or not 0 <= nearest < depth:
            raise InputRefusedError(
                ReasonCode.GEOMETRY_MISMATCH,
                f"{path.name}: frame {index + 1} lies at voxel ({i:.2f}, {j:.2f}, {k:.2f}) of the series, "
                "not on one of its slices",
            )
        by_position = nearest
    if len(by_reference) == 1:
        (k_ref,) = by_reference
        assert k_ref is not None
        if by_position is not None and by_position != k_ref:
            raise InputRefusedError(
                ReasonCode.GEOMETRY_MISMATCH,
                f"{path.name}: frame {index + 1} references slice {k_ref} but lies at slice {by_position}",
            )
        return k_ref
    if by_position is not None:
        return by_position
    raise InputRefusedError(
        ReasonCode.UNMATCHED_LABEL,
        f"{path.name}: frame {index + 1} references no image of this series and has no position",
    )


def _position(frame: Dataset, shared: Dataset | None) -> NDArray[np.float64] | None:
    for group in (frame, shared):
        plane = _first(group.get("PlanePositionSequence")) if group is not None else None
        if plane is not None and "ImagePositionPatient" in plane:
            return np.array([float(v) for v in plane.ImagePositionPatient], dtype=np.float64)
    return None


def _check_plane(path: Path, ds: Dataset, lps: NDArray[np.float64]) -> None:
    """Every frame's pixel spacing and orientation must be the series' (a SEG on another grid is refused)."""
    row_dir = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    col_dir = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    expected = np.concatenate([row_dir, col_dir])
    groups = [_first(ds.get("SharedFunctionalGroupsSequence")), *_per_frame(ds)]
    spacing = (float(np.linalg.norm(lps[:3, 1])), float(np.linalg.norm(lps[:3, 0])))  # (rows, columns)
    for group in groups:
        measures = _first(group.get("PixelMeasuresSequence")) if group is not None else None
        if measures is not None and "PixelSpacing" in measures:
            found_spacing = tuple(float(v) for v in measures.PixelSpacing)
            if np.abs(np.subtract(found_spacing, spacing)).max() > AFFINE_TOLERANCE_MM * 10:
                raise InputRefusedError(
                    ReasonCode.GEOMETRY_MISMATCH,
                    f"{path.name}: PixelSpacing {found_spacing} differs from the series' {spacing}",
                )
        plane = _first(group.get("PlaneOrientationSequence")) if group is not None else None
        if plane is None or "ImageOrientationPatient" not in plane:
            continue
        found = np.array([float(v) for v in plane.ImageOrientationPatient], dtype=np.float64)
        if np.abs(found - expected).max() > ORIENTATION_TOLERANCE * 10:
            raise InputRefusedError(
                ReasonCode.GEOMETRY_MISMATCH,
                f"{path.name}: frames are oriented {tuple(np.round(found, 4))}, the series "
                f"{tuple(np.round(expected, 4))}; a SEG must be drawn on the series' own images",
            )
