"""Series grouping, completeness, geometry (affine, slice order) and series-level refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom.uid import generate_uid

from sciatic.dicom.convert import convert_series
from sciatic.dicom.limits import SeriesLimits
from sciatic.dicom.scan import DicomHeader, read_header
from sciatic.dicom.series import CompletenessState, check_completeness, group_by_series, plan_series
from sciatic.errors import InputRefusedError, ReasonCode
from tests._dicom_synthetic import (
    AXIAL,
    AXIAL_DECUBITUS_LEFT,
    AXIAL_PRONE,
    CORONAL,
    SAGITTAL,
    enhanced_dataset,
    mr_dataset,
    oblique,
    save,
    slice_pixels,
    stack_positions,
    write_stack,
)

ORIENTATIONS = {
    "axial": AXIAL,
    "coronal": CORONAL,
    "sagittal": SAGITTAL,
    "axial-prone": AXIAL_PRONE,
    "axial-decubitus": AXIAL_DECUBITUS_LEFT,
    "oblique-1": oblique((0.3, -0.2, 0.1)),
    "oblique-2": oblique((1.1, 0.4, -2.5)),
}


def _headers(paths: list[Path]) -> list[DicomHeader]:
    return [read_header(p) for p in paths]


def _refusal(paths: list[Path]) -> ReasonCode:
    with pytest.raises(InputRefusedError) as info:
        plan_series(_headers(paths))
    assert info.value.detail
    return info.value.reason


def _world_lps(
    orientation: tuple[float, ...], position: tuple[float, ...], spacing: tuple[float, float], i: int, j: int
) -> NDArray[np.float64]:
    """DICOM PS3.3 C.7.6.2.1.1: the LPS position of column i, row j of a slice."""
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    dr, dc = spacing
    return np.array(position) + i * dc * row_dir + j * dr * col_dir


@pytest.mark.parametrize("name", list(ORIENTATIONS))
@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]], ids=["asc", "desc", "shuffled"])
def test_affine_maps_every_voxel_to_its_dicom_position(tmp_path: Path, name: str, order: list[int]) -> None:
    orientation = ORIENTATIONS[name]
    spacing = (0.8, 0.6)  # rows 0.8 mm apart, columns 0.6 mm apart: catches swapped spacing
    paths = write_stack(
        tmp_path, orientation=orientation, pixel_spacing=spacing, rows=5, columns=4, count=5, order=order
    )
    volume = convert_series(_headers(paths))
    assert volume.shape == (4, 5, 5)  # (columns, rows, slices)
    positions = stack_positions(orientation, (-20.0, 15.0, 40.0), 3.0, 5)
    for k in range(5):
        for i, j in [(0, 0), (3, 0), (0, 4), (3, 4), (2, 1)]:
            # pixel values encode (slice along the normal, row, column)
            assert volume.data[i, j, k] == 1000 * k + 10 * j + i
            expected_ras = _world_lps(orientation, positions[k], spacing, i, j) * [-1, -1, 1]
            np.testing.assert_allclose(volume.affine @ [i, j, k, 1], [*expected_ras, 1], atol=1e-4)
    np.testing.assert_allclose(volume.voxel_size, (0.6, 0.8, 3.0), atol=1e-5)


def test_affine_follows_the_convention_formula(tmp_path: Path) -> None:
    orientation = oblique((0.2, 0.5, -0.3))
    paths = write_stack(tmp_path, orientation=orientation, pixel_spacing=(0.7, 0.9), count=3, slice_spacing=4.0)
    plan = plan_series(_headers(paths))
    r, c = np.array(orientation[:3]), np.array(orientation[3:])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = r * 0.9, c * 0.7, np.cross(r, c) * 4.0
    lps[:3, 3] = stack_positions(orientation, (-20.0, 15.0, 40.0), 4.0, 3)[0]
    np.testing.assert_allclose(plan.affine, np.diag([-1, -1, 1, 1]) @ lps, atol=1e-5)
    assert plan.shape == (4, 5, 3)


def test_slice_order_ignores_instance_numbers_and_file_names(tmp_path: Path) -> None:
    paths = write_stack(tmp_path, count=6, order=[5, 2, 0, 4, 1, 3])
    plan = plan_series(_headers(paths))
    slice_files = [s.path.name for s in plan.slices]
    assert slice_files == ["IM0003.dcm", "IM0005.dcm", "IM0002.dcm", "IM0006.dcm", "IM0004.dcm", "IM0001.dcm"]


def test_enhanced_multiframe_with_shuffled_frames(tmp_path: Path) -> None:
    positions = stack_positions(SAGITTAL, (10.0, -5.0, 7.0), 2.5, 4)
    frame_order = [2, 0, 3, 1]
    ds = enhanced_dataset(
        [slice_pixels(5, 4, k) for k in frame_order],
        [positions[k] for k in frame_order],
        orientation=SAGITTAL,
        slopes=[1.0, 1.0, 1.0, 1.0],
    )
    header = read_header(save(ds, tmp_path / "enh.dcm"))
    assert check_completeness([header]).state is CompletenessState.COMPLETE
    volume = convert_series([header])
    assert volume.shape == (4, 5, 4)
    for k in range(4):
        np.testing.assert_array_equal(volume.data[:, :, k], slice_pixels(5, 4, k).T)
    expected = _world_lps(SAGITTAL, positions[0], (0.8, 0.6), 0, 0) * [-1, -1, 1]
    np.testing.assert_allclose(volume.affine[:3, 3], expected, atol=1e-4)


def test_group_by_series(tmp_path: Path) -> None:
    a = write_stack(tmp_path / "a", series_uid="1.2.3.100", count=3)
    b = write_stack(tmp_path / "b", series_uid="1.2.3.200", count=2)
    groups = group_by_series(_headers(b + a))
    assert list(groups) == ["1.2.3.100", "1.2.3.200"]
    assert [h.path for h in groups["1.2.3.100"]] == a


def test_completeness_from_images_in_acquisition(tmp_path: Path) -> None:
    paths = write_stack(tmp_path, count=4, ImagesInAcquisition=4)
    headers = _headers(paths)
    assert check_completeness(headers).state is CompletenessState.COMPLETE
    partial = check_completeness(headers[:3])
    assert (partial.state, partial.present, partial.expected) == (CompletenessState.INCOMPLETE, 3, 4)
    unknown = check_completeness(_headers(write_stack(tmp_path / "u", count=2)))
    assert unknown.state is CompletenessState.UNKNOWN


# --- refusals -------------------------------------------------------------


def test_multi_volume_is_refused(tmp_path: Path) -> None:
    uid = generate_uid()
    paths = write_stack(tmp_path / "t1", series_uid=uid, count=3) + write_stack(
        tmp_path / "t2", series_uid=uid, count=3
    )
    assert _refusal(paths) is ReasonCode.MULTI_VOLUME


def test_localizer_with_mixed_orientations_is_refused(tmp_path: Path) -> None:
    uid = generate_uid()
    paths = []
    for n, orientation in enumerate([AXIAL, CORONAL, SAGITTAL]):
        paths += write_stack(
            tmp_path / str(n),
            series_uid=uid,
            orientation=orientation,
            count=2,
            ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
        )
    assert _refusal(paths) is ReasonCode.MIXED_ORIENTATION


def test_nonuniform_spacing_is_refused(tmp_path: Path) -> None:
    paths = write_stack(tmp_path, count=5)
    paths[2].unlink()  # a missing slice leaves a double gap
    assert _refusal([p for p in paths if p.exists()]) is ReasonCode.NONUNIFORM_SPACING


@pytest.mark.parametrize("missing", ["orientation", "position", "pixel_spacing"])
def test_missing_geometry_is_refused(tmp_path: Path, missing: str) -> None:
    uid = generate_uid()
    paths = write_stack(tmp_path, series_uid=uid, count=3)
    geometry: dict[str, Any] = {missing: None}
    ds = mr_dataset(slice_pixels(5, 4, 3), series_uid=uid, **geometry)
    paths.append(save(ds, tmp_path / "bad.dcm"))
    assert _refusal(paths) is ReasonCode.MISSING_GEOMETRY


def test_single_slice_is_refused(tmp_path: Path) -> None:
    assert _refusal(write_stack(tmp_path, count=1)) is ReasonCode.SINGLE_SLICE


def test_repeated_position_is_refused(tmp_path: Path) -> None:
    uid = generate_uid()
    paths = write_stack(tmp_path / "a", series_uid=uid, count=3) + write_stack(tmp_path / "b", series_uid=uid, count=1)
    assert _refusal(paths) is ReasonCode.DUPLICATE_POSITIONS
    same = write_stack(tmp_path / "c", series_uid=generate_uid(), count=1)
    same += write_stack(tmp_path / "d", series_uid=read_header(same[0]).series_instance_uid, count=1)
    assert _refusal(same) is ReasonCode.DUPLICATE_POSITIONS


def test_mixed_matrix_is_refused(tmp_path: Path) -> None:
    uid = generate_uid()
    paths = write_stack(tmp_path / "a", series_uid=uid, count=2)
    paths += write_stack(tmp_path / "b", series_uid=uid, count=1, rows=6, origin=(-20.0, 15.0, 46.0))
    assert _refusal(paths) is ReasonCode.MIXED_MATRIX


def test_sheared_stack_is_refused(tmp_path: Path) -> None:
    uid = generate_uid()
    paths = [
        save(mr_dataset(slice_pixels(5, 4, k), series_uid=uid, position=(0.5 * k, 0.0, 3.0 * k)), tmp_path / f"{k}.dcm")
        for k in range(4)
    ]
    assert _refusal(paths) is ReasonCode.SHEARED_SLICES


def test_conflicting_instances_are_refused(tmp_path: Path) -> None:
    uid, sop = generate_uid(), generate_uid()
    paths = write_stack(tmp_path, series_uid=uid, count=3)
    paths.append(save(mr_dataset(slice_pixels(5, 4, 9), series_uid=uid, sop_uid=sop), tmp_path / "x1.dcm"))
    paths.append(save(mr_dataset(slice_pixels(5, 4, 8), series_uid=uid, sop_uid=sop), tmp_path / "x2.dcm"))
    assert _refusal(paths) is ReasonCode.SOP_CONFLICT


def test_plan_needs_one_series(tmp_path: Path) -> None:
    paths = write_stack(tmp_path / "a", count=2) + write_stack(tmp_path / "b", count=2)
    with pytest.raises(ValueError, match="more than one series"):
        plan_series(_headers(paths))


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        (SeriesLimits(max_voxels=50), "SCIATIC_MAX_SERIES_VOXELS"),
        (SeriesLimits(max_slices=2), "SCIATIC_MAX_SERIES_SLICES"),
        (SeriesLimits(max_matrix=3), "SCIATIC_MAX_IMAGE_MATRIX"),
    ],
)
def test_oversized_series_is_refused_before_decoding(tmp_path: Path, limits: SeriesLimits, named: str) -> None:
    headers = _headers(write_stack(tmp_path, count=3))
    plan_series(headers)  # within the default limits
    with pytest.raises(InputRefusedError) as refused:
        plan_series(headers, limits)
    assert refused.value.reason is ReasonCode.TOO_LARGE and named in refused.value.detail
