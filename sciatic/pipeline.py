"""The idempotent steps of the service: what Airflow tasks and ``sciatic run`` call.

Each function takes IDs (never arrays), opens its own database session, and
may be retried after a crash at any line. Heavy imports happen inside the
functions so that importing this module (at DAG parse time) costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sciatic.config import get_settings
from sciatic.db import audit

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from sciatic.ingest import IngestReport
    from sciatic.labels import LabelReport


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


def ingest(run_id: str | None = None) -> IngestReport:
    """One pass over the drop folder: index, de-duplicate, quarantine, convert quiet series."""
    from sciatic.ingest import run_pass

    with _step(run_id) as engine:
        return run_pass(get_settings(), engine)


def pending_series(run_id: str | None = None) -> list[int]:
    """IDs of converted, current (not superseded) series without a segmentation by the production model."""
    from sciatic.segment import pending_series as pending

    with _step(run_id) as engine:
        return pending(engine)


def segment(series_id: int, run_id: str | None = None, model_id: int | None = None, force: bool = False) -> int:
    """Segment one series with the production model (or ``model_id``); return the segmentation id.

    A no-op returning the existing id when that series and model already have one, unless ``force``.
    """
    from sciatic.segment import segment_series

    with _step(run_id) as engine:
        return segment_series(get_settings(), engine, series_id, model_id=model_id, force=force)


def measure(segmentation_id: int, run_id: str | None = None) -> None:
    """Compute and store slice and nerve metrics of one segmentation (replacing earlier ones)."""
    from sciatic.measure import measure as store_metrics

    with _step(run_id) as engine:
        store_metrics(get_settings(), engine, segmentation_id)


def quality_control(segmentation_id: int, run_id: str | None = None) -> str:
    """Label-free QC flags (and Dice against every manual label of the series); return the QC status."""
    from sciatic.measure import quality_control as assess

    with _step(run_id) as engine:
        return assess(get_settings(), engine, segmentation_id).value


def label_import(run_id: str | None = None) -> LabelReport:
    """Import new manual labels from the labels folder; the full report (imported, waiting, refused)."""
    from sciatic.labels import import_labels as run_import

    with _step(run_id) as engine:
        return run_import(get_settings(), engine)


def import_labels(run_id: str | None = None) -> list[int]:
    """Import new manual labels from the labels folder; return the ids of new manual_label rows."""
    return label_import(run_id).imported


def segmentations_needing_label_qc(run_id: str | None = None) -> list[int]:
    """Segmentations of series that have a manual label without a Dice QC row against it."""
    from sciatic.measure import segmentations_needing_label_qc as needing

    with _step(run_id) as engine:
        return needing(engine)


def retrain_due(run_id: str | None = None) -> bool:
    """True when at least SCIATIC_RETRAIN_MIN_NEW_LABELS labels arrived since the last training run."""
    from sciatic.retrain import retrain_due as due

    with _step(run_id) as engine:
        return due(get_settings(), engine)


def start_training_run(trigger: str, run_id: str | None = None, config_name: str | None = None) -> int:
    """Freeze a subject-level split of the labelled series; return the training_run id."""
    from sciatic.retrain import start_training_run as start

    with _step(run_id) as engine:
        return start(get_settings(), engine, trigger, config_name=config_name)


def train_challenger(
    training_run_id: int, run_id: str | None = None, epochs: int | None = None, progress: bool = False
) -> int:
    """Train a challenger on the run's frozen split (GPU when available); return its model_version id."""
    from sciatic.retrain import train_challenger as train

    with _step(run_id) as engine:
        return train(get_settings(), engine, training_run_id, progress=progress, epochs=epochs)


def evaluate_and_decide(training_run_id: int, run_id: str | None = None) -> str:
    """Evaluate challenger and production on the same test subjects; promote or keep; return the decision."""
    from sciatic.retrain import evaluate_and_decide as decide

    with _step(run_id) as engine:
        return decide(get_settings(), engine, training_run_id).value
