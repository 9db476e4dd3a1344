"""Size limits of one series, checked from the headers before any pixel is decoded.

A thigh MR series is a few hundred images of at most 1024x1024; these limits
are far above that and far below what would exhaust a worker's memory, so a
file that declares an absurd matrix or frame count (a decompression bomb: a
few KB of JPEG declaring 16384x16384) is refused with a reason instead of being
decoded. Free of numpy so that the settings can take their defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SeriesLimits"]


@dataclass(frozen=True, slots=True)
class SeriesLimits:
    """The largest series that is converted (``SCIATIC_MAX_IMAGE_MATRIX``, ``_SERIES_SLICES``, ``_SERIES_VOXELS``)."""

    max_matrix: int = 2048  # rows and columns of one image
    max_slices: int = 4096  # frames (slices) of one series
    max_voxels: int = 1 << 28  # rows x columns x slices: 268 M voxels, 1 GiB as float32

    def __post_init__(self) -> None:
        if min(self.max_matrix, self.max_slices, self.max_voxels) < 1:
            raise ValueError("series limits must be positive")
