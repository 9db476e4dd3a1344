"""A volume with its affine, and atomic, reproducible NIfTI writing."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import nibabel
import numpy as np
from numpy.typing import NDArray

from sciatic.storage import atomic_write

nib: Any = nibabel  # nibabel's partial annotations do not pass --strict

NIFTI_SUFFIX = ".nii.gz"
GZIP_LEVEL = 1  # fast; MR backgrounds compress well even at level 1


@dataclass(frozen=True, slots=True, eq=False)
class Volume:
    """A 3D array ``data[i, j, k]`` (column, row, slice) and its 4x4 RAS+ affine (mm)."""

    data: NDArray[Any]
    affine: NDArray[np.float64]

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"a Volume is 3D, got shape {self.data.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"an affine is 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.data.shape
        return (int(x), int(y), int(z))

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm along the three array axes."""
        x, y, z = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(x), float(y), float(z))


def read_nifti(path: str | os.PathLike[str]) -> Volume:
    """Load a 3D NIfTI volume with its affine (the sform, as nibabel chooses it)."""
    img = nib.load(os.fspath(path))
    return Volume(np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=np.float64))


def write_nifti(volume: Volume, path: str | os.PathLike[str]) -> str:
    """Write ``volume`` to ``path`` (``.nii.gz``) atomically; return the file's sha256.

    The bytes go to a temporary file in the same directory, which is fsynced
    and then renamed over ``path``, so readers never see a partial file. The
    gzip stream carries no timestamp: the same volume always gives the same
    bytes and the same sha256.
    """
    target = Path(path)
    if not target.name.endswith(NIFTI_SUFFIX):
        raise ValueError(f"{target} must end with {NIFTI_SUFFIX}")
    img = nib.Nifti1Image(volume.data, volume.affine)
    img.set_data_dtype(volume.data.dtype)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return atomic_write(target, lambda fp: _write_gzipped_nifti(img, fp))


def _write_gzipped_nifti(img: Any, fp: BinaryIO) -> None:
    with gzip.GzipFile(filename="", mode="wb", fileobj=fp, mtime=0, compresslevel=GZIP_LEVEL) as gz:
        img.to_file_map({"image": nib.FileHolder(fileobj=gz)})
