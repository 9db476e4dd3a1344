"""Render a whole stack of slices of a v2 body: signal and the nerve's partial-volume fraction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sciatic.phantom.v2.contrast import Levels
from sciatic.phantom.v2.paint import Body, Textures, paint_slice
from sciatic.phantom.v2.plan import Side
from sciatic.phantom.v2.planes import Stack
from sciatic.phantom.v2.profiles import F32

TEXTURE_MM = (1.5, 1.2, 4.0)  # correlation lengths of the grain, the fat streaks and the fat's strands
TEXTURE_TURN_MM = 12.0  # along the slice normal, the texture turns over within about this distance


@dataclass(frozen=True)
class Sampling:
    """How finely a stack is sampled: per pixel side, and through the slice thickness."""

    factor: int
    depth_samples: int


@dataclass(frozen=True)
class Rendered:
    """Noise-free signal and per-thigh nerve fraction, shaped (slices, rows, columns) in acquisition order."""

    signal: F32
    nerve: dict[Side, F32]


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]) -> F32:
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    std = float(field.std())
    return np.asarray(field / std if std > 0 else field, np.float32)


def render_stack(rng: np.random.Generator, body: Body, levels: Levels, stack: Stack, sampling: Sampling) -> Rendered:
    """Paint every slice of ``stack``; image-grid textures turn smoothly from slice to slice."""
    shape = (stack.rows, stack.columns)
    # Muscle fibres run along the limb: texture is longer along an image axis that follows z.
    stretch = (1 + 3 * abs(stack.column_direction[2]), 1 + 3 * abs(stack.row_direction[2]))
    sigma = [(mm * stretch[0] / stack.row_spacing, mm * stretch[1] / stack.column_spacing) for mm in TEXTURE_MM]
    bases = [[_unit_noise(rng, shape, s) for _ in range(2)] for s in sigma]
    signal = np.empty((stack.slices, *shape), np.float32)
    nerve = {leg.side: np.zeros((stack.slices, *shape), np.float32) for leg in body.legs}
    for k in range(stack.slices):
        phase = stack.offset_along_normal(k) / TEXTURE_TURN_MM
        grain, streaks, strands = (np.float32(np.cos(phase)) * a + np.float32(np.sin(phase)) * b for a, b in bases)
        painted = paint_slice(
            body,
            levels,
            stack.pixel_plane(k),
            stack.sample_plane(k, sampling.factor, 0.0),
            stack.sample_planes(k, sampling.factor, sampling.depth_samples),
            sampling.factor,
            Textures(*(np.asarray(t, np.float32) for t in (grain, streaks, strands))),
        )
        signal[k] = painted.signal
        for side, fraction in painted.nerve.items():
            nerve[side][k] = fraction
    return Rendered(signal, nerve)
