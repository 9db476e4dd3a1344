"""Group headers into series, check completeness, and plan a series' 3D geometry.

``plan_series`` turns the headers of one series into a ``SeriesPlan``: the
slices in the order of the volume's third axis and the RAS+ affine defined in
``docs/conventions.md``. It refuses, with a reason, anything that is not one
regular 3D stack: 4D series, mixed orientations (e.g. a three-plane
localizer), non-uniform spacing, missing geometry, single slices.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sciatic.dicom.limits import SeriesLimits
from sciatic.dicom.scan import DicomHeader, ImageLayout
from sciatic.errors import InputRefusedError, ReasonCode

ORIENTATION_TOLERANCE = 1e-3  # direction cosines
DUPLICATE_POSITION_MM = 0.01  # two slices closer than this along the normal share a position
SPACING_TOLERANCE = 0.01  # relative deviation of one gap from the mean gap
SPACING_TOLERANCE_MM = 1e-3  # ... but never stricter than this
SHEAR_TOLERANCE = 0.05  # in-plane offset between slices, in pixels
DEFAULT_LIMITS = SeriesLimits()
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class CompletenessState(StrEnum):
    """Whether a series has all its instances."""

    COMPLETE = "complete"  # the headers' own counts match what is present
    INCOMPLETE = "incomplete"  # the headers expect a different number of images
    UNKNOWN = "unknown"  # the headers carry no count; wait for the series to go quiet


@dataclass(frozen=True, slots=True)
class Completeness:
    state: CompletenessState
    present: int  # images (frames) present
    expected: int | None  # images the headers announce, when they do
    detail: str


@dataclass(frozen=True, slots=True)
class SliceSource:
    """Where one slice of the volume comes from."""

    path: Path
    frame: int  # 0-based frame index within the file (0 for single-frame files)
    rescale_slope: float
    rescale_intercept: float


@dataclass(frozen=True, slots=True, eq=False)
class SeriesPlan:
    """Everything needed to build a series' volume, checked and sorted."""

    study_instance_uid: str
    series_instance_uid: str
    series_number: int | None
    series_description: str
    files: tuple[Path, ...]
    slices: tuple[SliceSource, ...]  # ascending along the slice normal
    columns: int
    rows: int
    voxel_size: tuple[float, float, float]  # mm: between columns, rows, slices
    affine: NDArray[np.float64]  # 4x4 RAS+

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.columns, self.rows, len(self.slices))


def group_by_series(headers: Iterable[DicomHeader]) -> dict[str, tuple[DicomHeader, ...]]:
    """Headers grouped by SeriesInstanceUID (series and files in a stable, sorted order)."""
    groups: defaultdict[str, list[DicomHeader]] = defaultdict(list)
    for header in headers:
        groups[header.series_instance_uid].append(header)
    return {uid: tuple(sorted(groups[uid], key=lambda h: str(h.path))) for uid in sorted(groups)}


def check_completeness(headers: Sequence[DicomHeader]) -> Completeness:
    """Compare the images present with the counts the headers announce.

    Classic images: per AcquisitionNumber, ImagesInAcquisition (0020,1002).
    An enhanced multi-frame file carries its whole acquisition (NumberOfFrames
    is checked against the frames and pixel data when the header is read), so
    a series of one such file is complete.
    """
    present = sum(len(h.frames) for h in headers)
    if len(headers) == 1 and headers[0].layout is ImageLayout.MULTI_FRAME:
        return Completeness(CompletenessState.COMPLETE, present, present, "one multi-frame file with all its frames")
    by_acquisition: defaultdict[int | None, list[DicomHeader]] = defaultdict(list)
    for header in headers:
        by_acquisition[header.acquisition_number].append(header)
    expected = 0
    shortfalls = []
    for acquisition, members in sorted(by_acquisition.items(), key=lambda item: str(item[0])):
        announced = {h.images_in_acquisition for h in members}
        count = announced.pop() if len(announced) == 1 else None
        if count is None:
            return Completeness(
                CompletenessState.UNKNOWN, present, None, "ImagesInAcquisition is absent or inconsistent"
            )
        have = sum(len(h.frames) for h in members)
        expected += count
        if have != count:
            shortfalls.append(f"acquisition {acquisition} has {have} of {count} images")
    if shortfalls:
        detail = "; ".join(shortfalls) + " (ImagesInAcquisition)"
        return Completeness(CompletenessState.INCOMPLETE, present, expected, detail)
    return Completeness(CompletenessState.COMPLETE, present, expected, "ImagesInAcquisition matches")


