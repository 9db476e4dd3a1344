"""Per-volume intensity normalisation with robust percentiles.

MR intensities have no absolute scale: they depend on the coil, the receiver gain
and the rescale slope. Each volume is therefore mapped linearly so that its
``low`` percentile becomes 0 and its ``high`` percentile 1, then clipped to
[0, 1]. The percentiles are taken over all finite voxels; the thigh fills a large
part of the field of view, so the 1st percentile lies in the background noise
and the 99.5th in subcutaneous fat, which makes the mapping insensitive to a few
hot pixels and to how much air surrounds the leg. Non-finite voxels become 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.5
# Percentiles are estimated on at most this many voxels (a fixed stride, so deterministic).
SAMPLE_LIMIT = 1_000_000
# Integer volumes whose values span at most this many steps get their percentiles by counting (10x faster).
COUNTING_RANGE = 1 << 20


@dataclass(frozen=True)
class IntensityWindow:
    """The intensities mapped to 0 and 1."""

    low: float
    high: float

    def apply(self, volume: NDArray[np.generic]) -> NDArray[np.float32]:
        """Map ``volume`` linearly to [0, 1] (clipped); a flat window gives zeros."""
        data = np.asarray(volume, np.float32)
        span = self.high - self.low
        if not np.isfinite(span) or span <= 0:
            return np.zeros(data.shape, np.float32)
        out = (data - np.float32(self.low)) * np.float32(1.0 / span)
        out[~np.isfinite(out)] = 0.0
        np.clip(out, 0.0, 1.0, out=out)
        return out


def robust_window(
    volume: NDArray[np.generic], low: float = LOW_PERCENTILE, high: float = HIGH_PERCENTILE
) -> IntensityWindow:
    """Percentiles ``low`` and ``high`` of the finite voxels of ``volume``."""
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"need 0 <= low < high <= 100, got {low}, {high}")
    flat = np.asarray(volume).ravel()
    flat = flat[:: max(1, flat.size // SAMPLE_LIMIT)]
    if flat.dtype.kind in "iu" and flat.size and int(flat.max()) - int(flat.min()) <= COUNTING_RANGE:
        lo, hi = (_integer_percentile(flat, q) for q in (low, high))
        return IntensityWindow(lo, hi)
    flat = flat.astype(np.float64)
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return IntensityWindow(0.0, 0.0)
    lo, hi = np.percentile(flat, [low, high])
    return IntensityWindow(float(lo), float(hi))


def _integer_percentile(values: NDArray[np.integer], q: float) -> float:
    """``np.percentile(values, q)`` (linear method, same rounding) of integers, by counting instead of sorting."""
    smallest = int(values.min())
    ranks = np.cumsum(np.bincount((values.astype(np.int64) - smallest).ravel()))
    position = (values.size - 1) * (q / 100.0)
    below = int(np.floor(position))
    a = float(np.searchsorted(ranks, below, side="right") + smallest)  # the value at sorted index ``below``
    b = float(np.searchsorted(ranks, min(below + 1, values.size - 1), side="right") + smallest)
    t = position - below
    return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t  # numpy's lerp, for identical results


def normalize(
    volume: NDArray[np.generic], low: float = LOW_PERCENTILE, high: float = HIGH_PERCENTILE
) -> NDArray[np.float32]:
    """``volume`` as float32 in [0, 1] by its robust percentile window."""
    return robust_window(volume, low, high).apply(volume)
