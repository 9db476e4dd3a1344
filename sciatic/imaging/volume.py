"""Volumes and masks on their voxel grid: the one home of NIfTI reading and writing and grid checks.

A :class:`Volume` is a 3D array ``data[i, j, k]`` (column, row, slice) with the
4x4 RAS+ affine (mm) that places it; the affine always travels with the array
(``docs/conventions.md``). Masks are volumes too: :func:`read_mask` gives a
boolean one. Two arrays are compared only after :func:`check_same_grid`; a
mask on another grid is refused, never resampled.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import nibabel
import numpy as np
from isal import igzip as isal_igzip
from numpy.typing import ArrayLike, NDArray

from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.storage import atomic_write

__all__ = [
    "GRID_TOLERANCE_VOXELS",
    "NIFTI_SUFFIX",
    "Volume",
    "as_mask",
    "check_same_grid",
    "is_remembered",
    "pixel_area_mm2",
    "read_mask",
    "read_volume",
    "read_volume_known",
    "slice_normal",
    "slice_spacing_mm",
    "validate_affine",
    "voxel_spacing_mm",
    "voxel_volume_mm3",
    "write_volume",
]

nib: Any = nibabel  # nibabel's partial annotations do not pass --strict
igzip: Any = isal_igzip  # nor do isal's

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

NIFTI_SUFFIX = ".nii.gz"
#: ISA-L's level 1: a standard gzip stream, about ten times faster than zlib's level 1 and as small
GZIP_LEVEL = 1
#: Two grids are the same when no corner of the voxel grid moves more than
#: this fraction of the smallest voxel spacing between the two affines.
GRID_TOLERANCE_VOXELS = 0.01


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


# --------------------------------------------------------------------------- files


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Load a 3D NIfTI volume with its affine (the sform, as nibabel chooses it).

    A ``.nii.gz`` file is inflated by ISA-L (twice as fast as zlib), then parsed by nibabel.
    """
    if os.fspath(path).endswith(NIFTI_SUFFIX):
        img = nib.Nifti1Image.from_bytes(igzip.decompress(Path(path).read_bytes()))
    else:
        img = nib.load(os.fspath(path))
    return Volume(np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=np.float64))


#: Volumes this process wrote, by sha256 (the last few): a step that follows in the
#: same process (segment after conversion, measure after segment) reads them from here.
RECENT_VOLUMES = 4
_recent: OrderedDict[str, Volume] = OrderedDict()


def is_remembered(sha256: str) -> bool:
    """True when this process wrote a volume with that sha256 recently (its bytes are known without reading)."""
    return sha256 in _recent


def read_volume_known(path: str | os.PathLike[str], sha256: str | None, verified: bool = False) -> Volume:
    """:func:`read_volume`, from memory when this process wrote the file with that sha256 (``None``: read it).

    What comes from memory is exactly what reading the file gives (its data
    and the affine as stored), so no result depends on where it came from.
    The file must still exist: a volume whose file is gone fails as before.
    ``verified``: the caller has just checked that the file's bytes have that
    sha256, so what is read is remembered too (the next step need not read it).
    """
    if sha256 is not None and sha256 in _recent and Path(path).is_file():  # a file gone is an error, as always
        _recent.move_to_end(sha256)
        return _recent[sha256]
    volume = read_volume(path)
    if verified and sha256 is not None:
        _remember(sha256, volume.data, volume.affine)
    return volume


def _remember(sha256: str, data: NDArray[Any], affine: NDArray[Any]) -> None:
    kept = np.array(data, copy=True)  # a later change to the caller's array must not reach it
    kept.flags.writeable = False
    _recent[sha256] = Volume(kept, np.asarray(affine, dtype=np.float64))
    _recent.move_to_end(sha256)
    while len(_recent) > RECENT_VOLUMES:
        _recent.popitem(last=False)


def write_volume(volume: Volume, path: str | os.PathLike[str]) -> str:
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
    sha256 = atomic_write(target, lambda fp: _write_gzipped_nifti(img, fp))
    _remember(sha256, volume.data, img.header.get_best_affine())
    return sha256


def _write_gzipped_nifti(img: Any, fp: BinaryIO) -> None:
    with igzip.IGzipFile(filename="", mode="wb", fileobj=fp, mtime=0, compresslevel=GZIP_LEVEL) as gz:
        img.to_file_map({"image": nib.FileHolder(fileobj=gz)})


# --------------------------------------------------------------------------- geometry


