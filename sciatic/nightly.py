"""The nightly job in one process, without Airflow: what ``sciatic run`` does.

ingest -> segment every pending series with the production model -> metrics
-> QC -> import manual labels -> Dice QC where labels now exist, then a
summary of every case touched. Each step is the same ``sciatic.pipeline``
function the Airflow tasks call, so this is the DAGs' behaviour in miniature.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from tqdm import tqdm

from sciatic import pipeline
from sciatic.db.models import NerveMetric, QcResult, Segmentation, Series, Study, Subject
from sciatic.db.session import default_engine, session_scope
from sciatic.errors import NoProductionModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseRow:
    segmentation_id: int
    pseudonym: str
    cohort: str
    series: str
    slices: int
    qc_status: str
    volume_mm3: float | None
    csa_median_mm2: float | None
    dice: float | None


@dataclass
class NightlySummary:
    ingest: str = ""
    segmented: list[int] = field(default_factory=list)
    failed_series: list[tuple[int, str]] = field(default_factory=list)
    labels_imported: int = 0
    no_model: bool = False
    cases: list[CaseRow] = field(default_factory=list)

    def table(self) -> str:
        header = ("seg", "subject", "cohort", "series", "slices", "QC", "volume mm³", "median CSA mm²", "Dice")
        rows = [
            (
                str(c.segmentation_id),
                c.pseudonym,
                c.cohort,
                c.series[:28],
                str(c.slices),
                c.qc_status,
                "-" if c.volume_mm3 is None else f"{c.volume_mm3:.0f}",
                "-" if c.csa_median_mm2 is None else f"{c.csa_median_mm2:.1f}",
                "-" if c.dice is None else f"{c.dice:.3f}",
            )
            for c in self.cases
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def run_nightly(run_id: str | None = None, progress: bool = True) -> NightlySummary:
    summary = NightlySummary()
    summary.ingest = pipeline.ingest(run_id).summary()
    try:
        pending = pipeline.pending_series(run_id)
    except NoProductionModelError:
        summary.no_model = True
        pending = []
    for series_id in tqdm(pending, desc="segmenting", unit="series", disable=not progress):
        try:
            segmentation_id = pipeline.segment(series_id, run_id)
            pipeline.measure(segmentation_id, run_id)
            pipeline.quality_control(segmentation_id, run_id)
            summary.segmented.append(segmentation_id)
        except Exception as exc:  # one bad series never stops the night's work
            log.exception("series %s failed", series_id)
            summary.failed_series.append((series_id, f"{type(exc).__name__}: {exc}"))
    summary.labels_imported = len(pipeline.import_labels(run_id))
    for segmentation_id in pipeline.segmentations_needing_label_qc(run_id):
        pipeline.quality_control(segmentation_id, run_id)
        if segmentation_id not in summary.segmented:
            summary.segmented.append(segmentation_id)
    summary.cases = case_rows(summary.segmented)
    return summary


def case_rows(segmentation_ids: list[int]) -> list[CaseRow]:
    rows = []
    with session_scope(default_engine()) as session:
        for segmentation_id in sorted(segmentation_ids):
            segmentation = session.get(Segmentation, segmentation_id)
            assert segmentation is not None
            series = session.get(Series, segmentation.series_id)
            assert series is not None
            study = session.get(Study, series.study_id)
            assert study is not None
            subject = session.get(Subject, study.subject_id)
            assert subject is not None
            metric = session.scalars(select(NerveMetric).where(NerveMetric.segmentation_id == segmentation_id)).first()
            qcs = list(session.scalars(select(QcResult).where(QcResult.segmentation_id == segmentation_id)))
            label_free = next((q for q in qcs if q.manual_label_id is None), None)
            dices = [q.dice for q in qcs if q.dice is not None]
            rows.append(
                CaseRow(
                    segmentation_id=segmentation_id,
                    pseudonym=subject.pseudonym,
                    cohort=subject.cohort.value,
                    series=series.description or series.series_instance_uid,
                    slices=series.n_slices or 0,
                    qc_status=label_free.status.value if label_free else "-",
                    volume_mm3=metric.volume_mm3 if metric else None,
                    csa_median_mm2=metric.csa_median_mm2 if metric else None,
                    dice=sum(dices) / len(dices) if dices else None,
                )
            )
    return rows
