"""Montage pictures: every montage of a volume stacked in one PNG, with optional ROI overlays.

One PNG pixel per montage pixel (no resampling), montages from top to bottom, so
the picture shows exactly what the network sees. Colours follow the seed's
figure: the predicted ROI is filled in translucent blue, a manual ROI is drawn
as an opaque red outline (so both stay visible where they overlap). Written
with matplotlib's image writer, which needs no GUI backend.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.imaging.montage import MontageLayout, montage
from sciatic.imaging.normalize import normalize
from sciatic.imaging.volume import read_volume

MASK_COLOUR = (0.15, 0.4, 1.0)  # blue, as the seed showed predicted ROIs
MASK_OPACITY = 0.5
LABEL_COLOUR = (1.0, 0.1, 0.1)  # red, as the seed showed manual ROIs
OUTLINE_COLOUR = (1.0, 0.85, 0.0)  # yellow: the nerve outline burnt into pictures for the PACS
AFFINE_TOLERANCE_MM = 1e-3
# 4-neighbour cross in the slice plane only: outlines never join adjacent slices
_IN_PLANE_CROSS = ndimage.generate_binary_structure(2, 1)[:, :, None]
# the same cross on montages seen as (montage, row, tile, column): outlines never join adjacent tiles
_TILE_CROSS = ndimage.generate_binary_structure(2, 1)[None, :, None, :]


def tint(
    rgb: NDArray[np.float32], inside: NDArray[np.bool_], colour: tuple[float, float, float], opacity: float
) -> NDArray[np.float32]:
    """``rgb`` (..., 3) with the pixels ``inside`` blended towards ``colour`` (a new array)."""
    out = rgb.copy()
    out[inside] = (1 - opacity) * out[inside] + opacity * np.asarray(colour, np.float32)
    return out


def outline(mask: NDArray[np.generic]) -> NDArray[np.bool_]:
    """Pixels of a 3D mask (X, Y, Z) with a 4-neighbour outside it in their own slice."""
    inside = np.asarray(mask) != 0
    eroded = ndimage.binary_erosion(inside, structure=_IN_PLANE_CROSS, border_value=0)
    return np.asarray(inside & ~eroded, dtype=np.bool_)


def montage_picture(
    volume: NDArray[np.generic],
    mask: NDArray[np.generic] | None = None,
    label: NDArray[np.generic] | None = None,
) -> NDArray[np.float32]:
    """RGB picture (montages * 256, 1280, 3) in [0, 1] of the normalised volume.

    ``mask`` (the prediction) is filled in blue, ``label`` (a manual ROI) outlined in red.
    """
    layout = MontageLayout.for_shape(volume.shape)
    grey = montage(normalize(volume), layout)
    grey = grey.reshape(-1, grey.shape[-1])
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    for overlay, name in ((mask, "mask"), (label, "label")):
        if overlay is not None and overlay.shape != volume.shape:
            raise ValueError(f"{name} shape {overlay.shape} differs from volume shape {volume.shape}")
    if mask is not None:
        rgb = tint(rgb, montage(np.asarray(mask) != 0, layout).reshape(grey.shape), MASK_COLOUR, MASK_OPACITY)
    if label is not None:
        rgb = tint(rgb, montage(outline(label), layout).reshape(grey.shape), LABEL_COLOUR, 1.0)
    return rgb


def outline_picture(
    volume: NDArray[np.generic], mask: NDArray[np.generic], colour: tuple[float, float, float] = OUTLINE_COLOUR
) -> NDArray[np.float32]:
    """:func:`montage_picture` of ``volume`` with the outline of ``mask`` burnt in (opaque ``colour``).

    The outline is traced on the montage, one montage pixel wide inside each
    tile, so it stays closed where a large matrix is scaled down to the tile.
    """
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} differs from volume shape {volume.shape}")
    layout = MontageLayout.for_shape(volume.shape)
    rgb = montage_picture(volume)
    inside = montage(np.asarray(mask) != 0, layout)
    tiles = inside.reshape(layout.montages, layout.tile, layout.slices_per_montage, layout.tile)
    edge = tiles & ~ndimage.binary_erosion(tiles, structure=_TILE_CROSS, border_value=0)
    return tint(rgb, edge.reshape(rgb.shape[:2]), colour, 1.0)


def save_montage_png(path: Path | str, volume: NDArray[np.generic], mask: NDArray[np.generic] | None = None) -> Path:
    """Write :func:`montage_picture` of ``volume`` (and ``mask``) to ``path`` as PNG."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(out, montage_picture(volume, mask), format="png")
    return out


def render_montage_file(volume_path: Path | str, out_png: Path | str, mask_path: Path | str | None = None) -> Path:
    """Load a NIfTI volume (and mask), check they share a grid, and write the montage PNG.

    Raises ``InputRefusedError(GEOMETRY_MISMATCH)`` when the mask's shape or affine
    differs from the volume's.
    """
    image = read_volume(volume_path)
    volume = image.data
    if volume.ndim != 3:
        raise InputRefusedError(ReasonCode.MULTI_VOLUME, f"{volume_path} is {volume.ndim}D, a 3D volume is needed")
    mask = None
    if mask_path is not None:
        mask_image = read_volume(mask_path)
        mask = mask_image.data
        if mask.shape != volume.shape or not np.allclose(mask_image.affine, image.affine, atol=AFFINE_TOLERANCE_MM):
            raise InputRefusedError(
                ReasonCode.GEOMETRY_MISMATCH,
                f"mask {mask_path} (shape {mask.shape}) does not share the grid of {volume_path} "
                f"(shape {volume.shape})",
            )
    return save_montage_png(out_png, volume, mask)
