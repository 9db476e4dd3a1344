"""The service's steps as Airflow tasks and ``sciatic run`` call them: IDs in, small values out.

Each function opens the configured database (checked to be at the code's
schema), names the run in the audit trail, and calls one function of one step
module in ``sciatic.steps``; every step may be retried after a crash at any
line. Heavy imports happen inside the functions so that importing this module
(at DAG parse time) costs nothing. In flow order:

ingest -> pending_series (-> chunks) -> segment -> measure -> quality_control
          (segment_chunk: the three for a chunk of series in one process, the model loaded once)
import_labels -> segmentations_needing_label_qc -> quality_control
retrain_due -> start_training_run -> train_challenger -> evaluate_and_decide
quality_control -> queue_results (or queue_new_results) -> drain_outbox
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sciatic.config import get_settings
from sciatic.db import audit

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from sciatic.dicom.sc import ScExport
    from sciatic.dicom.seg import SegExport
    from sciatic.steps.export import ReportExport
    from sciatic.steps.ingest import IngestReport
    from sciatic.steps.labels import LabelReport
    from sciatic.steps.outbox import DrainReport

__all__ = [
    "ChunkReport",
    "chunks",
    "drain_outbox",
    "evaluate_and_decide",
    "export_sc",
    "export_seg",
    "export_sr",
    "import_labels",
    "ingest",
    "label_import",
    "measure",
    "pending_series",
    "quality_control",
    "queue_new_results",
    "queue_results",
    "retrain_due",
    "segment",
    "segment_chunk",
    "segmentations_needing_label_qc",
    "start_training_run",
    "train_challenger",
]


@contextmanager
def _step(run_id: str | None) -> Iterator[Engine]:
    """The database engine, checked to be at the code's schema, with the run id set for the audit trail."""
    from sciatic.db.migrate import require_head
    from sciatic.db.session import default_engine

    engine = default_engine()
    require_head(engine)
    token = audit.current_run_id.set(run_id)
    try:
        yield engine
    finally:
        audit.current_run_id.reset(token)


# --------------------------------------------------------------------------- ingest


def ingest(run_id: str | None = None) -> IngestReport:
    """One pass over the drop folder: index, de-duplicate, quarantine, convert quiet series."""
    from sciatic.steps import ingest as step

    with _step(run_id) as engine:
        return step.run_pass(get_settings(), engine)


# --------------------------------------------------------------------------- segmentation


def pending_series(run_id: str | None = None) -> list[int]:
    """IDs of converted, current, eligible series without a segmentation by the production model."""
    from sciatic.steps import segment as step

    with _step(run_id) as engine:
        return step.pending_series(get_settings(), engine)


def segment(series_id: int, run_id: str | None = None, model_id: int | None = None, force: bool = False) -> int:
    """Segment one series with the production model (or ``model_id``); return the segmentation id.

    A no-op returning the existing id when that series and model already have one, unless ``force``.
    """
    from sciatic.steps import segment as step

    with _step(run_id) as engine:
        return step.segment_series(get_settings(), engine, series_id, model_id=model_id, force=force)


@dataclass
class ChunkReport:
    """What one chunk did: segmentations finished, series that failed (with why), series left for later."""

    done: list[int] = field(default_factory=list)  # segmentation ids (segmented, measured, QC'd)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (series id, error)
    left: list[int] = field(default_factory=list)  # series not started: the chunk's time budget ran out

    def summary(self) -> str:
        return f"{len(self.done)} done, {len(self.failed)} failed, {len(self.left)} left for the next run"


def chunks(series_ids: list[int]) -> list[list[int]]:
    """``series_ids`` cut into chunks of ``SCIATIC_SEGMENT_CHUNK_SIZE`` (one Airflow task each)."""
    size = get_settings().segment_chunk_size
    return [series_ids[i : i + size] for i in range(0, len(series_ids), size)]


def segment_chunk(series_ids: list[int], run_id: str | None = None) -> ChunkReport:
    """Segment, measure and QC each series of a chunk in this process; the model is loaded once.

    A series that fails is recorded and the chunk goes on; a series already
    finished (segmentation, metrics and QC present) is not done again, so a
    retry of the chunk redoes only what failed. No new series is started once
    ``SCIATIC_SEGMENT_CHUNK_MAX_MINUTES`` have passed.
    """
    import logging

    log = logging.getLogger(__name__)
    deadline = time.monotonic() + 60 * get_settings().segment_chunk_max_minutes
    report = ChunkReport()
    for index, series_id in enumerate(series_ids):
        if time.monotonic() > deadline:
            report.left = list(series_ids[index:])
            break
        try:
            segmentation_id = segment(series_id, run_id)
            if not _finished(segmentation_id):
                measure(segmentation_id, run_id)
                quality_control(segmentation_id, run_id)
            report.done.append(segmentation_id)
        except Exception as exc:  # one bad series never stops its chunk
            log.exception("series %s failed", series_id)
            report.failed.append((series_id, f"{type(exc).__name__}: {exc}"))
    return report


