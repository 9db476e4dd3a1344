"""Nerve metrics on hand-checkable masks (sciatic.evaluation.metrics)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray

from sciatic.evaluation.metrics import nerve_metrics, series_metrics, slice_metrics
from sciatic.imaging.volume import pixel_area_mm2, slice_normal, slice_spacing_mm, voxel_spacing_mm, voxel_volume_mm3


def rotation(axis: tuple[float, float, float], degrees: float) -> NDArray[np.float64]:
    a = np.asarray(axis, dtype=float)
    a /= np.linalg.norm(a)
    t = math.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * (k @ k)


def dicom_affine(
    r: NDArray[np.float64], c: NDArray[np.float64], dc: float, dr: float, ds: float, p0: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Affine as in docs/conventions.md (LPS columns, flipped to RAS+)."""
    n = np.cross(r, c)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = r * dc, c * dr, n * ds, p0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def oblique_affine(dc: float = 0.5, dr: float = 0.7, ds: float = 3.0) -> NDArray[np.float64]:
    rot = rotation((1.0, 2.0, 0.5), 35.0)
    return dicom_affine(rot[:, 0], rot[:, 1], dc, dr, ds, np.array([-80.0, 40.0, -120.0]))


def disc_mask(
    affine: NDArray[np.float64], shape: tuple[int, int, int], radius: float, slices: range
) -> NDArray[np.uint8]:
    """Disc of ``radius`` mm in each listed slice, centred in the slice plane (physical space)."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    d = np.stack([i - centre[0], j - centre[1]], axis=-1) @ affine[:3, :2].T
    disc = np.linalg.norm(d, axis=-1) <= radius
    m = np.zeros(shape, dtype=np.uint8)
    for k in slices:
        m[:, :, k] = disc
    return m


def test_geometry_helpers_on_oblique_affine() -> None:
    a = oblique_affine()
    assert pixel_area_mm2(a) == pytest.approx(0.5 * 0.7)
    assert voxel_volume_mm3(a) == pytest.approx(0.5 * 0.7 * 3.0)
    assert slice_spacing_mm(a) == pytest.approx(3.0)
    assert voxel_spacing_mm(a) == pytest.approx((0.5, 0.7, 3.0))
    # a product of diagonal entries would be wrong here
    assert abs(a[0, 0] * a[1, 1]) < 0.9 * pixel_area_mm2(a)
    n = slice_normal(a)
    assert np.linalg.norm(n) == pytest.approx(1.0)
    assert n @ a[:3, 2] > 0


def test_sheared_affine_keeps_area_volume_and_plane_spacing_consistent() -> None:
    a = oblique_affine()
    a[:3, 2] += 0.3 * a[:3, 0]  # tilt the slice stack within the slice plane direction
    assert pixel_area_mm2(a) * slice_spacing_mm(a) == pytest.approx(voxel_volume_mm3(a))
    assert slice_spacing_mm(a) == pytest.approx(3.0)


@pytest.mark.parametrize("shear", [0.0, 0.25])
def test_disc_csa_on_oblique_affine(shear: float) -> None:
    a = oblique_affine()
    a[:3, 1] += shear * a[:3, 0]  # non-orthogonal in-plane axes: |a0 x a1| still exact
    shape, radius = (64, 64, 6), 8.0
    m = disc_mask(a, shape, radius, range(1, 5))
    sl = slice_metrics(m, a)
    expected = math.pi * radius**2
    for s in sl[1:5]:
        assert s.area_mm2 == pytest.approx(expected, rel=0.03)
        assert s.n_components == 1
    assert sl[0].area_mm2 == 0.0 and sl[0].centroid_ras_mm is None and sl[0].n_components == 0


def test_centroid_in_patient_coordinates() -> None:
    a = oblique_affine()
    shape = (21, 21, 3)
    m = disc_mask(a, shape, 3.0, range(3))
    sl = slice_metrics(m, a)
    for k, s in enumerate(sl):
        assert s.centroid_ras_mm is not None
        expected = a @ np.array([10.0, 10.0, k, 1.0])
        np.testing.assert_allclose(s.centroid_ras_mm, expected[:3], atol=1e-9)


def test_signal_statistics_and_components() -> None:
    a = np.diag([0.5, 0.5, 4.0, 1.0])
    m = np.zeros((10, 10, 2), dtype=np.uint8)
    img = np.arange(200, dtype=np.int16).reshape(10, 10, 2)
    m[1:3, 1:3, 0] = 1  # one component
    m[6, 6, 0] = 1  # a second island (diagonal neighbour of nothing)
    m[4, 4, 1] = m[5, 5, 1] = 1  # corner-touching: one component with 8-connectivity
    sl = slice_metrics(m, a, img)
    vals0 = img[:, :, 0][m[:, :, 0] > 0].astype(float)
    assert sl[0].signal_mean == pytest.approx(vals0.mean())
    assert sl[0].signal_sd == pytest.approx(vals0.std())  # population SD
    assert sl[0].n_components == 2
    assert sl[1].n_components == 1
    assert sl[0].area_mm2 == pytest.approx(5 * 0.25)


def test_series_metrics_cylinder_with_gap() -> None:
    a = oblique_affine(dc=0.6, dr=0.6, ds=4.0)
    shape = (40, 40, 12)
    m = disc_mask(a, shape, 5.0, range(2, 10))
    m[:, :, 5] = 0  # a gap
    img = np.full(shape, 7.0)
    s = series_metrics(m, a, img)
    per_slice = int(np.count_nonzero(m[:, :, 2]))
    assert s.n_slices == 12
    assert s.n_nerve_slices == 7
    assert (s.first_slice, s.last_slice, s.gap_slices) == (2, 9, 1)
    assert s.voxel_count == 7 * per_slice
    assert s.volume_mm3 == pytest.approx(7 * per_slice * 0.6 * 0.6 * 4.0)
    assert s.csa_mean_mm2 == pytest.approx(per_slice * 0.36)
    assert s.csa_median_mm2 == pytest.approx(per_slice * 0.36)
    assert s.csa_max_mm2 == pytest.approx(per_slice * 0.36)
    assert s.covered_length_mm == pytest.approx((9 - 2 + 1) * 4.0)  # gap included
    assert s.signal_mean == pytest.approx(7.0)
    assert s.n_components_3d == 2


def test_single_slice_covers_one_spacing() -> None:
    a = np.diag([1.0, 1.0, 2.5, 1.0])
    m = np.zeros((5, 5, 4), dtype=np.uint8)
    m[2, 2, 3] = 1
    s = series_metrics(m, a)
    assert s.covered_length_mm == pytest.approx(2.5)
    assert s.signal_mean is None


def test_empty_mask_policy_is_json_safe() -> None:
    a = oblique_affine()
    nm = nerve_metrics(np.zeros((8, 8, 3), dtype=np.uint8), a, np.ones((8, 8, 3)))
    s = nm.series
    assert s.is_empty and s.voxel_count == 0 and s.volume_mm3 == 0.0 and s.covered_length_mm == 0.0
    assert s.csa_mean_mm2 is None and s.signal_mean is None and s.first_slice is None
    assert all(x.signal_mean is None and x.centroid_ras_mm is None for x in nm.slices)
    json.dumps(nm.to_dict(), allow_nan=False)


def test_nerve_metrics_round_trips_through_json() -> None:
    a = oblique_affine()
    m = disc_mask(a, (32, 32, 4), 4.0, range(4))
    d = json.loads(json.dumps(nerve_metrics(m, a, np.ones(m.shape)).to_dict(), allow_nan=False))
    assert len(d["slices"]) == 4
    assert d["series"]["n_nerve_slices"] == 4
    assert len(d["slices"][0]["centroid_ras_mm"]) == 3


def test_nerve_metrics_on_the_nerve_box_equal_the_whole_grid() -> None:
    """nerve_metrics works on the in-plane box around the nerve: every number as on the whole image."""
    a = oblique_affine()
    rng = np.random.default_rng(3)
    m = np.zeros((64, 48, 6), dtype=bool)
    m[40:47, 5:11, 1:4] = True  # two pieces off-centre, far from the origin
    m[50:53, 30:34, 2:6] = True
    image = rng.integers(0, 4000, m.shape).astype(np.int16)
    whole_slices = slice_metrics(m, a, image)
    whole = series_metrics(m, a, image, whole_slices)
    boxed = nerve_metrics(m, a, image)
    for b, w in zip(boxed.slices, whole_slices, strict=True):  # centroids: equal to rounding (another origin)
        assert replace(b, centroid_ras_mm=None) == replace(w, centroid_ras_mm=None)
        assert (b.centroid_ras_mm is None) == (w.centroid_ras_mm is None)
        assert b.centroid_ras_mm is None or b.centroid_ras_mm == pytest.approx(w.centroid_ras_mm, abs=1e-9)
    assert boxed.series == whole
    assert boxed.series.max_pieces == 2 and boxed.series.n_components_3d == 2


def test_bad_inputs() -> None:
    a = np.eye(4)
    with pytest.raises(ValueError, match="3D"):
        slice_metrics(np.zeros((4, 4)), a)
    with pytest.raises(ValueError, match="singular"):
        slice_metrics(np.zeros((4, 4, 2)), np.diag([1.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="image shape"):
        slice_metrics(np.zeros((4, 4, 2)), a, np.zeros((4, 4, 3)))


# --------------------------------------------------------------------------- legs and branches

SIDE_AFFINE = np.array([[1.0, 0, 0, -100.0], [0, 1.0, 0, -50.0], [0, 0, 4.0, 0.0], [0, 0, 0, 1.0]])  # RAS, 4 mm slices


def _disc(mask: np.ndarray, k: int, x_mm: float, y_mm: float = 0.0, r: float = 4.0) -> None:
    i, j = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    mask[:, :, k] |= (i - 100 - x_mm) ** 2 + (j - 50 - y_mm) ** 2 <= r**2


def test_both_legs_are_measured_each_on_its_side() -> None:
    from sciatic.db.enums import Side
    from sciatic.evaluation.metrics import nerve_metrics_by_side, split_sides

    mask = np.zeros((200, 100, 10), dtype=bool)
    for k in range(10):
        _disc(mask, k, x_mm=+70.0)  # RAS +x: the patient's right leg
        _disc(mask, k, x_mm=-70.0, r=6.0)  # the left leg, a larger (CMT1A-like) nerve
    sides = nerve_metrics_by_side(mask, SIDE_AFFINE)
    assert list(sides) == [Side.LEFT, Side.RIGHT]
    left, right = sides[Side.LEFT].series, sides[Side.RIGHT].series
    assert left.volume_mm3 + right.volume_mm3 == pytest.approx(nerve_metrics(mask, SIDE_AFFINE).series.volume_mm3)
    assert left.csa_median_mm2 > 2 * right.csa_median_mm2  # 113 vs 50 mm²: asymmetry stays visible
    assert left.max_pieces == right.max_pieces == 1 and left.bifurcation_z_mm is None
    # a unilateral study's Laterality tag decides, wherever the leg lies
    assert list(split_sides(mask, SIDE_AFFINE, laterality="R")) == [Side.RIGHT]
    assert split_sides(np.zeros_like(mask), SIDE_AFFINE) == {}


def test_the_bifurcation_is_kept_and_located() -> None:
    from sciatic.db.enums import Side
    from sciatic.evaluation.metrics import nerve_metrics_by_side

    mask = np.zeros((200, 100, 12), dtype=bool)
    for k in range(12):  # z = 4k mm: slices 0-4 distal (inferior), 5-11 proximal
        if k >= 5:
            _disc(mask, k, x_mm=60.0, r=5.0)  # the sciatic trunk
        else:
            _disc(mask, k, x_mm=56.0, y_mm=-2.0, r=4.0)  # tibial branch (medial, larger)
            _disc(mask, k, x_mm=67.0, y_mm=2.0, r=2.5)  # common peroneal branch (lateral)
    (side,) = nerve_metrics_by_side(mask, SIDE_AFFINE).values()
    s = side.series
    assert s.max_pieces == 2 and s.bifurcation_z_mm == pytest.approx(4 * 4)  # slice 4, z = 16 mm
    assert side.slices[0].n_components == 2 and side.slices[0].area_mm2 == pytest.approx(
        mask[:, :, 0].sum()  # both branches counted in the CSA
    )
    assert list(nerve_metrics_by_side(mask, SIDE_AFFINE)) == [Side.RIGHT]  # RAS +x: the right leg


@pytest.mark.parametrize(
    ("split_slices", "expected"),
    [(set(), None), ({0}, None), ({5, 6}, None), (set(range(12)), None), ({0, 1, 2}, 8.0)],
)
def test_a_bifurcation_needs_a_trunk_and_a_lasting_split(split_slices: set[int], expected: float | None) -> None:
    from sciatic.evaluation.metrics import bifurcation_z_mm

    mask = np.zeros((200, 100, 12), dtype=bool)
    for k in range(12):
        if k in split_slices:
            _disc(mask, k, x_mm=56.0, r=3.0)
            _disc(mask, k, x_mm=66.0, r=2.0)
        else:
            _disc(mask, k, x_mm=60.0)
    assert bifurcation_z_mm(slice_metrics(mask, SIDE_AFFINE)) == expected
