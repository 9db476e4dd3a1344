"""The audit trail: one ``pipeline_event`` row per thing that happened."""

from __future__ import annotations

import socket
from contextvars import ContextVar
from typing import Any

from sqlalchemy.orm import Session

from sciatic import __version__
from sciatic.db.models import PipelineEvent

# Set by the entry point (Airflow task or CLI) so that events name their run.
current_run_id: ContextVar[str | None] = ContextVar("current_run_id", default=None)
_HOST = socket.gethostname()


def record(
    session: Session,
    step: str,
    action: str,
    entity: str | None = None,
    entity_id: int | None = None,
    **detail: Any,
) -> None:
    """Add an event to the session (committed with the change it describes)."""
    session.add(
        PipelineEvent(
            step=step,
            action=action,
            entity=entity,
            entity_id=entity_id,
            detail=detail or None,
            sciatic_version=__version__,
            hostname=_HOST,
            run_id=current_run_id.get(),
        )
    )
