"""Shared by the model benchmarks: held-out phantom cases, evaluation of a model on them, the machine."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._machine import cpu_model
from sciatic.evaluation.qc import compare_masks
from sciatic.evaluation.thresholds import FAILURE_DICE
from sciatic.imaging.volume import read_volume
from sciatic.model.configs import ModelConfig
from sciatic.model.demo_model import PhantomCase, phantom_cases
from sciatic.model.infer import ModelBundle, segment_volume
from sciatic.model.unet import build_model, count_parameters

TEST_SEEDS = (101, 102)  # held-out phantom seeds; the shipped model is trained on seed 11
TEST_SUBJECTS = 20


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
    hard_cases: list[str]
    matrix: str
    dice: float
    hd95_mm: float | None  # None when exactly one mask is empty (unbounded)
    failed: bool
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


def run_case(bundle: ModelBundle, loaded: LoadedCase, keep_largest_component: bool) -> CaseResult:
    start = time.perf_counter()
    mask = segment_volume(bundle, loaded.volume, loaded.affine, keep_largest_component=keep_largest_component).mask
    seconds = time.perf_counter() - start
    comparison = compare_masks(mask, loaded.affine, loaded.label, loaded.label_affine)
    record = loaded.case.record
    return CaseResult(
        subject=record.patient_id,
        cohort=record.cohort,
        hard_cases=list(record.hard_cases),
        matrix=f"{record.rows}x{record.columns}x{record.slices}",
        dice=comparison.dice,
        hd95_mm=comparison.hd95_mm if math.isfinite(comparison.hd95_mm) else None,
        failed=comparison.dice < FAILURE_DICE,
        seconds=seconds,
    )


def summarize(results: list[CaseResult]) -> dict[str, Any]:
    """The seed abstract's numbers (mean and variance of Dice where it worked, failure rate) and more."""
    dice = [r.dice for r in results]
    working = [r.dice for r in results if not r.failed]
    hd95_working = [r.hd95_mm for r in results if not r.failed and r.hd95_mm is not None]
    return {
        "subjects": len(results),
        "failures": sum(r.failed for r in results),
        "failure_rate": sum(r.failed for r in results) / len(results),
        "mean_dice_working": statistics.fmean(working) if working else None,
        "variance_dice_working": statistics.pvariance(working) if len(working) > 1 else None,
        "mean_dice_all": statistics.fmean(dice),
        "median_dice": statistics.median(dice),
        "min_dice": min(dice),
        "max_dice": max(dice),
        "median_hd95_mm_working": statistics.median(hd95_working) if hd95_working else None,
        "max_hd95_mm_working": max(hd95_working) if hd95_working else None,
    }


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


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for k, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
