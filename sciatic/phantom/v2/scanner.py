"""The scanner side of a v2 series: protocol, receive-coil sensitivity, Rician noise, stored values."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sciatic.phantom.acquisition import PhaseEncoding
from sciatic.phantom.v2.contrast import Contrast
from sciatic.phantom.v2.planes import Stack
from sciatic.phantom.v2.profiles import F32, FloatArray
from sciatic.phantom.v2.sites import DEFAULT_SITE, CoilDesign, SiteProfile


class SeriesKind(StrEnum):
    LOCALIZER = "localizer"
    T1_CORONAL = "t1_coronal"
    PD_AXIAL = "pd_axial"


@dataclass(frozen=True)
class Protocol:
    """What the scanner did, as written to the MR acquisition attributes."""

    kind: SeriesKind
    series_number: int
    description: str
    contrast: Contrast
    image_type: tuple[str, ...]
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    scan_options: tuple[str, ...]
    acquisition_type: str  # MRAcquisitionType: 2D or 3D
    sequence_name: str
    repetition_time_ms: float
    echo_time_ms: float
    echo_train_length: int
    flip_angle_deg: float
    pixel_bandwidth: float
    snr: float  # muscle signal over noise standard deviation
    phase_encoding: PhaseEncoding


def _ms(rng: np.random.Generator, low: float, high: float, step: float) -> float:
    return round(float(rng.uniform(low, high)) / step) * step


def pd_protocol(
    rng: np.random.Generator,
    fat_sat: bool,
    three_d: bool,
    phase_encoding: PhaseEncoding,
    site: SiteProfile = DEFAULT_SITE,
) -> Protocol:
    """Proton-density axial: 2D TSE or 3D TSE, with or without fat saturation, at the ``site``'s echo times."""
    tag = "FS " if fat_sat else ""
    if three_d:
        timing = (_ms(rng, 1100, 1600, 10), _ms(rng, *site.echo_time_3d_ms, 1), int(rng.integers(40, 64)), 120.0)
        description, name, kind = f"PD 3D {tag}AX THIGH", f"*tse3d1_{timing[2]}", "3D"
    else:
        timing = (_ms(rng, 2500, 4200, 10), _ms(rng, *site.echo_time_2d_ms, 1), int(rng.integers(7, 13)), 150.0)
        description, name, kind = f"PD TSE {tag}AX THIGH", f"*tse2d1_{timing[2]}", "2D"
    return Protocol(
        kind=SeriesKind.PD_AXIAL,
        series_number=3,
        description=description,
        contrast=Contrast.PD_FS if fat_sat else Contrast.PD,
        image_type=("ORIGINAL", "PRIMARY", "OTHER"),
        scanning_sequence=("SE",),
        sequence_variant=("SK", "SP"),
        scan_options=("FS",) if fat_sat else (),
        acquisition_type=kind,
        sequence_name=name,
        repetition_time_ms=timing[0],
        echo_time_ms=timing[1],
        echo_train_length=timing[2],
        flip_angle_deg=timing[3],
        pixel_bandwidth=_ms(rng, 180, 300, 2),
        snr=float(rng.uniform(12.0, 35.0)),
        phase_encoding=phase_encoding,
    )


def t1_protocol(rng: np.random.Generator) -> Protocol:
    """T1 TSE coronal (TR about 500 ms, TE about 12 ms)."""
    return Protocol(
        kind=SeriesKind.T1_CORONAL,
        series_number=2,
        description="T1 TSE COR THIGH",
        contrast=Contrast.T1,
        image_type=("ORIGINAL", "PRIMARY", "OTHER"),
        scanning_sequence=("SE",),
        sequence_variant=("SK", "SP"),
        scan_options=(),
        acquisition_type="2D",
        sequence_name="*tse2d1_3",
        repetition_time_ms=_ms(rng, 450, 650, 10),
        echo_time_ms=_ms(rng, 10, 14, 1),
        echo_train_length=3,
        flip_angle_deg=150.0,
        pixel_bandwidth=_ms(rng, 180, 260, 2),
        snr=float(rng.uniform(15.0, 30.0)),
        phase_encoding=PhaseEncoding.ROW,
    )


def localizer_protocol(rng: np.random.Generator) -> Protocol:
    """Three-plane gradient-echo localizer."""
    return Protocol(
        kind=SeriesKind.LOCALIZER,
        series_number=1,
        description="LOCALIZER 3-PLANE",
        contrast=Contrast.LOCALIZER,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        scanning_sequence=("GR",),
        sequence_variant=("SP",),
        scan_options=(),
        acquisition_type="2D",
        sequence_name="*fl2d1",
        repetition_time_ms=_ms(rng, 7, 9, 0.1),
        echo_time_ms=_ms(rng, 3, 4, 0.01),
        echo_train_length=1,
        flip_angle_deg=20.0,
        pixel_bandwidth=_ms(rng, 300, 400, 10),
        snr=float(rng.uniform(8.0, 15.0)),
        phase_encoding=PhaseEncoding.ROW,
    )


