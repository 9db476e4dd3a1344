"""The nightly job in one process, without Airflow: what ``sciatic run`` does.

ingest -> segment every pending series with the production model -> metrics
-> QC -> import manual labels -> Dice QC where labels now exist -> the new
segmentations' SEG, SR and SC queued for the PACS and the outbox sent, then a
summary of every case touched. Each step is the same ``sciatic.pipeline``
function the Airflow tasks call, so this is the DAGs' behaviour in miniature.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tqdm import tqdm

from sciatic import pipeline
from sciatic.db import queries
from sciatic.db.session import default_engine, session_scope
from sciatic.errors import NoProductionModelError
from sciatic.evaluation.cases import Case

log = logging.getLogger(__name__)


@dataclass
class NightlySummary:
    ingest: str = ""
    segmented: list[int] = field(default_factory=list)
    # series converted by this run that the eligibility rules keep from segmentation: (series, description, why)
    not_segmented: list[tuple[int, str, str]] = field(default_factory=list)
    failed_series: list[tuple[int, str]] = field(default_factory=list)
    labels_imported: int = 0
    no_model: bool = False
    cases: list[Case] = field(default_factory=list)
    queued: int = 0  # DICOM objects queued for the PACS by this run
    not_queued: list[tuple[int, str]] = field(default_factory=list)  # (segmentation id, error)
    outbox: dict[str, int] = field(default_factory=dict)  # outbox rows by status, after this run's sending

    def outbox_line(self) -> str:
        counts = ", ".join(f"{self.outbox.get(s, 0)} {s}" for s in ("pending", "sent", "failed"))
        return f"PACS outbox: {self.queued} queued by this run; {counts}"

    def problems(self) -> list[str]:
        """One line per series not segmented (and why), per failure, per result not queued."""
        lines = [f"series {sid} ({description}) not segmented: {why}" for sid, description, why in self.not_segmented]
        lines += [f"series {sid} FAILED: {error}" for sid, error in self.failed_series]
        lines += [f"segmentation {sid}: results NOT queued for the PACS: {error}" for sid, error in self.not_queued]
        return lines

    def table(self) -> str:
        header = ("seg", "subject", "cohort", "series", "slices", "QC", "volume mm³", "median CSA mm²", "Dice")
        rows = [
            (
                str(c.info.segmentation_id),
                c.info.pseudonym,
                c.info.cohort.value,
                (c.info.series_description or c.info.series_uid)[:28],
                str(c.info.n_slices or 0),
                c.info.qc_status.value if c.info.qc_status else "-",
                "-" if c.volume_mm3 is None else f"{c.volume_mm3:.0f}",
                "-" if c.csa_median_mm2 is None else f"{c.csa_median_mm2:.1f}",
                "-" if not c.info.dice else f"{sum(c.info.dice) / len(c.info.dice):.3f}",
            )
            for c in self.cases
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def run_nightly(run_id: str | None = None, progress: bool = True) -> NightlySummary:
    summary = NightlySummary()
    ingested = pipeline.ingest(run_id)
    summary.ingest = ingested.summary()
    with session_scope(default_engine()) as session:
        summary.not_segmented = [
            (s.id, s.description or s.series_instance_uid, s.eligibility_detail or "")
            for s in queries.ineligible_series(session, ingested.converted)
        ]
    try:
        pending = pipeline.pending_series(run_id)
    except NoProductionModelError:
        summary.no_model = True
        pending = []
    for series_id in tqdm(pending, desc="segmenting", unit="series", disable=not progress):
        chunk = pipeline.segment_chunk([series_id], run_id)  # what an Airflow chunk does, a series at a time
        summary.segmented += chunk.done
        summary.failed_series += chunk.failed
    summary.labels_imported = len(pipeline.import_labels(run_id))
    new = list(summary.segmented)
    for segmentation_id in pipeline.segmentations_needing_label_qc(run_id):
        pipeline.quality_control(segmentation_id, run_id)
        if segmentation_id not in summary.segmented:
            summary.segmented.append(segmentation_id)
    for segmentation_id in new:  # after every QC of the night: the results as the PACS should see them
        try:
            summary.queued += pipeline.queue_results(segmentation_id, run_id)
        except Exception as exc:  # the results of one segmentation never stop the others
            log.exception("results of segmentation %s not queued for the PACS", segmentation_id)
            summary.not_queued.append((segmentation_id, f"{type(exc).__name__}: {exc}"))
    pipeline.drain_outbox(run_id)
    with session_scope(default_engine()) as session:
        summary.cases = sorted(queries.cases(session, summary.segmented), key=lambda c: c.info.segmentation_id)
        summary.outbox = {status.value: n for status, n in queries.outbox_counts(session).items()}
    return summary
