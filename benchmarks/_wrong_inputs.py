"""Deliberately wrong DICOM series made from a good one: the nerve blanked, or the image buried in noise.

Each rewritten series is a copy of its source with new pixels and new Series
and SOP Instance UIDs (derived from the old ones and the kind of change, so the
same source always gives the same UIDs); every other attribute is kept. Only
uncompressed little-endian single-frame series are rewritten. Pixels are changed in stored
values, which is exact for the linear Modality LUT (slope, intercept) of MR.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset, dcmread
from pydicom.uid import UID, generate_uid
from scipy import ndimage

from sciatic.imaging.volume import Volume

__all__ = ["GROW_PIXELS", "RING_PIXELS", "blank_nerve", "corrupt", "label_slices", "rewrite_series"]

GROW_PIXELS = 3  # the label is grown by this much in-plane, so no nerve edge survives the blanking
RING_PIXELS = 4  # width of the ring of surrounding tissue whose median fills the blanked region
GRID_TOLERANCE = 0.05  # voxels: how far an image's pixel centres may lie from the label's grid

Pixels = NDArray[Any]
Change = Callable[[list[Dataset], list[Pixels]], list[Pixels]]


def read_series(directory: Path) -> list[tuple[Path, Dataset]]:
    """Every file of a series folder, read with its pixels, in file-name order."""
    paths = sorted(p for p in directory.iterdir() if p.is_file())
    out: list[tuple[Path, Dataset]] = [(path, dcmread(path)) for path in paths]
    for path, ds in out:
        syntax = ds.file_meta.TransferSyntaxUID
        if syntax.is_compressed or not syntax.is_little_endian or int(ds.get("NumberOfFrames", 1)) != 1:
            raise ValueError(f"{path}: only uncompressed little-endian single-frame images are rewritten")
    return out


def _new_uid(old: str, kind: str) -> UID:
    """A UID derived from ``old`` and ``kind``: the same rewrite always gives the same UIDs."""
    return generate_uid(entropy_srcs=[old, kind])


def rewrite_series(source: Path, target: Path, kind: str, change: Change) -> str:
    """Write ``source``'s images with ``change``'s pixels under ``target``; return the new SeriesInstanceUID."""
    files = read_series(source)
    datasets = [ds for _, ds in files]
    pixels = change(datasets, [np.asarray(ds.pixel_array) for ds in datasets])
    series_uid = _new_uid(str(datasets[0].SeriesInstanceUID), kind)
    target.mkdir(parents=True, exist_ok=True)
    for (path, ds), image in zip(files, pixels, strict=True):
        dtype = np.asarray(ds.pixel_array).dtype
        sop_uid = _new_uid(str(ds.SOPInstanceUID), kind)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.PixelData = _stored(image, ds, dtype).tobytes()
        ds.save_as(target / path.name, enforce_file_format=True)
    return series_uid


def _stored(image: Pixels, ds: Dataset, dtype: np.dtype[Any]) -> Pixels:
    """``image`` rounded and clipped to the range the series' BitsStored and PixelRepresentation allow."""
    bits = int(ds.BitsStored)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.PixelRepresentation) else (0, 2**bits - 1)
    return np.clip(np.rint(image), low, high).astype(dtype.newbyteorder("<"))


# --------------------------------------------------------------------------- the label on the images' grid


def _slice_index(ds: Dataset, inverse: NDArray[np.float64], shape: tuple[int, int, int]) -> int:
    """Index ``k`` of the label slice that ``ds`` shows, checked pixel by pixel at three corners.

    DICOM pixel (row r, column c) lies at ``IPP + c*dc*row_dir + r*dr*col_dir`` (LPS); through the
    label's inverse affine (RAS+) it must land on voxel ``(c, r, k)`` (docs/conventions.md).
    """
    origin = np.array([float(v) for v in ds.ImagePositionPatient])
    cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    rows, columns = int(ds.Rows), int(ds.Columns)
    if (columns, rows) != shape[:2]:
        raise ValueError(f"image {rows}x{columns} does not match label slices {shape[1]}x{shape[0]}")
    found: list[NDArray[np.float64]] = []
    for r, c in ((0, 0), (0, columns - 1), (rows - 1, 0)):
        lps = origin + c * dc * cosines[:3] + r * dr * cosines[3:]
        ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
        found.append((inverse @ ras)[:3] - np.array([c, r, 0.0]))
    k = round(float(found[0][2]))
    if not 0 <= k < shape[2] or any(np.abs(f - [0, 0, k]).max() > GRID_TOLERANCE for f in found):
        raise ValueError(f"image {ds.SOPInstanceUID} does not lie on a slice of the label's grid")
    return k


def label_slices(label: Volume, datasets: list[Dataset]) -> list[NDArray[np.bool_]]:
    """The label's nerve pixels of each image, as ``(rows, columns)`` arrays like its pixel data."""
    inverse = np.asarray(np.linalg.inv(label.affine), dtype=np.float64)
    nerve = np.asarray(label.data) > 0
    return [nerve[:, :, _slice_index(ds, inverse, label.shape)].T for ds in datasets]


# --------------------------------------------------------------------------- the changes


def blank_nerve(image: Pixels, nerve: NDArray[np.bool_], rng: np.random.Generator) -> Pixels:
    """``image`` with the grown nerve region replaced, piece by piece, by the tissue around it.

    Each piece is filled with the median of a ring around it plus Gaussian
    noise of the ring's own spread (median absolute deviation), so that no
    flat, nerve-shaped patch is left for a model to find.
    """
    out = image.astype(np.float64)
    region = ndimage.binary_dilation(nerve, iterations=GROW_PIXELS) if nerve.any() else nerve
    pieces, count = ndimage.label(region, structure=np.ones((3, 3)))
    for piece in range(1, count + 1):
        inside = pieces == piece
        ring = ndimage.binary_dilation(inside, iterations=RING_PIXELS) & ~region
        around = image[ring] if ring.any() else image
        centre = float(np.median(around))
        spread = 1.4826 * float(np.median(np.abs(around - centre)))
        out[inside] = centre + rng.normal(0.0, spread, int(inside.sum()))
    return out


def corrupt(pixels: list[Pixels], rng: np.random.Generator) -> list[Pixels]:
    """Every image plus Gaussian noise whose SD is the SD of the whole series' pixel values."""
    sd = float(np.std(np.stack(pixels).astype(np.float64)))
    return [p.astype(np.float64) + rng.normal(0.0, sd, p.shape) for p in pixels]
