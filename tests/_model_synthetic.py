"""Tiny synthetic volumes for the model tests: a bright tube drifting through noisy slices."""

from __future__ import annotations

import dataclasses

import numpy as np

from sciatic.model.configs import CASCADE, SEED, AugmentConfig, ModelConfig, UNetConfig
from sciatic.model.data import TrainingCase


def blob_subject(seed: int, shape: tuple[int, int, int] = (40, 36, 8), radius: float = 3.5) -> TrainingCase:
    """A noisy ``(X, Y, Z)`` volume with a disc per slice whose centre drifts along Z; its 0/1 mask."""
    rng = np.random.default_rng(seed)
    x, y, z = shape
    xx, yy = np.meshgrid(np.arange(x), np.arange(y), indexing="ij")
    start = rng.uniform([radius + 6, radius + 6], [x - radius - 6, y - radius - 6])
    drift = rng.uniform(-0.6, 0.6, size=2)
    volume = np.empty(shape, np.float32)
    mask = np.zeros(shape, np.uint8)
    body = ((xx - x / 2) / (0.45 * x)) ** 2 + ((yy - y / 2) / (0.45 * y)) ** 2 < 1
    for k in range(z):
        cx, cy = start + drift * k
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        mask[:, :, k] = disc
        volume[:, :, k] = 20 + 40 * body + 50 * disc
    volume += rng.normal(0, 8, size=shape).astype(np.float32)
    affine = np.diag([-0.8, -0.8, 4.0, 1.0])
    return TrainingCase(volume * rng.uniform(0.5, 2.0), mask, affine, f"blob{seed}")


TINY_CASCADE: ModelConfig = dataclasses.replace(
    CASCADE,
    name="tiny-cascade",
    net=UNetConfig(in_channels=3, width=8, depth=2, norm="batch", bilinear=True),
    localizer=UNetConfig(in_channels=3, width=4, depth=2, norm="batch", bilinear=True),
    localizer_factor=2,
    crop_size=16,
    pixel_mm=None,  # the blobs keep their 0.8 mm pixels (tests of pixel_mm set it)
    crop_jitter=2,
    batch_size=8,
    lr=1e-2,
    samples_per_subject=0,
    augment=AugmentConfig(rotate_deg=5.0, scale=0.05, bias=0.1, noise_std=0.02),
    infer_batch_size=8,
)

TINY_SEED: ModelConfig = dataclasses.replace(
    SEED,
    name="tiny-seed",
    net=UNetConfig(in_channels=1, width=4, depth=2, norm="none", bilinear=False),
    montage_slices=3,
    montage_tile=64,
)
