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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import highdicom as hd
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from sciatic import __version__
from sciatic.dicom.scan import ImageLayout, read_header
from sciatic.dicom.series import LPS_TO_RAS, SeriesPlan, plan_series
from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.imaging.volume import Volume
from sciatic.storage import atomic_write

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SCIATIC_NERVE = Code("52022001", "SCT", "Sciatic nerve")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence  # (123110, DCM)
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
    sop_instance_uid: str | None = None,
) -> SegExport:
    """Write ``mask`` (on the source series' grid) as a DICOM SEG referencing ``source_files``.

    ``mask`` is ``(columns, rows, slices)`` with slices along the normal, and
    ``affine`` the grid's RAS+ affine (both as in ``docs/conventions.md``);
    they must match the grid the source files plan to, else
    ``InputRefusedError(GEOMETRY_MISMATCH)``. ``model_name`` / ``model_version``
    become the segment's algorithm identification (``manual=True`` for a mask
    drawn by a person, then ``content_creator`` names them). The file is
    written atomically, with ``sop_instance_uid`` when given (else a new one).
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
            sop_instance_uid=sop_instance_uid or hd.UID(),
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
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
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
    seg = _read(path, stop_before_pixels=True)
    sources = seg.get_source_image_uids()  # (study, series, SOP instance), the Referenced Series Sequence first
    referenced_series = str(sources[0][1]) if sources else None
    creator = seg.get("ContentCreatorName")
    return SegReference(
        path=path,
        sop_instance_uid=str(seg.SOPInstanceUID),
        series_instance_uid=str(seg.get("SeriesInstanceUID", "")),
        study_instance_uid=str(seg.get("StudyInstanceUID", "")),
        referenced_series_instance_uid=referenced_series,
        referenced_sop_instance_uids=tuple(str(sop) for _, series, sop in sources if str(series) == referenced_series),
        frame_of_reference_uid=str(seg.FrameOfReferenceUID) if "FrameOfReferenceUID" in seg else None,
        segmentation_type=str(seg.get("SegmentationType", "")),
        segments=tuple(_segments(seg)),
        content_creator=str(creator) if creator else None,
        content_label=str(seg.get("ContentLabel", "")),
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
    SOP Instance UID (and frame number) it references; when the SEG references
    no image of the series, on the slice at the frame's ImagePositionPatient.
    Frames with positions must lie on the series' slices, and on the slices
    they reference.

    Raises ``InputRefusedError``: ``UNUSABLE_SEG`` (not a SEG, no single nerve
    segment), ``GEOMETRY_MISMATCH`` (matrix, orientation or positions off the
    grid), ``UNMATCHED_LABEL`` (the frames match no slice of this series).
    """
    path = Path(seg_path)
    plan = source if isinstance(source, SeriesPlan) else plan_series([read_header(p) for p in source])
    seg = _read(path, stop_before_pixels=False, slice_spacing=plan.voxel_size[2])
    number = _choose_segment(path, seg, segment_number)
    columns, rows = int(seg.Columns), int(seg.Rows)
    if (columns, rows) != (plan.columns, plan.rows):
        raise InputRefusedError(
            ReasonCode.GEOMETRY_MISMATCH,
            f"{path.name}: frames are {columns}x{rows}, the series' images {plan.columns}x{plan.rows}",
        )
    by_position = _by_position(path, seg, plan, number)
    by_reference = _by_reference(path, seg, plan, number)
    if by_reference is None:
        if by_position is None:
            raise InputRefusedError(
                ReasonCode.UNMATCHED_LABEL,
                f"{path.name}: its frames reference no image of this series and have no position",
            )
        return Volume(by_position, plan.affine.copy())
    if by_position is not None and not np.array_equal(by_position, by_reference):
        raise InputRefusedError(
            ReasonCode.GEOMETRY_MISMATCH, f"{path.name}: frames lie on other slices than the images they reference"
        )
    return Volume(by_reference, plan.affine.copy())


