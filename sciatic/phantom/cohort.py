"""Who is in a synthetic study: cohorts, nerve sizes and the hard cases."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from sciatic.db.enums import Cohort  # written to PatientComments as ``cohort=<value>``


class HardCase(StrEnum):
    """Deliberate difficulties a subject's series may carry."""

    LOW_SNR = "low_snr"  # noise several times stronger than usual
    VESSEL_CONTACT = "vessel_contact"  # a vessel as bright as the nerve touches it, no fat between
    MOTION = "motion"  # a block of slices with ghosting and blur along phase encoding
    PARTIAL_COVERAGE = "partial_coverage"  # the thigh is off-centre; the nerve leaves the field of view


# Mid-thigh sciatic nerve cross-sectional area (mm²): mean and spread per cohort.
NERVE_CSA_MM2: dict[Cohort, tuple[float, float]] = {
    Cohort.CONTROL: (43.0, 20.0),
    Cohort.PATIENT: (136.0, 45.0),
}
MIN_NERVE_CSA_MM2 = 12.0


def draw_nerve_csa(rng: np.random.Generator, cohort: Cohort) -> float:
    """Draw a subject's nerve CSA (mm²) from a gamma law with the cohort's mean and spread."""
    mean, spread = NERVE_CSA_MM2[cohort]
    shape = (mean / spread) ** 2
    return max(MIN_NERVE_CSA_MM2, float(rng.gamma(shape, mean / shape)))


@dataclass(frozen=True)
class SubjectPlan:
    """Study-level decisions for one subject, fixed before its images are drawn."""

    index: int
    cohort: Cohort
    hard_cases: tuple[HardCase, ...]


def plan_subjects(
    subjects: int,
    seed: int,
    patient_fraction: float,
    hard_fraction: float,
    hard_kinds: tuple[HardCase, ...],
) -> list[SubjectPlan]:
    """Assign cohorts and hard cases.

    ``round(subjects * patient_fraction)`` subjects are patients and
    ``round(subjects * hard_fraction)`` carry one hard case each, the kinds taken in
    turn from a shuffled ``hard_kinds`` so that every kind appears once enough
    subjects are hard. Which subjects these are is shuffled by the seed.
    """
    if subjects < 0:
        raise ValueError("subjects must be >= 0")
    for name, value in (("patient_fraction", patient_fraction), ("hard_fraction", hard_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {value}")
    rng = np.random.default_rng([seed, 0x5C1A])
    patients = set(rng.permutation(subjects)[: round(subjects * patient_fraction)].tolist())
    hard_order = rng.permutation(subjects)[: round(subjects * hard_fraction)].tolist() if hard_kinds else []
    kinds = [hard_kinds[i] for i in rng.permutation(len(hard_kinds))] if hard_kinds else []
    hard = {subject: (kinds[n % len(kinds)],) for n, subject in enumerate(hard_order)}
    return [
        SubjectPlan(
            index=i,
            cohort=Cohort.PATIENT if i in patients else Cohort.CONTROL,
            hard_cases=hard.get(i, ()),
        )
        for i in range(subjects)
    ]
