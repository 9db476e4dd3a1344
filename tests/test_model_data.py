"""Data helpers: crops, stacks, montages, augmentation, datasets."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
import torch

from sciatic.imaging.normalize import normalize
from sciatic.model.configs import SEED, AugmentConfig, config_from_dict, config_to_dict
from sciatic.model.data import (
    CascadeDataset,
    MontageDataset,
    Orientation,
    TrainingCase,
    as_case,
    augment,
    crop,
    downsample,
    from_montages,
    network_shape,
    pad_collate,
    paste,
    resample_volume,
    slice_stack,
    to_montages,
)
from tests._model_synthetic import TINY_CASCADE, TINY_SEED, blob_subject

torch.set_num_threads(2)


@pytest.mark.parametrize(("cx", "cy"), [(10, 12), (0, 0), (19, 22), (-3, 30), (25, 2)])
def test_crop_and_paste_are_inverse_inside_the_image(cx: int, cy: int) -> None:
    image = torch.arange(20 * 23, dtype=torch.float32).reshape(20, 23)
    window = crop(image, cx, cy, 8)
    assert window.shape == (8, 8)
    back = torch.zeros_like(image)
    paste(back, window, cx, cy)
    x0, y0 = cx - 4, cy - 4
    inside = torch.zeros_like(image, dtype=torch.bool)
    inside[max(0, x0) : max(0, x0 + 8), max(0, y0) : max(0, y0 + 8)] = True
    assert torch.equal(back[inside], image[inside])
    assert (back[~inside] == 0).all()


def test_downsample_pads_odd_sizes() -> None:
    x = torch.ones(2, 3, 9, 10)
    out = downsample(x, 4)
    assert out.shape == (2, 3, 3, 3)
    assert out[0, 0, 0, 0] == 1.0 and out[0, 0, 2, 2] < 1.0


def test_slice_stack_repeats_edges() -> None:
    volume = np.broadcast_to(np.arange(4, dtype=np.float32), (3, 2, 4))
    assert [s[0, 0] for s in slice_stack(volume, 0, 1)] == [0, 0, 1]
    assert [s[0, 0] for s in slice_stack(volume, 3, 2)] == [1, 2, 3, 3, 3]


@pytest.mark.parametrize("shape", [(16, 12, 10), (15, 9, 7), (8, 8, 1)])
def test_montage_round_trip(shape: tuple[int, int, int]) -> None:
    volume = np.random.default_rng(1).random(shape).astype(np.float32)
    montages, layout = to_montages(volume, TINY_SEED)
    assert montages.shape == (-(-shape[2] // 3), 64, 3 * 64)
    np.testing.assert_array_equal(from_montages(montages, layout), volume)


def test_seed_montages_are_the_abstracts() -> None:
    montages, _ = to_montages(np.zeros((256, 256, 40), np.float32), SEED)
    assert montages.shape == (8, 256, 1280)


def test_augment_keeps_shapes_binary_masks_and_is_reproducible() -> None:
    subject = blob_subject(0)
    image = torch.from_numpy(slice_stack(normalize(subject.volume), 3, 1))
    mask = torch.from_numpy(subject.mask[None, :, :, 3].astype(np.float32))
    aug = AugmentConfig(p_spatial=1.0, p_intensity=1.0, flip_x=1.0)
    a = augment(image, mask, aug, np.random.default_rng(5))
    b = augment(image, mask, aug, np.random.default_rng(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == image.shape and a[1].shape == mask.shape
    assert set(a[1].unique().tolist()) <= {0.0, 1.0}
    assert abs(float(a[1].sum()) - float(mask.sum())) < 0.4 * float(mask.sum())
    off = augment(image, mask, AugmentConfig(enabled=False), np.random.default_rng(5))
    assert off[0] is image and off[1] is mask


def test_identity_spatial_transform_changes_nothing() -> None:
    subject = blob_subject(1)
    image = torch.from_numpy(slice_stack(subject.volume, 2, 1))
    mask = torch.from_numpy(subject.mask[None, :, :, 2].astype(np.float32))
    aug = AugmentConfig(p_spatial=1.0, p_intensity=0.0, flip_x=0.0, rotate_deg=0.0, scale=0.0)
    out_image, out_mask = augment(image, mask, aug, np.random.default_rng(0))
    torch.testing.assert_close(out_image, image, atol=1e-3, rtol=1e-4)
    assert torch.equal(out_mask, mask)


def test_flip_x_mirrors_the_first_axis() -> None:
    image = torch.arange(6 * 4, dtype=torch.float32).reshape(1, 6, 4)
    mask = torch.zeros(1, 6, 4)
    aug = AugmentConfig(p_spatial=1.0, p_intensity=0.0, flip_x=1.0, rotate_deg=0.0, scale=0.0)
    out, _ = augment(image, mask, aug, np.random.default_rng(0))
    torch.testing.assert_close(out, image.flip(1))


def test_cascade_dataset_samples() -> None:
    subjects = [blob_subject(i, shape=(40, 34, 6)) for i in range(2)]
    dataset = CascadeDataset(subjects, TINY_CASCADE, seed=3)
    assert len(dataset) == 12
    sample = dataset[0]
    assert sample["loc_image"].shape == (3, 20, 17)
    assert sample["image"].shape == (3, 16, 16) and sample["target"].shape == (1, 16, 16)
    again = CascadeDataset(subjects, TINY_CASCADE, seed=3)[0]
    assert all(torch.equal(sample[k], again[k]) for k in sample)
    dataset.set_epoch(1)
    assert dataset.plan != CascadeDataset(subjects, TINY_CASCADE, seed=3).plan
    batch = pad_collate([dataset[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 16, 16)


def test_a_weighted_case_gives_that_many_draws_of_its_slices_per_epoch() -> None:
    light, heavy = (blob_subject(i, shape=(40, 34, 6)) for i in range(2))
    config = dataclasses.replace(TINY_CASCADE, samples_per_subject=4)
    plan = CascadeDataset([light, dataclasses.replace(heavy, weight=3)], config, seed=3).plan
    assert len(plan) == 4 + 3 * 4 and sum(s == 1 for s, _ in plan) == 3 * 4
    # weight 1: the plan drawn as before weights existed (the shipped model's build depends on it)
    rng = np.random.default_rng([3, 0, 0])
    unweighted = [(s, int(k)) for s in (0, 1) for k in rng.permutation(6)[:4]]
    expected = [unweighted[i] for i in rng.permutation(len(unweighted))]
    assert CascadeDataset([light, heavy], config, seed=3).plan == expected
    montages = MontageDataset([light, dataclasses.replace(light, weight=2)], TINY_SEED, seed=0)
    assert [s for s, _ in montages.plan].count(1) == 2 * [s for s, _ in montages.plan].count(0)
    with pytest.raises(ValueError, match="weight 0"):
        as_case(dataclasses.replace(light, weight=0))


def test_a_rotating_case_is_drawn_only_in_its_own_epochs() -> None:
    new, *pool = (blob_subject(i, shape=(40, 34, 6)) for i in range(4))
    rotating = [dataclasses.replace(case, every=3, phase=i) for i, case in enumerate(pool)]
    config = dataclasses.replace(TINY_CASCADE, samples_per_subject=4)
    dataset = CascadeDataset([new, *rotating], config, seed=3)
    for epoch in range(6):
        dataset.set_epoch(epoch)
        assert sorted({s for s, _ in dataset.plan}) == [0, 1 + epoch % 3]  # the new case, and one of the pool
        assert len(dataset) == 2 * 4  # as many steps in every epoch
    montages = MontageDataset([new, dataclasses.replace(new, every=2, phase=1)], TINY_SEED, seed=0)
    assert {s for s, _ in montages.plan} == {0}
    montages.set_epoch(1)
    assert {s for s, _ in montages.plan} == {0, 1}
    with pytest.raises(ValueError, match="phase 2"):
        as_case(dataclasses.replace(new, every=2, phase=2))


def test_montage_dataset_samples() -> None:
    subjects = [blob_subject(i, shape=(32, 28, 7)) for i in range(2)]
    dataset = MontageDataset(subjects, TINY_SEED, seed=0)
    assert len(dataset) == 2 * 3  # 7 slices -> 3 montages of 3
    sample = dataset[0]
    assert sample["image"].ndim == 3 and sample["image"].shape[0] == 1
    assert sample["image"].shape == sample["target"].shape


def test_pad_collate_pads_to_largest() -> None:
    batch = pad_collate([{"a": torch.ones(1, 3, 4)}, {"a": torch.ones(1, 5, 2)}])
    assert batch["a"].shape == (2, 1, 5, 4)
    assert batch["a"][0, 0, 4, 0] == 0 and batch["a"][1, 0, 0, 3] == 0


def test_subject_from_nifti_paths(tmp_path: pytest.TempPathFactory) -> None:
    subject = blob_subject(2)
    vol_path, mask_path = tmp_path / "v.nii.gz", tmp_path / "m.nii.gz"  # type: ignore[operator]
    nib.save(nib.Nifti1Image(subject.volume, subject.affine), vol_path)
    nib.save(nib.Nifti1Image(subject.mask, subject.affine), mask_path)
    loaded = as_case((vol_path, mask_path))
    np.testing.assert_array_equal(loaded.mask, subject.mask)
    np.testing.assert_allclose(loaded.affine, subject.affine)
    nib.save(nib.Nifti1Image(subject.mask, np.eye(4)), mask_path)
    with pytest.raises(ValueError, match="affine"):
        as_case((vol_path, mask_path))
    with pytest.raises(ValueError, match="same 3D shape"):
        as_case((subject.volume, subject.mask[:, :, :3], subject.affine))


def _affine(row_dir: tuple[float, float, float], col_dir: tuple[float, float, float]) -> np.ndarray:
    """A RAS+ affine by the conventions' formula from LPS ImageOrientationPatient triplets."""
    r, c = np.array(row_dir), np.array(col_dir)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = 0.7 * r, 0.7 * c, 4.0 * np.cross(r, c)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.mark.parametrize(
    ("row_dir", "col_dir", "expected"),
    [
        ((1, 0, 0), (0, 1, 0), Orientation()),  # supine: columns to the left, rows to posterior
        ((-1, 0, 0), (0, -1, 0), Orientation(flip_x=True, flip_y=True)),  # prone
        ((0, 1, 0), (1, 0, 0), Orientation(transpose=True)),
        ((0.99, 0.1, 0.05), (-0.1, 0.99, 0.0), Orientation()),  # slightly oblique
    ],
)
def test_orientation_from_affine(
    row_dir: tuple[float, float, float], col_dir: tuple[float, float, float], expected: Orientation
) -> None:
    assert Orientation.from_affine(_affine(row_dir, col_dir)) == expected


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("flip_x", [False, True])
@pytest.mark.parametrize("flip_y", [False, True])
def test_orientation_round_trip(transpose: bool, flip_x: bool, flip_y: bool) -> None:
    volume = np.random.default_rng(0).random((7, 5, 3))
    turn = Orientation(transpose, flip_x, flip_y)
    canonical = turn.to_canonical(volume)
    assert canonical.shape == ((5, 7, 3) if transpose else (7, 5, 3))
    np.testing.assert_array_equal(turn.from_canonical(canonical), volume)


