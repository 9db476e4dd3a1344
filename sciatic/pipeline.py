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
