"""Training: determinism on CPU, a smoke run that learns, checkpoint choice."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sciatic.evaluation.qc import dice
from sciatic.model.checkpoint import load_checkpoint, state_digest
from sciatic.model.data import TrainingCase
from sciatic.model.infer import load_model, segment_volume
from sciatic.model.train import score_cases, segmentation_loss, train
from sciatic.storage import sha256_file
from tests._model_synthetic import TINY_CASCADE, TINY_SEED, blob_subject

torch.set_num_threads(2)


def test_losses() -> None:
    target = torch.zeros(2, 1, 4, 4)
    target[:, :, 1:3, 1:3] = 1
    good = (target * 2 - 1) * 20
    assert segmentation_loss(good, target, "bce") < 1e-6
    assert segmentation_loss(good, target, "dice_bce") < 1e-3
    assert segmentation_loss(-good, target, "dice_bce") > segmentation_loss(-good, target, "bce") + 0.9


@pytest.mark.parametrize("config", [TINY_CASCADE, TINY_SEED], ids=["cascade", "seed"])
def test_same_seed_gives_identical_weights(tmp_path: Path, config: object) -> None:
    train_items = [blob_subject(i, shape=(32, 28, 6)) for i in range(2)]
    val_items = [blob_subject(50, shape=(32, 28, 6))]
    runs = [
        train(config, train_items, val_items, tmp_path / name, epochs=2, seed=7, device="cpu", progress=False)  # type: ignore[arg-type]
        for name in ("a", "b")
    ]
    states = [torch.load(r.checkpoint, weights_only=True)["model"] for r in runs[:2]]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert runs[0].sha256 == runs[1].sha256 == sha256_file(runs[0].checkpoint)
    assert runs[0].history == runs[1].history
    assert not torch.are_deterministic_algorithms_enabled()  # restored after training


def test_different_seeds_differ(tmp_path: Path) -> None:
    items = [blob_subject(i, shape=(32, 28, 6)) for i in range(2)]
    a = train(TINY_CASCADE, items, items[:1], tmp_path / "a", epochs=1, seed=1, device="cpu", progress=False)
    b = train(TINY_CASCADE, items, items[:1], tmp_path / "b", epochs=1, seed=2, device="cpu", progress=False)
    assert a.sha256 != b.sha256


def test_training_from_nifti_paths(tmp_path: Path) -> None:
    items = []
    for i in range(2):
        subject = blob_subject(i, shape=(32, 28, 6))
        vol, mask = tmp_path / f"v{i}.nii.gz", tmp_path / f"m{i}.nii.gz"
        nib.save(nib.Nifti1Image(subject.volume, subject.affine), vol)
        nib.save(nib.Nifti1Image(subject.mask, subject.affine), mask)
        items.append((vol, mask))
    result = train(TINY_CASCADE, items, items[1:], tmp_path / "out", epochs=1, seed=0, device="cpu", progress=False)
    assert result.checkpoint.is_file() and result.epochs_run == 1


@pytest.mark.slow
def test_cpu_training_learns_blobs(tmp_path: Path) -> None:
    train_items = [blob_subject(i) for i in range(6)]
    val_items = [blob_subject(100 + i) for i in range(2)]
    result = train(TINY_CASCADE, train_items, val_items, tmp_path, epochs=8, seed=0, device="cpu", progress=True)
    history = result.history
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert result.metrics["val_dice"] > 0.8 and result.metrics["val_dice"] > history[0]["val_dice"] + 0.3
    assert result.metrics["val_failure_rate"] == 0.0
    assert json.loads((tmp_path / "history.json").read_text()) == history

    bundle = load_model(result.checkpoint, result.sha256, device="cpu")
    assert bundle.epoch == result.best_epoch and bundle.metrics == result.metrics
    subject = val_items[0]
    mask = segment_volume(bundle, subject.volume, subject.affine).mask
    assert dice(mask, subject.mask) > 0.7

    # each case's mask size against its label: a label twice as large halves the ratio
    doubled = subject.mask | np.roll(subject.mask, 7, axis=0)  # a second disc beside each one
    wide = TrainingCase(subject.volume, doubled, subject.affine, "doubled")
    evaluation = score_cases(bundle, [subject, wide])
    ratio = evaluation.size_ratio[subject.name]
    assert ratio == pytest.approx(np.count_nonzero(mask) / np.count_nonzero(subject.mask))
    assert 0.7 < ratio < 1.3
    assert evaluation.size_ratio["doubled"] == pytest.approx(np.count_nonzero(mask) / np.count_nonzero(doubled))
    assert evaluation.size_ratio["doubled"] < 0.6 * ratio
    assert json.loads(json.dumps(evaluation.to_dict()))["size_ratio"] == evaluation.size_ratio


def test_step_budget_stops_mid_epoch(tmp_path: Path) -> None:
    items = [blob_subject(i, shape=(32, 28, 6)) for i in range(2)]  # 12 slices: 2 batches of 8 per epoch
    result = train(
        TINY_CASCADE, items, items[:1], tmp_path / "a", epochs=3, seed=0, device="cpu", progress=False, max_steps=3
    )
    assert result.steps == 3 and result.stopped_by_budget
    assert result.epochs_run == 2 and [h["steps"] for h in result.history] == [2.0, 3.0]
    assert result.checkpoint.is_file()  # the interrupted epoch is still validated and checkpointed


def test_budget_not_reached_and_time_budget(tmp_path: Path) -> None:
    items = [blob_subject(i, shape=(32, 28, 6)) for i in range(2)]
    full = train(TINY_CASCADE, items, items[:1], tmp_path / "a", epochs=2, seed=0, device="cpu", progress=False)
    assert full.steps == 4 and not full.stopped_by_budget
    exact = train(
        TINY_CASCADE, items, items[:1], tmp_path / "b", epochs=2, seed=0, device="cpu", progress=False, max_steps=4
    )
    assert exact.sha256 == full.sha256 and not exact.stopped_by_budget  # a budget that is not binding changes nothing
    timed = train(
        TINY_CASCADE, items, items[:1], tmp_path / "c", epochs=5, seed=0, device="cpu", progress=False, max_seconds=1e-9
    )
    assert timed.steps == 1 and timed.epochs_run == 1 and timed.stopped_by_budget
    with pytest.raises(ValueError):
        train(TINY_CASCADE, items, items[:1], tmp_path / "d", epochs=1, device="cpu", progress=False, max_seconds=0)


def test_fine_tuning_starts_from_the_given_weights(tmp_path: Path) -> None:
    items = [blob_subject(i, shape=(32, 28, 6)) for i in range(2)]
    first = train(TINY_CASCADE, items, items[:1], tmp_path / "a", epochs=1, seed=0, device="cpu", progress=False)
    champion = load_checkpoint(first.checkpoint, first.sha256)["model"]
    tuned = train(
        TINY_CASCADE,
        items,
        items[:1],
        tmp_path / "b",
        epochs=1,
        seed=0,
        device="cpu",
        progress=False,
        initial_state=champion,
    )
    assert tuned.initial_digest == state_digest(champion) != first.initial_digest
    scratch = train(TINY_CASCADE, items, items[:1], tmp_path / "c", epochs=1, seed=0, device="cpu", progress=False)
    assert scratch.initial_digest == first.initial_digest  # seeded random weights
    tuned_state = load_checkpoint(tuned.checkpoint, tuned.sha256)["model"]
    assert state_digest(tuned_state) not in {state_digest(champion), first.initial_digest}  # and it trained
