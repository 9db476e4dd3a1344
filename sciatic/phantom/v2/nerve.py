"""The sciatic nerve of one thigh: a tibial and a common peroneal division, apart or not.

Each division is an ellipse per z; both share one aspect ratio and have their long
axes along the line joining their centres. Above the split they overlap into one
oval trunk; toward the knee they move apart, and at ``split_z`` they just touch (a
common aspect ratio makes that exact: scaled along the axis, the ellipses are
circles). The union of the two is the nerve of the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sciatic.db.enums import Cohort
from sciatic.phantom.v2.profiles import FloatArray, Profile, Tube, ZGrid, drift, smoothstep

FASCICLE_TABLE = 97  # fascicle membership table over the unit disc of a division
TIBIAL_SHARE = (0.58, 0.68)  # tibial share of the two divisions' area


@dataclass(frozen=True)
class Division:
    """One division (tibial or common peroneal): its tube and its fascicle pattern."""

    name: str
    tube: Tube
    fascicles: NDArray[np.float32]  # (FASCICLE_TABLE, FASCICLE_TABLE), 0..1
    twist: Profile  # rotation (rad) of the fascicle pattern along z


@dataclass(frozen=True)
class Nerve:
    """Both divisions, the perineural fat and where they split."""

    divisions: tuple[Division, Division]  # tibial, peroneal
    split_z: float  # z (mm) where the divisions stop touching
    trunk_csa_mm2: float  # designed area of the trunk at mid-thigh
    rim: Profile  # perineural fat thickness (mm)
    rim_shape: tuple[float, float]  # relative variation of the rim around the nerve, and its angle
    rim_gap: tuple[float, float] | None  # (angle, half-width) (rad) of a sector without fat, in the division frame
    area: FloatArray  # designed union area per z row (mm²)


def lens_area(r_1: FloatArray, r_2: FloatArray, d: FloatArray) -> FloatArray:
    """Area shared by two circles of radii ``r_1``, ``r_2`` whose centres are ``d`` apart."""
    r_1, r_2, d = np.broadcast_arrays(np.asarray(r_1, float), np.asarray(r_2, float), np.asarray(d, float))
    out = np.zeros(d.shape)
    inside = d <= np.abs(r_1 - r_2)
    out[inside] = np.pi * np.minimum(r_1, r_2)[inside] ** 2
    part = (d < r_1 + r_2) & ~inside
    a, b, c = r_1[part], r_2[part], d[part]
    alpha = np.arccos(np.clip((c**2 + a**2 - b**2) / (2 * c * a), -1, 1))
    beta = np.arccos(np.clip((c**2 + b**2 - a**2) / (2 * c * b), -1, 1))
    out[part] = a**2 * (alpha - np.sin(2 * alpha) / 2) + b**2 * (beta - np.sin(2 * beta) / 2)
    return out


def union_area(aspect: float, b_t: FloatArray, b_p: FloatArray, d: FloatArray) -> FloatArray:
    """Area of the union of two ellipses of one aspect ratio whose long axes lie on the line of centres."""
    return np.asarray(aspect * (np.pi * (b_t**2 + b_p**2) - lens_area(b_t, b_p, d / aspect)), np.float64)


def fascicle_table(rng: np.random.Generator, cohort: Cohort, share: float) -> NDArray[np.float32]:
    """Fascicles as soft discs in the unit disc: fewer and larger in patients (enlarged fascicles)."""
    base = (rng.integers(5, 10), (0.2, 0.34)) if cohort is Cohort.PATIENT else (rng.integers(9, 16), (0.13, 0.24))
    n = max(3, round(int(base[0]) * share * 1.6))
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.sqrt(rng.uniform(0, 0.7, n))
    centres = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    sizes = rng.uniform(*base[1], n)
    axis = np.linspace(-1, 1, FASCICLE_TABLE)
    x, y = np.meshgrid(axis, axis, indexing="ij")
    dist = np.hypot(x[None] - centres[:, 0, None, None], y[None] - centres[:, 1, None, None]) / sizes[:, None, None]
    return np.asarray(np.clip((1.15 - dist.min(axis=0)) * 4.0, 0.0, 1.0), np.float32)


def draw_nerve(
    rng: np.random.Generator,
    grid: ZGrid,
    t: FloatArray,
    centre: tuple[FloatArray, FloatArray],
    csa_mm2: float,
    split_z: float,
    cohort: Cohort,
) -> Nerve:
    """Divisions around ``centre`` (leg frame, per z row) with a trunk of ``csa_mm2`` at mid-thigh."""
    z = grid.values()
    share = rng.uniform(*TIBIAL_SHARE)
    aspect = rng.uniform(1.3, 1.9)
    overlap = rng.uniform(0.3, 0.5)  # trunk: centres this fraction of (a_t + a_p) apart
    unit_t, unit_p = np.sqrt(share), np.sqrt(1 - share)
    unit_area = float(union_area(aspect, unit_t, unit_p, aspect * overlap * (unit_t + unit_p)))
    area = csa_mm2 * (1 + drift(rng, z, 0.12, (120, 300))) * (1 + rng.uniform(0.0, 0.25) * (0.5 - t))
    scale = np.sqrt(area / unit_area)
    b_t, b_p = scale * unit_t, scale * unit_p
    a_sum = aspect * (b_t + b_p)
    # Separation: a fraction ``overlap`` of the touching distance above, growing toward the knee.
    lead = rng.uniform(15.0, 35.0)
    u = np.clip((split_z + lead - z) / lead, 0.0, None)
    spread = rng.uniform(1.5, 3.0)
    grow = np.where(u <= 1, u**2, 1 + spread * np.tanh(2 * (u - 1) / spread))
    d = a_sum * (overlap + (1 - overlap) * grow)
    angle = rng.normal(0, np.deg2rad(12)) + drift(rng, z, np.deg2rad(14), (150, 300))
    angle = angle + np.deg2rad(rng.uniform(5, 25)) * smoothstep(1.0, 2.5, u)  # the peroneal turns laterally
    cl, cp = centre
    ex, ey = np.cos(angle), np.sin(angle)
    tibial = Tube.of(grid, cl - 0.4 * d * ex, cp - 0.4 * d * ey, aspect * b_t, b_t, angle)
    peroneal = Tube.of(grid, cl + 0.6 * d * ex, cp + 0.6 * d * ey, aspect * b_p, b_p, angle)
    twist_rate = rng.normal(0, np.deg2rad(0.5))
    divisions = (
        Division("tibial", tibial, fascicle_table(rng, cohort, share), Profile.of(twist_rate * z, grid)),
        Division("peroneal", peroneal, fascicle_table(rng, cohort, 1 - share), Profile.of(-twist_rate * z, grid)),
    )
    rim = rng.uniform(0.5, 2.2) * (1 + drift(rng, z, 0.5, (60, 200))) + 2.0 * smoothstep(0.3, 0.1, t)
    gap = None
    if rng.uniform() < 0.4:
        gap = (float(rng.choice([-1.0, 1.0]) * rng.uniform(np.pi / 3, 2 * np.pi / 3)), rng.uniform(0.6, 1.1))
    return Nerve(
        divisions=divisions,
        split_z=split_z,
        trunk_csa_mm2=csa_mm2,
        rim=Profile.of(np.clip(rim, 0.2, None), grid),
        rim_shape=(rng.uniform(0.2, 0.6), rng.uniform(0, 2 * np.pi)),
        rim_gap=gap,
        area=union_area(aspect, b_t, b_p, d),
    )
