"""Retraining: freeze a split, train a challenger, compare it with production, promote or keep.

The split is by subject (all series of a subject fall in one part), stratified
by cohort, 80/20 train/test as in the seed, with a validation part taken from
the training subjects for early stopping. It is seeded and stored in
``training_run.split`` so that the test subjects of every run are known later.
Challenger and champion are evaluated on the same test series; the challenger
is promoted only if its mean Dice beats the champion's by the configured margin
and its failure rate (Dice below the failure threshold) is not worse. With no
production model, a challenger is promoted when its mean Dice reaches
``SCIATIC_PROMOTE_MIN_DICE``.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select

from sciatic.config import Settings
from sciatic.db import audit, queries, registry
from sciatic.db.enums import TrainingDecision
from sciatic.db.models import ManualLabel, TrainingRun, utcnow
from sciatic.db.queries import LabelledSeries
from sciatic.db.session import session_scope
from sciatic.errors import SciaticError
from sciatic.layout import DataLayout

if TYPE_CHECKING:
    from sciatic.model.train import Evaluation

log = logging.getLogger(__name__)
STEP = "retrain"
TEST_FRACTION = 0.2
VAL_FRACTION = 0.15
MIN_SUBJECTS = 3


class NotEnoughLabelsError(SciaticError):
    """Too few labelled subjects to train and test a model.

    Recovery: import more manual labels (``sciatic labels import``); training
    needs at least three labelled subjects (train, validation, test).
    """


def split_subjects(cohorts: dict[int, str], seed: int) -> dict[str, list[int]]:
    """Subject ids per part (train, val, test): stratified by cohort, seeded."""
    if len(cohorts) < MIN_SUBJECTS:
        raise NotEnoughLabelsError(f"{len(cohorts)} labelled subjects; at least {MIN_SUBJECTS} are needed")
    rng = random.Random(seed)
    by_cohort: defaultdict[str, list[int]] = defaultdict(list)
    for subject, cohort in sorted(cohorts.items()):
        by_cohort[cohort].append(subject)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for cohort in sorted(by_cohort):
        members = by_cohort[cohort]
        rng.shuffle(members)
        n_test = round(len(members) * TEST_FRACTION)
        parts["test"] += members[:n_test]
        rest = members[n_test:]
        n_val = round(len(rest) * VAL_FRACTION)
        parts["val"] += rest[:n_val]
        parts["train"] += rest[n_val:]
    # every part needs a subject: borrow from the largest part when rounding left one empty
    for part in ("test", "val"):
        if not parts[part]:
            parts[part].append(parts["train"].pop())
    return {part: sorted(ids) for part, ids in parts.items()}


def labels_since_last_run(engine: Engine) -> int:
    with session_scope(engine) as session:
        last = session.scalar(select(func.max(TrainingRun.started_at)))
        query = select(func.count()).select_from(ManualLabel)
        if last is not None:
            query = query.where(ManualLabel.imported_at > last)
        return int(session.scalar(query) or 0)


def retrain_due(settings: Settings, engine: Engine) -> bool:
    return labels_since_last_run(engine) >= settings.retrain_min_new_labels


def _labelled_series(engine: Engine) -> dict[int, LabelledSeries]:
    with session_scope(engine) as session:
        return queries.labelled_series(session)


def start_training_run(settings: Settings, engine: Engine, trigger: str, config_name: str | None = None) -> int:
    """Freeze the split of the labelled series into a new training_run row; return its id."""
    from sciatic.model.configs import config_to_dict, get_config

    labelled = _labelled_series(engine)
    cohorts = {item.subject_id: item.cohort for item in labelled.values()}
    parts = split_subjects(cohorts, settings.train_seed)
    split = {
        part: sorted(sid for sid, item in labelled.items() if item.subject_id in subjects)
        for part, subjects in parts.items()
    }
    split["subjects"] = parts  # type: ignore[assignment]
    config = get_config(config_name or settings.train_config)
    with session_scope(engine) as session:
        champion = registry.production_or_none(session)
        run = TrainingRun(
            trigger=trigger,
            config_name=config.name,
            config=config_to_dict(config),
            seed=settings.train_seed,
            split=split,
            champion_model_id=champion.id if champion else None,
        )
        session.add(run)
        session.flush()
        audit.record(
            session,
            STEP,
            "split_frozen",
            "training_run",
            run.id,
            train=len(split["train"]),
            val=len(split["val"]),
            test=len(split["test"]),
        )
        log.info("training run %s: %s", run.id, {k: len(v) for k, v in split.items() if k != "subjects"})
        return run.id


def train_challenger(
    settings: Settings, engine: Engine, training_run_id: int, progress: bool = True, epochs: int | None = None
) -> int:
    """Train the run's configuration on its frozen split; register the checkpoint; return the model id."""
    from sciatic.model.configs import config_from_dict, config_to_dict
    from sciatic.model.train import train

    with session_scope(engine) as session:
        run = session.get(TrainingRun, training_run_id)
        if run is None:
            raise SciaticError(f"no training run with id {training_run_id}")
        if run.challenger_model_id is not None:
            return run.challenger_model_id  # already trained: retry-safe
        split, config, seed = run.split, config_from_dict(run.config), run.seed
    labelled = _labelled_series(engine)

    def items(part: str) -> list[tuple[str, str]]:
        return [(labelled[s].volume_path, labelled[s].label_path) for s in split[part] if s in labelled]

    out_dir = DataLayout.of(settings).training_run(training_run_id)
    result = train(
        config,
        items("train"),
        items("val"),
        out_dir,
        epochs=epochs or settings.train_epochs,
        seed=seed,
        device=settings.device,
        progress=progress,
        failure_dice=settings.failure_dice,
    )
    with session_scope(engine) as session:
        version = registry.register(
            session,
            Path(result.checkpoint),
            result.sha256,
            config.name,
            config_to_dict(config),
            metrics=result.metrics,
        )
        run = session.get(TrainingRun, training_run_id)
        assert run is not None
        run.challenger_model_id = version.id
        audit.record(
            session,
            STEP,
            "challenger_trained",
            "training_run",
            run.id,
            model_version_id=version.id,
            epochs=result.epochs_run,
            seconds=round(result.seconds, 1),
            device=result.device,
        )
        return version.id


