"""Training: ``train`` runs epochs of ``train_one_epoch`` and ``evaluate``, keeps the best checkpoint.

Every hyper-parameter comes from the ``ModelConfig``. On CPU, two runs with
the same seed give identical weights (seeded initialisation, per-sample
generators for the data, deterministic algorithms). On CUDA the same code
runs with autocast + GradScaler when the configuration asks for AMP.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sciatic.evaluation.qc import dice
from sciatic.evaluation.thresholds import FAILURE_DICE
from sciatic.model.checkpoint import save_checkpoint, state_digest
from sciatic.model.configs import ModelConfig
from sciatic.model.data import EpochDataset, Item, TrainingCase, as_case, make_dataset, pad_collate
from sciatic.model.infer import ModelBundle, resolve_device, segment_volume
from sciatic.model.unet import Cascade, build_model

CHECKPOINT_NAME = "model.pt"


@dataclass(frozen=True)
class TrainResult:
    """The chosen checkpoint and how training went."""

    checkpoint: Path
    sha256: str
    config: ModelConfig
    best_epoch: int
    metrics: dict[str, float]  # as stored in the checkpoint (val_dice, val_failure_rate, train_loss)
    epochs_run: int
    seconds: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0  # optimiser steps taken
    stopped_by_budget: bool = False  # True when ``max_seconds`` or ``max_steps`` ended training
    initial_digest: str = ""  # checkpoint.state_digest of the weights training started from


@dataclass
class StepBudget:
    """A limit on optimiser steps and/or wall time, checked after every step.

    ``deadline`` is a ``time.perf_counter()`` value. The step during which a
    limit is reached completes; training stops after it.
    """

    max_steps: int | None = None
    deadline: float | None = None
    steps: int = 0

    @property
    def exhausted(self) -> bool:
        if self.max_steps is not None and self.steps >= self.max_steps:
            return True
        return self.deadline is not None and time.perf_counter() >= self.deadline


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-pixel BCE (``bce``, the seed's) or BCE + soft Dice over the batch (``dice_bce``)."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    if kind == "bce":
        return bce
    prob = torch.sigmoid(logits)
    overlap = (prob * target).sum()
    soft_dice = (2.0 * overlap + 1.0) / (prob.sum() + target.sum() + 1.0)
    return bce + (1.0 - soft_dice)


def compute_loss(model: nn.Module, config: ModelConfig, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss of one batch (both stages for a cascade)."""
    if isinstance(model, Cascade):
        coarse = segmentation_loss(model.localizer(batch["loc_image"]), batch["loc_target"], config.loss)
        fine = segmentation_loss(model.segmenter(batch["image"]), batch["target"], config.loss)
        return coarse + fine
    return segmentation_loss(model(batch["image"]), batch["target"], config.loss)


def make_optimizer(config: ModelConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def train_one_epoch(
    model: nn.Module,
    config: ModelConfig,
    loader: DataLoader[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    epoch: int,
    progress: bool = True,
    budget: StepBudget | None = None,
) -> float:
    """One pass over the loader; returns the mean training loss.

    With a ``budget``, each optimiser step is counted in it and the pass ends
    early, after the step that exhausts it.
    """
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress)
    for batch in bar:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=scaler is not None):
            loss = compute_loss(model, config, batch)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            torch.autograd.backward(scaler.scale(loss))
            scaler.step(optimizer)
            scaler.update()
        else:
            torch.autograd.backward(loss)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        size = next(iter(batch.values())).shape[0]
        total += float(loss.detach()) * size
        count += size
        bar.set_postfix(loss=f"{total / count:.4f}")
        if budget is not None:
            budget.steps += 1
            if budget.exhausted:
                break
    return total / max(count, 1)


@dataclass(frozen=True)
class Evaluation:
    """Dice of one model on labelled cases, and the seed's failure statistics."""

    dice: dict[str, float]  # case name -> Dice against its label
    mean_dice: float
    failure_rate: float  # share of cases with Dice below the failure threshold
    mean_dice_when_working: float | None
    #: case name -> voxels of the mask / voxels of its label (1: the right size; a shift of every case's
    #: size says the model's calibration moved rather than that it misses a kind of study)
    size_ratio: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_dice": self.mean_dice,
            "failure_rate": self.failure_rate,
            "mean_dice_when_working": self.mean_dice_when_working,
            "dice": dict(self.dice),
            "size_ratio": dict(self.size_ratio),
        }


@torch.inference_mode()
def score_cases(
    bundle: ModelBundle,
    cases: Sequence[TrainingCase],
    failure_dice: float = FAILURE_DICE,
    drop_stray: bool = True,
) -> Evaluation:
    """Segment each case through the inference path and score it against its mask.

    The one evaluation loop: validation during training and the champion /
    challenger comparison of retraining both use it.
    """
    if not cases:
        raise ValueError("no cases to evaluate")
    scores: dict[str, float] = {}
    sizes: dict[str, float] = {}
    for case in cases:
        mask = segment_volume(bundle, case.volume, case.affine, drop_stray=drop_stray).mask
        scores[case.name] = float(dice(mask, case.mask))
        truth = int(np.count_nonzero(case.mask))
        if truth:  # no size to compare with an empty label
            sizes[case.name] = int(np.count_nonzero(mask)) / truth
    values = list(scores.values())
    working = [d for d in values if d >= failure_dice]
    return Evaluation(
        dice=scores,
        mean_dice=sum(values) / len(values),
        failure_rate=1 - len(working) / len(values),
        mean_dice_when_working=sum(working) / len(working) if working else None,
        size_ratio=sizes,
    )


