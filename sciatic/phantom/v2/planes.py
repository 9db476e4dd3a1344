"""Slice stacks in any orientation: DICOM geometry, sample planes and the NIfTI affine.

Images are reconstructed in the scanner's frame, which is the patient's frame for
head-first supine and turned half a turn about the vertical axis for feet-first
supine; a small oblique rotation follows. Positions and directions are rounded
as they are written to DICOM, and every sample plane is built from the rounded
values, so the converted volume and the ground truth share one exact grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from sciatic.phantom.geometry import DIRECTION_DECIMALS, POSITION_DECIMALS, PatientPosition, Vector, rotation
from sciatic.phantom.v2.paint import Plane

FloatArray = NDArray[np.float64]


class Orientation(StrEnum):
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


# (row direction, column direction) in the scanner frame.
_SCANNER_PLANES: dict[Orientation, tuple[Vector, Vector]] = {
    Orientation.AXIAL: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    Orientation.CORONAL: ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    Orientation.SAGITTAL: ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
# Scanner frame to patient frame (LPS) per patient position.
_TO_PATIENT: dict[PatientPosition, FloatArray] = {
    PatientPosition.HFS: np.diag([1.0, 1.0, 1.0]),
    PatientPosition.FFS: np.diag([-1.0, 1.0, -1.0]),
}


def directions(orientation: Orientation, position: PatientPosition, obliquity_deg: Vector) -> tuple[Vector, Vector]:
    """ImageOrientationPatient (row, column directions) of a plane, rounded as written."""
    turn = rotation(obliquity_deg) @ _TO_PATIENT[position]
    out = []
    for axis in _SCANNER_PLANES[orientation]:
        d = np.round(turn @ np.array(axis), DIRECTION_DECIMALS)
        out.append((float(d[0]), float(d[1]), float(d[2])))
    return out[0], out[1]


@dataclass(frozen=True)
class Stack:
    """Parallel slices: PixelSpacing, thickness, orientation and centre; acquisition order by ``ascending``."""

    rows: int
    columns: int
    slices: int
    row_spacing: float  # PixelSpacing[0]
    column_spacing: float  # PixelSpacing[1]
    slice_spacing: float
    thickness: float
    row_direction: Vector
    column_direction: Vector
    centre: Vector
    ascending: bool

    @property
    def normal(self) -> FloatArray:
        return np.cross(np.array(self.row_direction), np.array(self.column_direction))

    def offset_along_normal(self, k: int) -> float:
        index = k if self.ascending else self.slices - 1 - k
        return (index - (self.slices - 1) / 2.0) * self.slice_spacing

    def image_position(self, k: int) -> FloatArray:
        """ImagePositionPatient of acquisition slice ``k``, rounded as written."""
        r, c = np.array(self.row_direction), np.array(self.column_direction)
        first = (
            np.array(self.centre)
            - (self.columns - 1) / 2.0 * self.column_spacing * r
            - (self.rows - 1) / 2.0 * self.row_spacing * c
        )
        return np.asarray(np.round(first + self.offset_along_normal(k) * self.normal, POSITION_DECIMALS), np.float64)

    def sorted_order(self) -> list[int]:
        order = list(range(self.slices))
        return order if self.ascending else order[::-1]

    def affine(self) -> FloatArray:
        """RAS+ affine of the converted volume (docs/conventions.md)."""
        order = self.sorted_order()
        p0 = self.image_position(order[0])
        ds = self.slice_spacing
        if self.slices > 1:
            ds = float(np.linalg.norm(self.image_position(order[-1]) - p0)) / (self.slices - 1)
        lps = np.eye(4)
        lps[:3, 0] = np.array(self.row_direction) * self.column_spacing
        lps[:3, 1] = np.array(self.column_direction) * self.row_spacing
        lps[:3, 2] = self.normal * ds
        lps[:3, 3] = p0
        return np.asarray(np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, np.float64)

    def pixel_plane(self, k: int) -> Plane:
        """Pixel centres of acquisition slice ``k``."""
        return self.sample_plane(k, 1, 0.0)

    def sample_plane(self, k: int, factor: int, depth: float) -> Plane:
        """Samples ``factor`` times finer than the pixels, ``depth`` mm off the slice centre along the normal."""
        r, c = np.array(self.row_direction), np.array(self.column_direction)
        du, dv = r * self.column_spacing / factor, c * self.row_spacing / factor
        offset = (0.5 / factor - 0.5) * (self.column_spacing * r + self.row_spacing * c)
        origin = self.image_position(k) + offset + depth * self.normal
        return Plane(origin, du, dv, (self.rows * factor, self.columns * factor))

    def sample_planes(self, k: int, factor: int, depth_samples: int) -> list[Plane]:
        """Sub-planes evenly spread through the slice thickness (midpoints of equal parts)."""
        depths = ((np.arange(depth_samples) + 0.5) / depth_samples - 0.5) * self.thickness
        return [self.sample_plane(k, factor, float(d)) for d in depths]
