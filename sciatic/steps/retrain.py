"""Retraining: freeze a split, train a challenger, compare it with production, promote or keep.

The split is by subject (all series of a subject fall in one part), stratified
by cohort, 80/20 train/test as in the seed, with a validation part taken from
the training subjects for early stopping. It is seeded and stored in
``training_run.split`` so that the test subjects of every run are known later.

By default a challenger is fine-tuned from the production model's weights when
that model has the configuration being trained. The split then covers the
subjects the production model's training runs did not train on, and up to
``SCIATIC_TRAIN_REPLAY_SHARE`` of the training series are replayed from the
subjects they did train on, against forgetting. From scratch (or with no usable
production model) the split covers every labelled subject.

Challenger and champion are scored on the same test series; the challenger is
promoted only when the lower bound of the paired bootstrap interval of the
per-series Dice difference exceeds ``SCIATIC_PROMOTE_MARGIN_DICE`` and its
failure rate is not worse (``sciatic.evaluation.promotion``). With no
production model, a challenger is promoted when its mean Dice reaches
``SCIATIC_PROMOTE_MIN_DICE``. A promoted model gets a model card.

The old site is guarded too. The test series of the runs behind the
production model, and, when that model descends from the shipped phantom
model, ``SCIATIC_TRAIN_REFERENCE_SERIES`` phantom studies like those it learnt
on (regenerated, ``sciatic.model.old_site``), are reference series: a
challenger whose mean Dice there falls more than
``SCIATIC_PROMOTE_MAX_FORGETTING`` below production's is kept out. Fine-tuning
such a model also replays regenerated phantom studies when the labelled
replay pool is short of the replay share.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from sciatic.config import Settings
from sciatic.db import audit, cards, queries, registry
from sciatic.db.enums import TrainingDecision
from sciatic.db.models import ManualLabel, ModelVersion, TrainingRun, utcnow
from sciatic.db.queries import LabelledSeries
from sciatic.db.session import session_scope
from sciatic.errors import SciaticError
from sciatic.layout import DataLayout

if TYPE_CHECKING:
    from sciatic.model.data import TrainingCase
    from sciatic.model.old_site import PhantomOldSite
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


def replay_room(share: float, training_series: int) -> int:
    """The most series that may be replayed beside ``training_series`` new ones: replay / (train + replay) <= share."""
    return math.floor(share * training_series / (1 - share) + 1e-9)


def plan_split(
    labelled: dict[int, LabelledSeries], earlier: Sequence[dict[str, Any]], seed: int, replay_share: float
) -> dict[str, Any]:
    """Series ids per part (train, val, test, replay) and subject ids per part (``subjects``).

    ``earlier`` are the splits of the training runs behind the model being
    fine-tuned (none when training from scratch). The subjects they trained on
    stay out of the new split when at least three others are labelled; their
    labelled series are then the replay pool, of which a seeded sample makes
    up at most ``replay_share`` of the training series.
    """
    if not 0 <= replay_share < 1:
        raise ValueError("replay_share must be in [0, 1)")
    cohorts = {item.subject_id: item.cohort for item in labelled.values()}
    trained = {int(s) for split in earlier for s in dict(split.get("subjects", {})).get("train", [])}
    new = {subject: cohort for subject, cohort in cohorts.items() if subject not in trained}
    parts = split_subjects(new if len(new) >= MIN_SUBJECTS else cohorts, seed)
    split: dict[str, Any] = {
        part: sorted(sid for sid, item in labelled.items() if item.subject_id in subjects)
        for part, subjects in parts.items()
    }
    in_split = {subject for subjects in parts.values() for subject in subjects}
    pool = sorted(sid for sid, item in labelled.items() if item.subject_id in trained - in_split)
    most = replay_room(replay_share, len(split["train"]))
    split["replay"] = pool if len(pool) <= most else sorted(random.Random(seed).sample(pool, most))
    split["subjects"] = parts
    return split


def _descends_from_shipped(session: Session, model: ModelVersion) -> bool:
    """True when ``model`` is the shipped phantom model or was fine-tuned from it, run after run."""
    from sciatic.model.old_site import is_shipped

    runs = registry.lineage(session, model.id)
    if not runs:
        return is_shipped(model.checkpoint_sha256)
    root_id = runs[-1].initial_model_id
    return root_id is not None and is_shipped(registry.get(session, root_id).checkpoint_sha256)


def _reference_series(session: Session, champion: ModelVersion, split: dict[str, Any]) -> list[int]:
    """The test series of the runs behind the production model that the new run does not train on."""
    used = {sid for part in ("train", "val", "replay") for sid in split[part]}
    earlier = {int(sid) for run in registry.lineage(session, champion.id) for sid in run.split.get("test", [])}
    return sorted(earlier - used)


def _phantom_old_site(
    session: Session, champion: ModelVersion, settings: Settings, split: dict[str, Any], fine_tuning: bool
) -> PhantomOldSite | None:
    """Phantom studies to replay and to score against forgetting, when production descends from the shipped model."""
    from sciatic.model.old_site import PhantomOldSite

    if not _descends_from_shipped(session, champion):
        return None
    room = replay_room(settings.train_replay_share, len(split["train"]))
    replay = room - len(split["replay"]) if fine_tuning else 0
    old_site = PhantomOldSite.for_run(
        settings.train_seed, replay, settings.train_reference_series, settings.train_replay_pool
    )
    if old_site.replay_subjects == 0 and old_site.reference_subjects == 0:
        return None
    return old_site


def _fine_tunable(champion: ModelVersion | None, config_name: str) -> bool:
    """True when the production model has the configuration being trained (and this version can read it)."""
    from sciatic.model.configs import config_from_dict

    if champion is None or champion.config_name != config_name:
        return False
    try:
        config_from_dict(champion.config)
    except (TypeError, ValueError, KeyError, AttributeError):
        log.warning("production model %s has a configuration this version cannot read: from scratch", champion.id)
        return False
    return True


def start_training_run(
    settings: Settings,
    engine: Engine,
    trigger: str,
    config_name: str | None = None,
    from_scratch: bool | None = None,
) -> int:
    """Freeze the split of the labelled series into a new training_run row; return its id.

    ``from_scratch`` (default ``SCIATIC_TRAIN_FROM_SCRATCH``) false fine-tunes
    the production model when it has the configuration ``config_name``
    (default ``SCIATIC_TRAIN_CONFIG``): the run then trains that model's own
    configuration, starting from its weights.
    """
    from sciatic.model.configs import config_from_dict, config_to_dict, get_config

    labelled = _labelled_series(engine)
    name = config_name or settings.train_config
    scratch = settings.train_from_scratch if from_scratch is None else from_scratch
    with session_scope(engine) as session:
        champion = registry.production_or_none(session)
        initial = champion if not scratch and _fine_tunable(champion, name) else None
        config = config_from_dict(initial.config) if initial is not None else get_config(name)
        if initial is not None:  # fine-tuning: smaller steps than training from random weights
            config = dataclasses.replace(config, lr=config.lr * settings.train_fine_tune_lr_factor)
        earlier = [dict(run.split) for run in registry.lineage(session, initial.id)] if initial is not None else []
        split = plan_split(labelled, earlier, settings.train_seed, settings.train_replay_share)
        if champion is not None:
            split["reference"] = _reference_series(session, champion, split)
            old_site = _phantom_old_site(session, champion, settings, split, fine_tuning=initial is not None)
            if old_site is not None:
                split["phantom"] = old_site.to_dict()
        run = TrainingRun(
            trigger=trigger,
            config_name=config.name,
            config=config_to_dict(config),
            seed=settings.train_seed,
            split=split,
            champion_model_id=champion.id if champion else None,
            initial_model_id=initial.id if initial is not None else None,
        )
        session.add(run)
        session.flush()
        sizes = {part: len(split.get(part, [])) for part in ("train", "val", "test", "replay", "reference")}
        sizes.update({f"phantom_{key}": n for key, n in split.get("phantom", {}).items() if key.endswith("subjects")})
        audit.record(
            session,
            STEP,
            "split_frozen",
            "training_run",
            run.id,
            **sizes,
            initial_model_id=run.initial_model_id,
        )
        start = f"fine-tuning model {initial.id}" if initial is not None else "from scratch"
        log.info("training run %s (%s): %s series", run.id, start, sizes)
        return run.id


def train_challenger(
    settings: Settings,
    engine: Engine,
    training_run_id: int,
    progress: bool = True,
    epochs: int | None = None,
    max_minutes: float | None = None,
) -> int:
    """Train the run's configuration on its frozen split; register the checkpoint; return the model id.

    The training series are the split's ``train`` and ``replay`` parts; a
    fine-tuning run starts from its initial model's weights, and when it
    replays, each new (``train``) series weighs ``SCIATIC_TRAIN_NEW_SERIES_WEIGHT``
    times a replayed one in every epoch. ``max_minutes``
    (default ``SCIATIC_TRAIN_MAX_MINUTES``; 0: none) bounds the wall time.
    """
    from sciatic.model.checkpoint import load_checkpoint
    from sciatic.model.configs import config_from_dict, config_to_dict
    from sciatic.model.data import Item, as_case
    from sciatic.model.old_site import PhantomOldSite
    from sciatic.model.train import train

    with session_scope(engine) as session:
        run = session.get(TrainingRun, training_run_id)
        if run is None:
            raise SciaticError(f"no training run with id {training_run_id}")
        if run.challenger_model_id is not None:
            return run.challenger_model_id  # already trained: retry-safe
        split, config, seed = run.split, config_from_dict(run.config), run.seed
        initial_id = run.initial_model_id
        initial_state = None
        origin = f"training run {training_run_id}, from scratch"
        if initial_id is not None:  # fine-tuning: the weights of the model the run started from, verified
            initial = registry.get(session, initial_id)
            initial_state = load_checkpoint(initial.checkpoint_path, initial.checkpoint_sha256)["model"]
            origin = f"training run {training_run_id}, fine-tuned from model {initial_id} (`{initial.name}`)"
    labelled = _labelled_series(engine)

    def items(*parts: str) -> list[tuple[str, str]]:
        ids = [s for part in parts for s in split.get(part, []) if s in labelled]
        return [(labelled[s].volume_path, labelled[s].label_path) for s in ids]

    minutes = settings.train_max_minutes if max_minutes is None else max_minutes
    out_dir = DataLayout.of(settings).training_run(training_run_id)
    old_site = PhantomOldSite.from_dict(split.get("phantom"))
    replay_dir = out_dir / "old-site-replay"
    replayed: list[Item] = []
    if old_site is not None and old_site.replay_subjects:
        log.info(
            "training run %s: generating %s phantom studies to replay, %s in each epoch",
            training_run_id,
            old_site.replay_subjects * old_site.replay_pool,
            old_site.replay_subjects,
        )
        replayed.extend(old_site.replay_cases(replay_dir))
    weight = settings.train_new_series_weight if items("replay") or replayed else 1  # replay: fine-tuning only
    new_series = [dataclasses.replace(as_case(item), weight=weight) for item in items("train")]
    train_items: list[Item] = [*new_series, *items("replay"), *replayed]
    try:
        result = train(
            config,
            train_items,
            items("val"),
            out_dir,
            epochs=epochs or settings.train_epochs,
            seed=seed,
            device=settings.device,
            progress=progress,
            failure_dice=settings.failure_dice,
            max_seconds=60 * minutes if minutes > 0 else None,
            initial_state=initial_state,
        )
    finally:
        shutil.rmtree(replay_dir, ignore_errors=True)
    with session_scope(engine) as session:
        version = registry.register(
            session,
            Path(result.checkpoint),
            result.sha256,
            config.name,
            config_to_dict(config),
            metrics=result.metrics,
            origin=origin,
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
            steps=result.steps,
            stopped_by_budget=result.stopped_by_budget,
            seconds=round(result.seconds, 1),
            device=result.device,
            training_series=len(train_items),
            new_series_weight=weight,
            replayed_series=len(items("replay")),
            replayed_phantoms=len(replayed),
            replayed_phantoms_per_epoch=old_site.replay_subjects if old_site is not None else 0,
            initial_model_id=initial_id,
            initial_weights=result.initial_digest,
        )
        return version.id


def evaluate_model(settings: Settings, engine: Engine, model_id: int, series_ids: list[int]) -> Evaluation:
    """Dice of one model against the first label of each series (the model's masks are not stored)."""
    from sciatic.model.data import as_case

    labelled = _labelled_series(engine)
    cases = [as_case((labelled[s].volume_path, labelled[s].label_path), name=str(s)) for s in series_ids]
    return _score(settings, engine, model_id, cases)


def _score(settings: Settings, engine: Engine, model_id: int, cases: Sequence[TrainingCase]) -> Evaluation:
    from sciatic.model.infer import cached_model
    from sciatic.model.train import score_cases

    with session_scope(engine) as session:
        model = registry.get(session, model_id)
        bundle = cached_model(model.checkpoint_path, model.checkpoint_sha256, settings.device, settings.cpu_runtime)
    return score_cases(bundle, cases, settings.failure_dice, settings.drop_stray_components)


def _reference_cases(
    settings: Settings, engine: Engine, training_run_id: int, split: dict[str, Any]
) -> list[TrainingCase]:
    """The run's reference series of the old site: earlier test series, then regenerated phantom studies."""
    from sciatic.model.data import as_case
    from sciatic.model.old_site import PhantomOldSite, phantom_items

    labelled = _labelled_series(engine)
    cases = [
        as_case((labelled[s].volume_path, labelled[s].label_path), name=f"series {s}")
        for s in split.get("reference", [])
        if s in labelled
    ]
    old_site = PhantomOldSite.from_dict(split.get("phantom"))
    if old_site is not None and old_site.reference_subjects:
        folder = DataLayout.of(settings).training_run(training_run_id) / "old-site-reference"
        log.info(
            "training run %s: generating %s phantom reference studies", training_run_id, old_site.reference_subjects
        )
        try:
            items = phantom_items(folder, old_site.reference_subjects, old_site.reference_seed)
            cases += [as_case(item, name=f"phantom {i}") for i, item in enumerate(items)]  # read into memory
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return cases


def evaluate_and_decide(settings: Settings, engine: Engine, training_run_id: int) -> TrainingDecision:
    """Compare challenger and champion on the run's test series; promote or keep; record everything."""
    from sciatic.evaluation.promotion import PromotionRule, decide

    with session_scope(engine) as session:
        run = session.get(TrainingRun, training_run_id)
        if run is None or run.challenger_model_id is None:
            raise SciaticError(f"training run {training_run_id} has no trained challenger")
        if run.decision is not TrainingDecision.RUNNING:
            return run.decision  # decided before a retry
        test, challenger_id, champion_id = list(run.split["test"]), run.challenger_model_id, run.champion_model_id
        seed, split = run.seed, dict(run.split)
    challenger = evaluate_model(settings, engine, challenger_id, test)
    champion = evaluate_model(settings, engine, champion_id, test) if champion_id is not None else None
    reference_cases = _reference_cases(settings, engine, training_run_id, split) if champion_id is not None else []
    challenger_old = champion_old = None
    if champion_id is not None and reference_cases:
        challenger_old = _score(settings, engine, challenger_id, reference_cases)
        champion_old = _score(settings, engine, champion_id, reference_cases)
    rule = PromotionRule(
        margin=settings.promote_margin_dice,
        min_dice=settings.promote_min_dice,
        confidence=settings.promote_confidence,
        resamples=settings.promote_bootstrap_resamples,
        seed=seed,
        failure_dice=settings.failure_dice,
        max_forgetting=settings.promote_max_forgetting,
    )
    reference = (challenger_old.dice, champion_old.dice) if challenger_old and champion_old else None
    verdict = decide(rule, challenger.dice, champion.dice if champion else None, reference)
    decision = TrainingDecision.PROMOTED if verdict.promote else TrainingDecision.KEPT
    with session_scope(engine) as session:
        run = session.get(TrainingRun, training_run_id)
        assert run is not None
        run.challenger_metrics = challenger.to_dict()
        run.champion_metrics = champion.to_dict() if champion else None
        if challenger_old is not None and champion_old is not None and champion is not None:  # the old site
            run.challenger_metrics = {**challenger.to_dict(), "reference": challenger_old.to_dict()}
            run.champion_metrics = {**champion.to_dict(), "reference": champion_old.to_dict()}
        if verdict.interval is not None:
            run.dice_difference = verdict.interval.mean
            run.dice_difference_low = verdict.interval.low
            run.dice_difference_high = verdict.interval.high
        run.decision = decision
        run.decision_detail = verdict.detail
        run.finished_at = utcnow()
        if verdict.promote:
            version = registry.promote(session, challenger_id, reason=f"training run {training_run_id}")
            session.flush()
            cards.write_card(session, challenger_id, DataLayout.of(settings).model_card(version.name))
        audit.record(session, STEP, decision.value, "training_run", training_run_id, detail=verdict.detail)
    log.info("training run %s: %s", training_run_id, verdict.detail)
    return decision
