"""From noise-free proton density to stored pixels: coil bias, motion, Rician noise, quantisation."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from sciatic.phantom.cohort import HardCase
from sciatic.phantom.geometry import SeriesGeometry


class PhaseEncoding(StrEnum):
    """DICOM InPlanePhaseEncodingDirection (0018,1312)."""

    ROW = "ROW"  # phase encoded along a row, i.e. across columns
    COL = "COL"  # phase encoded along a column, i.e. across rows


@dataclass(frozen=True)
class Acquisition:
    """Scanner-side parameters of one series."""

    snr: float  # mean muscle signal over noise standard deviation
    bias: tuple[float, ...]  # coefficients of the log coil-sensitivity polynomial
    motion_slices: tuple[int, ...]  # acquisition indices of motion-corrupted slices
    phase_encoding: PhaseEncoding
    bits_stored: int
    fill: float  # fraction of the stored range used by the 99.9th percentile
    rescale_slope: float


def draw_acquisition(
    rng: np.random.Generator, geometry: SeriesGeometry, hard_cases: tuple[HardCase, ...]
) -> Acquisition:
    """Draw the acquisition parameters; hard cases lower the SNR or corrupt slices."""
    snr = rng.uniform(3.5, 6.0) if HardCase.LOW_SNR in hard_cases else rng.uniform(15.0, 30.0)
    bias = (
        *rng.normal(0.0, 0.12, 2),  # linear across the thigh
        *rng.uniform(0.1, 0.35, 2),  # brighter toward the surface coil at the periphery
        rng.normal(0.0, 0.1),  # cross term
        rng.normal(0.0, 0.15),  # along the limb
    )
    motion: tuple[int, ...] = ()
    if HardCase.MOTION in hard_cases:
        count = int(rng.integers(3, 7))
        start = int(rng.integers(0, max(1, geometry.slices - count)))
        motion = tuple(range(start, min(geometry.slices, start + count)))
    return Acquisition(
        snr=snr,
        bias=tuple(float(b) for b in bias),
        motion_slices=motion,
        phase_encoding=PhaseEncoding.ROW if rng.uniform() < 0.5 else PhaseEncoding.COL,
        bits_stored=int(rng.choice([12, 16])),
        fill=float(rng.uniform(0.3, 0.8)),
        rescale_slope=round(float(rng.uniform(0.5, 4.0)), 4),
    )


def bias_field(geometry: SeriesGeometry, coefficients: tuple[float, ...]) -> NDArray[np.float32]:
    """Smooth multiplicative coil sensitivity, shaped (slices, rows, columns)."""
    left, posterior, superior = geometry.body_coordinates()
    x = (left / 100.0).astype(np.float32)[None, None, :]
    y = (posterior / 100.0).astype(np.float32)[None, :, None]
    z = (superior / 100.0).astype(np.float32)[:, None, None]
    cx, cy, cxx, cyy, cxy, cz = (np.float32(c) for c in coefficients)
    in_plane = cx * x + cy * y + cxx * x * x + cyy * y * y + cxy * x * y
    return np.asarray(np.exp(in_plane + cz * z), np.float32)


def add_motion(
    rng: np.random.Generator, image: NDArray[np.float32], phase_encoding: PhaseEncoding
) -> NDArray[np.float32]:
    """Ghosting and blur of one slice from periodic displacement during phase encoding."""
    pe_axis = 1 if phase_encoding is PhaseEncoding.ROW else 0
    n_pe, n_ro = image.shape[pe_axis], image.shape[1 - pe_axis]
    line = np.arange(n_pe)
    cycles = rng.uniform(2.0, 6.0)
    shift_pe = rng.uniform(0.8, 3.0) * np.sin(2 * np.pi * cycles * line / n_pe + rng.uniform(0, 2 * np.pi))
    shift_ro = rng.uniform(0.3, 1.2) * np.sin(2 * np.pi * cycles * line / n_pe + rng.uniform(0, 2 * np.pi))
    shift_pe += rng.normal(0, 0.3, n_pe)
    f_pe = np.fft.fftfreq(n_pe)
    f_ro = np.fft.fftfreq(n_ro)
    phase = np.exp(-2j * np.pi * (f_pe * shift_pe + f_ro[:, None] * shift_ro[None, :]))  # (ro, pe)
    if pe_axis == 0:
        phase = phase.T
    return np.asarray(np.abs(np.fft.ifft2(np.fft.fft2(image) * phase)), np.float32)


def acquire(
    rng: np.random.Generator,
    signal: NDArray[np.float32],
    geometry: SeriesGeometry,
    acquisition: Acquisition,
    reference_level: float,
) -> NDArray[np.uint16]:
    """Apply bias, motion and Rician noise to ``signal`` and quantise to stored values."""
    image = signal * bias_field(geometry, acquisition.bias)
    for k in acquisition.motion_slices:
        image[k] = add_motion(rng, image[k], acquisition.phase_encoding)
    sigma = np.float32(reference_level / acquisition.snr)
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    magnitude = np.hypot(real, imaginary)
    top = float(np.percentile(magnitude.ravel()[::7], 99.9))
    ceiling = 2**acquisition.bits_stored - 1
    scale = ceiling * acquisition.fill / top if top > 0 else 1.0
    return np.asarray(np.clip(np.rint(magnitude * np.float32(scale)), 0, ceiling), np.uint16)
