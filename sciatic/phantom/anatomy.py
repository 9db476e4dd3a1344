"""Mid-thigh anatomy of one synthetic subject, drawn as proton-density images.

Coordinates are millimetres in the slice-aligned body frame of
:meth:`SeriesGeometry.body_coordinates`, turned so that ``lateral`` points away from
the body's midline (toward patient right for a right thigh) and ``posterior`` to
the back. Every structure is an ellipse-like tube whose centre, radii and angle
drift smoothly from slice to slice. Intensities are relative proton density
(subcutaneous fat close to 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sciatic.db.enums import Cohort
from sciatic.phantom.cohort import HardCase
from sciatic.phantom.geometry import SeriesGeometry

FloatArray = NDArray[np.float64]
Image = NDArray[np.float32]

# Muscle groups at mid-thigh of a right thigh: (lateral, posterior) as fractions of
# the muscle compartment radius, and a Voronoi weight (relative size).
MUSCLES: dict[str, tuple[float, float, float]] = {
    "vastus_lateralis": (0.62, -0.08, 1.25),
    "vastus_intermedius": (0.15, -0.42, 1.0),
    "rectus_femoris": (0.0, -0.80, 0.8),
    "vastus_medialis": (-0.38, -0.55, 1.0),
    "sartorius": (-0.66, -0.22, 0.55),
    "gracilis": (-0.86, 0.22, 0.5),
    "adductor_longus": (-0.48, -0.02, 0.8),
    "adductor_magnus": (-0.35, 0.36, 1.2),
    "semimembranosus": (-0.28, 0.72, 0.85),
    "semitendinosus": (-0.04, 0.88, 0.75),
    "biceps_femoris_long": (0.32, 0.74, 0.9),
    "biceps_femoris_short": (0.48, 0.40, 0.7),
}

TEXTURE_SIZE = 65  # fascicle texture table, in the nerve's unit disc


@dataclass(frozen=True)
class Track:
    """An ellipse per slice: centre, semi-axes (mm) and angle (rad) of the first axis."""

    lateral: FloatArray
    posterior: FloatArray
    radius_1: FloatArray
    radius_2: FloatArray
    angle: FloatArray

    def area(self) -> FloatArray:
        """Cross-sectional area per slice (mm²)."""
        return np.pi * self.radius_1 * self.radius_2


@dataclass(frozen=True)
class Anatomy:
    """Everything needed to draw one subject's series (per-slice arrays have length Z)."""

    lateral_sign: float  # +1: lateral is patient left (left thigh), -1: right thigh
    thigh: Track  # outer skin surface (before lobulation)
    thigh_harmonics: FloatArray  # (m, amplitude, phase) rows
    skin_mm: float
    fat_mm: FloatArray  # per slice
    fat_harmonic: tuple[float, float]  # relative amplitude and phase of fat thickness variation
    muscle_seeds: FloatArray  # (Z, K, 2) lateral/posterior mm
    muscle_weights: FloatArray  # (K,)
    muscle_levels: FloatArray  # (K,) relative PD per muscle group
    plane_mm: float
    plane_strength: float
    streak_threshold: float
    femur: Track
    cortex_mm: float
    vessels: list[tuple[Track, float, float]]  # track, intensity, fat rim (mm) drawn before the nerve
    nerve: Track
    nerve_rim_mm: float
    nerve_levels: tuple[float, float]  # fascicle and interfascicular PD
    fascicles: NDArray[np.float32]  # (TEXTURE_SIZE, TEXTURE_SIZE) fascicle membership 0..1
    contact_vessel: tuple[Track, float] | None  # drawn after the nerve's fat rim, touching it
    levels: dict[str, float]  # skin, fat, muscle, cortex, marrow
    warp: NDArray[np.float32]  # (2, rows, columns) mm displacement that bends the muscle boundaries
    textures: NDArray[np.float32]  # (2, rows, columns) unit-variance fields, blended along the limb


def _drift(rng: np.random.Generator, w: FloatArray, amplitude: float, wavelengths: tuple[float, float]) -> FloatArray:
    """Smooth zero-mean-ish wander along the limb: two sinusoids with random phase."""
    out = np.zeros_like(w)
    for _ in range(2):
        wavelength = rng.uniform(*wavelengths)
        out += amplitude / 2 * np.sin(2 * np.pi * w / wavelength + rng.uniform(0, 2 * np.pi))
    return out


