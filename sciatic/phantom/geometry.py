"""Acquisition geometry of a synthetic axial thigh series, and its NIfTI affine.

Images are reconstructed in the scanner's own frame: rows of pixels run along the
table's left-right axis and columns along its vertical axis. Expressed in the
patient (LPS) frame, these directions flip with the patient position, so the
ImageOrientationPatient written for HFS, FFS, HFP and FFP differ as they would on
a scanner. A small oblique rotation is applied on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

Vector = tuple[float, float, float]

# Decimal places kept when positions and directions are written as DICOM DS.
POSITION_DECIMALS = 5
DIRECTION_DECIMALS = 8


class PatientPosition(StrEnum):
    """DICOM PatientPosition (0018,5100) values the phantom uses."""

    HFS = "HFS"
    FFS = "FFS"
    HFP = "HFP"
    FFP = "FFP"


# (row direction, column direction) in LPS before obliquity, per patient position.
_SCANNER_AXES: dict[PatientPosition, tuple[Vector, Vector]] = {
    PatientPosition.HFS: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    PatientPosition.HFP: ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    PatientPosition.FFS: ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    PatientPosition.FFP: ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
}


def scanner_axes(position: PatientPosition) -> tuple[Vector, Vector]:
    """Row and column directions (LPS) of a straight axial image for ``position``."""
    return _SCANNER_AXES[position]


def rotation(angles_deg: Vector) -> NDArray[np.float64]:
    """Rotation matrix for successive rotations about x, y and z (degrees)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    matrix: NDArray[np.float64] = rz @ ry @ rx
    return matrix


@dataclass(frozen=True)
class SeriesGeometry:
    """Where every pixel of a series lies in the patient frame.

    ``row_spacing`` is PixelSpacing[0] (distance between rows), ``column_spacing``
    PixelSpacing[1]. Slices are numbered in acquisition order; when ``ascending`` is
    false the scanner stepped against the slice normal ``n = r x c``.
    """

    rows: int
    columns: int
    slices: int
    row_spacing: float
    column_spacing: float
    slice_spacing: float
    position: PatientPosition
    obliquity_deg: Vector
    centre: Vector
    ascending: bool

    @property
    def row_direction(self) -> NDArray[np.float64]:
        """First ImageOrientationPatient triplet, rounded as written to DICOM."""
        r0, _ = scanner_axes(self.position)
        return np.asarray(np.round(rotation(self.obliquity_deg) @ np.array(r0), DIRECTION_DECIMALS), np.float64)

    @property
    def column_direction(self) -> NDArray[np.float64]:
        """Second ImageOrientationPatient triplet, rounded as written to DICOM."""
        _, c0 = scanner_axes(self.position)
        return np.asarray(np.round(rotation(self.obliquity_deg) @ np.array(c0), DIRECTION_DECIMALS), np.float64)

    @property
    def normal(self) -> NDArray[np.float64]:
        """Slice normal ``r x c``."""
        return np.cross(self.row_direction, self.column_direction)

    def offset_along_normal(self, k: int) -> float:
        """Signed distance (mm) of acquisition slice ``k`` from the centre along the normal."""
        index = k if self.ascending else self.slices - 1 - k
        return (index - (self.slices - 1) / 2.0) * self.slice_spacing

    def image_position(self, k: int) -> NDArray[np.float64]:
        """ImagePositionPatient of acquisition slice ``k``, rounded as written to DICOM."""
        centre = np.array(self.centre)
        first_pixel = (
            centre
            - (self.columns - 1) / 2.0 * self.column_spacing * self.row_direction
            - (self.rows - 1) / 2.0 * self.row_spacing * self.column_direction
        )
        return np.round(first_pixel + self.offset_along_normal(k) * self.normal, POSITION_DECIMALS)

    def sorted_order(self) -> list[int]:
        """Acquisition indices in the order of ascending position along the normal."""
        order = list(range(self.slices))
        return order if self.ascending else order[::-1]

    def affine(self) -> NDArray[np.float64]:
        """RAS+ affine of the converted volume, by the formula of docs/conventions.md."""
        order = self.sorted_order()
        p0 = self.image_position(order[0])
        if self.slices > 1:
            p_last = self.image_position(order[-1])
            ds = float(np.linalg.norm(p_last - p0)) / (self.slices - 1)
        else:
            ds = self.slice_spacing
        lps = np.eye(4)
        lps[:3, 0] = self.row_direction * self.column_spacing
        lps[:3, 1] = self.column_direction * self.row_spacing
        lps[:3, 2] = self.normal * ds
        lps[:3, 3] = p0
        affine: NDArray[np.float64] = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
        return affine

    def body_coordinates(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Left, posterior and superior coordinates (mm) of the pixel grid around the centre.

        They are measured in the patient frame turned by the obliquity, which is the
        frame the slices are aligned with; left depends on the column only, posterior on
        the row only and superior on the slice only. Returns arrays of length
        ``columns``, ``rows`` and ``slices`` (acquisition order).
        """
        r0, c0 = scanner_axes(self.position)
        sign_left, sign_posterior = r0[0], c0[1]
        u = (np.arange(self.columns) - (self.columns - 1) / 2.0) * self.column_spacing
        v = (np.arange(self.rows) - (self.rows - 1) / 2.0) * self.row_spacing
        w = np.array([self.offset_along_normal(k) for k in range(self.slices)])
        return (
            np.asarray(sign_left * u, np.float64),
            np.asarray(sign_posterior * v, np.float64),
            np.asarray(sign_left * sign_posterior * w, np.float64),
        )
