"""Retraining on tiny phantoms: fine-tuning from production, replay, and promotion by the bootstrap rule."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from sciatic import pipeline
from sciatic.cli import main
from sciatic.config import get_settings
from sciatic.db.models import ModelVersion, PipelineEvent, TrainingRun
from sciatic.db.queries import LabelledSeries
from sciatic.db.session import default_engine, session_scope
from sciatic.layout import DataLayout
from sciatic.model.checkpoint import load_checkpoint, save_checkpoint, state_digest
from sciatic.model.configs import UNetConfig, get_config
from sciatic.model.old_site import PhantomOldSite
from sciatic.model.shipped import SHIPPED_MODEL
from sciatic.model.unet import build_model
from sciatic.phantom.generate import PhantomOptions, generate
from sciatic.steps.models import add_model
from sciatic.steps.retrain import plan_split
from tests.pipeline_helpers import configure

torch.set_num_threads(2)

# A small `cascade` that learns 96x96 phantoms in a few dozen steps: the production model to fine-tune.
_BASE = get_config("cascade")
LEARNER = dataclasses.replace(
    _BASE,
    net=dataclasses.replace(_BASE.net, width=4, depth=2),
    localizer=UNetConfig(in_channels=3, width=4, depth=2, norm="batch", bilinear=True),
    crop_size=32,
    lr=1e-2,
    batch_size=8,
    samples_per_subject=0,
    infer_batch_size=32,
)
TINY = PhantomOptions(matrix=(96, 96), slices=12, hard_fraction=0.0)


def _labelled(subjects: dict[int, str], per_subject: int = 1) -> dict[int, LabelledSeries]:
    out = {}
    for subject, cohort in subjects.items():
        for k in range(per_subject):
            sid = subject * 10 + k
            out[sid] = LabelledSeries(sid, subject, cohort, f"v{sid}", f"l{sid}")
    return out


def test_the_split_of_a_fine_tuning_run_holds_new_subjects_and_replays_old_ones() -> None:
    old = {1: "patient", 2: "patient", 3: "control", 4: "control", 5: "patient"}
    new = {6: "patient", 7: "control", 8: "patient", 9: "control"}
    first = plan_split(_labelled(old), [], seed=0, replay_share=0.5)
    assert first["replay"] == [] and set(first["subjects"]["train"]) | set(first["subjects"]["test"]) <= set(old)
    labelled = _labelled(old | new, per_subject=2)
    second = plan_split(labelled, [first], seed=0, replay_share=0.25)
    parts = second["subjects"]
    untrained = set(new) | set(first["subjects"]["val"]) | set(first["subjects"]["test"])
    assert set(parts["train"]) | set(parts["val"]) | set(parts["test"]) == untrained
    pool = {sid for sid, item in labelled.items() if item.subject_id in first["subjects"]["train"]}
    assert set(second["replay"]) < pool  # a seeded sample: replay / (train + replay) <= 0.25
    assert len(second["replay"]) == len(second["train"]) // 3 and len(second["replay"]) >= 1
    assert plan_split(labelled, [first], seed=0, replay_share=0.25) == second
    assert plan_split(labelled, [first], seed=0, replay_share=0.0)["replay"] == []
    everything = plan_split(labelled, [first], seed=0, replay_share=0.9)
    assert set(everything["replay"]) == pool  # the whole pool fits under a large share
    # fewer than three subjects it did not train on: the split covers everyone, nothing is left to replay
    few = plan_split(_labelled(old), [first], seed=0, replay_share=0.5)
    assert sorted(s for p in few["subjects"].values() for s in p) == [1, 2, 3, 4, 5] and few["replay"] == []


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two batches of labelled tiny phantoms: the first labels, and those that come later."""
    root = tmp_path_factory.mktemp("retrain-phantoms")
    for batch, (subjects, seed) in {"first": (8, 31), "later": (4, 32)}.items():
        generate(root / batch / "dicom", subjects, seed, labels_dir=root / batch / "labels", options=TINY)
        (root / batch / "dicom" / "manifest.json").unlink()
    return root


