"""One thigh of a v2 body: skin, fat, muscle groups, femur, vessels and the sciatic nerve.

Structures live in the leg frame: ``lateral`` (mm) away from the body's midline,
``posterior`` toward the back, both measured from the leg's axis, which wanders
and turns slowly along z. ``t`` runs from 0 at the knee to 1 at the hip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sciatic.db.enums import Cohort
from sciatic.phantom.v2.nerve import Nerve, draw_nerve
from sciatic.phantom.v2.plan import Side
from sciatic.phantom.v2.profiles import FloatArray, Profile, Tube, WaveField, ZGrid, drift, smoothstep

# name: (lateral, posterior) at mid-thigh as fractions of the muscle compartment radius,
# Voronoi weight, compartment (0 anterior, 1 medial, 2 posterior), weight change per unit t
# (positive: larger toward the hip), and vulnerability to fatty infiltration.
MUSCLES: dict[str, tuple[float, float, float, int, float, float]] = {
    "vastus_lateralis": (0.62, -0.08, 1.25, 0, 0.3, 0.8),
    "vastus_intermedius": (0.15, -0.42, 1.0, 0, 0.0, 0.6),
    "rectus_femoris": (0.0, -0.80, 0.8, 0, 0.6, 0.5),
    "vastus_medialis": (-0.38, -0.55, 1.0, 0, -1.2, 0.8),
    "sartorius": (-0.66, -0.22, 0.55, 0, 0.0, 0.7),
    "gracilis": (-0.86, 0.22, 0.5, 1, 0.0, 0.9),
    "adductor_longus": (-0.48, -0.02, 0.8, 1, 2.5, 0.8),
    "adductor_magnus": (-0.35, 0.36, 1.2, 1, 1.0, 1.2),
    "semimembranosus": (-0.28, 0.72, 0.85, 2, -0.8, 1.2),
    "semitendinosus": (-0.04, 0.88, 0.75, 2, 0.2, 1.1),
    "biceps_femoris_long": (0.32, 0.74, 0.9, 2, 0.0, 1.2),
    "biceps_femoris_short": (0.48, 0.40, 0.7, 2, -1.5, 1.0),
}
GRADE_SEVERITY = (0.005, 0.04, 0.25, 0.55)  # mean share of muscle replaced by fat, per infiltration grade


@dataclass(frozen=True)
class Vessel:
    """A vessel: its tube, how slow its flow is (0 fast, dark; 1 slow, bright) and its fat rim (mm)."""

    tube: Tube
    flow: float
    rim_mm: float
    presence: Profile | None = None  # 0..1 along z: a branch that joins or leaves


@dataclass(frozen=True)
class Muscles:
    """Muscle groups as weighted Voronoi cells in the compartment-normalised leg frame."""

    radius: Profile  # compartment radius used to normalise (mm)
    seeds: FloatArray  # (K, 4): lateral, posterior at mid-thigh, and their change per unit t
    weights: FloatArray  # (K, 2): weight at mid-thigh and its log change per unit t
    compartment: NDArray[np.intp]  # (K,)
    level: FloatArray  # (K,) relative signal of each group
    severity: FloatArray  # (K,) fatty infiltration: share of the muscle replaced by fat, 0 .. 1
    septum: tuple[float, float, float, float]  # width (mm) and strength within and between compartments
    warp: tuple[WaveField, WaveField, float]  # displacement fields and amplitude (mm) bending the borders
    patches: WaveField  # where infiltration gathers (fine streaks come from the image texture)


@dataclass(frozen=True)
class Leg:
    """Everything drawn for one thigh; per-z quantities are :class:`Profile` objects."""

    side: Side
    sign: float  # +1: lateral is +x (LPS), a left thigh; -1: a right thigh
    z_knee: float
    length: float
    axis_x: Profile  # leg axis, LPS x (mm)
    axis_y: Profile  # leg axis, LPS y (mm)
    rotation: Profile  # turn of the leg frame (rad)
    radius_lateral: Profile  # skin surface semi-axes (mm): lateral, anterior, posterior
    radius_anterior: Profile
    radius_posterior: Profile
    harmonics: FloatArray  # (3, 3): m, amplitude, phase of the outline's lobes
    skin_mm: float
    fat: Profile  # subcutaneous fat thickness (mm)
    fat_shape: tuple[float, float, float, float]  # first and second angular harmonic: amplitude, phase
    muscles: Muscles
    femur: Tube
    cortex: Profile  # cortical thickness (mm)
    ridge: Profile  # linea aspera radius (mm)
    pad: Tube  # fat around the neurovascular bundle, growing toward the knee
    pad_outline: tuple[WaveField, float]  # irregularity of the pad's outline and its amplitude (mm)

    vessels: tuple[Vessel, ...]  # femoral, popliteal, profunda, saphenous: drawn before the nerve
    touching: tuple[Vessel, ...]  # small vessels against the nerve, drawn after its fat
    nerve: Nerve

    def t(self, z: FloatArray) -> FloatArray:
        return np.asarray((z - self.z_knee) / self.length, np.float64)


def _muscles(rng: np.random.Generator, grid: ZGrid, compartment: FloatArray, grade: int, cohort: Cohort) -> Muscles:
    table = np.array([row[:3] + row[4:] for row in MUSCLES.values()])  # u, v, w, w_slope, vulnerability
    k = len(table)
    seeds = np.zeros((k, 4))
    seeds[:, :2] = table[:, :2] + rng.normal(0, 0.04, (k, 2))
    seeds[:, 2:] = rng.normal(0, 0.05, (k, 2))
    seeds[list(MUSCLES).index("sartorius"), 3] = -0.35  # sartorius slides backward toward the knee
    weights = np.stack([table[:, 2] * rng.uniform(0.9, 1.1, k), table[:, 3] + rng.normal(0, 0.2, k)], axis=1)
    mean = GRADE_SEVERITY[grade]
    severity = np.clip(mean * table[:, 4] * rng.uniform(0.3, 1.7, k), 0.002, 0.95)

    within, between = rng.uniform(0.5, 1.2), rng.uniform(1.2, 2.6)
    return Muscles(
        radius=Profile.of(compartment, grid),
        seeds=seeds,
        weights=weights,
        compartment=np.array([row[3] for row in MUSCLES.values()], np.intp),
        level=rng.uniform(0.93, 1.07, k) * (1.04 if cohort is Cohort.PATIENT else 1.0),
        severity=severity,
        septum=(within, rng.uniform(0.35, 0.7), between, rng.uniform(0.75, 1.0)),
        warp=(
            WaveField.draw(rng, 3, (25, 60), 6.0),
            WaveField.draw(rng, 3, (25, 60), 6.0),
            float(rng.uniform(2.0, 4.0)),
        ),
        patches=WaveField.draw(rng, 8, (14, 40), 3.0),
    )


def _circle(grid: ZGrid, lateral: FloatArray, posterior: FloatArray, radius: FloatArray | float) -> Tube:
    return Tube.of(grid, lateral, posterior, radius)


def _around(
    centre: tuple[FloatArray, FloatArray], angle: FloatArray, distance: FloatArray | float
) -> tuple[FloatArray, FloatArray]:
    return centre[0] + distance * np.cos(angle), centre[1] + distance * np.sin(angle)


def _vessels(
    rng: np.random.Generator,
    grid: ZGrid,
    t: FloatArray,
    femur: tuple[FloatArray, FloatArray, FloatArray],
    body: tuple[FloatArray, FloatArray],
) -> list[Vessel]:
    """Femoral artery and vein (popliteal toward the knee), profunda pair, great saphenous vein."""
    z = grid.values()
    f_lat, f_post, f_r = femur
    # Angles in the leg frame: 0 lateral, pi/2 posterior, pi medial, 3pi/2 anterior.
    course = smoothstep(0.24, 0.38, t)  # 0 below the adductor hiatus, 1 in the adductor canal
    canal, popliteal = np.deg2rad(rng.uniform(205, 230)), np.deg2rad(rng.uniform(95, 115))
    angle = popliteal + (canal - popliteal) * course + drift(rng, z, 0.04, (200, 400))
    distance = f_r + course * rng.uniform(14, 22) + (1 - course) * rng.uniform(6, 10)
    a_lat, a_post = _around((f_lat, f_post), angle, distance)
    a_r, v_r = rng.uniform(2.8, 4.0), rng.uniform(3.5, 5.5)
    v_angle = angle - np.deg2rad(rng.uniform(60, 110)) * course + np.deg2rad(rng.uniform(-20, 20))
    v_lat, v_post = _around((a_lat, a_post), v_angle, a_r + v_r + rng.uniform(0.3, 1.2))
    p_angle = np.deg2rad(rng.uniform(120, 150)) + drift(rng, z, 0.05, (200, 400))
    p_lat, p_post = _around((f_lat, f_post), p_angle, f_r + rng.uniform(4, 9))
    p_r = (rng.uniform(2.2, 3.2) - 1.2) * smoothstep(0.22, 0.5, t) + 1.0
    s_angle = np.deg2rad(rng.uniform(180, 200)) - np.deg2rad(15) * (1 - t)
    lateral_r, depth = body
    s_lat, s_post = (lateral_r - depth) * np.cos(s_angle), (lateral_r - depth) * np.sin(s_angle)
    return [
        Vessel(_circle(grid, a_lat, a_post, a_r), rng.uniform(0.0, 0.15), rng.uniform(0.4, 1.2)),
        Vessel(_circle(grid, v_lat, v_post, v_r), rng.uniform(0.3, 0.9), rng.uniform(0.3, 1.0)),
        Vessel(_circle(grid, p_lat, p_post, p_r), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.8)),
        Vessel(_circle(grid, p_lat - 1.2 * p_r - 0.8, p_post + 0.8, 1.1 * p_r), rng.uniform(0.4, 0.9), 0.3),
        Vessel(_circle(grid, s_lat, s_post, rng.uniform(1.6, 2.6)), rng.uniform(0.4, 0.9), 0.0),
    ]


def _touching(rng: np.random.Generator, grid: ZGrid, nerve: Nerve, vessel_count: int) -> list[Vessel]:
    """Small vessels against a division's outer side: they touch the nerve with no fat between."""
    z = grid.values()
    out = []
    for n in range(vessel_count):
        division = nerve.divisions[n % 2].tube
        outward = np.pi if n % 2 == 0 else 0.0  # tibial medial, peroneal lateral
        rel = outward + rng.uniform(-1.3, 1.3) + drift(rng, z, 0.25, (150, 300))
        a, b, angle = division.radius_1.value, division.radius_2.value, division.angle.value
        reach = 1.0 / np.sqrt((np.cos(rel) / a) ** 2 + (np.sin(rel) / b) ** 2)
        radius = rng.uniform(0.8, 1.9)
        start, length = rng.uniform(z.min(), z.max()), rng.uniform(60, 300)
        present = smoothstep(start - 10, start, z) * smoothstep(start + length + 10, start + length, z)
        distance = reach + radius - rng.uniform(0.1, 0.4)
        lat = division.lateral.value + distance * np.cos(angle + rel)
        post = division.posterior.value + distance * np.sin(angle + rel)
        tube = _circle(grid, lat, post, radius)
        out.append(Vessel(tube, rng.uniform(0.1, 1.0), 0.0, Profile.of(present, grid)))
    return out