def plan_series(headers: Sequence[DicomHeader], limits: SeriesLimits = DEFAULT_LIMITS) -> SeriesPlan:
    """Check one series' size and geometry and sort its slices; refuse what is not one 3D volume.

    The ``limits`` are checked first, from the headers alone: nothing is decoded for a series over them.
    """
    if not headers:
        raise ValueError("plan_series needs at least one header")
    first = headers[0]
    if any(h.series_instance_uid != first.series_instance_uid for h in headers):
        raise ValueError("plan_series was given headers of more than one series")
    _check_size(headers, limits)
    _check_unique_instances(headers)
    _check_matrix(headers)
    sources, geometry = _expand_frames(headers)
    orientation = _common_orientation(headers, geometry)
    spacing = _common_pixel_spacing(geometry)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([g[1] for g in geometry], dtype=np.float64)
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    sorted_distances = distances[order]
    _check_positions(sorted_distances)
    slice_spacing = _uniform_spacing(sorted_distances)
    _check_shear(positions[order], normal, min(spacing))
    dr, dc = spacing
    p0 = positions[order[0]]
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = normal * slice_spacing
    lps[:3, 3] = p0
    # float32 is what NIfTI stores: the plan's affine is exactly the file's
    affine = (LPS_TO_RAS @ lps).astype(np.float32).astype(np.float64)
    return SeriesPlan(
        study_instance_uid=first.study_instance_uid,
        series_instance_uid=first.series_instance_uid,
        series_number=first.series_number,
        series_description=first.series_description,
        files=tuple(h.path for h in headers),
        slices=tuple(sources[i] for i in order),
        columns=first.columns,
        rows=first.rows,
        voxel_size=(dc, dr, slice_spacing),
        affine=affine,
    )


def _check_size(headers: Sequence[DicomHeader], limits: SeriesLimits) -> None:
    largest = max(headers, key=lambda h: max(h.rows, h.columns))
    if max(largest.rows, largest.columns) > limits.max_matrix:
        raise InputRefusedError(
            ReasonCode.TOO_LARGE,
            f"{largest.path.name} is {largest.columns}x{largest.rows} pixels, over the limit of "
            f"{limits.max_matrix} (SCIATIC_MAX_IMAGE_MATRIX)",
        )
    slices = sum(h.number_of_frames for h in headers)
    if slices > limits.max_slices:
        raise InputRefusedError(
            ReasonCode.TOO_LARGE,
            f"the series has {slices} images, over the limit of {limits.max_slices} (SCIATIC_MAX_SERIES_SLICES)",
        )
    voxels = sum(h.rows * h.columns * h.number_of_frames for h in headers)
    if voxels > limits.max_voxels:
        raise InputRefusedError(
            ReasonCode.TOO_LARGE,
            f"the series has {voxels} voxels, over the limit of {limits.max_voxels} (SCIATIC_MAX_SERIES_VOXELS)",
        )


def _check_unique_instances(headers: Sequence[DicomHeader]) -> None:
    counts = Counter(h.sop_instance_uid for h in headers)
    duplicated = [uid for uid, n in counts.items() if n > 1]
    if duplicated:
        paths = [str(h.path) for h in headers if h.sop_instance_uid == duplicated[0]]
        raise InputRefusedError(
            ReasonCode.SOP_CONFLICT,
            f"{len(duplicated)} SOPInstanceUID(s) occur in more than one file, e.g. {duplicated[0]} in {paths}",
        )


def _check_matrix(headers: Sequence[DicomHeader]) -> None:
    matrices = Counter((h.columns, h.rows) for h in headers)
    if len(matrices) > 1:
        listed = ", ".join(f"{c}x{r} ({n} files)" for (c, r), n in matrices.most_common())
        raise InputRefusedError(ReasonCode.MIXED_MATRIX, f"images have different matrix sizes: {listed}")


_Geometry = tuple[tuple[float, ...], tuple[float, float, float], tuple[float, float]]


def _expand_frames(headers: Sequence[DicomHeader]) -> tuple[list[SliceSource], list[_Geometry]]:
    sources: list[SliceSource] = []
    geometry: list[_Geometry] = []
    missing: Counter[str] = Counter()
    for header in headers:
        for index, frame in enumerate(header.frames):
            if frame.orientation is None:
                missing["ImageOrientationPatient"] += 1
            if frame.position is None:
                missing["ImagePositionPatient"] += 1
            if frame.pixel_spacing is None:
                missing["PixelSpacing"] += 1
            if frame.orientation is None or frame.position is None or frame.pixel_spacing is None:
                continue
            sources.append(SliceSource(header.path, index, frame.rescale_slope, frame.rescale_intercept))
            geometry.append((frame.orientation, frame.position, frame.pixel_spacing))
    if missing:
        listed = ", ".join(f"{tag} in {n} image(s)" for tag, n in sorted(missing.items()))
        raise InputRefusedError(ReasonCode.MISSING_GEOMETRY, f"geometry tags are missing or invalid: {listed}")
    return sources, geometry