@dataclass(frozen=True)
class Coil:
    """Receive elements: positions (LPS mm), reach (mm) and gain; combined as a root sum of squares."""

    positions: FloatArray  # (N, 3)
    reach: FloatArray  # (N,)
    gain: FloatArray  # (N,)

    def sensitivity(self, stack: Stack) -> F32:
        """Combined sensitivity on the pixel grid, shaped (slices, rows, columns), mean 1 over the grid.

        It is smooth, so it is computed every ``SENSITIVITY_STEP`` pixels and interpolated.
        """
        r, c = np.array(stack.row_direction), np.array(stack.column_direction)
        col_index, col_weights = _coarse(stack.columns)
        row_index, row_weights = _coarse(stack.rows)
        i, j = col_index * stack.column_spacing, row_index * stack.row_spacing
        out = np.zeros((stack.slices, stack.rows, stack.columns), np.float32)
        reach2 = (self.reach**2)[:, None, None]
        gain2 = (self.gain**2)[:, None, None]
        for k in range(stack.slices):
            offset = stack.image_position(k)[None, :] - self.positions  # (N, 3)
            along_r, along_c = offset @ r, offset @ c  # |offset + i r + j c|² splits into row and column parts
            rest = np.sum(offset * offset, axis=1) - along_r**2 - along_c**2
            rows = (along_c[:, None] + j[None, :]) ** 2 + rest[:, None]
            cols = (along_r[:, None] + i[None, :]) ** 2
            q = 1 + (rows[:, :, None] + cols[:, None, :]) / reach2
            out[k] = _spread(_spread(np.sqrt(np.sum(gain2 / q**3, axis=0)), row_weights, 0), col_weights, 1)
        return np.asarray(out / np.float32(out.mean()), np.float32)


SENSITIVITY_STEP = 8


def _coarse(n: int) -> tuple[NDArray[np.float64], tuple[NDArray[np.intp], NDArray[np.float64]]]:
    """Every SENSITIVITY_STEP-th index (and the last), and for each of the n indices the lower coarse
    point and the weight of the upper one."""
    index = np.unique(np.append(np.arange(0, n, SENSITIVITY_STEP), n - 1)).astype(np.float64)
    low = np.clip(np.searchsorted(index, np.arange(n), side="right") - 1, 0, max(index.size - 2, 0))
    span = np.maximum(index[np.minimum(low + 1, index.size - 1)] - index[low], 1.0)
    return index, (low, np.clip((np.arange(n) - index[low]) / span, 0.0, 1.0))


def _spread(values: NDArray[np.floating[Any]], weights: tuple[NDArray[np.intp], NDArray[np.float64]], axis: int) -> F32:
    """Linear interpolation from coarse points to every index along ``axis``."""
    low, frac = weights
    high = np.minimum(low + 1, values.shape[axis] - 1)
    shape = [1, 1]
    shape[axis] = -1
    a, b = np.take(values, low, axis=axis), np.take(values, high, axis=axis)
    return np.asarray(a + frac.reshape(shape) * (b - a), np.float32)


def draw_coil(
    rng: np.random.Generator,
    centres: list[tuple[float, float]],
    radius: float,
    rings: tuple[float, ...],
    design: CoilDesign = DEFAULT_SITE.coil,
) -> Coil:
    """A flexible array wrapped around each thigh at (x, y) ``centres`` (LPS mm), a ring of elements at each z."""
    positions, reach, behind = [], [], []
    for x, y in centres:
        count = int(rng.integers(*design.elements))
        start = rng.uniform(0, 2 * np.pi)
        for n in range(count):
            angle = start + 2 * np.pi * n / count + rng.normal(0, 0.1)
            distance = radius + rng.uniform(*design.distance_mm)
            for z in rings:
                positions.append((x + distance * np.cos(angle), y + distance * np.sin(angle), z))
                reach.append(rng.uniform(*design.reach_mm))
                behind.append(max(0.0, float(np.sin(angle))))  # LPS +y is posterior
    gain = rng.uniform(*design.gain, len(reach))
    if design.posterior_gain != 1.0:
        gain = gain * (1 + (design.posterior_gain - 1) * np.array(behind))
    return Coil(np.array(positions), np.array(reach), gain)


@dataclass(frozen=True)
class Storage:
    """How signal becomes stored pixel values."""

    bits_stored: int
    fill: float  # the 99.9th percentile lands at this fraction of the stored range
    rescale_slope: float | None  # None: no Modality LUT attributes


def draw_storage(rng: np.random.Generator) -> Storage:
    slope = round(float(rng.uniform(0.5, 4.0)), 4) if rng.uniform() < 0.3 else None
    return Storage(int(rng.choice([12, 16], p=[0.8, 0.2])), float(rng.uniform(0.3, 0.8)), slope)


def acquire(
    rng: np.random.Generator, signal: F32, sensitivity: F32, sigma: float, storage: Storage
) -> NDArray[np.uint16]:
    """Multiply by the coil sensitivity, add complex Gaussian noise (Rician magnitude), quantise."""
    image = signal * sensitivity
    real = image + np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    magnitude = np.hypot(real, imaginary)
    top = float(np.percentile(magnitude.ravel()[::7], 99.9))
    ceiling = 2**storage.bits_stored - 1
    scale = ceiling * storage.fill / top if top > 0 else 1.0
    return np.asarray(np.clip(np.rint(magnitude * np.float32(scale)), 0, ceiling), np.uint16)