def _finished(segmentation_id: int) -> bool:
    from sciatic.db import queries
    from sciatic.db.session import default_engine, session_scope

    with session_scope(default_engine()) as session:
        return queries.segmentation_finished(session, segmentation_id)


def measure(segmentation_id: int, run_id: str | None = None) -> None:
    """Compute and store slice and nerve metrics of one segmentation (replacing earlier ones)."""
    from sciatic.steps import measure as step

    with _step(run_id) as engine:
        step.measure(engine, segmentation_id)


def quality_control(segmentation_id: int, run_id: str | None = None) -> str:
    """Label-free QC flags from the metric rows (and Dice against every manual label); return the QC status."""
    from sciatic.steps import qc as step

    with _step(run_id) as engine:
        return step.quality_control(get_settings(), engine, segmentation_id).value


# --------------------------------------------------------------------------- labels


def label_import(run_id: str | None = None) -> LabelReport:
    """Import new manual labels from the labels folder; the full report (imported, waiting, refused)."""
    from sciatic.steps import labels as step

    with _step(run_id) as engine:
        return step.import_labels(get_settings(), engine)


def import_labels(run_id: str | None = None) -> list[int]:
    """Import new manual labels from the labels folder; return the ids of new manual_label rows."""
    return label_import(run_id).imported


def segmentations_needing_label_qc(run_id: str | None = None) -> list[int]:
    """Segmentations of series that have a manual label without a Dice QC row against it."""
    from sciatic.steps import qc as step

    with _step(run_id) as engine:
        return step.segmentations_needing_label_qc(engine)


# --------------------------------------------------------------------------- retraining


def retrain_due(run_id: str | None = None) -> bool:
    """True when at least SCIATIC_RETRAIN_MIN_NEW_LABELS labels arrived since the last training run."""
    from sciatic.steps import retrain as step

    with _step(run_id) as engine:
        return step.retrain_due(get_settings(), engine)


def start_training_run(
    trigger: str, run_id: str | None = None, config_name: str | None = None, from_scratch: bool | None = None
) -> int:
    """Freeze a subject-level split of the labelled series (fine-tuning production by default); return its id."""
    from sciatic.steps import retrain as step

    with _step(run_id) as engine:
        return step.start_training_run(
            get_settings(), engine, trigger, config_name=config_name, from_scratch=from_scratch
        )


def train_challenger(
    training_run_id: int,
    run_id: str | None = None,
    epochs: int | None = None,
    progress: bool = False,
    max_minutes: float | None = None,
) -> int:
    """Train a challenger on the run's frozen split (GPU when available); return its model_version id."""
    from sciatic.steps import retrain as step

    with _step(run_id) as engine:
        return step.train_challenger(
            get_settings(), engine, training_run_id, progress=progress, epochs=epochs, max_minutes=max_minutes
        )


def evaluate_and_decide(training_run_id: int, run_id: str | None = None) -> str:
    """Evaluate challenger and production on the same test subjects; promote or keep; return the decision."""
    from sciatic.steps import retrain as step

    with _step(run_id) as engine:
        return step.evaluate_and_decide(get_settings(), engine, training_run_id).value


# --------------------------------------------------------------------------- results to the hospital


def export_seg(segmentation_id: int, out: str | Path, send: bool = False, run_id: str | None = None) -> SegExport:
    """Write one segmentation as DICOM SEG (and send it to the configured PACS when ``send``)."""
    from sciatic.steps import export as step

    with _step(run_id) as engine:
        return step.export_segmentation(get_settings(), engine, segmentation_id, out, send=send)


def export_sr(
    segmentation_id: int,
    out: str | Path,
    send: bool = False,
    seg: str | Path | None = None,
    run_id: str | None = None,
) -> ReportExport:
    """Write the DICOM SR measurement report of one segmentation, referencing ``seg`` or a new SEG beside it."""
    from sciatic.steps import export as step

    with _step(run_id) as engine:
        return step.export_report(get_settings(), engine, segmentation_id, out, send=send, seg=seg)


def export_sc(segmentation_id: int, out: str | Path, send: bool = False, run_id: str | None = None) -> ScExport:
    """Write the overlay picture of one segmentation as DICOM Secondary Capture (and send it when ``send``)."""
    from sciatic.steps import export as step

    with _step(run_id) as engine:
        return step.export_picture(get_settings(), engine, segmentation_id, out, send=send)


def queue_results(segmentation_id: int, run_id: str | None = None) -> int:
    """Queue the SEG, SR and SC of a QC'd segmentation for the configured PACS; return its objects in the outbox."""
    from sciatic.steps import export as step

    with _step(run_id) as engine:
        return len(step.queue_results(get_settings(), engine, segmentation_id))


def queue_new_results(run_id: str | None = None) -> int:
    """Queue the results of recent QC'd segmentations not queued yet; return the objects queued."""
    from sciatic.steps import export as step

    with _step(run_id) as engine:
        return len(step.queue_new_results(get_settings(), engine))


def drain_outbox(run_id: str | None = None) -> DrainReport:
    """Send every due object of the PACS outbox; retry later with back-off what the PACS did not take."""
    from sciatic.steps import outbox as step

    with _step(run_id) as engine:
        return step.drain(get_settings(), engine)
