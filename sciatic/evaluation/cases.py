"""What a case is: the facts about one segmentation that pictures, reports and summaries show.

Plain values (no database session, no arrays): ``sciatic.db.queries`` fills
them, the renderers in this package and the command line read them. Subjects
appear by pseudonym only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sciatic.db.enums import Cohort, QcStatus

__all__ = ["STATUS_ORDER", "Case", "CaseInfo", "NotSegmented"]

#: Worst first: the order of cases in reports.
STATUS_ORDER = {QcStatus.FAIL: 0, QcStatus.REVIEW: 1, None: 2, QcStatus.PASS: 3}


@dataclass(frozen=True, slots=True)
class CaseInfo:
    """Database facts about one segmentation (no PHI: the subject is a pseudonym)."""

    segmentation_id: int
    series_id: int
    series_uid: str
    series_number: int | None
    series_description: str | None
    pseudonym: str
    cohort: Cohort
    study_date: dt.date | None
    model_id: int
    model_name: str
    created_at: dt.datetime
    qc_status: QcStatus | None
    flags: tuple[tuple[str, str], ...]  # (flag, detail), label-free and per label, deduplicated
    dice: tuple[float, ...]  # one per manual label
    mask_path: str
    volume_path: str | None
    label_path: str | None  # first manual label of the series (lowest id)
    label_rater: str | None
    affine: list[Any] | None  # the series volume's 4x4 RAS+ affine
    n_slices: int | None = None

    @property
    def title(self) -> str:
        dice = "" if not self.dice else " · Dice " + ", ".join(f"{d:.2f}" for d in self.dice)
        status = self.qc_status.value if self.qc_status else "not assessed"
        return (
            f"{self.pseudonym} ({self.cohort.value}) · series {self.series_id} · "
            f"model {self.model_name} · QC {status}{dice}"
        )


@dataclass(frozen=True, slots=True)
class Case:
    """One row of the report: a segmentation, its metrics and its pictures (data URIs)."""

    info: CaseInfo
    volume_mm3: float | None
    csa_mean_mm2: float | None
    csa_median_mm2: float | None
    csa_max_mm2: float | None
    csa_by_slice: tuple[tuple[int, float], ...]  # (slice index, CSA mm²) from slice_metric rows
    csa_plot: str | None = None
    overlay: str | None = None
    problem: str | None = None  # why a picture is missing

    @property
    def status(self) -> str:
        return self.info.qc_status.value if self.info.qc_status else "none"

    @property
    def sort_key(self) -> tuple[int, dt.date, str, int]:
        return (
            STATUS_ORDER[self.info.qc_status],
            self.info.study_date or dt.date.min,
            self.info.pseudonym,
            self.info.segmentation_id,
        )


@dataclass(frozen=True, slots=True)
class NotSegmented:
    """A converted series the eligibility rules keep from segmentation, and why."""

    series_id: int
    pseudonym: str
    study_date: dt.date | None
    series_number: int | None
    series_description: str | None
    reason: str
    detail: str
