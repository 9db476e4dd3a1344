"""The seed's montage: a (X, Y, Z) volume as ceil(Z/5) images of 5 slices side by side.

Each slice ``volume[:, :, k]`` is shown as an image of rows x columns, that is
``volume[:, :, k].T`` (docs/conventions.md array order), in a 256 x 256 tile; five
contiguous tiles make one 256 x 1280 montage. A 256 x 256 x 40 volume gives 8
montages, as in the seed.

In-plane rule (exactly invertible back to the source grid):

1. If the larger in-plane side exceeds 256, both sides are scaled by the same
   factor so that it becomes 256 (aspect ratio kept to the nearest pixel), by
   nearest-neighbour index mapping: every montage pixel is a copy of one source
   pixel, so images and masks stay aligned pixel for pixel and dtypes are kept.
   Smaller matrices are never enlarged.
2. The (scaled) slice is centred in the tile and padded with zeros.
3. Slices are appended (zeros) until Z is a multiple of 5.

:func:`unmontage` drops the padding and maps every source pixel to the montage
pixel nearest to its centre. For in-plane sizes up to 256 the round trip
``unmontage(montage(v))`` returns ``v`` exactly; for larger sizes the reverse
trip ``montage(unmontage(m))`` returns ``m`` exactly inside the tile content, so a
prediction made on the montage comes back to the source grid unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

TILE = 256
SLICES_PER_MONTAGE = 5

ScalarT = TypeVar("ScalarT", bound=np.generic)


@dataclass(frozen=True)
class MontageLayout:
    """How a volume of ``source_shape`` maps to montages, and back."""

    source_shape: tuple[int, int, int]  # (X, Y, Z) = (columns, rows, slices)
    scaled_shape: tuple[int, int]  # (X', Y') of each slice inside its tile
    tile: int = TILE
    slices_per_montage: int = SLICES_PER_MONTAGE

    @classmethod
    def for_shape(
        cls, shape: tuple[int, ...], tile: int = TILE, slices_per_montage: int = SLICES_PER_MONTAGE
    ) -> MontageLayout:
        """Layout for a volume of ``shape`` (X, Y, Z)."""
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"expected a non-empty 3D shape (X, Y, Z), got {shape}")
        x, y, z = (int(n) for n in shape)
        factor = min(1.0, tile / max(x, y))
        scaled = (min(tile, max(1, round(x * factor))), min(tile, max(1, round(y * factor))))
        return cls((x, y, z), scaled, tile, slices_per_montage)

    @property
    def montages(self) -> int:
        """Number of montages, ceil(Z / slices_per_montage)."""
        return math.ceil(self.source_shape[2] / self.slices_per_montage)

    @property
    def padded_slices(self) -> int:
        return self.montages * self.slices_per_montage

    @property
    def montage_shape(self) -> tuple[int, int, int]:
        """Shape of the montage stack: (montages, tile, tile * slices_per_montage)."""
        return self.montages, self.tile, self.tile * self.slices_per_montage

    @property
    def offset(self) -> tuple[int, int]:
        """(x, y) position of the slice content inside its tile (centred)."""
        return (self.tile - self.scaled_shape[0]) // 2, (self.tile - self.scaled_shape[1]) // 2

    @property
    def is_lossless(self) -> bool:
        """True when no scaling is needed, so the round trip returns the volume exactly."""
        return self.scaled_shape == self.source_shape[:2]

    def locate(self, k: int) -> tuple[int, slice, slice]:
        """Montage index and (rows, columns) slices of the content of source slice ``k``."""
        if not 0 <= k < self.source_shape[2]:
            raise IndexError(f"slice {k} outside 0..{self.source_shape[2] - 1}")
        m, position = divmod(k, self.slices_per_montage)
        ox, oy = self.offset
        left = position * self.tile + ox
        return m, slice(oy, oy + self.scaled_shape[1]), slice(left, left + self.scaled_shape[0])


def _forward_index(source: int, scaled: int) -> NDArray[np.intp]:
    """Source index sampled by each scaled pixel (nearest to its centre)."""
    return np.floor((np.arange(scaled) + 0.5) * source / scaled).astype(np.intp)


def _inverse_index(source: int, scaled: int) -> NDArray[np.intp]:
    """Scaled pixel that contains the centre of each source pixel."""
    return np.floor((np.arange(source) + 0.5) * scaled / source).astype(np.intp)


def montage(volume: NDArray[ScalarT], layout: MontageLayout | None = None) -> NDArray[ScalarT]:
    """Arrange ``volume`` (X, Y, Z) as montages shaped (ceil(Z/5), 256, 1280), same dtype."""
    layout = layout or MontageLayout.for_shape(volume.shape)
    if volume.shape != layout.source_shape:
        raise ValueError(f"volume shape {volume.shape} does not match layout {layout.source_shape}")
    x, y, z = layout.source_shape
    sx, sy = layout.scaled_shape
    scaled = volume[np.ix_(_forward_index(x, sx), _forward_index(y, sy))]  # (X', Y', Z)
    ox, oy = layout.offset
    tiles = np.zeros((layout.padded_slices, layout.tile, layout.tile), volume.dtype)
    tiles[:z, oy : oy + sy, ox : ox + sx] = scaled.transpose(2, 1, 0)  # each tile is volume[:, :, k].T
    n, per = layout.montages, layout.slices_per_montage
    stack = tiles.reshape(n, per, layout.tile, layout.tile).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(stack.reshape(layout.montage_shape))


def unmontage(montages: NDArray[ScalarT], layout: MontageLayout) -> NDArray[ScalarT]:
    """Inverse of :func:`montage`: back to the source grid (X, Y, Z), same dtype as ``montages``."""
    if montages.shape != layout.montage_shape:
        raise ValueError(f"montage shape {montages.shape} does not match layout {layout.montage_shape}")
    x, y, z = layout.source_shape
    sx, sy = layout.scaled_shape
    n, per, tile = layout.montages, layout.slices_per_montage, layout.tile
    tiles = montages.reshape(n, tile, per, tile).transpose(0, 2, 1, 3).reshape(n * per, tile, tile)
    ox, oy = layout.offset
    content = tiles[:z, oy : oy + sy, ox : ox + sx].transpose(2, 1, 0)  # (X', Y', Z)
    return np.ascontiguousarray(content[np.ix_(_inverse_index(x, sx), _inverse_index(y, sy))])
