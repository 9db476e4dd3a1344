"""Inference: geometry of the output mask, clean-up, device choice and the out-of-memory retry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sciatic.model.configs import CASCADE, SEED, ModelConfig
from sciatic.model.infer import (
    BatchRunner,
    ModelBundle,
    crop_centres,
    drop_stray_components,
    network_probabilities,
    resolve_device,
    segment_volume,
)
from sciatic.model.unet import Cascade, build_model
from tests._model_synthetic import TINY_CASCADE, TINY_SEED

torch.set_num_threads(2)


def _bundle(config: ModelConfig) -> ModelBundle:
    torch.manual_seed(0)
    return ModelBundle(model=build_model(config).eval(), config=config, device=torch.device("cpu"))


@pytest.mark.parametrize("config", [TINY_CASCADE, TINY_SEED], ids=["cascade", "seed"])
@pytest.mark.parametrize("shape", [(40, 36, 8), (37, 29, 7), (9, 50, 1), (64, 20, 11)])
def test_mask_has_the_exact_shape_of_the_volume(config: ModelConfig, shape: tuple[int, int, int]) -> None:
    volume = np.random.default_rng(0).normal(100, 20, shape).astype(np.int16)
    result = segment_volume(_bundle(config), volume, np.eye(4), batch_size=4)
    assert result.mask.shape == shape and result.mask.dtype == np.uint8
    assert set(np.unique(result.mask).tolist()) <= {0, 1}
    assert result.device == "cpu" and result.inference_seconds > 0


def test_bad_inputs_are_refused() -> None:
    bundle = _bundle(TINY_CASCADE)
    with pytest.raises(ValueError, match="3D"):
        segment_volume(bundle, np.zeros((4, 4)), np.eye(4))
    with pytest.raises(ValueError, match="affine"):
        segment_volume(bundle, np.zeros((4, 4, 2)), np.eye(3))


def test_auto_device_is_cpu_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_stray_specks_go_and_every_substantial_component_stays() -> None:
    mask = np.zeros((20, 10, 4), np.uint8)
    mask[1:4, 1:4, :] = 1  # 36 voxels: one leg's nerve
    mask[12:14, 1:4, :] = 1  # 24 voxels: the other leg's (or a branch), two thirds of the first
    mask[7, 7, 1] = 1  # one voxel: a speck
    out = drop_stray_components(mask)
    assert out.sum() == 60 and out[1, 1, 0] == 1 and out[12, 1, 0] == 1 and out[7, 7, 1] == 0
    assert drop_stray_components(np.zeros((3, 3, 3))).sum() == 0


def _centres_by_slice(centres: np.ndarray) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for k, cx, cy in centres.tolist():
        out.setdefault(k, []).append((cx, cy))
    return out


def test_crop_centres_interpolate_missing_slices_and_ignore_small_blobs() -> None:
    prob = np.zeros((5, 10, 12), np.float32)
    for k in (0, 1, 3, 4):
        prob[k, 2 + k, 3:5] = 0.9  # the nerve, drifting in X
    prob[2, 8, 10] = 0.6  # a lone false positive on the slice where the nerve is missed
    centres = crop_centres(prob, 0.5, 4, (40, 48), crop_size=16)
    assert centres[:, 0].tolist() == [0, 1, 2, 3, 4]  # one crop per slice
    expected_x = (np.array([2, 3, 4, 5, 6]) + 0.5) * 4 - 0.5
    np.testing.assert_array_equal(centres[:, 1], np.rint(expected_x))
    assert (centres[:, 2] == 16).all()  # mean Y 3.5 -> (3.5 + 0.5) * 4 - 0.5 = 15.5, rounded to even
    nothing = crop_centres(np.zeros((2, 4, 4), np.float32), 0.5, 2, (8, 8), crop_size=4)
    assert nothing.tolist() == [[0, 4, 4], [1, 4, 4]]


def test_crop_centres_follow_both_legs_and_far_apart_branches() -> None:
    prob = np.zeros((6, 40, 20), np.float32)
    prob[:3, 5:7, 5:7] = 0.9  # the right leg's nerve
    prob[3, 5:10, 5:13] = 0.9  # where it splits
    prob[4:, 3:5, 4:6] = 0.9  # below the split: one branch medial ...
    prob[4:, 9:11, 12:14] = 0.9  # ... and one lateral, far from the region's centroid
    prob[:, 30:32, 5:7] = 0.8  # the left leg's nerve, a separate region
    by_slice = _centres_by_slice(crop_centres(prob, 0.5, 4, (160, 80), crop_size=16))
    assert sorted(by_slice) == list(range(6))
    for k in range(4):
        assert len(by_slice[k]) == 2  # one crop per leg
    for k in (4, 5):
        # the left leg, the right leg's centre and each of its branches
        assert len(by_slice[k]) == 4 and sum(cx > 100 for cx, _ in by_slice[k]) == 1
        assert (16, 20) in by_slice[k] and (40, 52) in by_slice[k]  # (3.5, 4.5) and (9.5, 12.5), coarse


class FakeOOM(nn.Module):
    """Wraps a network and raises CUDA out-of-memory for batches larger than ``limit``."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        out: torch.Tensor = self.inner(x)
        return out