def evaluate_model(settings: Settings, engine: Engine, model_id: int, series_ids: list[int]) -> Evaluation:
    """Dice of one model against the first label of each series (the model's masks are not stored)."""
    from sciatic.model.data import as_case
    from sciatic.model.infer import cached_model
    from sciatic.model.train import score_cases

    labelled = _labelled_series(engine)
    with session_scope(engine) as session:
        model = registry.get(session, model_id)
        bundle = cached_model(model.checkpoint_path, model.checkpoint_sha256, settings.device)
    cases = [as_case((labelled[s].volume_path, labelled[s].label_path), name=str(s)) for s in series_ids]
    return score_cases(bundle, cases, settings.failure_dice, settings.keep_largest_component)


def evaluate_and_decide(settings: Settings, engine: Engine, training_run_id: int) -> TrainingDecision:
    """Compare challenger and champion on the run's test series; promote or keep; record everything."""
    with session_scope(engine) as session:
        run = session.get(TrainingRun, training_run_id)
        if run is None or run.challenger_model_id is None:
            raise SciaticError(f"training run {training_run_id} has no trained challenger")
        if run.decision is not TrainingDecision.RUNNING:
            return run.decision  # decided before a retry
        test, challenger_id, champion_id = list(run.split["test"]), run.challenger_model_id, run.champion_model_id
    challenger = evaluate_model(settings, engine, challenger_id, test)
    champion = evaluate_model(settings, engine, champion_id, test) if champion_id is not None else None
    if champion is None:
        promote = challenger.mean_dice >= settings.promote_min_dice
        detail = (
            f"no production model; challenger mean Dice {challenger.mean_dice:.3f} "
            f"{'>=' if promote else '<'} the minimum {settings.promote_min_dice}"
        )
    else:
        better = challenger.mean_dice >= champion.mean_dice + settings.promote_margin_dice
        safe = challenger.failure_rate <= champion.failure_rate
        promote = better and safe
        detail = (
            f"challenger mean Dice {challenger.mean_dice:.3f} vs production {champion.mean_dice:.3f} "
            f"(margin {settings.promote_margin_dice}), failure rate {challenger.failure_rate:.0%} vs "
            f"{champion.failure_rate:.0%}: {'promoted' if promote else 'kept production'}"
        )
    decision = TrainingDecision.PROMOTED if promote else TrainingDecision.KEPT
    with session_scope(engine) as session:
        run = session.get(TrainingRun, training_run_id)
        assert run is not None
        run.challenger_metrics = challenger.to_dict()
        run.champion_metrics = champion.to_dict() if champion else None
        run.decision = decision
        run.decision_detail = detail
        run.finished_at = utcnow()
        if promote:
            registry.promote(session, challenger_id, reason=f"training run {training_run_id}")
        audit.record(session, STEP, decision.value, "training_run", training_run_id, detail=detail)
    log.info("training run %s: %s", training_run_id, detail)
    return decision