def _common_orientation(headers: Sequence[DicomHeader], geometry: list[_Geometry]) -> NDArray[np.float64]:
    orientations = np.array([g[0] for g in geometry], dtype=np.float64)
    reference = orientations[0]
    if np.abs(orientations - reference).max() > ORIENTATION_TOLERANCE:
        distinct = len({tuple(np.round(o, 3)) for o in orientations})
        localizer = " (a localizer)" if any(h.is_localizer for h in headers) else ""
        raise InputRefusedError(
            ReasonCode.MIXED_ORIENTATION,
            f"the series{localizer} has images in {distinct} different orientations; "
            "only single-orientation stacks are converted",
        )
    row_dir, col_dir = reference[:3], reference[3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > ORIENTATION_TOLERANCE
        or abs(np.linalg.norm(col_dir) - 1) > ORIENTATION_TOLERANCE
        or abs(row_dir @ col_dir) > ORIENTATION_TOLERANCE
    ):
        raise InputRefusedError(
            ReasonCode.MISSING_GEOMETRY,
            f"ImageOrientationPatient {tuple(reference)} is not two orthogonal unit vectors",
        )
    # re-orthonormalise to remove the rounding of the decimal strings
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir - (col_dir @ row_dir) * row_dir
    col_dir = col_dir / np.linalg.norm(col_dir)
    return np.concatenate([row_dir, col_dir])


def _common_pixel_spacing(geometry: list[_Geometry]) -> tuple[float, float]:
    spacings = np.array([g[2] for g in geometry], dtype=np.float64)
    if np.abs(spacings - spacings[0]).max() > 1e-4 * spacings[0].max():
        raise InputRefusedError(ReasonCode.MIXED_MATRIX, "images have different PixelSpacing")
    return float(spacings[0][0]), float(spacings[0][1])


def _check_positions(sorted_distances: NDArray[np.float64]) -> None:
    count = len(sorted_distances)
    if count == 1:
        raise InputRefusedError(
            ReasonCode.SINGLE_SLICE, "the series has a single image; a volume needs at least two slices"
        )
    # label each image with its distinct slice location
    new_location = np.diff(sorted_distances) > DUPLICATE_POSITION_MM
    location = np.concatenate([[0], np.cumsum(new_location)])
    per_location = np.bincount(location)
    locations = len(per_location)
    if locations == count:
        return
    if locations == 1:
        raise InputRefusedError(
            ReasonCode.DUPLICATE_POSITIONS, f"all {count} images lie at one slice position; there is no volume to build"
        )
    if (per_location == per_location[0]).all():
        raise InputRefusedError(
            ReasonCode.MULTI_VOLUME,
            f"{count} images at {locations} slice positions: {per_location[0]} volumes of {locations} slices "
            "(time points, echoes or repeats); only single 3D volumes are converted",
        )
    raise InputRefusedError(
        ReasonCode.DUPLICATE_POSITIONS,
        f"{count} images at {locations} slice positions, some positions repeated "
        f"{per_location.min()} and some {per_location.max()} times",
    )


def _uniform_spacing(sorted_distances: NDArray[np.float64]) -> float:
    gaps = np.diff(sorted_distances)
    mean_gap = float((sorted_distances[-1] - sorted_distances[0]) / (len(sorted_distances) - 1))
    tolerance = max(SPACING_TOLERANCE * mean_gap, SPACING_TOLERANCE_MM)
    if np.abs(gaps - mean_gap).max() > tolerance:
        raise InputRefusedError(
            ReasonCode.NONUNIFORM_SPACING,
            f"slice gaps range from {gaps.min():.3f} to {gaps.max():.3f} mm (mean {mean_gap:.3f} mm); "
            "a slice may be missing",
        )
    return mean_gap


def _check_shear(sorted_positions: NDArray[np.float64], normal: NDArray[np.float64], pixel: float) -> None:
    offsets = sorted_positions - sorted_positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    worst = float(np.linalg.norm(in_plane, axis=1).max())
    if worst > SHEAR_TOLERANCE * pixel:
        raise InputRefusedError(
            ReasonCode.SHEARED_SLICES,
            f"slice positions drift {worst:.3f} mm sideways from the slice normal (gantry tilt or sheared stack)",
        )