def _fascicle_table(rng: np.random.Generator, cohort: Cohort) -> NDArray[np.float32]:
    """Fascicles as soft discs packed in the unit disc (larger and fewer in patients)."""
    n, (r_lo, r_hi) = (
        (rng.integers(6, 12), (0.18, 0.30)) if cohort is Cohort.PATIENT else (rng.integers(10, 18), (0.12, 0.22))
    )
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.sqrt(rng.uniform(0, 0.72, n))
    centres = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    sizes = rng.uniform(r_lo, r_hi, n)
    axis = np.linspace(-1, 1, TEXTURE_SIZE)
    x, y = np.meshgrid(axis, axis, indexing="ij")
    dist = np.hypot(x[None] - centres[:, 0, None, None], y[None] - centres[:, 1, None, None]) / sizes[:, None, None]
    return np.asarray(np.clip((1.15 - dist.min(axis=0)) * 4.0, 0.0, 1.0), np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> NDArray[np.float32]:
    """Unit-variance Gaussian noise smoothed with ``sigma`` pixels."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    std = float(field_.std())
    return np.asarray(field_ / std if std > 0 else field_, np.float32)


def draw_anatomy(
    rng: np.random.Generator,
    geometry: SeriesGeometry,
    cohort: Cohort,
    hard_cases: tuple[HardCase, ...],
    nerve_csa_mm2: float,
    right_thigh: bool,
) -> Anatomy:
    """Draw one subject's anatomy along the slices of ``geometry``."""
    _, _, w = geometry.body_coordinates()
    z = w.size
    patient = cohort is Cohort.PATIENT

    # Skin surface and subcutaneous fat.
    radius = rng.uniform(66.0, 84.0) * (1 + w * rng.uniform(0.0006, 0.0012))
    ap_ratio = rng.uniform(0.84, 0.98)
    thigh_lat = rng.normal(0, 5) + w * rng.normal(0, 0.04) + _drift(rng, w, 2.0, (200, 500))
    thigh_post = rng.normal(0, 5) + w * rng.normal(0, 0.04) + _drift(rng, w, 2.0, (200, 500))
    if HardCase.PARTIAL_COVERAGE in hard_cases:
        # The posterior half drifts out of the field of view over the upper part of the slab.
        half_fov = (geometry.rows - 1) / 2 * geometry.row_spacing
        ramp = np.interp(w, [w.min(), w.max()], [-0.45, 0.35])
        thigh_post = half_fov - 0.42 * radius + ramp * radius * 0.5
    thigh = Track(thigh_lat, thigh_post, radius, radius * ap_ratio, np.zeros(z))
    harmonics = np.array([[m, rng.normal(0, 0.025), rng.uniform(0, 2 * np.pi)] for m in (2, 3, 4)])
    skin = rng.uniform(1.2, 2.2)
    fat = rng.uniform(5.0, 22.0) * (1 + _drift(rng, w, 0.08, (150, 400)))
    compartment = radius - skin - fat

    # Muscle groups: seeds scaled with the compartment, drifting slowly.
    table = np.array(list(MUSCLES.values()))
    fractions = table[:, :2] + rng.normal(0, 0.04, (len(MUSCLES), 2))
    seeds = np.empty((z, len(MUSCLES), 2))
    for k_muscle in range(len(MUSCLES)):
        for axis, centre in enumerate((thigh_lat, thigh_post)):
            seeds[:, k_muscle, axis] = centre + compartment * (
                fractions[k_muscle, axis] + _drift(rng, w, 0.03, (150, 400))
            )
    weights = table[:, 2] * rng.uniform(0.9, 1.1, len(MUSCLES))
    muscle = rng.uniform(0.38, 0.48)
    muscle_levels = muscle * rng.uniform(0.93, 1.07, len(MUSCLES))

    # Femur: shaft inclines medially toward the knee.
    f_lat = thigh_lat + compartment * (0.10 + rng.normal(0, 0.04)) + w * rng.uniform(0.03, 0.1)
    f_post = thigh_post + compartment * (-0.05 + rng.normal(0, 0.04))
    f_r = rng.uniform(11.5, 14.5)
    femur = Track(
        f_lat, f_post, np.full(z, f_r), np.full(z, f_r * rng.uniform(0.88, 1.0)), np.full(z, rng.uniform(0, np.pi))
    )
    cortex = rng.uniform(3.8, 6.2)

    # Sciatic nerve: posterior to the femur between the hamstrings.
    aspect = rng.uniform(1.3, 1.9)
    csa = nerve_csa_mm2 * (1 + _drift(rng, w, 0.12, (120, 300)))
    n_r1 = np.sqrt(csa * aspect / np.pi)
    gap = float(compartment.mean()) * rng.uniform(0.16, 0.30) + 0.5 * float(np.sqrt(nerve_csa_mm2 / np.pi))
    nerve = Track(
        f_lat + rng.normal(0, 3) + _drift(rng, w, rng.uniform(2, 6), (120, 300)),
        f_post + femur.radius_2 + gap + _drift(rng, w, rng.uniform(2, 6), (120, 300)),
        n_r1,
        n_r1 / aspect,
        rng.normal(0, np.deg2rad(15)) + _drift(rng, w, np.deg2rad(12), (150, 300)),
    )
    fascicle_level = rng.uniform(0.58, 0.68) if patient else rng.uniform(0.50, 0.60)
    interfascicular = rng.uniform(0.74, 0.86)
    fascicles = _fascicle_table(rng, cohort)

    # Vessels: femoral artery and vein beneath sartorius, profunda by the femur,
    # and a small companion vessel near the nerve.
    fat_level = rng.uniform(0.95, 1.05)
    a_lat = thigh_lat + compartment * (-0.50 + rng.normal(0, 0.04)) + _drift(rng, w, 2, (150, 400))
    a_post = thigh_post + compartment * (-0.24 + rng.normal(0, 0.04)) + _drift(rng, w, 2, (150, 400))
    a_r, v_r = rng.uniform(3.0, 4.2), rng.uniform(3.8, 5.5)
    vessels = [
        (_circle(a_lat, a_post, a_r), rng.uniform(0.08, 0.2), rng.uniform(0.6, 1.4)),
        (
            _circle(a_lat - rng.uniform(1, 4), a_post + a_r + v_r + rng.uniform(0.5, 2), v_r),
            rng.uniform(0.25, 0.55),
            rng.uniform(0.4, 1.0),
        ),
        (
            _circle(f_lat - rng.uniform(10, 16), f_post + rng.uniform(10, 16), rng.uniform(2.2, 3.2)),
            rng.uniform(0.12, 0.45),
            rng.uniform(0.4, 1.0),
        ),
    ]
    side = rng.uniform(0, 2 * np.pi)
    nerve_reach = nerve.radius_1.mean()
    contact: tuple[Track, float] | None = None
    nerve_mean = float(fascicles.mean()) * fascicle_level + (1 - float(fascicles.mean())) * interfascicular
    if HardCase.VESSEL_CONTACT in hard_cases:
        # Alongside the nerve's long axis, overlapping its fat rim: no bright plane between.
        c_r = rng.uniform(2.6, 3.6)
        along = nerve.angle + (0 if rng.uniform() < 0.5 else np.pi) + rng.normal(0, 0.3)
        dist = _reach(nerve, along) + c_r - 0.2
        contact = (
            _circle(nerve.lateral + dist * np.cos(along), nerve.posterior + dist * np.sin(along), c_r),
            nerve_mean * rng.uniform(0.97, 1.03),
        )
    else:
        c_r = rng.uniform(1.3, 2.3)
        dist = nerve_reach + c_r + rng.uniform(3.0, 7.0)
        vessels.append(
            (
                _circle(nerve.lateral + dist * np.cos(side), nerve.posterior + dist * np.sin(side), c_r),
                rng.uniform(0.2, 0.45),
                rng.uniform(0.5, 1.0),
            )
        )

    shape = (geometry.rows, geometry.columns)
    warp = np.stack([_smooth_noise(rng, shape, 12 / geometry.column_spacing) * 3.0 for _ in range(2)])
    textures = np.stack([_smooth_noise(rng, shape, 1.6 / geometry.column_spacing) for _ in range(2)])
    return Anatomy(
        lateral_sign=-1.0 if right_thigh else 1.0,
        thigh=thigh,
        thigh_harmonics=harmonics,
        skin_mm=skin,
        fat_mm=fat,
        fat_harmonic=(rng.uniform(0.1, 0.35), rng.uniform(0, 2 * np.pi)),
        muscle_seeds=seeds,
        muscle_weights=weights,
        muscle_levels=muscle_levels,
        plane_mm=rng.uniform(0.6, 1.3),
        plane_strength=rng.uniform(0.35, 0.7),
        streak_threshold=rng.uniform(1.5, 1.9) if patient else rng.uniform(1.9, 2.4),
        femur=femur,
        cortex_mm=cortex,
        vessels=vessels,
        nerve=nerve,
        nerve_rim_mm=rng.uniform(0.8, 2.0),
        nerve_levels=(fascicle_level, interfascicular),
        fascicles=fascicles,
        contact_vessel=contact,
        levels={
            "skin": rng.uniform(0.55, 0.65),
            "fat": fat_level,
            "muscle": muscle,
            "cortex": rng.uniform(0.04, 0.08),
            "marrow": rng.uniform(0.85, 0.95),
        },
        warp=warp,
        textures=textures,
    )


def _circle(lateral: FloatArray, posterior: FloatArray, radius: float) -> Track:
    return Track(
        lateral, posterior, np.full(lateral.shape, radius), np.full(lateral.shape, radius), np.zeros(lateral.shape)
    )


def _reach(track: Track, direction: FloatArray) -> FloatArray:
    """Distance from an ellipse's centre to its edge in ``direction`` (rad), per slice."""
    t = direction - track.angle
    return 1.0 / np.sqrt((np.cos(t) / track.radius_1) ** 2 + (np.sin(t) / track.radius_2) ** 2)