def _arrive(batch: Path) -> None:
    settings = get_settings()
    shutil.copytree(batch / "dicom", settings.dir("drop"), dirs_exist_ok=True)
    assert pipeline.ingest().converted
    shutil.copytree(batch / "labels", settings.dir("labels"), dirs_exist_ok=True)
    assert pipeline.import_labels()


def _run(run_id: int) -> TrainingRun:
    with session_scope(default_engine()) as session:
        run = session.get(TrainingRun, run_id)
        assert run is not None
        session.expunge(run)
        return run


def _trained_event(run_id: int) -> dict[str, object]:
    with session_scope(default_engine()) as session:
        event = session.scalars(
            sa.select(PipelineEvent).where(
                PipelineEvent.action == "challenger_trained", PipelineEvent.entity_id == run_id
            )
        ).one()
        return dict(event.detail or {})


def _production() -> int:
    with session_scope(default_engine()) as session:
        return session.scalars(sa.select(ModelVersion.id).where(ModelVersion.status == "production")).one()


@pytest.mark.db
def test_retraining_fine_tunes_replays_and_promotes_only_a_better_model(
    phantoms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_database: str
) -> None:
    configure(monkeypatch, pg_database)
    _arrive(phantoms / "first")
    untrained = tmp_path / "untrained.pt"
    torch.manual_seed(0)
    save_checkpoint(untrained, build_model(LEARNER), LEARNER)
    champion = add_model(get_settings(), default_engine(), untrained, promote=True).model_id

    # 1. fine-tuned from the (untrained) production model: clearly better after a few epochs, promoted
    first = pipeline.start_training_run("test")
    run = _run(first)
    assert run.initial_model_id == champion and run.champion_model_id == champion and run.split["replay"] == []
    challenger = pipeline.train_challenger(first, epochs=6)
    trained = _trained_event(first)
    start = load_checkpoint(untrained, None)["model"]
    assert trained["initial_weights"] == state_digest(start)  # training began from the champion's weights
    assert trained["initial_model_id"] == champion and trained["replayed_series"] == 0
    assert trained["new_series_weight"] == 1  # nothing replayed: nothing to weigh the new series against
    assert pipeline.evaluate_and_decide(first) == "promoted"
    run = _run(first)
    assert run.dice_difference_low is not None and run.dice_difference_low > get_settings().promote_margin_dice
    assert run.dice_difference is not None and run.dice_difference_high is not None
    assert run.dice_difference_low <= run.dice_difference <= run.dice_difference_high
    test_series = {str(s) for s in run.split["test"]}
    assert run.challenger_metrics and set(run.challenger_metrics["dice"]) == test_series
    assert run.champion_metrics and set(run.champion_metrics["dice"]) == test_series
    assert _production() == challenger
    with session_scope(default_engine()) as session:
        promoted = session.get(ModelVersion, challenger)
        assert promoted is not None and promoted.card_path is not None
        card = Path(promoted.card_path).read_text()
    assert Path(promoted.card_path).parent == get_settings().dir("model") / "cards"
    for fact in (f"fine-tuned from model {champion}", "Research use only", "| test (frozen) |", "confidence interval"):
        assert fact in card, fact

    # 2. from scratch (the full `cascade`, stopped after its first steps): clearly worse, production stays
    assert main(["train", "--from-scratch", "--epochs", "1", "--max-minutes", "0.001"]) == 0
    with session_scope(default_engine()) as session:
        scratch = session.scalars(sa.select(TrainingRun).order_by(TrainingRun.id.desc())).first()
        assert scratch is not None and scratch.id != first
        assert scratch.initial_model_id is None and scratch.config_name == "cascade"
        assert {part: scratch.split[part] for part in run.split} == {**run.split, "reference": run.split["test"]}
        assert (
            scratch.decision.value == "kept"
            and scratch.decision_detail
            and "kept production" in scratch.decision_detail
        )
        assert scratch.dice_difference_high is not None and scratch.dice_difference_high < 0
    assert _production() == challenger

    # 3. new labels: the next run fine-tunes production on the subjects it did not train on, replaying the others
    _arrive(phantoms / "later")
    third = pipeline.start_training_run("test")
    run3 = _run(third)
    assert run3.initial_model_id == challenger
    earlier_training = set(run.split["subjects"]["train"])
    assert not earlier_training & {s for part in run3.split["subjects"].values() for s in part}
    assert run3.split["replay"] and set(run3.split["replay"]) <= set(run.split["train"])
    assert len(run3.split["replay"]) <= 2.04 * len(run3.split["train"])  # SCIATIC_TRAIN_REPLAY_SHARE 0.67
    pipeline.train_challenger(third, epochs=1)
    trained = _trained_event(third)
    assert trained["replayed_series"] == len(run3.split["replay"])
    assert trained["training_series"] == len(run3.split["train"]) + len(run3.split["replay"])
    assert trained["new_series_weight"] == 1  # SCIATIC_TRAIN_NEW_SERIES_WEIGHT's default
    assert trained["initial_weights"] == state_digest(load_checkpoint(promoted.checkpoint_path, None)["model"])


