"""A subject's thighs: build, where the PD slab lies along the thigh, and where each nerve splits."""

from __future__ import annotations

import numpy as np

from sciatic.phantom.v2.leg import Leg, LegFrame, draw_leg
from sciatic.phantom.v2.paint import Body
from sciatic.phantom.v2.plan import SubjectPlanV2, draw_nerve_csa
from sciatic.phantom.v2.profiles import ZGrid

Z_STEP_MM = 1.0
DISTAL_THIRD = (0.18, 0.32)  # where a split inside the slab lies, as t (0 knee, 1 hip)


def draw_frame(rng: np.random.Generator) -> LegFrame:
    length = rng.uniform(380.0, 460.0)
    return LegFrame(
        z_knee=-length / 2 + rng.uniform(-40, 40),
        length=length,
        radius_mm=(radius := rng.uniform(70.0, 88.0)),
        fat_mm=radius * rng.uniform(0.06, 0.2),
        half_gap_mm=rng.uniform(-2.0, 12.0),
    )


def place_slab(rng: np.random.Generator, plan: SubjectPlanV2, frame: LegFrame, extent_mm: float) -> float:
    """The z of the PD slab's centre: mid to distal thigh; across the distal third when the split is in view."""
    if plan.bifurcation:
        split = frame.z_knee + frame.length * float(np.mean(DISTAL_THIRD))
        return split + extent_mm * rng.uniform(0.05, 0.25)
    return frame.z_knee + frame.length * rng.uniform(0.38, 0.5)


def split_levels(
    rng: np.random.Generator, plan: SubjectPlanV2, frame: LegFrame, slab: tuple[float, float]
) -> list[float]:
    """Per thigh, the z where the divisions separate: inside the slab (away from its ends) or below it."""
    low, high = slab
    levels = []
    for _ in plan.sides:
        if plan.bifurcation:
            lo = max(low + 0.15 * (high - low), frame.z_knee + frame.length * DISTAL_THIRD[0])
            hi = min(high - 0.35 * (high - low), frame.z_knee + frame.length * DISTAL_THIRD[1])
            levels.append(rng.uniform(min(lo, hi), max(lo, hi)))
        else:
            levels.append(low - rng.uniform(45.0, 90.0))
    return levels


def draw_body(
    rng: np.random.Generator, plan: SubjectPlanV2, frame: LegFrame, split_z: list[float]
) -> tuple[Body, dict[str, float]]:
    """The thighs of ``plan.sides`` and each nerve's designed trunk CSA (mm²) by side."""
    grid = ZGrid(frame.z_knee - 80.0, Z_STEP_MM, int((frame.length + 160.0) / Z_STEP_MM) + 1)
    csa = draw_nerve_csa(rng, plan.cohort)
    legs: list[Leg] = []
    designed = {}
    for side, split in zip(plan.sides, split_z, strict=True):
        side_csa = csa * float(rng.uniform(0.93, 1.07))
        legs.append(draw_leg(rng, grid, side, frame, plan.cohort, plan.infiltration_grade, side_csa, split))
        designed[side.value] = side_csa
    return Body(grid, tuple(legs)), designed
