"""The seed's 5-slice montages, their exact inverse, intensity normalisation and montage pictures."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.imaging.montage import MontageLayout, montage, unmontage
from sciatic.imaging.normalize import IntensityWindow, normalize, robust_window
from sciatic.imaging.picture import MASK_COLOUR, montage_picture, render_montage_file, save_montage_png
from sciatic.imaging.volume import Volume, write_volume

DTYPES = [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64, np.bool_]


def _volume(shape: tuple[int, int, int], dtype: type[np.generic], seed: int) -> NDArray[np.generic]:
    rng = np.random.default_rng(seed)
    if dtype is np.bool_:
        return rng.random(shape) < 0.3
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)  # type: ignore[type-var]
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 1000).astype(dtype)


def test_seed_volume_gives_eight_montages_of_five_slices() -> None:
    volume = _volume((256, 256, 40), np.int16, 0)
    layout = MontageLayout.for_shape(volume.shape)
    stack = montage(volume, layout)
    assert stack.shape == (8, 256, 1280) and stack.dtype == np.int16
    assert layout.is_lossless and layout.montages == 8
    for k in (0, 4, 5, 23, 39):
        m, q = divmod(k, 5)
        np.testing.assert_array_equal(stack[m, :, q * 256 : (q + 1) * 256], volume[:, :, k].T)
        index, rows, cols = layout.locate(k)
        assert index == m
        np.testing.assert_array_equal(stack[index, rows, cols], volume[:, :, k].T)
    np.testing.assert_array_equal(unmontage(stack, layout), volume)


def test_small_and_odd_volumes_are_padded_and_the_padding_dropped() -> None:
    volume = _volume((224, 200, 7), np.float32, 1)
    layout = MontageLayout.for_shape(volume.shape)
    stack = montage(volume, layout)
    assert stack.shape == (2, 256, 1280)
    assert layout.offset == (16, 28)
    _, rows, cols = layout.locate(6)
    np.testing.assert_array_equal(stack[1, rows, cols], volume[:, :, 6].T)
    assert not stack[1, :, 2 * 256 :].any()  # slices 7..9 are padding
    assert not stack[0, :28].any() and not stack[0, :, :16].any()
    np.testing.assert_array_equal(unmontage(stack, layout), volume)


@settings(max_examples=60, deadline=None)
@given(
    x=st.integers(1, 256),
    y=st.integers(1, 256),
    z=st.integers(1, 17),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_exact_up_to_256(x: int, y: int, z: int, dtype: type[np.generic], seed: int) -> None:
    volume = _volume((x, y, z), dtype, seed)
    layout = MontageLayout.for_shape(volume.shape)
    stack = montage(volume, layout)
    assert stack.shape == (-(-z // 5), 256, 1280) and stack.dtype == volume.dtype
    back = unmontage(stack, layout)
    assert back.dtype == volume.dtype
    np.testing.assert_array_equal(back, volume)


@settings(max_examples=30, deadline=None)
@given(
    x=st.integers(1, 640),
    y=st.integers(257, 640),
    z=st.integers(1, 11),
    transpose=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_larger_matrices_come_back_to_the_source_grid(
    x: int, y: int, z: int, transpose: bool, dtype: type[np.generic], seed: int
) -> None:
    """Scaled down to fit: a montage (e.g. a prediction) maps to the source grid and back unchanged."""
    shape = (y, x, z) if transpose else (x, y, z)
    layout = MontageLayout.for_shape(shape)
    assert max(layout.scaled_shape) == 256 and not layout.is_lossless
    stack = montage(_volume(shape, dtype, seed), layout)
    back = unmontage(stack, layout)
    assert back.shape == shape and back.dtype == stack.dtype
    np.testing.assert_array_equal(montage(back, layout), stack)


@settings(max_examples=40, deadline=None)
@given(x=st.integers(1, 400), y=st.integers(1, 400), z=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_mask_montaged_with_its_volume_stays_aligned(x: int, y: int, z: int, seed: int) -> None:
    volume = _volume((x, y, z), np.float32, seed)
    mask = (volume > 300).astype(np.uint8)
    layout = MontageLayout.for_shape(volume.shape)
    image_stack, mask_stack = montage(volume, layout), montage(mask, layout)
    content = np.zeros(image_stack.shape, bool)
    for k in range(z):
        m, rows, cols = layout.locate(k)
        content[m, rows, cols] = True
    np.testing.assert_array_equal(mask_stack.astype(bool), (image_stack > 300) & content)
    np.testing.assert_array_equal(unmontage(mask_stack, layout), (unmontage(image_stack, layout) > 300))


def test_layout_mismatch_is_refused() -> None:
    layout = MontageLayout.for_shape((256, 256, 10))
    with pytest.raises(ValueError):
        montage(np.zeros((256, 256, 11)), layout)
    with pytest.raises(ValueError):
        unmontage(np.zeros((3, 256, 1280)), layout)
    with pytest.raises(ValueError):
        MontageLayout.for_shape((256, 256))


def test_normalize_maps_robust_percentiles_to_unit_range() -> None:
    rng = np.random.default_rng(3)
    volume = rng.gamma(2.0, 300.0, (64, 64, 8)).astype(np.float32)
    volume[0, 0, 0] = 1e9  # a hot pixel does not set the scale
    out = normalize(volume)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    window = robust_window(volume)
    assert window.low == pytest.approx(np.percentile(volume, 1.0), rel=1e-6)
    assert 0.9 < float(np.mean(out < 1.0) * 100) / 99.5 <= 1.01
    np.testing.assert_allclose(normalize(volume * 7.5 + 100), out, atol=1e-5)  # scanner scale does not matter


@settings(max_examples=300, deadline=None)
@given(
    dtype=st.sampled_from([np.uint8, np.int16, np.uint16, np.int32]),
    size=st.integers(1, 3000),
    spread=st.integers(0, 5000),
    quantiles=st.tuples(st.floats(0, 100), st.floats(0, 100)).map(sorted),
    seed=st.integers(0, 2**16),
)
def test_integer_volumes_get_exactly_numpys_percentiles(
    dtype: type[np.generic], size: int, spread: int, quantiles: list[float], seed: int
) -> None:
    """Integer volumes take their window by counting: the very numbers np.percentile gives, to the last bit."""
    info = np.iinfo(dtype)  # type: ignore[type-var]
    low = max(int(info.min), -2000)
    values = np.random.default_rng(seed).integers(low, min(low + spread, int(info.max)), size, endpoint=True)
    volume = values.astype(dtype).reshape(size, 1, 1)
    q_low, q_high = quantiles
    assume(q_low < q_high)
    window = robust_window(volume, q_low, q_high)
    assert (window.low, window.high) == tuple(np.percentile(volume.astype(np.float64), [q_low, q_high]))


def test_normalize_handles_flat_and_non_finite_volumes() -> None:
    assert not normalize(np.full((4, 4, 2), 5.0)).any()
    volume = np.arange(32, dtype=np.float64).reshape(4, 4, 2)
    volume[1, 1, 1] = np.nan
    out = normalize(volume)
    assert np.isfinite(out).all() and out[1, 1, 1] == 0.0
    assert not IntensityWindow(1.0, 1.0).apply(volume).any()
    with pytest.raises(ValueError):
        robust_window(volume, 50, 10)


def test_picture_shows_the_mask_in_blue(tmp_path: Path) -> None:
    volume = np.zeros((256, 256, 7), np.int16)
    volume[100:140, 60:80, :] = 1000
    mask = np.zeros(volume.shape, np.uint8)
    mask[110:120, 65:70, 6] = 1
    rgb = montage_picture(volume, mask)
    assert rgb.shape == (2 * 256, 1280, 3)
    # slice 6 is the second tile of the second montage; pixel (row j, column i) = volume[i, j]
    blue = rgb[256 + 67, 256 + 115]
    assert blue[2] > blue[0] and blue[2] == pytest.approx(0.5 + 0.5 * MASK_COLOUR[2])
    grey = rgb[256 + 67, 115]  # same place in slice 5, no mask
    assert grey[0] == grey[1] == grey[2] == 1.0
    path = save_montage_png(tmp_path / "m.png", volume, mask)
    assert matplotlib.image.imread(path).shape[:2] == (512, 1280)


def test_render_montage_file_checks_the_mask_grid(tmp_path: Path) -> None:
    affine = np.diag([-0.7, -0.7, 4.0, 1.0])
    volume = np.zeros((64, 48, 6), np.int16)
    write_volume(Volume(volume, affine), tmp_path / "v.nii.gz")
    write_volume(Volume(np.zeros(volume.shape, np.uint8), affine), tmp_path / "m.nii.gz")
    shifted = affine.copy()
    shifted[0, 3] = 5.0
    write_volume(Volume(np.zeros(volume.shape, np.uint8), shifted), tmp_path / "bad.nii.gz")
    out = render_montage_file(tmp_path / "v.nii.gz", tmp_path / "out.png", tmp_path / "m.nii.gz")
    assert matplotlib.image.imread(out).shape[:2] == (256 * 2, 1280)
    with pytest.raises(InputRefusedError) as refused:
        render_montage_file(tmp_path / "v.nii.gz", tmp_path / "out2.png", tmp_path / "bad.nii.gz")
    assert refused.value.reason is ReasonCode.GEOMETRY_MISMATCH
