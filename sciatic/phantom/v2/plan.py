"""Study-level decisions of a v2 subject, fixed before any image is drawn.

Counts are exact: ``round(N * fraction)`` subjects get each property, and which
subjects is shuffled by the seed, so small cohorts still show every kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from sciatic.db.enums import Cohort


class FieldOfView(StrEnum):
    """One thigh (0.6-0.8 mm pixels) or both side by side (0.85-1.1 mm pixels)."""

    UNILATERAL = "unilateral"
    BILATERAL = "bilateral"


class Side(StrEnum):
    """The patient's side of a thigh (its nerve lies on the same side)."""

    RIGHT = "R"
    LEFT = "L"


# Mid-thigh sciatic CSA (mm²) per cohort: median and log-normal spread.
NERVE_CSA_MEDIAN_MM2: dict[Cohort, tuple[float, float]] = {
    Cohort.CONTROL: (43.0, 0.38),
    Cohort.PATIENT: (136.0, 0.30),
}
MIN_NERVE_CSA_MM2 = 12.0
# Probability of each fatty-infiltration grade (0 none, 1 mild, 2 moderate, 3 severe).
INFILTRATION_GRADES: dict[Cohort, tuple[float, float, float, float]] = {
    Cohort.CONTROL: (0.8, 0.2, 0.0, 0.0),
    Cohort.PATIENT: (0.15, 0.35, 0.3, 0.2),
}


@dataclass(frozen=True)
class SubjectPlanV2:
    """Who a subject is and how the PD axial series is acquired."""

    index: int
    cohort: Cohort
    field_of_view: FieldOfView
    sides: tuple[Side, ...]  # thighs in the field of view
    bifurcation: bool  # the sciatic splits inside the PD slab
    fat_sat: bool
    three_d: bool
    infiltration_grade: int


def draw_nerve_csa(rng: np.random.Generator, cohort: Cohort) -> float:
    """A trunk CSA (mm²) from the cohort's log-normal law (median as in NERVE_CSA_MEDIAN_MM2)."""
    median, spread = NERVE_CSA_MEDIAN_MM2[cohort]
    return max(MIN_NERVE_CSA_MM2, float(median * np.exp(rng.normal(0.0, spread))))


def _chosen(rng: np.random.Generator, subjects: int, fraction: float) -> set[int]:
    return set(rng.permutation(subjects)[: round(subjects * fraction)].tolist())


def plan_subjects_v2(
    subjects: int,
    seed: int,
    *,
    patient_fraction: float,
    bilateral_fraction: float,
    bifurcation_fraction: float,
    fat_sat_fraction: float,
    three_d_fraction: float,
) -> list[SubjectPlanV2]:
    """Assign cohort, field of view, bifurcation, fat suppression and 2D/3D to each subject."""
    if subjects < 0:
        raise ValueError("subjects must be >= 0")
    fractions = {
        "patient_fraction": patient_fraction,
        "bilateral_fraction": bilateral_fraction,
        "bifurcation_fraction": bifurcation_fraction,
        "fat_sat_fraction": fat_sat_fraction,
        "three_d_fraction": three_d_fraction,
    }
    for name, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {value}")
    rng = np.random.default_rng([seed, 0x5C1A, 2])
    patients, bilateral, split, fat_sat, three_d = (_chosen(rng, subjects, f) for f in fractions.values())
    plans = []
    for i in range(subjects):
        cohort = Cohort.PATIENT if i in patients else Cohort.CONTROL
        both = i in bilateral
        right = bool(rng.uniform() < 0.65)
        sides = (Side.RIGHT, Side.LEFT) if both else ((Side.RIGHT,) if right else (Side.LEFT,))
        grade = int(rng.choice(4, p=INFILTRATION_GRADES[cohort]))
        plans.append(
            SubjectPlanV2(
                index=i,
                cohort=cohort,
                field_of_view=FieldOfView.BILATERAL if both else FieldOfView.UNILATERAL,
                sides=sides,
                bifurcation=i in split,
                fat_sat=i in fat_sat,
                three_d=i in three_d,
                infiltration_grade=grade,
            )
        )
    return plans