def test_out_of_memory_halves_the_batch_and_gives_the_same_result() -> None:
    volume = np.random.default_rng(3).normal(100, 20, (40, 36, 9)).astype(np.float32)
    reference = _bundle(TINY_CASCADE)
    expected = network_probabilities(
        reference.model, TINY_CASCADE, volume, np.eye(4), BatchRunner(reference.device, 9, False)
    ).volume

    bundle = _bundle(TINY_CASCADE)
    assert isinstance(bundle.model, Cascade)
    fake = FakeOOM(bundle.model.localizer, limit=2)
    bundle.model.localizer = fake  # type: ignore[assignment]
    runner = BatchRunner(bundle.device, 8, False)
    got = network_probabilities(bundle.model, TINY_CASCADE, volume, np.eye(4), runner).volume
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert runner.batch_size == 2
    assert fake.sizes[:3] == [8, 4, 2] and sum(s for s in fake.sizes if s <= 2) == 9

    result = segment_volume(bundle, volume, np.eye(4), batch_size=16)
    assert result.batch_size == 2


def test_out_of_memory_at_batch_one_is_raised() -> None:
    bundle = _bundle(TINY_SEED)
    bundle.model = FakeOOM(bundle.model, limit=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        segment_volume(bundle, np.ones((16, 16, 12), np.float32), np.eye(4), batch_size=4)
    assert bundle.model.sizes == [4, 2, 1]  # type: ignore[union-attr]


def test_runner_empty_cache_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    net: Callable[[torch.Tensor], torch.Tensor] = FakeOOM(nn.Identity(), limit=1)
    out = BatchRunner(torch.device("cpu"), 4, amp=True).run(net, torch.zeros(3, 1, 2, 2))
    assert out.shape == (3, 1, 2, 2) and calls == []


@pytest.mark.parametrize("config", [TINY_CASCADE, TINY_SEED], ids=["cascade", "seed"])
def test_reoriented_volumes_keep_their_geometry(config: ModelConfig) -> None:
    volume = np.random.default_rng(0).normal(100, 20, (30, 44, 5)).astype(np.float32)
    transposing = np.array([[0, -0.7, 0, 0], [-0.7, 0, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 1]])
    result = segment_volume(_bundle(config), volume, transposing, batch_size=4)
    assert result.mask.shape == volume.shape


@pytest.mark.parametrize("config", [CASCADE, pytest.param(SEED, marks=pytest.mark.slow)], ids=["cascade", "seed"])
def test_named_configurations_segment_a_full_size_volume(config: ModelConfig) -> None:
    volume = np.random.default_rng(0).normal(300, 50, (256, 224, 12)).astype(np.float32)
    affine = np.diag([-0.7, -0.7, 4.0, 1.0])
    result = segment_volume(_bundle(config), volume, affine)
    assert result.mask.shape == volume.shape
    assert result.batch_size == config.infer_batch_size


def test_a_cpu_model_runs_in_channels_last_order_with_the_same_masks(tmp_path: Path) -> None:
    from sciatic.imaging.volume import read_volume
    from sciatic.model.demo_model import phantom_cases
    from sciatic.model.infer import load_model
    from sciatic.model.shipped import SHIPPED_MODEL

    fast = load_model(SHIPPED_MODEL, None, "cpu", cpu_runtime="torch")
    assert fast.channels_last and fast.onnx is None
    weights = next(p for p in fast.model.parameters() if p.ndim == 4)
    assert weights.is_contiguous(memory_format=torch.channels_last)
    eager = load_model(SHIPPED_MODEL, None, "cpu", cpu_runtime="torch")
    eager.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    eager.channels_last = False
    volume = read_volume(phantom_cases(tmp_path, 1, 103)[0].volume)
    a = segment_volume(eager, volume.data, volume.affine).mask
    b = segment_volume(fast, volume.data, volume.affine).mask
    assert a.sum() > 100  # a nerve was found: the comparison means something
    assert 2 * int((a & b).sum()) / int(a.sum() + b.sum()) >= 0.999


def test_onnx_runtime_runs_the_shipped_model_on_the_cpu_with_the_same_masks(tmp_path: Path) -> None:
    """The default CPU runtime: ONNX Runtime, probabilities within 1e-4 of PyTorch's and the same masks."""
    from sciatic.imaging.volume import read_volume
    from sciatic.model.demo_model import phantom_cases
    from sciatic.model.infer import load_model
    from sciatic.model.shipped import SHIPPED_MODEL

    onnx = load_model(SHIPPED_MODEL, None, "cpu")
    assert onnx.onnx is not None
    torch_bundle = load_model(SHIPPED_MODEL, None, "cpu", cpu_runtime="torch")
    volume = read_volume(phantom_cases(tmp_path, 1, 104)[0].volume)
    config = onnx.config
    p_onnx, p_torch = (
        network_probabilities(
            b.model, config, volume.data, volume.affine, BatchRunner(b.device, 8, False, b.channels_last, b.onnx)
        ).volume
        for b in (onnx, torch_bundle)
    )
    assert np.abs(p_onnx - p_torch).max() < 1e-4
    a = segment_volume(torch_bundle, volume.data, volume.affine).mask
    b = segment_volume(onnx, volume.data, volume.affine).mask
    assert a.sum() > 100
    assert 2 * int((a & b).sum()) / int(a.sum() + b.sum()) >= 0.999
    assert load_model(SHIPPED_MODEL, None, "cuda" if torch.cuda.is_available() else "cpu", "torch").onnx is None


@pytest.mark.parametrize("config", [TINY_CASCADE, TINY_SEED], ids=["cascade", "seed"])
def test_onnx_runtime_exports_once_per_input_shape_and_follows_pytorch(config: ModelConfig) -> None:
    """Odd and even matrices, one after the other: each shape gets its own export, each result matches PyTorch."""
    from sciatic.model.onnx_cpu import OnnxRuntime

    bundle = _bundle(config)
    runtime = OnnxRuntime()
    for shape in [(40, 36, 8), (37, 29, 7), (40, 36, 3)]:
        volume = np.random.default_rng(1).normal(100, 20, shape).astype(np.int16)
        expected = network_probabilities(
            bundle.model, config, volume, np.eye(4), BatchRunner(bundle.device, 4, False)
        ).volume
        got = network_probabilities(
            bundle.model, config, volume, np.eye(4), BatchRunner(bundle.device, 4, False, onnx=runtime)
        ).volume
        assert got.shape == shape
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # cascade: the localiser sees two matrices, the segmenter one crop size; seed: fixed montages
    assert len(runtime._sessions) == (3 if config.mode == "cascade" else 1)


class _Threshold(nn.Module):
    """A stand-in network: logits that say "nerve" wherever the middle input channel is bright."""

    def __init__(self, seen: list[tuple[int, ...]]) -> None:
        super().__init__()
        self.seen = seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[-2:]))
        return 40.0 * (x[:, 1:2] - 0.5)