@dataclass(frozen=True)
class LegFrame:
    """What both thighs of one subject share: level of the knee, length and build."""

    z_knee: float
    length: float
    radius_mm: float  # skin radius at mid-thigh
    fat_mm: float  # subcutaneous fat at mid-thigh
    half_gap_mm: float  # half the distance between the thighs at mid-thigh (negative: they press together)


def draw_leg(
    rng: np.random.Generator,
    grid: ZGrid,
    side: Side,
    frame: LegFrame,
    cohort: Cohort,
    grade: int,
    csa_mm2: float,
    split_z: float,
) -> Leg:
    """Draw one thigh of a subject whose shared build is ``frame``."""
    z_knee, length = frame.z_knee, frame.length
    z = grid.values()
    t = (z - z_knee) / length
    sign = 1.0 if side is Side.LEFT else -1.0
    mid_radius = frame.radius_mm * rng.uniform(0.97, 1.03)
    offset = mid_radius + frame.half_gap_mm
    axis_x = sign * (offset + 0.06 * (z - z_knee - length / 2)) + drift(rng, z, 3.0, (200, 500))
    axis_y = rng.normal(0, 4) + drift(rng, z, 3.0, (200, 500))
    rotation = rng.normal(0, np.deg2rad(6)) + drift(rng, z, np.deg2rad(5), (200, 400))

    radius = mid_radius * (0.8 + 0.4 * t) * (1 + drift(rng, z, 0.03, (150, 300)))
    anterior = radius * rng.uniform(0.86, 0.98)
    posterior = radius * rng.uniform(0.85, 0.95)  # flattened on the table
    skin = rng.uniform(1.2, 2.2)
    fat = frame.fat_mm * rng.uniform(0.9, 1.1) * (1 + drift(rng, z, 0.12, (150, 400))) * (0.85 + 0.3 * t)
    compartment = 0.5 * (radius + posterior) - skin - fat
    muscles = _muscles(rng, grid, compartment, grade, cohort)

    f_lat = compartment * (0.1 + rng.normal(0, 0.03) - 0.12 * (0.5 - t))
    f_post = compartment * (-0.1 + rng.normal(0, 0.03))
    flare = 1 + 0.5 * smoothstep(0.2, 0.0, t)  # the metaphysis widens toward the knee
    f_r = rng.uniform(11.5, 14.0) * flare
    femur = Tube.of(grid, f_lat, f_post, f_r, f_r * rng.uniform(0.88, 1.0) / flare**0.3, rng.uniform(-0.3, 0.3))
    cortex = rng.uniform(3.8, 6.0) * (1 - 0.6 * smoothstep(0.3, 0.05, t))
    ridge = rng.uniform(3.0, 4.5) * smoothstep(0.22, 0.35, t)

    # The nerve lies behind the femur, on adductor magnus, and moves back toward the knee.
    fascia = posterior - skin - fat  # depth of the posterior muscle fascia behind the axis
    trunk_b = np.sqrt(csa_mm2 / np.pi)
    behind = f_post + f_r + trunk_b + 3
    share = rng.uniform(0.25, 0.45) + 0.2 * smoothstep(0.4, 0.1, t) + drift(rng, z, 0.06, (120, 300))
    n_post = np.maximum(np.minimum(behind + share * (fascia - behind), fascia - trunk_b - 8), behind)
    n_lat = f_lat + rng.normal(0, 3) + drift(rng, z, rng.uniform(2, 5), (120, 300))
    nerve = draw_nerve(rng, grid, t, (n_lat, n_post), csa_mm2, split_z, cohort)

    pad_r = rng.uniform(3.0, 6.0) + rng.uniform(4.0, 10.0) * smoothstep(0.42, 0.12, t)

    pad_post = n_post - 0.3 * pad_r
    pad_r = np.minimum(pad_r, np.maximum(fascia - pad_post - 2, 2.0))
    pad = Tube.of(grid, n_lat, pad_post, pad_r * 1.3, pad_r, rng.uniform(-0.4, 0.4))
    vessels = _vessels(rng, grid, t, (f_lat, f_post, f_r), (radius, skin + rng.uniform(0.3, 0.6) * fat))
    touching = _touching(rng, grid, nerve, int(rng.integers(1, 4)))
    harmonics = np.array(
        [[m, rng.normal(0, s), rng.uniform(0, 2 * np.pi)] for m, s in ((2, 0.03), (3, 0.015), (4, 0.01))]
    )
    return Leg(
        side=side,
        sign=sign,
        z_knee=z_knee,
        length=length,
        axis_x=Profile.of(axis_x, grid),
        axis_y=Profile.of(axis_y, grid),
        rotation=Profile.of(rotation, grid),
        radius_lateral=Profile.of(radius, grid),
        radius_anterior=Profile.of(anterior, grid),
        radius_posterior=Profile.of(posterior, grid),
        harmonics=harmonics,
        skin_mm=skin,
        fat=Profile.of(fat, grid),
        fat_shape=(rng.uniform(0.1, 0.35), rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.15), rng.uniform(0, np.pi)),
        muscles=muscles,
        femur=femur,
        cortex=Profile.of(cortex, grid),
        ridge=Profile.of(ridge, grid),
        pad=pad,
        pad_outline=(WaveField.draw(rng, 6, (8, 20), 4.0), float(rng.uniform(1.5, 3.0))),
        vessels=tuple(vessels),
        touching=tuple(touching),
        nerve=nerve,
    )
