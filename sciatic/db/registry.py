"""The model registry: ``model_version`` rows, their checkpoints, and which one is in production.

Exactly one version is ``production`` at a time (a unique partial index
enforces it); every change is written to the audit trail in the same
transaction.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sciatic import __version__
from sciatic.db import audit
from sciatic.db.enums import ModelStatus
from sciatic.db.models import ModelVersion, TrainingRun
from sciatic.errors import NoProductionModelError, SciaticError

STEP = "registry"


class UnknownModelError(SciaticError):
    """No model version has this id.

    Recovery: ``sciatic models list`` shows the registered versions.
    """


def register(
    session: Session,
    checkpoint: Path,
    sha256: str,
    config_name: str,
    config: dict[str, Any],
    metrics: dict[str, float] | None = None,
    name: str | None = None,
    origin: str | None = None,
) -> ModelVersion:
    """Add a checkpoint as a ``candidate`` (or return the version already holding these bytes)."""
    existing = by_sha256(session, sha256)
    if existing is not None:
        return existing
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    version = ModelVersion(
        name=name or f"{config_name}-{stamp}-{sha256[:8]}",
        config_name=config_name,
        config=config,
        checkpoint_path=str(checkpoint),
        checkpoint_sha256=sha256,
        status=ModelStatus.CANDIDATE,
        metrics=metrics,
        sciatic_version=__version__,
        origin=origin,
    )
    session.add(version)
    session.flush()
    audit.record(session, STEP, "registered", "model_version", version.id, name=version.name, sha256=sha256)
    return version


def get(session: Session, model_id: int) -> ModelVersion:
    version = session.get(ModelVersion, model_id)
    if version is None:
        raise UnknownModelError(f"no model version with id {model_id}")
    return version


def production(session: Session) -> ModelVersion:
    """The production model; raises NoProductionModelError when there is none."""
    version = session.scalars(select(ModelVersion).where(ModelVersion.status == ModelStatus.PRODUCTION)).first()
    if version is None:
        raise NoProductionModelError("no model is in production")
    return version


def production_or_none(session: Session) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.status == ModelStatus.PRODUCTION)).first()


def promote(session: Session, model_id: int, reason: str = "manual") -> ModelVersion:
    """Make ``model_id`` the production model; the previous one becomes a retired version."""
    version = get(session, model_id)
    if version.status is ModelStatus.PRODUCTION:
        return version
    current = production_or_none(session)
    now = dt.datetime.now(dt.UTC)
    if current is not None:
        current.status = ModelStatus.RETIRED
        current.retired_at = now
        session.flush()  # the unique index allows one production row at a time
        audit.record(session, STEP, "retired", "model_version", current.id, replaced_by=version.id)
    version.status = ModelStatus.PRODUCTION
    version.promoted_at = now
    version.retired_at = None
    session.flush()
    audit.record(session, STEP, "promoted", "model_version", version.id, reason=reason, replaced=current and current.id)
    return version


def retire(session: Session, model_id: int, reason: str = "manual") -> ModelVersion:
    version = get(session, model_id)
    if version.status is not ModelStatus.RETIRED:
        version.status = ModelStatus.RETIRED
        version.retired_at = dt.datetime.now(dt.UTC)
        audit.record(session, STEP, "retired", "model_version", version.id, reason=reason)
    return version


def all_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def by_sha256(session: Session, sha256: str) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.checkpoint_sha256 == sha256)).first()


def by_name(session: Session, name: str) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.name == name)).first()


def training_run_of(session: Session, model_id: int) -> TrainingRun | None:
    """The training run whose challenger ``model_id`` is (None for an imported model)."""
    return session.scalars(
        select(TrainingRun).where(TrainingRun.challenger_model_id == model_id).order_by(TrainingRun.id)
    ).first()


def lineage(session: Session, model_id: int) -> list[TrainingRun]:
    """The training runs behind a model: its own, then that of the model it was fine-tuned from, and so on."""
    runs: list[TrainingRun] = []
    current: int | None = model_id
    seen: set[int] = set()
    while current is not None and current not in seen:
        seen.add(current)
        run = training_run_of(session, current)
        if run is None:
            break
        runs.append(run)
        current = run.initial_model_id
    return runs