def _read(path: Path, *, stop_before_pixels: bool, slice_spacing: float | None = None) -> Any:
    """The file as a ``highdicom.seg.Segmentation``.

    ``slice_spacing`` (the series') replaces the SEG's SpacingBetweenSlices:
    highdicom stacks frames with gaps between them (empty slices left out) by
    it, and it is the spacing the frames must fit.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # pydicom raises many types on a broken file
        raise InputRefusedError(ReasonCode.UNUSABLE_SEG, f"{path.name} is not a readable DICOM file: {exc}") from exc
    if str(ds.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
        raise InputRefusedError(
            ReasonCode.UNUSABLE_SEG, f"{path.name} is not a DICOM Segmentation (SOP class {ds.get('SOPClassUID')})"
        )
    if slice_spacing is not None:
        for group in (*ds.get("SharedFunctionalGroupsSequence", []), *ds.get("PerFrameFunctionalGroupsSequence", [])):
            for measures in group.get("PixelMeasuresSequence") or []:
                measures.SpacingBetweenSlices = f"{slice_spacing:.10g}"
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:  # highdicom raises many types on a malformed SEG
        raise InputRefusedError(ReasonCode.UNUSABLE_SEG, f"{path.name} is not a usable DICOM SEG: {exc}") from exc


def _segments(seg: Any) -> list[Segment]:
    segments = []
    for number in seg.segment_numbers:
        description = seg.get_segment_description(number)
        code = description.segmented_property_type
        property_type = (str(code.value), str(code.scheme_designator), str(code.meaning))
        segments.append(Segment(int(number), str(description.segment_label), property_type))
    return segments


def _choose_segment(path: Path, seg: Any, segment_number: int | None) -> int:
    segments = _segments(seg)
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


def _by_reference(path: Path, seg: Any, plan: SeriesPlan, number: int) -> NDArray[np.uint8] | None:
    """Segment ``number`` on the series' grid, each frame on the slice it references.

    None when the SEG references no image of the series (its Referenced
    Series Sequence).
    """
    headers = {p: read_header(p) for p in plan.files}
    referenced = {str(sop) for _, _, sop in seg.get_source_image_uids()}
    if not referenced & {h.sop_instance_uid for h in headers.values()}:
        return None
    # highdicom indexes single-frame images by instance, the frames of an enhanced image by frame number
    groups: dict[Path | None, list[int]] = {}
    for k, s in enumerate(plan.slices):
        groups.setdefault(s.path if headers[s.path].layout is ImageLayout.MULTI_FRAME else None, []).append(k)
    # frames are placed by reference: the positions, when there are any, are checked against the grid separately
    options = {"segment_numbers": [number], "ignore_spatial_locations": True, "assert_missing_frames_are_empty": True}
    frames = np.zeros((len(plan.slices), plan.rows, plan.columns), dtype=np.uint8)  # (slice, row, column)
    for file, ks in groups.items():
        if file is None:
            uids = [headers[plan.slices[k].path].sop_instance_uid for k in ks]
            frames[ks] = _binary(path, seg.get_pixels_by_source_instance, uids, **options)
        else:
            uid, numbers = headers[file].sop_instance_uid, [plan.slices[k].frame + 1 for k in ks]
            frames[ks] = _binary(path, seg.get_pixels_by_source_frame, uid, numbers, **options)
    return np.ascontiguousarray(frames.transpose(2, 1, 0))


def _by_position(path: Path, seg: Any, plan: SeriesPlan, number: int) -> NDArray[np.uint8] | None:
    """Segment ``number`` on the series' grid, each frame on the slice at its position; None without positions.

    Every frame must lie on a slice of the series, with its pixel spacing and
    orientation, else ``GEOMETRY_MISMATCH``.
    """
    if seg.coordinate_system != hd.CoordinateSystemNames.PATIENT:
        return None
    lps = LPS_TO_RAS @ plan.affine  # voxel (i, j, k) -> LPS mm
    # the frames stacked in a volume (slice, row, column); highdicom fills the slices left out with zeros
    stack = {"rtol": 2 * POSITION_TOLERANCE, "perpendicular_tol": 0.1, "allow_missing_positions": True}
    geometry = seg.get_volume_geometry(**stack)
    if geometry is not None:
        _check_plane(path, geometry.affine, lps)
    if "PlanePositionSequence" not in seg.SharedFunctionalGroupsSequence[0]:
        positions = [p[0].ImagePositionPatient for p in hd.utils.get_plane_positions_of_image(seg)]
        _slices_at(path, "frame", np.array(positions, dtype=np.float64), lps, plan.shape[2])
    if geometry is None:
        raise InputRefusedError(
            ReasonCode.GEOMETRY_MISMATCH,
            f"{path.name}: frames do not stack into one volume (do their orientation or pixel spacing vary?)",
        )
    origins = np.zeros((geometry.spatial_shape[0], 4))
    origins[:, 0], origins[:, 3] = np.arange(len(origins)), 1.0
    ks = _slices_at(path, "slice", (origins @ geometry.affine.T)[:, :3], lps, plan.shape[2])
    mask = np.zeros(plan.shape, dtype=np.uint8)
    mask[:, :, ks] = _binary(path, lambda: seg.get_volume(segment_numbers=[number], **stack).array).transpose(2, 1, 0)
    return mask


def _binary(path: Path, getter: Callable[..., Any], *args: Any, **kwargs: Any) -> NDArray[np.uint8]:
    """The 0/1 frames a highdicom getter returns for one segment (its channel axis dropped)."""
    try:
        array = np.asarray(getter(*args, **kwargs))
    except Exception as exc:  # a decoder's error, or highdicom's on frames it cannot index
        raise InputRefusedError(ReasonCode.UNUSABLE_SEG, f"{path.name}: pixel data cannot be read ({exc})") from exc
    return (array[..., 0] >= 0.5).astype(np.uint8)  # FRACTIONAL frames come scaled to 0..1: half counts


def _slices_at(
    path: Path, what: str, positions: NDArray[np.float64], lps: NDArray[np.float64], depth: int
) -> NDArray[np.intp]:
    """The slice index of each frame origin (LPS mm); each must be on a slice of the grid."""
    ijk: NDArray[np.float64] = (np.c_[positions, np.ones(len(positions))] @ np.linalg.inv(lps).T)[:, :3]
    nearest = np.round(ijk[:, 2])
    off = np.abs(np.c_[ijk[:, :2], ijk[:, 2] - nearest]).max(axis=1)
    outside = np.flatnonzero((off > POSITION_TOLERANCE) | (nearest < 0) | (nearest >= depth))
    if outside.size:
        index = int(outside[0])
        i, j, k = ijk[index]
        raise InputRefusedError(
            ReasonCode.GEOMETRY_MISMATCH,
            f"{path.name}: {what} {index + 1} lies at voxel ({i:.2f}, {j:.2f}, {k:.2f}) of the series, "
            "not on one of its slices",
        )
    return nearest.astype(np.intp)


def _check_plane(path: Path, affine: NDArray[np.float64], lps: NDArray[np.float64]) -> None:
    """The frames' pixel spacing and orientation must be the series' (a SEG on another grid is refused)."""
    found, expected = affine[:3, [2, 1]], lps[:3, :2]  # LPS steps along a row, then down a column
    found_spacing, spacing = np.linalg.norm(found, axis=0), np.linalg.norm(expected, axis=0)
    if np.abs(found_spacing - spacing).max() > AFFINE_TOLERANCE_MM * 10:
        raise InputRefusedError(
            ReasonCode.GEOMETRY_MISMATCH,
            f"{path.name}: PixelSpacing {tuple(np.round(found_spacing[::-1], 4))} differs from the series' "
            f"{tuple(np.round(spacing[::-1], 4))}",
        )
    cosines, expected_cosines = (found / found_spacing).T.ravel(), (expected / spacing).T.ravel()
    if np.abs(cosines - expected_cosines).max() > ORIENTATION_TOLERANCE * 10:
        raise InputRefusedError(
            ReasonCode.GEOMETRY_MISMATCH,
            f"{path.name}: frames are oriented {tuple(np.round(cosines, 4))}, the series "
            f"{tuple(np.round(expected_cosines, 4))}; a SEG must be drawn on the series' own images",
        )
