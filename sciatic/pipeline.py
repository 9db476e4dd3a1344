"""The service's steps as Airflow tasks and ``sciatic run`` call them: IDs in, small values out.

Each function opens the configured database (checked to be at the code's
schema), names the run in the audit trail, and calls one function of one step
module in ``sciatic.steps``; every step may be retried after a crash at any
line. Heavy imports happen inside the functions so that importing this module
(at DAG parse time) costs nothing. In flow order:

ingest -> pending_series -> segment -> measure -> quality_control
import_labels -> segmentations_needing_label_qc -> quality_control
retrain_due -> start_training_run -> train_challenger -> evaluate_and_decide
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sciatic.config import get_settings
from sciatic.db import audit

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from sciatic.dicom.seg import SegExport
    from sciatic.steps.ingest import IngestReport
    from sciatic.steps.labels import LabelReport

__all__ = [
    "evaluate_and_decide",
    "export_seg",
    "import_labels",
    "ingest",
    "label_import",
    "measure",
    "pending_series",
    "quality_control",
    "retrain_due",
    "segment",
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


def start_training_run(trigger: str, run_id: str | None = None, config_name: str | None = None) -> int:
    """Freeze a subject-level split of the labelled series; return the training_run id."""
    from sciatic.steps import retrain as step

    with _step(run_id) as engine:
        return step.start_training_run(get_settings(), engine, trigger, config_name=config_name)


def train_challenger(
    training_run_id: int, run_id: str | None = None, epochs: int | None = None, progress: bool = False
) -> int:
    """Train a challenger on the run's frozen split (GPU when available); return its model_version id."""
    from sciatic.steps import retrain as step

    with _step(run_id) as engine:
        return step.train_challenger(get_settings(), engine, training_run_id, progress=progress, epochs=epochs)


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
