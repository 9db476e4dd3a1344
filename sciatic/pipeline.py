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


# The functions below are being implemented; their signatures are the contract
# the DAGs rely on.


def pending_series() -> list[int]:
    """IDs of converted, current (not superseded) series without a segmentation by the production model."""
    raise NotImplementedError


def segment(series_id: int, run_id: str | None = None, model_id: int | None = None, force: bool = False) -> int:
    """Segment one series with the production model (or ``model_id``); return the segmentation id.

    A no-op returning the existing id when that series and model already have one, unless ``force``.
    """
    raise NotImplementedError


def measure(segmentation_id: int, run_id: str | None = None) -> None:
    """Compute and store slice and nerve metrics of one segmentation (replacing earlier ones)."""
    raise NotImplementedError


def quality_control(segmentation_id: int, run_id: str | None = None) -> str:
    """Label-free QC flags (and Dice against every manual label of the series); return the QC status."""
    raise NotImplementedError


def import_labels(run_id: str | None = None) -> list[int]:
    """Import new manual labels from the labels folder; return the ids of new manual_label rows."""
    raise NotImplementedError


def segmentations_needing_label_qc() -> list[int]:
    """Segmentations of series that have a manual label without a Dice QC row against it."""
    raise NotImplementedError


def retrain_due() -> bool:
    """True when at least SCIATIC_RETRAIN_MIN_NEW_LABELS labels arrived since the last training run."""
    raise NotImplementedError


def start_training_run(trigger: str, run_id: str | None = None) -> int:
    """Freeze a subject-level split of the labelled series; return the training_run id."""
    raise NotImplementedError


def train_challenger(training_run_id: int, run_id: str | None = None) -> int:
    """Train a challenger on the run's frozen split (GPU when available); return its model_version id."""
    raise NotImplementedError


def evaluate_and_decide(training_run_id: int, run_id: str | None = None) -> str:
    """Evaluate challenger and production on the same test subjects; promote or keep; return the decision."""
    raise NotImplementedError