def validate_affine(affine: ArrayLike) -> FloatArray:
    """Return ``affine`` as a float64 4x4 array; refuse non-finite or singular ones."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("affine contains non-finite values")
    if abs(float(np.linalg.det(a[:3, :3]))) <= 1e-12:
        raise ValueError("affine is singular (zero voxel volume)")
    return a


def pixel_area_mm2(affine: ArrayLike) -> float:
    """True in-plane area of one pixel, ``|a0 x a1|`` (a0, a1: first two affine columns)."""
    a = validate_affine(affine)
    return float(np.linalg.norm(np.cross(a[:3, 0], a[:3, 1])))


def voxel_volume_mm3(affine: ArrayLike) -> float:
    """Volume of one voxel, ``|det(affine[:3, :3])|``."""
    a = validate_affine(affine)
    return float(abs(np.linalg.det(a[:3, :3])))


def slice_normal(affine: ArrayLike) -> FloatArray:
    """Unit normal of the slice plane, ``(a0 x a1) / |a0 x a1|``, oriented along +k."""
    a = validate_affine(affine)
    n = np.cross(a[:3, 0], a[:3, 1])
    n /= np.linalg.norm(n)
    if float(n @ a[:3, 2]) < 0:
        n = -n
    return n


def slice_spacing_mm(affine: ArrayLike) -> float:
    """Distance between adjacent slice planes: the third column projected on the normal.

    Equals the DICOM slice spacing for an affine built as in the conventions,
    and stays the true plane-to-plane distance for a sheared (gantry-tilt)
    affine. ``pixel_area_mm2 * slice_spacing_mm == voxel_volume_mm3``.
    """
    a = validate_affine(affine)
    return float(abs(slice_normal(a) @ a[:3, 2]))


def voxel_spacing_mm(affine: ArrayLike) -> tuple[float, float, float]:
    """Spacing along each array axis: the norms of the affine's first three columns."""
    a = validate_affine(affine)
    n = np.linalg.norm(a[:3, :3], axis=0)
    return (float(n[0]), float(n[1]), float(n[2]))


def as_mask(data: ArrayLike) -> BoolArray:
    """Binary mask of a 3D array: non-zero voxels are nerve (NaN counts as zero)."""
    arr = np.asanyarray(data)
    if arr.ndim != 3:
        raise ValueError(f"mask must be 3D (X, Y, Z), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return np.asarray(arr, dtype=bool)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr, nan=0.0)
    return np.asarray(arr != 0, dtype=bool)


# --------------------------------------------------------------------------- grid checks


def check_same_grid(
    shape_a: tuple[int, ...],
    affine_a: ArrayLike,
    shape_b: tuple[int, ...],
    affine_b: ArrayLike,
    *,
    names: tuple[str, str] = ("prediction", "label"),
    tolerance_voxels: float = GRID_TOLERANCE_VOXELS,
) -> None:
    """Refuse two masks that are not on the same voxel grid.

    Same grid: equal shapes, and the two affines place every voxel of the
    grid within ``tolerance_voxels`` x the smallest voxel spacing of each
    other (checked at the grid's corners, where the difference is largest).

    Raises:
        InputRefusedError: ``GEOMETRY_MISMATCH``, naming what differs.
    """
    na, nb = names
    if tuple(shape_a) != tuple(shape_b):
        raise InputRefusedError(
            ReasonCode.GEOMETRY_MISMATCH,
            f"{na} has shape {tuple(shape_a)} but {nb} has shape {tuple(shape_b)}",
        )
    try:
        a = validate_affine(affine_a)
        b = validate_affine(affine_b)
    except ValueError as exc:
        raise InputRefusedError(ReasonCode.GEOMETRY_MISMATCH, f"invalid affine: {exc}") from exc
    corners = np.array(list(itertools.product(*[(0, max(n - 1, 0)) for n in shape_a[:3]])), dtype=np.float64)
    corners_h = np.c_[corners, np.ones(len(corners))]
    shift = float(np.max(np.linalg.norm((corners_h @ (a - b).T)[:, :3], axis=1)))
    tol = tolerance_voxels * min(voxel_spacing_mm(a) + voxel_spacing_mm(b))
    if shift <= tol:
        return
    diffs: list[str] = []
    sa, sb = voxel_spacing_mm(a), voxel_spacing_mm(b)
    if not np.allclose(sa, sb, rtol=0, atol=tol):
        diffs.append(f"voxel spacing {_fmt(sa)} vs {_fmt(sb)} mm")
    dir_a = a[:3, :3] / np.array(sa)
    dir_b = b[:3, :3] / np.array(sb)
    cosines = np.clip(np.sum(dir_a * dir_b, axis=0), -1.0, 1.0)
    angle = float(np.degrees(np.max(np.arccos(cosines))))
    if angle > 0.01:
        diffs.append(f"axis directions differ by up to {angle:.2f} degrees")
    origin = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    if origin > tol:
        diffs.append(f"origin {_fmt(a[:3, 3])} vs {_fmt(b[:3, 3])} mm ({origin:.3f} mm apart)")
    raise InputRefusedError(
        ReasonCode.GEOMETRY_MISMATCH,
        f"{na} and {nb} are on different grids: "
        + "; ".join(diffs or ["affines differ"])
        + f" (voxels displaced by up to {shift:.3f} mm, tolerance {tol:.3f} mm)",
    )


def _fmt(v: Any) -> str:
    return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"


def read_mask(path: str | os.PathLike[str]) -> Volume:
    """Read a NIfTI mask as a boolean :class:`Volume`; trailing singleton axes are dropped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputRefusedError: ``UNREADABLE_FILE`` if the file cannot be read as an
            image, ``GEOMETRY_MISMATCH`` if it is not a 3D volume.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such mask file: {p}")
    try:
        img = nib.load(os.fspath(p))
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise InputRefusedError(ReasonCode.UNREADABLE_FILE, f"{p.name}: not a readable NIfTI volume ({exc})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputRefusedError(ReasonCode.GEOMETRY_MISMATCH, f"{p.name}: mask must be 3D, got shape {data.shape}")
    return Volume(as_mask(data), affine)
