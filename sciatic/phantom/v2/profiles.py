"""Quantities that vary along the limb, tabulated on a z grid, and smooth random fields.

Everything in a v2 body is a function of the patient's superior coordinate z
(LPS, mm): a :class:`Profile` holds it every ``ZGrid.step`` mm and interpolates
linearly, so any plane (axial, oblique, coronal, sagittal) samples the same body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
F32 = NDArray[np.float32]
SMALL_GATHER = 4096  # up to this many points, gathering all of a tube's profiles at once is faster


@dataclass(frozen=True)
class Loc:
    """Where points fall on a :class:`ZGrid`: lower row and fraction toward the next."""

    index: NDArray[np.intp]
    frac: F32


@dataclass(frozen=True)
class ZGrid:
    """Rows at ``start + k * step`` (mm) for ``k < count``; z outside is clamped."""

    start: float
    step: float
    count: int

    def values(self) -> FloatArray:
        return self.start + self.step * np.arange(self.count, dtype=np.float64)

    def locate(self, z: F32) -> Loc:
        q = np.clip((z - np.float32(self.start)) / np.float32(self.step), 0, self.count - 1.0001)
        index = q.astype(np.intp)
        return Loc(index, np.asarray(q - index, np.float32))

    def rows(self, z_low: float, z_high: float) -> slice:
        """The rows that bracket [z_low, z_high]."""
        lo = int(np.clip(np.floor((z_low - self.start) / self.step), 0, self.count - 1))
        hi = int(np.clip(np.ceil((z_high - self.start) / self.step), 0, self.count - 1))
        return slice(lo, hi + 1)


@dataclass(frozen=True)
class Profile:
    """One tabulated quantity; ``at`` interpolates linearly between rows."""

    value: F32
    slope: F32  # value[k + 1] - value[k]

    @classmethod
    def of(cls, values: FloatArray | float, grid: ZGrid) -> Profile:
        full = np.broadcast_to(np.asarray(values, np.float64), (grid.count,)).astype(np.float32)
        return cls(full, np.append(np.diff(full), np.float32(0)).astype(np.float32))

    def at(self, loc: Loc) -> F32:
        out: F32 = np.take(self.value, loc.index) + loc.frac * np.take(self.slope, loc.index)
        return out

    def bounds(self, rows: slice) -> tuple[float, float]:
        part = self.value[rows]
        return float(part.min()), float(part.max())


@dataclass(frozen=True)
class Tube:
    """An ellipse per z: centre (lateral, posterior mm in the leg frame), semi-axes, angle (rad)."""

    lateral: Profile
    posterior: Profile
    radius_1: Profile
    radius_2: Profile
    angle: Profile
    stacked: tuple[F32, F32]  # (5, count) values and slopes: one gather for a few points

    @classmethod
    def of(
        cls,
        grid: ZGrid,
        lateral: FloatArray | float,
        posterior: FloatArray | float,
        radius_1: FloatArray | float,
        radius_2: FloatArray | float | None = None,
        angle: FloatArray | float = 0.0,
    ) -> Tube:
        second = radius_1 if radius_2 is None else radius_2
        parts = [Profile.of(v, grid) for v in (lateral, posterior, radius_1, second, angle)]
        stacked = (np.stack([p.value for p in parts]), np.stack([p.slope for p in parts]))
        return cls(parts[0], parts[1], parts[2], parts[3], parts[4], stacked)

    def at(self, loc: Loc) -> tuple[F32, F32, F32, F32, F32]:
        """Lateral, posterior, radius_1, radius_2 and angle at ``loc``."""
        if loc.index.size <= SMALL_GATHER:
            value, slope = self.stacked
            rows = np.take(value, loc.index, axis=1) + loc.frac * np.take(slope, loc.index, axis=1)
            return rows[0], rows[1], rows[2], rows[3], rows[4]
        return (
            self.lateral.at(loc),
            self.posterior.at(loc),
            self.radius_1.at(loc),
            self.radius_2.at(loc),
            self.angle.at(loc),
        )


def drift(rng: np.random.Generator, z: FloatArray, amplitude: float, wavelengths: tuple[float, float]) -> FloatArray:
    """Smooth wander along the limb: two sinusoids of random wavelength and phase."""
    out = np.zeros_like(z)
    for _ in range(2):
        wavelength = rng.uniform(*wavelengths)
        out += amplitude / 2 * np.sin(2 * np.pi * z / wavelength + rng.uniform(0, 2 * np.pi))
    return out


def smoothstep(edge_0: float, edge_1: float, x: FloatArray) -> FloatArray:
    """0 below ``edge_0``, 1 beyond ``edge_1`` (either order), a smooth cubic between."""
    t = np.clip((x - edge_0) / (edge_1 - edge_0), 0.0, 1.0)
    return np.asarray(t * t * (3 - 2 * t), np.float64)


@dataclass(frozen=True)
class WaveField:
    """A smooth random field of unit variance: a sum of plane waves in (lateral, posterior, z)."""

    vectors: FloatArray  # (K, 3) radians per mm
    phases: FloatArray  # (K,)

    @classmethod
    def draw(
        cls, rng: np.random.Generator, count: int, wavelengths: tuple[float, float], z_stretch: float
    ) -> WaveField:
        """``count`` waves with in-plane wavelengths in ``wavelengths`` (mm), about ``z_stretch`` times longer
        along z."""
        number = 2 * np.pi / rng.uniform(*wavelengths, count)
        angle = rng.uniform(0, 2 * np.pi, count)
        along = np.clip(rng.standard_normal(count), -1.5, 1.5) / z_stretch
        vectors = np.stack([np.cos(angle), np.sin(angle), along], axis=1) * number[:, None]
        return cls(vectors, rng.uniform(0, 2 * np.pi, count))

    def at(self, lateral: F32, posterior: F32, z: F32) -> F32:
        out = np.zeros(np.broadcast_shapes(lateral.shape, posterior.shape, z.shape), np.float32)
        for (kl, kp, kz), phase in zip(self.vectors.astype(np.float32), self.phases, strict=True):
            out += np.cos(kl * lateral + kp * posterior + kz * z + np.float32(phase))
        out *= np.float32(np.sqrt(2.0 / len(self.phases)))
        return out
