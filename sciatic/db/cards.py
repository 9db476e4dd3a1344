"""Model cards from the registry: the facts of a ``model_version`` (and its training run), written as Markdown."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy.orm import Session

from sciatic.db import audit, registry
from sciatic.db.models import TrainingRun
from sciatic.model.card import CardFacts, TrainingFacts, render
from sciatic.storage import atomic_write

STEP = "registry"


def _when(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _training_facts(session: Session, run: TrainingRun) -> TrainingFacts:
    split = run.split
    phantom = dict(split.get("phantom") or {})  # sciatic.model.old_site.PhantomOldSite
    replayed = int(phantom.get("replay_subjects", 0))
    champion = registry.get(session, run.champion_model_id) if run.champion_model_id is not None else None
    start = "trained from scratch (random initial weights)"
    if run.initial_model_id is not None:
        start = f"fine-tuned from model {run.initial_model_id} (`{registry.get(session, run.initial_model_id).name}`)"
    interval = None
    if run.dice_difference is not None and run.dice_difference_low is not None and run.dice_difference_high is not None:
        interval = (run.dice_difference, run.dice_difference_low, run.dice_difference_high)
    return TrainingFacts(
        run_id=run.id,
        trigger=run.trigger,
        seed=run.seed,
        started=_when(run.started_at) or "-",
        start=start,
        series={part: len(split.get(part, [])) for part in ("train", "val", "test", "replay")},
        subjects={part: len(ids) for part, ids in dict(split.get("subjects", {})).items()},
        challenger=run.challenger_metrics,
        champion=run.champion_metrics,
        champion_name=champion.name if champion else None,
        phantom_replay=replayed * int(phantom.get("replay_pool", 1)),
        phantom_replay_per_epoch=replayed,
        interval=interval,
        decision=run.decision.value,
        detail=run.decision_detail or "",
    )


def card_facts(session: Session, model_id: int, previous_card: str | None = None) -> CardFacts:
    """Everything the registry knows about one model version, for its card."""
    version = registry.get(session, model_id)
    run = registry.training_run_of(session, model_id)
    return CardFacts(
        model_id=version.id,
        name=version.name,
        sha256=version.checkpoint_sha256,
        config_name=version.config_name,
        checkpoint=version.checkpoint_path,
        origin=version.origin or "-",
        sciatic_version=version.sciatic_version,
        created=_when(version.created_at) or "-",
        status=version.status.value,
        promoted=_when(version.promoted_at),
        metrics={str(k): float(v) for k, v in (version.metrics or {}).items()},
        training=_training_facts(session, run) if run is not None else None,
        previous_card=previous_card,
    )


def write_card(session: Session, model_id: int, path: Path, previous_card: str | None = None) -> Path:
    """Write the model's card to ``path`` (atomically) and record the path in ``model_version.card_path``."""
    text = render(card_facts(session, model_id, previous_card)).encode()
    atomic_write(path, lambda handle: handle.write(text))
    version = registry.get(session, model_id)
    version.card_path = str(path)
    audit.record(session, STEP, "card_written", "model_version", model_id, path=str(path))
    return path
