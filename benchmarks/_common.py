"""Shared by the model benchmarks: held-out phantom cases, evaluation of a model on them, the machine.

The per-side and per-piece metrics at the end (``missed_sides``,
``pieces_found``, ``side_csa_errors``) are benchmark metrics against a truth
label that ``sciatic.evaluation`` does not provide; they are built from its
``split_sides`` and ``nerve_metrics_by_side``.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage

from benchmarks._machine import cpu_model
from sciatic.db.enums import Side
from sciatic.evaluation.metrics import SLICE_CONNECTIVITY, nerve_metrics_by_side, split_sides
from sciatic.evaluation.qc import compare_masks
from sciatic.evaluation.thresholds import FAILURE_DICE
from sciatic.imaging.volume import read_volume
from sciatic.model.configs import ModelConfig
from sciatic.model.demo_model import PhantomCase, phantom_cases, read_digest
from sciatic.model.infer import ModelBundle, SegmentationResult, load_model, segment_volume
from sciatic.model.unet import build_model, count_parameters

TEST_SEEDS = (101, 102)  # held-out phantom seeds; the shipped model is trained on seed 11
TEST_SUBJECTS = 40


def parse_seeds(text: str) -> tuple[int, ...]:
    seeds = tuple(int(s) for s in text.split(",") if s.strip())
    if not seeds:
        raise ValueError("at least one seed is needed")
    return seeds


def held_out_cases(work: Path, subjects: int, seeds: tuple[int, ...]) -> list[PhantomCase]:
    """``subjects`` phantom cases spread over ``seeds`` (as evenly as possible), generated and converted."""
    cases: list[PhantomCase] = []
    for k, seed in enumerate(seeds):
        n = subjects // len(seeds) + (1 if k < subjects % len(seeds) else 0)
        if n:
            cases.extend(phantom_cases(work / f"test-seed{seed}", n, seed))
    return cases


@dataclass(frozen=True)
class CaseResult:
    """One model on one held-out subject."""

    subject: str
    cohort: str
    matrix: str
    dice: float
    hd95_mm: float | None  # None when exactly one mask is empty (unbounded)
    failed: bool
    uncertainty: float
    seconds: float  # segment_volume: normalisation, network(s), unmontage or paste, clean-up


@dataclass(frozen=True)
class LoadedCase:
    case: PhantomCase
    volume: np.ndarray[Any, Any]
    affine: np.ndarray[Any, Any]
    label: np.ndarray[Any, Any]
    label_affine: np.ndarray[Any, Any]


def load_case(case: PhantomCase) -> LoadedCase:
    volume, label = read_volume(case.volume), read_volume(case.label)
    return LoadedCase(case, np.asarray(volume.data), volume.affine, np.asarray(label.data), label.affine)


def load_checked(path: Path, sha256_file: Path | None = None) -> tuple[ModelBundle, bool]:
    """Load a checkpoint on the CPU, its sha256 checked against ``sha256_file`` (default ``PATH.sha256``).

    Returns the bundle and whether the digest was checked (no digest file: not checked).
    """
    sha_file = sha256_file or path.with_suffix(".sha256")
    expected = read_digest(sha_file) if sha256_file is not None or sha_file.is_file() else None
    return load_model(path, expected, device="cpu"), expected is not None


def matrix(case: PhantomCase) -> str:
    record = case.record
    return f"{record.rows}x{record.columns}x{record.slices}"


def segment_case(bundle: ModelBundle, loaded: LoadedCase, drop_stray: bool) -> tuple[SegmentationResult, float]:
    """``segment_volume`` on the loaded volume, and its wall time in seconds."""
    start = time.perf_counter()
    result = segment_volume(bundle, loaded.volume, loaded.affine, drop_stray=drop_stray)
    return result, time.perf_counter() - start


def run_case(bundle: ModelBundle, loaded: LoadedCase, drop_stray: bool) -> CaseResult:
    result, seconds = segment_case(bundle, loaded, drop_stray)
    comparison = compare_masks(result.mask, loaded.affine, loaded.label, loaded.label_affine)
    return CaseResult(
        subject=loaded.case.record.patient_id,
        cohort=loaded.case.record.cohort,
        matrix=matrix(loaded.case),
        dice=comparison.dice,
        hd95_mm=comparison.hd95_mm if math.isfinite(comparison.hd95_mm) else None,
        failed=comparison.dice < FAILURE_DICE,
        uncertainty=result.uncertainty,
        seconds=seconds,
    )


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); raises ``StatisticsError`` on constant input."""

    def ranks(values: Sequence[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    return statistics.correlation(ranks(a), ranks(b))


def untrained_bundle(config: ModelConfig, seed: int = 0) -> ModelBundle:
    """The configuration's network with seeded random weights, eval mode, on the CPU."""
    torch.manual_seed(seed)
    model = build_model(config).eval()
    return ModelBundle(model=model, config=config, device=torch.device("cpu"))


def parameters(config: ModelConfig) -> int:
    return count_parameters(build_model(config))


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    versions = {name: metadata.version(name) for name in ("sciatic", "torch", "numpy", "scipy", "pydicom", "nibabel")}
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def describe_machine(info: dict[str, Any]) -> list[str]:
    return [
        f"machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"torch threads {info['torch_threads']}, CUDA {'yes' if info['cuda'] else 'no'}, Python {info['python']}",
        f"load average (1, 5, 15 min): {info['load_average_at_start']} at start, "
        f"{info.get('load_average_at_end', '?')} at end",
        "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
    ]


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A markdown table, columns padded to line up."""
    lines = [header, *rows]
    widths = [max(3, *(len(line[i]) for line in lines)) for i in range(len(header))]
    for k, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if k == 0:
            print("| " + " | ".join("-" * w for w in widths) + " |")


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- metrics against a truth label

Mask = npt.NDArray[Any]


def missed_sides(pred: Mask, label: Mask, affine: npt.NDArray[Any], laterality: str = "") -> list[Side]:
    """The label's legs (``split_sides``) on which the prediction, split the same way, has no voxel."""
    predicted = split_sides(pred, affine, laterality)
    return [side for side in split_sides(label, affine, laterality) if side not in predicted]


def pieces_found(pred: Mask, label: Mask) -> tuple[int, int]:
    """``(found, total)`` over the label's 2D pieces: each slice's 8-connected components.

    A piece is found when at least one predicted voxel overlaps it.
    """
    found = total = 0
    hit = np.asarray(pred) != 0
    for k in range(label.shape[2]):
        pieces, count = ndimage.label(np.asarray(label[:, :, k]) != 0, structure=SLICE_CONNECTIVITY)
        total += int(count)
        found += int(np.count_nonzero(np.unique(pieces[hit[:, :, k]])))  # label 0 is background
    return found, total


def side_csa_errors(pred: Mask, label: Mask, affine: npt.NDArray[Any], laterality: str = "") -> dict[Side, float]:
    """Per leg of the label: (mean predicted CSA - mean true CSA) / mean true CSA.

    Both means run over the slices where the label has nerve on that leg
    (a slice without prediction counts 0 mm²); legs are split by
    ``split_sides``, areas come from ``nerve_metrics_by_side`` with ``affine``.
    Signed: ``-1`` is a leg missed entirely.
    """
    truth = nerve_metrics_by_side(label, affine, laterality=laterality)
    predicted = nerve_metrics_by_side(pred, affine, laterality=laterality)
    errors: dict[Side, float] = {}
    for side, metrics in truth.items():
        slices = [s.slice_index for s in metrics.slices if s.has_nerve]
        true_mean = statistics.fmean(metrics.slices[k].area_mm2 for k in slices)
        other = predicted.get(side)
        pred_mean = statistics.fmean(other.slices[k].area_mm2 for k in slices) if other else 0.0
        errors[side] = (pred_mean - true_mean) / true_mean
    return errors