@pytest.mark.db
def test_fine_tuning_the_shipped_model_replays_and_guards_regenerated_phantoms(
    phantoms: Path, monkeypatch: pytest.MonkeyPatch, pg_database: str
) -> None:
    configure(monkeypatch, pg_database)
    monkeypatch.setenv("SCIATIC_TRAIN_REFERENCE_SERIES", "2")
    monkeypatch.setenv("SCIATIC_TRAIN_REPLAY_SHARE", "0.2")
    monkeypatch.setenv("SCIATIC_TRAIN_NEW_SERIES_WEIGHT", "2")
    monkeypatch.setenv("SCIATIC_TRAIN_REPLAY_POOL", "2")
    monkeypatch.setenv("SCIATIC_TRAIN_FINE_TUNE_LR_FACTOR", "0.25")
    get_settings.cache_clear()
    _arrive(phantoms / "first")
    shipped = add_model(get_settings(), default_engine(), SHIPPED_MODEL, promote=True).model_id

    run_id = pipeline.start_training_run("test")
    run = _run(run_id)
    assert run.initial_model_id == shipped and run.split["replay"] == [] and run.split["reference"] == []
    assert run.config["lr"] == pytest.approx(0.25 * load_checkpoint(SHIPPED_MODEL, None)["config"]["lr"])
    old_site = PhantomOldSite.from_dict(run.split["phantom"])
    assert old_site is not None and old_site.reference_subjects == 2
    assert old_site.replay_subjects == len(run.split["train"]) // 4 >= 1  # replay / (train + replay) <= 0.2
    assert old_site.reference_seed != old_site.replay_seed and old_site.replay_pool == 2

    pipeline.train_challenger(run_id, epochs=1, max_minutes=0.001)  # one optimiser step: about the champion
    trained = _trained_event(run_id)
    assert trained["replayed_phantoms"] == 2 * old_site.replay_subjects  # a pool: half of it in each epoch
    assert trained["replayed_phantoms_per_epoch"] == old_site.replay_subjects
    assert trained["training_series"] == len(run.split["train"]) + 2 * old_site.replay_subjects
    assert trained["new_series_weight"] == 2
    training_folder = DataLayout.of(get_settings()).training_run(run_id)
    assert not (training_folder / "old-site-replay").exists()  # regenerated studies do not stay on disk

    pipeline.evaluate_and_decide(run_id)
    run = _run(run_id)
    assert run.challenger_metrics and run.champion_metrics
    for metrics in (run.challenger_metrics, run.champion_metrics):
        assert set(metrics["reference"]["dice"]) == {"phantom 0", "phantom 1"}
    assert run.champion_metrics["reference"]["mean_dice"] > 0.5  # the shipped model knows its own kind of study
    assert run.decision_detail and "on 2 reference series of the old site" in run.decision_detail
    assert not (training_folder / "old-site-reference").exists()
