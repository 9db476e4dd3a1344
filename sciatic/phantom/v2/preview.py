"""Pictures of a written PD series with its ground truth outlined: a quick look at generated data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.image
import numpy as np
import pydicom
from numpy.typing import NDArray

from sciatic.imaging.picture import outline
from sciatic.imaging.volume import read_volume

OUTLINE_RGB = (1.0, 0.15, 0.1)


def read_series(directory: Path) -> NDArray[np.float32]:
    """A single-orientation series as (columns, rows, slices), slices sorted along the normal (conventions.md)."""
    slices = [pydicom.dcmread(path) for path in sorted(directory.glob("*.dcm"))]
    r, c = np.reshape(np.array(slices[0].ImageOrientationPatient, float), (2, 3))
    normal = np.cross(r, c)
    slices.sort(key=lambda ds: float(normal @ np.array(ds.ImagePositionPatient, float)))
    stack = np.stack([ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) for ds in slices], -1)
    return np.asarray(stack.transpose(1, 0, 2), np.float32)


def _crop(volume: NDArray[np.float32], slices: Sequence[int], top: float) -> tuple[slice, slice]:
    """Rows and columns around the body in ``slices``, with a small margin."""
    threshold = 0.12 * top
    body = np.any([volume[:, :, k] > threshold for k in slices], axis=0).T

    rows, cols = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    if rows.size == 0:
        return slice(None), slice(None)
    margin = 8
    return slice(max(0, rows[0] - margin), rows[-1] + margin + 1), slice(
        max(0, cols[0] - margin), cols[-1] + margin + 1
    )


def slice_pictures(
    volume: NDArray[np.float32], truth: NDArray[np.generic] | None, slices: Sequence[int]
) -> NDArray[np.float32]:
    """RGB tiles side by side, cropped to the body: each slice plain, then (with ``truth``) outlined."""
    top = float(np.percentile(volume, 99.5)) or 1.0
    window = _crop(volume, slices, top)
    tiles = []
    edge = outline(truth) if truth is not None else None
    for k in slices:
        grey = np.clip(volume[:, :, k].T[window] / top, 0, 1)

        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        tiles.append(rgb)
        if edge is not None:
            marked = rgb.copy()
            marked[edge[:, :, k].T[window]] = OUTLINE_RGB

            tiles.append(marked)
    gap = np.ones((tiles[0].shape[0], 4, 3), np.float32)
    row = [part for tile in tiles for part in (tile, gap)][:-1]
    return np.asarray(np.concatenate(row, axis=1), np.float32)


def save_preview(series_dir: Path, label_path: Path | None, png: Path, slices: Sequence[int], scale: int = 1) -> Path:
    """Write ``slice_pictures`` of a PD series (and its truth mask, when given) as a PNG, each pixel
    ``scale x scale`` times."""
    volume = read_series(series_dir)
    truth = read_volume(label_path).data if label_path is not None else None
    picture = slice_pictures(volume, truth, slices)
    matplotlib.image.imsave(png, np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1))
    return png