def evaluate(
    model: nn.Module,
    config: ModelConfig,
    cases: Sequence[TrainingCase],
    device: torch.device,
    drop_stray: bool = True,
    failure_dice: float = FAILURE_DICE,
) -> dict[str, float]:
    """Mean validation Dice and failure rate of a network being trained."""
    bundle = ModelBundle(model=model, config=config, device=device)
    result = score_cases(bundle, cases, failure_dice, drop_stray)
    return {"val_dice": result.mean_dice, "val_failure_rate": result.failure_rate}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    config: ModelConfig,
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    out_dir: str | Path,
    epochs: int,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    num_workers: int = 0,
    max_seconds: float | None = None,
    max_steps: int | None = None,
    failure_dice: float = FAILURE_DICE,
    initial_state: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``config`` and write the best-validation-Dice checkpoint to ``out_dir/model.pt``.

    Items are ``TrainingCase``s, ``(volume, mask, affine)`` arrays or
    ``(volume.nii.gz, mask.nii.gz)`` paths. Training stops after ``epochs``,
    or earlier when validation Dice has not improved for ``config.patience``
    epochs (when > 0), or after the optimiser step during which ``max_seconds``
    (wall time since this call began) or ``max_steps`` is reached: the
    interrupted epoch is then validated and checkpointed like any other, and
    the result says ``stopped_by_budget``. ``out_dir/history.json`` is
    rewritten after every epoch (each entry also gives the cumulative
    ``steps``). ``initial_state`` (a state dict of the same configuration, e.g.
    the production model's) replaces the random initial weights: fine-tuning.
    """
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError("max_seconds must be > 0")
    if max_steps is not None and max_steps < 1:
        raise ValueError("max_steps must be >= 1")
    if not train_items or not val_items:
        raise ValueError("training needs at least one training and one validation subject")
    start = time.perf_counter()
    target = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_subjects = [as_case(item, f"train{i}") for i, item in enumerate(train_items)]
    val_subjects = [as_case(item, f"val{i}") for i, item in enumerate(val_items)]

    deterministic_before = torch.are_deterministic_algorithms_enabled()
    warn_only_before = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_benchmark_before = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        _seed_everything(seed)
        model = build_model(config)
        if initial_state is not None:
            model.load_state_dict(initial_state)
        initial_digest = state_digest(model.state_dict())
        model = model.to(target)
        dataset: EpochDataset = make_dataset(train_subjects, config, seed)
        generator = torch.Generator().manual_seed(seed)
        loader: DataLoader[dict[str, torch.Tensor]] = DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=False,  # the dataset's plan is already a seeded permutation
            num_workers=num_workers,
            collate_fn=pad_collate,
            generator=generator,
            pin_memory=target.type == "cuda",
        )
        optimizer = make_optimizer(config, model)
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        if config.schedule == "cosine":
            steps = epochs * max(1, -(-len(dataset) // config.batch_size))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        scaler = torch.amp.GradScaler("cuda") if config.amp and target.type == "cuda" else None

        budget = StepBudget(max_steps=max_steps, deadline=None if max_seconds is None else start + max_seconds)
        path = out / CHECKPOINT_NAME
        best: dict[str, float] = {}
        best_epoch, sha256, stale = -1, "", 0
        stopped_by_budget = False
        history: list[dict[str, float]] = []
        epoch_bar = tqdm(range(epochs), desc=f"train {config.name}", disable=not progress)
        for epoch in epoch_bar:
            dataset.set_epoch(epoch)
            steps_before = budget.steps
            loss = train_one_epoch(model, config, loader, optimizer, scheduler, scaler, target, epoch, progress, budget)
            metrics = {"train_loss": loss, **evaluate(model, config, val_subjects, target, failure_dice=failure_dice)}
            history.append({"epoch": float(epoch), **metrics, "steps": float(budget.steps)})
            if not best or metrics["val_dice"] > best["val_dice"]:
                best, best_epoch, stale = metrics, epoch, 0
                sha256 = save_checkpoint(path, model, config, optimizer=optimizer, epoch=epoch, metrics=metrics)
            else:
                stale += 1
            (out / "history.json").write_text(json.dumps(history, indent=1))
            epoch_bar.set_postfix(loss=f"{loss:.4f}", val_dice=f"{metrics['val_dice']:.3f}")
            if config.patience and stale >= config.patience:
                break
            if budget.exhausted:
                stopped_by_budget = epoch < epochs - 1 or budget.steps - steps_before < len(loader)
                break
    finally:
        torch.use_deterministic_algorithms(deterministic_before, warn_only=warn_only_before)
        torch.backends.cudnn.benchmark = cudnn_benchmark_before
    return TrainResult(
        checkpoint=path,
        sha256=sha256,
        config=config,
        best_epoch=best_epoch,
        metrics=best,
        epochs_run=len(history),
        seconds=time.perf_counter() - start,
        device=str(target),
        history=history,
        steps=budget.steps,
        stopped_by_budget=stopped_by_budget,
        initial_digest=initial_digest,
    )
