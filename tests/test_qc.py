"""QC: overlap metrics, empty policies, grid refusal, label-free flags (sciatic.evaluation.qc)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.evaluation.metrics import nerve_metrics
from sciatic.evaluation.qc import (
    FAIL_FLAGS,
    MaskComparison,
    QcFlag,
    QcStatus,
    QcThresholds,
    assess,
    compare_files,
    compare_masks,
    dice,
    inter_rater_summary,
    volume_similarity,
)
from sciatic.imaging.volume import check_same_grid, voxel_spacing_mm

SPACING = (0.6, 0.8, 3.0)
AFFINE = np.diag([*SPACING, 1.0])


def oblique_affine(spacing: tuple[float, float, float] = SPACING) -> NDArray[np.float64]:
    t = math.radians(25.0)
    rot = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = (-60.0, 30.0, -100.0)
    return a


def cube(shape: tuple[int, int, int], lo: tuple[int, int, int], size: int) -> NDArray[np.uint8]:
    m = np.zeros(shape, dtype=np.uint8)
    m[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = 1
    return m


def blob(rng: np.random.Generator, shape: tuple[int, int, int]) -> NDArray[np.uint8]:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(2.5, 2.5, 1.2))
    return (field > np.quantile(field, 0.85)).astype(np.uint8)


def tube(shape: tuple[int, int, int], radius_vox: float, slices: range, dx: int = 0) -> NDArray[np.uint8]:
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    m = np.zeros(shape, dtype=np.uint8)
    for k in slices:
        m[:, :, k] = (i - shape[0] / 2 - dx) ** 2 + (j - shape[1] / 2) ** 2 <= radius_vox**2
    return m


# ---------------------------------------------------------------- overlap, hand-checkable


def test_shifted_cube_known_values() -> None:
    a = oblique_affine()
    p = cube((16, 16, 16), (2, 3, 3), 10)
    lab = cube((16, 16, 16), (4, 3, 3), 10)  # shifted 2 voxels along axis 0
    c = compare_masks(p, a, lab, a)
    assert c.dice == pytest.approx(2 * 800 / 2000)
    assert c.hausdorff_mm == pytest.approx(2 * SPACING[0])
    assert 0 < c.hd95_mm <= c.hausdorff_mm
    assert 0 < c.assd_mm < c.hd95_mm
    assert c.volume_similarity == pytest.approx(1.0)
    assert c.pred_voxels == c.label_voxels == 1000
    assert c.pred_volume_mm3 == pytest.approx(1000 * np.prod(SPACING))
    assert not c.failed


def test_identical_masks() -> None:
    m = cube((8, 8, 8), (2, 2, 2), 4)
    c = compare_masks(m, AFFINE, m, AFFINE)
    assert (c.dice, c.hd95_mm, c.hausdorff_mm, c.assd_mm, c.volume_similarity) == (1.0, 0.0, 0.0, 0.0, 1.0)


def test_disjoint_masks_fail() -> None:
    p = cube((20, 8, 8), (0, 2, 2), 4)
    lab = cube((20, 8, 8), (12, 2, 2), 4)
    c = compare_masks(p, AFFINE, lab, AFFINE)
    assert c.dice == 0.0 and c.failed
    assert c.hausdorff_mm == pytest.approx(12 * SPACING[0])  # face x=0 to face x=12
    assert math.isfinite(c.hd95_mm)


def test_volume_similarity() -> None:
    assert volume_similarity(0.0, 0.0) == 1.0
    assert volume_similarity(10.0, 0.0) == 0.0
    assert volume_similarity(10.0, 30.0) == pytest.approx(0.5)


# ---------------------------------------------------------------- empty-mask policy


def test_both_empty() -> None:
    z = np.zeros((6, 6, 6), dtype=np.uint8)
    c = compare_masks(z, AFFINE, z, AFFINE)
    assert (c.dice, c.hd95_mm, c.hausdorff_mm, c.assd_mm, c.volume_similarity) == (1.0, 0.0, 0.0, 0.0, 1.0)
    assert not c.failed
    assert dice(z, z) == 1.0


@pytest.mark.parametrize("pred_empty", [True, False])
def test_one_empty_is_inf_and_json_null(pred_empty: bool) -> None:
    z = np.zeros((6, 6, 6), dtype=np.uint8)
    m = cube((6, 6, 6), (1, 1, 1), 3)
    p, lab = (z, m) if pred_empty else (m, z)
    c = compare_masks(p, AFFINE, lab, AFFINE)
    assert c.dice == 0.0 and c.failed and c.volume_similarity == 0.0
    assert c.hd95_mm == c.hausdorff_mm == c.assd_mm == math.inf
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert d["hd95_mm"] is None and d["assd_mm"] is None and d["hausdorff_mm"] is None
    assert d["dice"] == 0.0 and d["failed"] is True


# ---------------------------------------------------------------- cross-check against MONAI


def _monai(p: NDArray[np.uint8], lab: NDArray[np.uint8], spacing: tuple[float, ...]) -> tuple[float, float, float]:
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    yp = torch.as_tensor(p[None, None].astype(np.float32))
    yl = torch.as_tensor(lab[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI-internal deprecation notice
        d = float(compute_dice(yp, yl, include_background=True))
        hd95 = float(compute_hausdorff_distance(yp, yl, include_background=True, percentile=95, spacing=list(spacing)))
        assd = float(
            compute_average_surface_distance(yp, yl, include_background=True, symmetric=True, spacing=list(spacing))
        )
    return d, hd95, assd


@pytest.mark.parametrize("seed", range(6))
def test_random_blobs_agree_with_monai(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (28, 24, 10)
    p, lab = blob(rng, shape), blob(rng, shape)
    if seed % 2:  # a realistic case: label is a perturbed copy of the prediction
        lab = ndimage.binary_dilation(p, iterations=1).astype(np.uint8) & (rng.random(shape) > 0.1)
    a = oblique_affine()
    spacing = voxel_spacing_mm(a)
    mine = compare_masks(p, a, lab, a)
    d, hd95, assd = _monai(p, lab, spacing)
    assert mine.dice == pytest.approx(d, abs=1e-6)
    # HD95: same surface, distance and percentile definitions as MONAI (see qc.py),
    # so agreement is far tighter than the one-voxel-diagonal bound required here.
    assert abs(mine.hd95_mm - hd95) <= float(np.linalg.norm(spacing))
    assert mine.hd95_mm == pytest.approx(hd95, rel=1e-4, abs=1e-4)
    assert mine.assd_mm == pytest.approx(assd, rel=1e-4, abs=1e-4)


def test_monai_empty_conventions_differ_as_documented() -> None:
    # MONAI: ignore_empty=True gives NaN Dice for an empty label; distances inf/nan.
    z = np.zeros((6, 6, 6), dtype=np.uint8)
    m = cube((6, 6, 6), (1, 1, 1), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d, hd95, _ = _monai(m, z, (1.0, 1.0, 1.0))
    assert math.isnan(d)
    assert not math.isfinite(hd95)
    c = compare_masks(m, AFFINE, z, AFFINE)
    assert c.dice == 0.0 and c.hd95_mm == math.inf


# ---------------------------------------------------------------- grid refusal and files


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(InputRefusedError) as e:
        compare_masks(np.zeros((4, 4, 4)), AFFINE, np.zeros((4, 4, 5)), AFFINE)
    assert e.value.reason is ReasonCode.GEOMETRY_MISMATCH
    assert "shape" in e.value.detail


def _thicker(a: NDArray[np.float64]) -> NDArray[np.float64]:
    return a @ np.diag([1.1, 1.0, 1.0, 1.0])


def _moved(a: NDArray[np.float64]) -> NDArray[np.float64]:
    b = a.copy()
    b[0, 3] += 1.0
    return b


def _turned(a: NDArray[np.float64]) -> NDArray[np.float64]:
    t = math.radians(3.0)
    b = a.copy()
    b[:3, :3] = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]]) @ a[:3, :3]
    return b


@pytest.mark.parametrize(
    ("change", "words"),
    [(_thicker, "voxel spacing"), (_moved, "origin"), (_turned, "axis directions")],
)
def test_affine_mismatch_is_refused_naming_what_differs(
    change: Callable[[NDArray[np.float64]], NDArray[np.float64]], words: str
) -> None:
    a = oblique_affine()
    with pytest.raises(InputRefusedError) as e:
        compare_masks(np.zeros((8, 8, 4)), a, np.zeros((8, 8, 4)), change(a))
    assert e.value.reason is ReasonCode.GEOMETRY_MISMATCH
    assert words in e.value.detail
    assert "prediction and label are on different grids" in e.value.detail


def test_float32_round_off_is_tolerated() -> None:
    a = oblique_affine()
    check_same_grid((64, 64, 40), a, (64, 64, 40), a.astype(np.float32).astype(np.float64))


def test_compare_files(tmp_path: Path) -> None:
    a = oblique_affine()
    p = cube((16, 16, 16), (2, 3, 3), 10)
    lab = cube((16, 16, 16), (4, 3, 3), 10)
    nib.save(nib.Nifti1Image(p, a), tmp_path / "pred.nii.gz")
    nib.save(nib.Nifti1Image(lab[..., None], a), tmp_path / "label.nii.gz")  # (X, Y, Z, 1) accepted
    c = compare_files(tmp_path / "pred.nii.gz", tmp_path / "label.nii.gz")
    expected = compare_masks(p, a, lab, a)  # the file holds a float32 affine: equal to round-off
    assert c.dice == expected.dice and c.pred_voxels == expected.pred_voxels
    assert c.hd95_mm == pytest.approx(expected.hd95_mm) and c.assd_mm == pytest.approx(expected.assd_mm)
    assert c.pred_volume_mm3 == pytest.approx(expected.pred_volume_mm3)
    json.dumps(c.to_dict(), allow_nan=False)

    nib.save(nib.Nifti1Image(lab, a @ np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "thick.nii.gz")
    with pytest.raises(InputRefusedError) as e:
        compare_files(tmp_path / "pred.nii.gz", tmp_path / "thick.nii.gz")
    assert e.value.reason is ReasonCode.GEOMETRY_MISMATCH and "thick.nii.gz" in e.value.detail

    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(InputRefusedError) as e:
        compare_files(tmp_path / "pred.nii.gz", tmp_path / "junk.nii.gz")
    assert e.value.reason is ReasonCode.UNREADABLE_FILE

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.uint8), a), tmp_path / "4d.nii.gz")
    with pytest.raises(InputRefusedError, match="3D"):
        compare_files(tmp_path / "pred.nii.gz", tmp_path / "4d.nii.gz")


# ---------------------------------------------------------------- inter-rater


def test_inter_rater_summary() -> None:
    s = (16, 16, 16)
    masks = {
        "b": (cube(s, (4, 3, 3), 10), AFFINE),
        "a": (cube(s, (2, 3, 3), 10), AFFINE),
        "c": (cube(s, (2, 3, 3), 10), AFFINE),
    }
    r = inter_rater_summary(masks)
    assert r.raters == ("a", "b", "c")
    assert [(x, y) for x, y, _ in r.pairwise_dice] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert r.mean_dice == pytest.approx((0.8 + 1.0 + 0.8) / 3)
    assert r.min_dice == pytest.approx(0.8)
    json.dumps(r.to_dict(), allow_nan=False)
    with pytest.raises(ValueError):
        inter_rater_summary({"a": masks["a"]})
    with pytest.raises(InputRefusedError):
        inter_rater_summary({"a": masks["a"], "b": (masks["b"][0], AFFINE * 2)})


# ---------------------------------------------------------------- label-free flags


A_QC = np.diag([0.6, 0.6, 4.0, 1.0])  # 0.36 mm² pixels
SHAPE = (64, 64, 16)


def _assess(
    m: NDArray[np.uint8], thresholds: QcThresholds | None = None, comparison: MaskComparison | None = None
) -> tuple[QcStatus, set[QcFlag]]:
    r = assess(nerve_metrics(m, A_QC), thresholds, comparison)
    json.dumps(r.to_dict(), allow_nan=False)
    return r.status, set(r.flags)


def test_plausible_nerve_passes() -> None:
    # radius 6.5 voxels = 3.9 mm: CSA about 48 mm², 12 slices, about 2.3 mL
    assert _assess(tube(SHAPE, 6.5, range(2, 14))) == (QcStatus.PASS, set())


def test_empty_mask_fails_with_only_that_flag() -> None:
    assert _assess(np.zeros(SHAPE, np.uint8)) == (QcStatus.FAIL, {QcFlag.EMPTY_MASK})


def test_multiple_components_review() -> None:
    m = tube(SHAPE, 6.5, range(2, 14))
    m[2:8, 2:8, 6] = 1  # a stray island in one slice ...
    assert _assess(m) == (QcStatus.PASS, set())  # ... could be a branch: two pieces per thigh are fine
    m[56:62, 2:8, 6] = 1  # a third piece is not
    status, flags = _assess(m)
    assert status is QcStatus.REVIEW and QcFlag.MULTIPLE_COMPONENTS in flags


def test_a_bifurcating_nerve_passes() -> None:
    m = tube(SHAPE, 6.0, range(2, 9))
    m[:, :, 9:14] = tube(SHAPE, 4.0, range(9, 14), dx=-5)[:, :, 9:14] | tube(SHAPE, 3.0, range(9, 14), dx=6)[:, :, 9:14]
    assert max(x.n_components for x in nerve_metrics(m, A_QC).slices) == 2
    assert _assess(m) == (QcStatus.PASS, set())
    status, flags = _assess(m, QcThresholds(max_components_per_slice=1))
    assert status is QcStatus.REVIEW and flags == {QcFlag.MULTIPLE_COMPONENTS}


def test_csa_out_of_range_review() -> None:
    big = tube(SHAPE, 6.5, range(2, 14))
    big[:, :, 7] = tube(SHAPE, 20.0, range(16))[:, :, 7]  # about 450 mm²
    assert _assess(big) == (QcStatus.REVIEW, {QcFlag.CSA_OUT_OF_RANGE})
    small = tube(SHAPE, 6.5, range(2, 14))
    small[:, :, 13] = tube(SHAPE, 2.0, range(16))[:, :, 13]  # about 4.7 mm²
    assert _assess(small) == (QcStatus.REVIEW, {QcFlag.CSA_OUT_OF_RANGE})


def test_centroid_jump_review() -> None:
    m = tube(SHAPE, 6.5, range(2, 8)) | tube(SHAPE, 6.5, range(8, 14), dx=20)  # 12 mm in-plane
    status, flags = _assess(m)
    assert status is QcStatus.REVIEW and QcFlag.CENTROID_JUMP in flags
    # a smaller drift is fine
    m = tube(SHAPE, 6.5, range(2, 8)) | tube(SHAPE, 6.5, range(8, 14), dx=5)
    assert _assess(m) == (QcStatus.PASS, set())


def test_slice_gap_review() -> None:
    m = tube(SHAPE, 6.5, range(2, 14))
    m[:, :, 8] = 0
    assert _assess(m) == (QcStatus.REVIEW, {QcFlag.SLICE_GAP})
    assert _assess(m, thresholds=QcThresholds(max_gap_slices=1)) == (QcStatus.PASS, set())


def test_volume_flags() -> None:
    # 2 slices of about 48 mm² x 4 mm: about 380 mm³ -> too small with a 500 mm³ floor
    m = tube(SHAPE, 6.5, range(2, 4))
    short_is_fine = {"min_nerve_slice_fraction": 0.0}  # the volume flag alone (a short nerve has its own)
    assert _assess(m, thresholds=QcThresholds(min_volume_mm3=500.0, **short_is_fine)) == (
        QcStatus.REVIEW,
        {QcFlag.VOLUME_TOO_SMALL},
    )
    m = tube(SHAPE, 6.5, range(16))
    assert _assess(m, thresholds=QcThresholds(max_volume_mm3=1000.0)) == (QcStatus.REVIEW, {QcFlag.VOLUME_TOO_LARGE})


def test_label_dice_failure_fails() -> None:
    m = tube(SHAPE, 6.5, range(2, 14))
    comp = compare_masks(m, A_QC, np.roll(m, 30, axis=0), A_QC)
    assert comp.failed
    status, flags = _assess(m, comparison=comp)
    assert status is QcStatus.FAIL and flags == {QcFlag.LABEL_DICE_FAILED}
    assert {QcFlag.EMPTY_MASK, QcFlag.LABEL_DICE_FAILED} == FAIL_FLAGS


def test_thresholds_are_validated_and_serialisable() -> None:
    with pytest.raises(ValueError):
        QcThresholds(csa_min_mm2=500.0)
    d = QcThresholds().to_dict()
    assert d["csa_min_mm2"] == 10.0 and d["failure_dice"] == 0.05
    json.dumps(d)


def test_comparison_is_frozen() -> None:
    c = compare_masks(np.zeros((3, 3, 3)), AFFINE, np.zeros((3, 3, 3)), AFFINE)
    assert isinstance(c, MaskComparison)
    with pytest.raises(AttributeError):
        c.dice = 0.5  # type: ignore[misc]


def test_a_nerve_on_too_few_slices_is_reviewed() -> None:
    assert _assess(tube(SHAPE, 6.5, range(2, 8)))[1] == {QcFlag.NERVE_TOO_SHORT}  # 6 of 16 slices
    assert _assess(tube(SHAPE, 6.5, range(2, 10))) == (QcStatus.PASS, set())  # half of them


def _two_thighs(nerves: dict[str, float]) -> tuple[NDArray[np.float32], NDArray[np.uint8], NDArray[np.float64]]:
    """A bilateral slab: two thighs (discs of signal) at RAS x = -90 and +90 mm, nerves where asked.

    ``nerves`` maps ``"left"``/``"right"`` to the nerve's RAS y offset from its thigh's centre (mm).
    """
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    affine[:3, 3] = (-200.0, -100.0, 0.0)
    i, j = np.mgrid[0:400, 0:200]
    image = np.zeros((400, 200, 12), np.float32)
    mask = np.zeros((400, 200, 12), np.uint8)
    for side, x in (("right", 90.0), ("left", -90.0)):  # RAS +x is the patient's right
        thigh = (i - 200 - x) ** 2 + (j - 100) ** 2 <= 70**2
        image[thigh] = 400.0
        if side in nerves:
            nerve = (i - 200 - x) ** 2 + (j - 100 - nerves[side]) ** 2 <= 4**2
            mask[nerve] = 1
    return image, mask, affine


def test_each_thigh_is_judged_on_its_own() -> None:
    from sciatic.evaluation.anatomy import legs_in_view
    from sciatic.evaluation.metrics import nerve_metrics_by_side
    from sciatic.evaluation.qc import LegFacts, assess_legs

    def verdict(nerves: dict[str, float]) -> tuple[QcStatus, set[QcFlag]]:
        image, mask, affine = _two_thighs(nerves)
        legs = {leg.side.value: leg for leg in legs_in_view(image, affine)}
        assert set(legs) == {"left", "right"}
        by_side = {side.value: m for side, m in nerve_metrics_by_side(mask, affine).items()}
        facts = [
            LegFacts(
                side,
                by_side.get(side),
                None
                if side not in by_side
                else float(np.mean([s.centroid_ras_mm[1] for s in by_side[side].slices if s.centroid_ras_mm]))
                - legs[side].centroid_ras_mm[1],
            )
            for side in ("left", "right")
        ]
        r = assess_legs(facts)
        return r.status, set(r.flags)

    assert verdict({"left": -30.0, "right": -25.0}) == (QcStatus.PASS, set())  # two posterior nerves: normal
    assert verdict({"left": -30.0}) == (QcStatus.REVIEW, {QcFlag.LEG_WITHOUT_NERVE})
    assert verdict({"left": -30.0, "right": +35.0}) == (QcStatus.REVIEW, {QcFlag.NERVE_NOT_POSTERIOR})
    # the whole mask, judged as one nerve, would wrongly see two components in every slice
    _, mask, affine = _two_thighs({"left": -30.0, "right": -25.0})
    one_nerve = QcThresholds(max_components_per_slice=1)
    assert QcFlag.MULTIPLE_COMPONENTS in set(assess(nerve_metrics(mask, affine), one_nerve).flags)


def test_legs_in_view_of_one_thigh_follow_its_laterality_tag() -> None:
    from sciatic.db.enums import Side
    from sciatic.evaluation.anatomy import legs_in_view

    image, _, affine = _two_thighs({})
    image[:200, :, :] = 0  # only the right thigh (RAS +x) is left
    (leg,) = legs_in_view(image, affine)
    assert leg.side is Side.RIGHT and leg.centroid_ras_mm[0] == pytest.approx(90.0, abs=1.0)
    (tagged,) = legs_in_view(image, affine, laterality="L")  # a unilateral study names its leg
    assert tagged.side is Side.LEFT
    assert legs_in_view(np.zeros((20, 20, 3)), affine) == ()


def test_an_unsure_network_is_reviewed() -> None:
    from sciatic.evaluation.qc import uncertainty_findings
    from sciatic.model.infer import uncertainty

    assert uncertainty_findings(0.1) == [] and uncertainty_findings(None) == []
    (finding,) = uncertainty_findings(0.35)
    assert finding.flag is QcFlag.HIGH_UNCERTAINTY and "0.35" in finding.detail
    sure = np.zeros((8, 8, 3), np.float32)
    sure[2:5, 2:5, :] = 0.99
    whole, per_slice = uncertainty(sure)
    assert whole == pytest.approx(0.02) and per_slice == pytest.approx((0.02, 0.02, 0.02))
    unsure = np.full((8, 8, 3), 0.5, np.float32)
    unsure[:, :, 2] = 0.0
    whole, per_slice = uncertainty(unsure)
    assert whole == pytest.approx(1.0) and per_slice[:2] == pytest.approx((1.0, 1.0)) and per_slice[2] is None
    assert uncertainty(np.zeros((4, 4, 2), np.float32)) == (1.0, (None, None))  # it saw nothing at all


def test_the_image_snr_is_estimated_from_the_image_and_a_noisy_one_is_reviewed() -> None:
    from sciatic.evaluation.qc import snr_findings
    from sciatic.imaging.noise import estimate_snr

    rng = np.random.default_rng(4)
    x, y = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    thigh = np.where((x - 64) ** 2 + (y - 64) ** 2 < 50**2, 400.0, 20.0)[:, :, None].repeat(12, axis=2)
    for sd in (16.0, 32.0):  # SNR 25 and 12.5: the estimate within a quarter (edges add a little noise)
        estimate = estimate_snr(thigh + rng.normal(0.0, sd, thigh.shape))
        assert estimate is not None and abs(estimate - 400.0 / sd) < 0.25 * 400.0 / sd
    buried = estimate_snr(thigh + rng.normal(0.0, thigh.std(), thigh.shape))  # the QC benchmark's corruption
    assert buried is not None and buried < 4
    assert estimate_snr(np.zeros((16, 16, 3))) is None  # flat: no noise to measure
    assert snr_findings(None) == [] and snr_findings(12.0) == []
    (finding,) = snr_findings(buried)
    assert finding.flag is QcFlag.LOW_SNR and f"{buried:.1f}" in finding.detail