def test_prone_nerve_lands_where_supine_nerve_is() -> None:
    volume = np.zeros((6, 6, 1))
    volume[1, 4, 0] = 1  # patient right (low X... flipped) and anterior in a prone image
    turn = Orientation.from_affine(_affine((-1, 0, 0), (0, -1, 0)))
    assert np.argwhere(turn.to_canonical(volume)[:, :, 0]).tolist() == [[4, 1]]


def test_network_shape_scales_each_axis_to_the_configured_pixel_size() -> None:
    fine = dataclasses.replace(TINY_CASCADE, pixel_mm=0.5)
    affine = np.diag([-0.9, -0.6, 4.0, 1.0])
    assert network_shape(fine, affine, Orientation.from_affine(affine), (40, 30, 5)) == (72, 36)
    # array axes swapped against the patient's: the canonical X is the array's second axis
    swapped = np.array([[0, -0.6, 0, 0], [-0.9, 0, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 1]])
    turn = Orientation.from_affine(swapped)
    assert turn.transpose and network_shape(fine, swapped, turn, (40, 30, 5)) == (48, 54)
    assert network_shape(TINY_CASCADE, affine, Orientation(), (40, 30, 5)) == (40, 30)


def test_resampled_training_masks_keep_the_nerve_area_in_mm2() -> None:
    x, y = np.meshgrid(np.arange(40) * 0.9, np.arange(60) * 0.6, indexing="ij")
    disk = ((x - 18.0) ** 2 + (y - 18.0) ** 2 <= 5.0**2).astype(np.uint8)[:, :, None].repeat(3, axis=2)
    case = TrainingCase(100 + 900 * disk.astype(np.float32), disk, np.diag([-0.9, -0.6, 4.0, 1.0]), "disk")
    dataset = CascadeDataset([case], dataclasses.replace(TINY_CASCADE, pixel_mm=0.5), seed=0)
    volume, mask = dataset.data[0]
    assert volume.shape == (72, 72, 3) and mask.shape == (72, 72, 3) and set(np.unique(mask)) == {0, 1}
    area = mask[:, :, 1].sum() * 0.5 * 0.5
    assert abs(area - np.pi * 25) / (np.pi * 25) < 0.05
    assert np.array_equal(resample_volume(volume, (72, 72)), volume)  # already on the grid: unchanged


def test_pixel_size_is_for_the_cascade_and_older_checkpoints_keep_their_own_pixels() -> None:
    with pytest.raises(ValueError, match="cascade only"):
        dataclasses.replace(SEED, pixel_mm=0.7)
    with pytest.raises(ValueError, match="plausible"):
        dataclasses.replace(TINY_CASCADE, pixel_mm=0.0)
    written_before = config_to_dict(TINY_CASCADE)
    del written_before["pixel_mm"]
    assert config_from_dict(written_before).pixel_mm is None
