"""Segmentation quality on held-out phantoms: the seed configuration against the production default.

Usage::

    .venv/bin/python benchmarks/quality.py [--train-subjects 40] [--train-seed 11] [--epochs 15]
                                           [--test-subjects 20] [--test-seeds 101,102]
                                           [--seed-budget-minutes 20] [--cascade-checkpoint PATH]
                                           [--save-seed-checkpoint PATH] [--json OUT.json]

Both configurations are trained on the same phantom subjects (generated from
``--train-seed`` and converted by the service's converter, split 80/20 into
training and validation exactly as ``sciatic.model.demo_model`` does) and
evaluated on ``--test-subjects`` subjects generated from other seeds, which
no model has seen. Each subject's mask is compared with its label by
``sciatic.evaluation.qc.compare_masks``: Dice, HD95, and the seed abstract's
failure definition (Dice < 0.05). The summary gives the abstract's numbers
(mean Dice on the subjects that worked, its variance, the failure rate)
beside the published 0.69 / 20%.

* ``cascade`` (production default) is trained for ``--epochs`` epochs on the
  CPU, exactly like the shipped model; ``--cascade-checkpoint`` evaluates a
  given checkpoint instead (for instance ``sciatic/model/phantom-cascade.pt``, which
  ``build_demo_model`` trains from the default training seed and subjects).
  Target: mean Dice >= 0.90 on working cases and failure rate <= 2%.
* ``seed`` (31 M parameters, SGD 1e-4/0.99, 256x1280 montages, batch 1) took
  about 4 days on a Titan X in the abstract and cannot converge on a few CPU
  cores. It gets a fixed wall-time budget (``--seed-budget-minutes``): training
  stops after the optimiser step that exceeds it, and the table says how many
  steps and epochs that was. Its inference is the abstract's: every voxel with
  probability > 0.5, no clean-up. It is validated on ``--seed-val-subjects``
  of the validation subjects only (its validation merely picks the checkpoint).

The exit status is 1 when the production default misses its target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._common import (  # noqa: E402
    TEST_SEEDS,
    TEST_SUBJECTS,
    CaseResult,
    describe_machine,
    fmt,
    held_out_cases,
    load_case,
    machine,
    parameters,
    parse_seeds,
    print_table,
    run_case,
    summarize,
)
from sciatic.model.checkpoint import release_checkpoint  # noqa: E402
from sciatic.model.configs import get_config  # noqa: E402
from sciatic.model.demo_model import (  # noqa: E402
    DEFAULT_EPOCHS,
    DEFAULT_OUT,
    DEFAULT_SEED,
    DEFAULT_SUBJECTS,
    THREADS,
    phantom_cases,
    read_digest,
    split_cases,
    train_on_phantoms,
)
from sciatic.model.infer import ModelBundle, load_model  # noqa: E402

PUBLISHED = {"mean_dice_working": 0.69, "variance_dice_working": 0.04, "failure_rate": 0.20, "subjects": 14}
TARGET_DICE = 0.90
TARGET_FAILURE_RATE = 0.02
SEED_EPOCH_CAP = 10_000  # the budget, not this, ends the seed's training


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--train-subjects", type=int, default=DEFAULT_SUBJECTS, help="phantom subjects to train on")
    parser.add_argument("--train-seed", type=int, default=DEFAULT_SEED, help="phantom, split and training seed")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="cascade training epochs")
    parser.add_argument("--test-subjects", type=int, default=TEST_SUBJECTS, help="held-out phantom subjects")
    parser.add_argument("--test-seeds", default=",".join(map(str, TEST_SEEDS)), help="held-out phantom seeds")
    parser.add_argument("--seed-budget-minutes", type=float, default=20.0, help="wall-time budget of seed training")
    parser.add_argument("--seed-val-subjects", type=int, default=2, help="validation subjects for the seed")
    parser.add_argument("--cascade-checkpoint", type=Path, help="evaluate this cascade checkpoint, do not train one")
    parser.add_argument("--cascade-sha256", type=Path, help="file with the checkpoint's sha256 (default: PATH.sha256)")
    parser.add_argument("--save-seed-checkpoint", type=Path, help="keep the budget-trained seed checkpoint here")
    parser.add_argument("--skip-seed", action="store_true", help="evaluate the production default only")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    test_seeds = parse_seeds(args.test_seeds)
    if args.train_seed in test_seeds:
        parser.error("the test seeds must differ from the training seed")

    torch.set_num_threads(THREADS)
    info = machine()
    training: dict[str, dict[str, Any]] = {}
    results: dict[str, list[CaseResult]] = {}
    with tempfile.TemporaryDirectory(prefix="sciatic-bench-quality-") as tmp:
        work = Path(tmp)
        print(
            f"generating {args.train_subjects} training subjects (seed {args.train_seed}) and "
            f"{args.test_subjects} held-out subjects (seeds {args.test_seeds}) ...",
            flush=True,
        )
        cases = phantom_cases(work / "train-phantoms", args.train_subjects, args.train_seed)
        train_cases, val_cases = split_cases(cases, args.train_seed)
        test_cases = held_out_cases(work, args.test_subjects, test_seeds)
        bundles: dict[str, tuple[ModelBundle, bool]] = {}

        if args.cascade_checkpoint:
            sha_file = args.cascade_sha256 or args.cascade_checkpoint.with_suffix(".sha256")
            expected = read_digest(sha_file) if sha_file.is_file() else None
            bundle = load_model(args.cascade_checkpoint, expected, device="cpu")
            training["cascade"] = {
                "trained_here": False,
                "checkpoint": str(args.cascade_checkpoint),
                "sha256": bundle.sha256,
                "sha256_verified": expected is not None,
                "best_epoch": bundle.epoch,
                "checkpoint_metrics": bundle.metrics,
            }
        else:
            print(f"training cascade for {args.epochs} epochs ...", flush=True)
            result = train_on_phantoms(
                get_config("cascade"), train_cases, val_cases, work / "cascade", args.epochs, args.train_seed
            )
            bundle = load_model(result.checkpoint, result.sha256, device="cpu")
            release_sha256 = release_checkpoint(result.checkpoint, work / "cascade-release.pt", result.sha256)
            shipped = REPO / DEFAULT_OUT.with_suffix(".sha256")
            training["cascade"] = {
                "trained_here": True,
                "release_sha256": release_sha256,
                "same_as_shipped_model": shipped.is_file() and read_digest(shipped) == release_sha256,
                "epochs": result.epochs_run,
                "steps": result.steps,
                "best_epoch": result.best_epoch,
                "seconds": round(result.seconds, 1),
                "checkpoint_metrics": result.metrics,
                "history": result.history,
            }
        training["cascade"].update(
            {
                "parameters": parameters(get_config("cascade")),
                "train_subjects": len(train_cases),
                "val_subjects": len(val_cases),
            }
        )
        bundles["cascade"] = (bundle, True)

        if not args.skip_seed:
            budget = args.seed_budget_minutes * 60.0
            seed_config = get_config("seed")
            print(f"training seed for at most {args.seed_budget_minutes:g} minutes ...", flush=True)
            result = train_on_phantoms(
                seed_config,
                train_cases,
                val_cases[: max(1, args.seed_val_subjects)],
                work / "seed",
                SEED_EPOCH_CAP,
                args.train_seed,
                max_seconds=budget,
            )
            # batch 1: one step per montage of montage_slices slices (Z padded up)
            montages_per_epoch = sum(-(-c.record.slices // seed_config.montage_slices) for c in train_cases)
            training["seed"] = {
                "trained_here": True,
                "budget_seconds": budget,
                "steps": result.steps,
                "montages_per_epoch": montages_per_epoch,
                "epochs_completed": result.steps / montages_per_epoch,
                "epochs_started": result.epochs_run,
                "stopped_by_budget": result.stopped_by_budget,
                "seconds_with_validation": round(result.seconds, 1),
                "best_epoch": result.best_epoch,
                "checkpoint_metrics": result.metrics,
                "history": result.history,
                "parameters": parameters(seed_config),
                "train_subjects": len(train_cases),
                "val_subjects": min(len(val_cases), max(1, args.seed_val_subjects)),
            }
            if args.save_seed_checkpoint:
                args.save_seed_checkpoint.parent.mkdir(parents=True, exist_ok=True)
                args.save_seed_checkpoint.write_bytes(result.checkpoint.read_bytes())
            # The abstract's output: every voxel with a non-zero (here: > 0.5) prediction, no clean-up.
            bundles["seed"] = (load_model(result.checkpoint, result.sha256, device="cpu"), False)

        print(f"evaluating on {len(test_cases)} held-out subjects ...", flush=True)
        order = [name for name in ("seed", "cascade") if name in bundles]
        results = {name: [] for name in order}
        for case in test_cases:
            loaded = load_case(case)
            for name in order:
                bundle_, largest = bundles[name]
                results[name].append(run_case(bundle_, loaded, keep_largest_component=largest))
            print(
                f"  {case.record.patient_id}: " + ", ".join(f"{n} Dice {results[n][-1].dice:.3f}" for n in order),
                flush=True,
            )
    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    summaries = {name: summarize(rows) for name, rows in results.items()}
    passed = (
        summaries["cascade"]["mean_dice_working"] is not None
        and summaries["cascade"]["mean_dice_working"] >= TARGET_DICE
        and summaries["cascade"]["failure_rate"] <= TARGET_FAILURE_RATE
    )
    report(args, info, training, results, summaries, passed)
    if args.json:
        document = {
            "benchmark": "quality",
            "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": info,
            "published_seed": PUBLISHED,
            "targets": {"mean_dice_working": TARGET_DICE, "failure_rate": TARGET_FAILURE_RATE},
            "training": training,
            "results": {name: [asdict(r) for r in rows] for name, rows in results.items()},
            "summary": summaries,
            "passed": passed,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if passed else 1


def report(
    args: argparse.Namespace,
    info: dict[str, Any],
    training: dict[str, dict[str, Any]],
    results: dict[str, list[CaseResult]],
    summaries: dict[str, dict[str, Any]],
    passed: bool,
) -> None:
    print()
    for line in describe_machine(info):
        print(line)
    cascade = training["cascade"]
    if cascade["trained_here"]:
        how = (
            f"trained here: {cascade['epochs']} epochs, {cascade['steps']} steps, {cascade['seconds']:.0f} s; "
            f"release sha256 {cascade['release_sha256'][:12]}... "
            + (
                "(bit-identical to the shipped model)"
                if cascade["same_as_shipped_model"]
                else "(not the shipped model)"
            )
        )
    else:
        how = (
            f"checkpoint {cascade['checkpoint']} (sha256 {cascade['sha256'][:12]}..., "
            f"best epoch {cascade['best_epoch']})"
        )
    print(f"cascade: {cascade['parameters'] / 1e6:.2f} M parameters; {how}")
    if "seed" in training:
        seed = training["seed"]
        epochs = seed["epochs_completed"]
        print(
            f"seed: {seed['parameters'] / 1e6:.1f} M parameters; budget {seed['budget_seconds'] / 60:g} min: "
            f"{seed['steps']} steps of batch 1 ("
            + f"{epochs:.2f} epochs of {seed['montages_per_epoch']} montages), "
            + f"{seed['seconds_with_validation']:.0f} s with validation"
        )
    print()
    names = list(results)
    header = (
        "subject",
        "cohort",
        "hard case",
        "matrix",
        *(f"{n} Dice" for n in names),
        *(f"{n} HD95 mm" for n in names),
    )
    rows = []
    for k, first in enumerate(results[names[0]]):
        rows.append(
            (
                first.subject,
                first.cohort,
                ",".join(first.hard_cases) or "-",
                first.matrix,
                *(f"{results[n][k].dice:.3f}" for n in names),
                *(fmt(results[n][k].hd95_mm, 1) for n in names),
            )
        )
    print_table(header, rows)
    print()

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    columns = [("seed abstract (published, 14 real subjects)", PUBLISHED)]
    columns += [(f"{n} (here, {summaries[n]['subjects']} held-out phantoms)", summaries[n]) for n in names]
    header2 = ("", *(c[0] for c in columns), "target (cascade)")
    lines: list[tuple[str, ...]] = [
        ("failure rate (Dice < 0.05)", *(pct(c[1].get("failure_rate")) for c in columns), "<= 2%"),
        ("mean Dice, working cases", *(fmt(c[1].get("mean_dice_working")) for c in columns), ">= 0.90"),
        ("variance of Dice, working cases", *(fmt(c[1].get("variance_dice_working"), 4) for c in columns), ""),
        ("median Dice (min - max), all", *(_range(c[1]) for c in columns), ""),
        ("median HD95 mm, working cases", *(fmt(c[1].get("median_hd95_mm_working"), 1) for c in columns), ""),
        ("max HD95 mm, working cases", *(fmt(c[1].get("max_hd95_mm_working"), 1) for c in columns), ""),
        (
            "median seconds per subject (CPU)",
            "-",
            *(f"{statistics.median(r.seconds for r in results[n]):.2f}" for n in names),
            "",
        ),
    ]
    print_table(header2, lines)
    print()
    print(f"production default (cascade): {'PASS' if passed else 'MISS'}")


def _range(summary: dict[str, Any]) -> str:
    if "median_dice" not in summary:
        return "-"
    return f"{summary['median_dice']:.3f} ({summary['min_dice']:.3f} - {summary['max_dice']:.3f})"


if __name__ == "__main__":
    sys.exit(main())