def test_a_fixed_pixel_size_runs_the_networks_on_that_grid_and_returns_the_volumes() -> None:
    config = dataclasses.replace(TINY_CASCADE, pixel_mm=0.5, crop_size=32)
    model = build_model(config)
    assert isinstance(model, Cascade)
    localizer_saw: list[tuple[int, ...]] = []
    model.localizer, model.segmenter = _Threshold(localizer_saw), _Threshold([])
    bundle = ModelBundle(model=model.eval(), config=config, device=torch.device("cpu"))
    # a 5 mm nerve on 0.9 x 0.6 mm pixels
    x, y = np.meshgrid(np.arange(40) * 0.9, np.arange(50) * 0.6, indexing="ij")
    disk = (x - 17.0) ** 2 + (y - 14.0) ** 2 <= 5.0**2
    volume = np.where(disk, 1000.0, 100.0)[:, :, None].repeat(4, axis=2).astype(np.float32)
    result = segment_volume(bundle, volume, np.diag([-0.9, -0.6, 4.0, 1.0]), batch_size=4, drop_stray=False)
    assert result.mask.shape == volume.shape
    assert localizer_saw[0] == (72 // config.localizer_factor, 60 // config.localizer_factor)
    area = result.mask[:, :, 2].sum() * 0.9 * 0.6
    assert abs(area - np.pi * 25) / (np.pi * 25) < 0.08
    assert (result.mask[:, :, 2].astype(bool) == disk).mean() > 0.99
