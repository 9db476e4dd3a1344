"""Segmentation quality of the production model on held-out phantom v2 subjects, overall and per group.

Usage::

    .venv/bin/python benchmarks/quality.py [--checkpoint PATH] [--sha256 FILE]
                                           [--test-subjects 40] [--test-seeds 101,102] [--json OUT.json]
    .venv/bin/python benchmarks/quality.py --train [--train-subjects 72] [--train-seed 11] [--epochs 40] ...
    .venv/bin/python benchmarks/quality.py --with-seed-budget-minutes 10 [--seed-val-subjects 2]
                                           [--save-seed-checkpoint PATH] ...

Test data: ``--test-subjects`` phantom v2 subjects (``phantom_cases`` with its
default ``PHANTOM_OPTIONS``: one or both thighs, the bifurcation, fatty
infiltration, fat-sat, 2D and 3D) from ``--test-seeds``, which must differ
from the training seed, written as DICOM and converted by the service's
converter. The model is the shipped one (``sciatic/model/phantom-cascade.pt``,
sha256 checked against its ``.sha256`` file), ``--checkpoint`` (checked
against ``--sha256`` or ``PATH.sha256`` when that exists), or with
``--train`` a cascade trained here exactly as ``build_demo_model`` does
(``--train-subjects`` v2 subjects from ``--train-seed``, split 90/10,
``--epochs`` on the CPU).

Per series (a leg is one side of ``sciatic.evaluation.metrics.split_sides``
of the label, the unilateral series' laterality putting everything on its
side; the prediction is split the same way):

* Dice of the mask with the label;
* failure: Dice < ``FAILURE_DICE`` (0.05) or a leg missed (no predicted voxel
  on that leg's side);
* pieces found: of the label's 2D pieces (each slice's 8-connected
  components: each leg, each branch), those that a predicted voxel overlaps;
* CSA error per leg: (mean predicted CSA - mean true CSA) / mean true CSA,
  both over the slices where the label has nerve on that leg, areas in mm²
  from ``nerve_metrics_by_side`` with the volume's affine;
* the network's uncertainty (``SegmentationResult.uncertainty``) and the
  seconds of ``segment_volume``.

Targets, overall and in every group (field of view, bifurcation in view,
fatty infiltration grade 0 / >= 1, fat-sat, 2D / 3D): mean Dice >= 0.90,
failures <= 2% of the series, pieces found >= 97%, median |CSA error| over
the legs <= 5%. The Spearman rank correlation of uncertainty with Dice is
printed beside them (a useful warning is clearly negative). The tables are
markdown. The exit status is 1 when the production model misses any target
in any row.

``--with-seed-budget-minutes N`` also trains the seed configuration (31 M
parameters, SGD, 256x1280 montages, batch 1) for a wall-time budget of N
minutes on the same training subjects and reports it beside the production
model, with the abstract's inference (every voxel with probability > 0.5, no
clean-up). It has no target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._common import (  # noqa: E402
    TEST_SEEDS,
    TEST_SUBJECTS,
    LoadedCase,
    describe_machine,
    fmt,
    held_out_cases,
    load_case,
    load_checked,
    machine,
    matrix,
    missed_sides,
    parameters,
    parse_seeds,
    pieces_found,
    print_table,
    segment_case,
    side_csa_errors,
    spearman,
)
from sciatic.db.enums import Side  # noqa: E402
from sciatic.evaluation.qc import dice  # noqa: E402
from sciatic.evaluation.thresholds import FAILURE_DICE  # noqa: E402
from sciatic.imaging.volume import check_same_grid  # noqa: E402
from sciatic.model.checkpoint import release_checkpoint  # noqa: E402
from sciatic.model.configs import get_config  # noqa: E402
from sciatic.model.demo_model import (  # noqa: E402
    DEFAULT_EPOCHS,
    DEFAULT_SEED,
    DEFAULT_SUBJECTS,
    THREADS,
    PhantomCase,
    phantom_cases,
    read_digest,
    split_cases,
    train_on_phantoms,
)
from sciatic.model.infer import ModelBundle, load_model  # noqa: E402
from sciatic.model.shipped import SHIPPED_MODEL, SHIPPED_MODEL_SHA256_FILE  # noqa: E402
from sciatic.phantom.v2 import SubjectRecordV2  # noqa: E402

TARGET_DICE = 0.90
TARGET_FAILURE_RATE = 0.02
TARGET_PIECES_FOUND = 0.97
TARGET_CSA_ERROR = 0.05
SEED_EPOCH_CAP = 10_000  # the budget, not this, ends the seed's training
SIDE_LETTER = {Side.RIGHT: "R", Side.LEFT: "L"}
PRODUCTION = "production"


@dataclass(frozen=True)
class Group:
    """One way of splitting the series: a name, its values in table order, and a record's value."""

    name: str
    values: tuple[str, ...]
    of: Callable[[SubjectRecordV2], str]


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


GROUPS = (
    Group("field of view", ("unilateral", "bilateral"), lambda r: r.field_of_view),
    Group("bifurcation in view", ("yes", "no"), lambda r: _yes_no(r.bifurcation)),
    Group(
        "fatty infiltration",
        ("grade 0", "grade >= 1"),
        lambda r: "grade 0" if r.fatty_infiltration_grade == 0 else "grade >= 1",
    ),
    Group("fat-sat", ("yes", "no"), lambda r: _yes_no(r.fat_sat)),
    Group("acquisition", ("2D", "3D"), lambda r: r.acquisition),
)


@dataclass(frozen=True)
class SeriesResult:
    """One model on one held-out series."""

    subject: str
    groups: dict[str, str]  # group name -> value
    field_of_view: str  # "bilateral" or "unilateral R/L"
    fatty_infiltration_grade: int
    matrix: str
    dice: float
    missed_legs: list[str]
    failed: bool
    pieces_found: int
    pieces_total: int
    csa_errors: dict[str, float]  # per leg of the label (R / L), signed relative error
    uncertainty: float
    seconds: float


@dataclass(frozen=True)
class Summary:
    """The targets' numbers over some series; ``missed`` names the targets not met."""

    group: str
    series: int
    legs: int
    mean_dice: float | None
    failures: int
    failure_rate: float | None
    pieces_found: int
    pieces_total: int
    pieces_found_rate: float | None
    median_abs_csa_error: float | None
    mean_uncertainty: float | None
    median_seconds: float | None
    missed: list[str]


@dataclass(frozen=True)
class Model:
    name: str
    bundle: ModelBundle
    drop_stray: bool  # the production clean-up; the seed's output is the raw threshold
    info: dict[str, Any]


# --------------------------------------------------------------------------- evaluation


def v2_record(case: PhantomCase) -> SubjectRecordV2:
    if not isinstance(case.record, SubjectRecordV2):
        raise TypeError(f"{case.record.patient_id} is not a phantom v2 subject")
    return case.record


def evaluate(model: Model, loaded: LoadedCase) -> SeriesResult:
    """Segment one series and measure it against its label (on the volume's grid)."""
    record = v2_record(loaded.case)
    label, affine, laterality = loaded.label, loaded.affine, record.laterality
    check_same_grid(label.shape, loaded.label_affine, loaded.volume.shape, affine, names=("label", "volume"))
    result, seconds = segment_case(model.bundle, loaded, model.drop_stray)
    mask = result.mask
    found, total = pieces_found(mask, label)
    missed = [SIDE_LETTER[s] for s in missed_sides(mask, label, affine, laterality)]
    score = dice(mask, label)
    return SeriesResult(
        subject=record.patient_id,
        groups={g.name: g.of(record) for g in GROUPS},
        field_of_view=record.field_of_view + (f" {laterality}" if record.field_of_view == "unilateral" else ""),
        fatty_infiltration_grade=record.fatty_infiltration_grade,
        matrix=matrix(loaded.case),
        dice=score,
        missed_legs=missed,
        failed=score < FAILURE_DICE or bool(missed),
        pieces_found=found,
        pieces_total=total,
        csa_errors={SIDE_LETTER[s]: e for s, e in side_csa_errors(mask, label, affine, laterality).items()},
        uncertainty=result.uncertainty,
        seconds=seconds,
    )


def summarize(group: str, rows: Sequence[SeriesResult]) -> Summary:
    errors = [abs(e) for r in rows for e in r.csa_errors.values()]
    found, total = sum(r.pieces_found for r in rows), sum(r.pieces_total for r in rows)
    failures = sum(r.failed for r in rows)
    summary = Summary(
        group=group,
        series=len(rows),
        legs=len(errors),
        mean_dice=statistics.fmean(r.dice for r in rows) if rows else None,
        failures=failures,
        failure_rate=failures / len(rows) if rows else None,
        pieces_found=found,
        pieces_total=total,
        pieces_found_rate=found / total if total else None,
        median_abs_csa_error=statistics.median(errors) if errors else None,
        mean_uncertainty=statistics.fmean(r.uncertainty for r in rows) if rows else None,
        median_seconds=statistics.median(r.seconds for r in rows) if rows else None,
        missed=[],
    )
    return replace(summary, missed=missed_targets(summary))


def missed_targets(s: Summary) -> list[str]:
    """The targets this summary misses (none where it has no series)."""
    checks = [
        ("Dice", s.mean_dice is None or s.mean_dice >= TARGET_DICE),
        ("failures", s.failure_rate is None or s.failure_rate <= TARGET_FAILURE_RATE),
        ("pieces", s.pieces_found_rate is None or s.pieces_found_rate >= TARGET_PIECES_FOUND),
        ("CSA", s.median_abs_csa_error is None or s.median_abs_csa_error <= TARGET_CSA_ERROR),
    ]
    return [name for name, met in checks if not met]


def summaries(rows: Sequence[SeriesResult]) -> list[Summary]:
    """Overall, then every group value in table order."""
    out = [summarize("all", rows)]
    for g in GROUPS:
        out += [summarize(f"{g.name}: {v}", [r for r in rows if r.groups[g.name] == v]) for v in g.values]
    return out


def rank_correlation(rows: Sequence[SeriesResult]) -> float | None:
    """Spearman of uncertainty with Dice; None when either is constant or there are fewer than 3 series."""
    if len(rows) < 3:
        return None
    try:
        return spearman([r.uncertainty for r in rows], [r.dice for r in rows])
    except statistics.StatisticsError:
        return None


# --------------------------------------------------------------------------- models


def production_from_checkpoint(args: argparse.Namespace) -> Model:
    path: Path = args.checkpoint or SHIPPED_MODEL
    sha_file = args.sha256 or (SHIPPED_MODEL_SHA256_FILE if args.checkpoint is None else None)
    bundle, checked = load_checked(path, sha_file)
    info = {"trained_here": False, "checkpoint": str(path), "sha256": bundle.sha256, "sha256_verified": checked}
    info |= {"best_epoch": bundle.epoch, "checkpoint_metrics": bundle.metrics}
    return Model(PRODUCTION, bundle, True, info)


def production_trained(
    args: argparse.Namespace, cases: tuple[list[PhantomCase], list[PhantomCase]], work: Path
) -> Model:
    """The cascade trained as ``build_demo_model`` trains it; its release compared with the shipped model."""
    train_cases, val_cases = cases
    print(f"training cascade for {args.epochs} epochs ...", flush=True)
    result = train_on_phantoms(
        get_config("cascade"), train_cases, val_cases, work / "cascade", args.epochs, args.train_seed
    )
    release_sha256 = release_checkpoint(result.checkpoint, work / "cascade-release.pt", result.sha256)
    info = {
        "trained_here": True,
        "release_sha256": release_sha256,
        "same_as_shipped_model": read_digest(SHIPPED_MODEL_SHA256_FILE) == release_sha256,
        "epochs": result.epochs_run,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 1),
        "checkpoint_metrics": result.metrics,
        "history": result.history,
        "train_subjects": len(train_cases),
        "val_subjects": len(val_cases),
    }
    return Model(PRODUCTION, load_model(result.checkpoint, result.sha256, device="cpu"), True, info)


def seed_trained(args: argparse.Namespace, cases: tuple[list[PhantomCase], list[PhantomCase]], work: Path) -> Model:
    """The seed configuration after a wall-time budget of training (validated on a few subjects only)."""
    train_cases, val_cases = cases
    config = get_config("seed")
    budget = args.with_seed_budget_minutes * 60.0
    val = val_cases[: max(1, args.seed_val_subjects)]
    print(f"training seed for at most {args.with_seed_budget_minutes:g} minutes ...", flush=True)
    result = train_on_phantoms(
        config, train_cases, val, work / "seed", SEED_EPOCH_CAP, args.train_seed, max_seconds=budget
    )
    if args.save_seed_checkpoint:
        args.save_seed_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        args.save_seed_checkpoint.write_bytes(result.checkpoint.read_bytes())
    montages = sum(-(-c.record.slices // config.montage_slices) for c in train_cases)  # batch 1: a step per montage
    info = {
        "trained_here": True,
        "budget_seconds": budget,
        "steps": result.steps,
        "montages_per_epoch": montages,
        "epochs_completed": result.steps / montages,
        "stopped_by_budget": result.stopped_by_budget,
        "seconds_with_validation": round(result.seconds, 1),
        "best_epoch": result.best_epoch,
        "checkpoint_metrics": result.metrics,
        "history": result.history,
        "train_subjects": len(train_cases),
        "val_subjects": len(val),
    }
    return Model("seed", load_model(result.checkpoint, result.sha256, device="cpu"), False, info)


def build_models(args: argparse.Namespace, work: Path) -> list[Model]:
    cases: tuple[list[PhantomCase], list[PhantomCase]] | None = None
    if args.train or args.with_seed_budget_minutes:
        print(f"generating {args.train_subjects} training subjects (seed {args.train_seed}) ...", flush=True)
        cases = split_cases(
            phantom_cases(work / "train-phantoms", args.train_subjects, args.train_seed), args.train_seed
        )
    models = [production_trained(args, cases, work) if cases and args.train else production_from_checkpoint(args)]
    if cases and args.with_seed_budget_minutes:
        models.append(seed_trained(args, cases, work))
    for model in models:
        model.info["parameters"] = parameters(model.bundle.config)
    return models


# --------------------------------------------------------------------------- report


def pct(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def signed_pct(value: float) -> str:
    return f"{100 * value:+.1f}%"


def subject_row(r: SeriesResult) -> tuple[str, ...]:
    failure = ", ".join((["Dice"] if r.dice < FAILURE_DICE else []) + [f"missed {leg}" for leg in r.missed_legs])
    return (
        r.subject,
        r.field_of_view,
        r.groups["bifurcation in view"],
        str(r.fatty_infiltration_grade),
        r.groups["fat-sat"],
        r.groups["acquisition"],
        r.matrix,
        f"{r.dice:.3f}",
        f"{r.pieces_found}/{r.pieces_total}",
        ", ".join(f"{leg} {signed_pct(e)}" for leg, e in r.csa_errors.items()),
        f"{r.uncertainty:.3f}",
        f"{r.seconds:.2f}",
        failure or "-",
    )


def print_subjects(rows: Sequence[SeriesResult]) -> None:
    header = (
        "subject",
        "field of view",
        "bifurcation",
        "fat grade",
        "fat-sat",
        "2D/3D",
        "matrix",
        "Dice",
        "pieces found",
        "CSA error",
        "uncertainty",
        "seconds",
        "failure",
    )
    print_table(header, [subject_row(r) for r in rows])


def summary_row(s: Summary) -> tuple[str, ...]:
    if not s.series:
        return (s.group, "0", "-", "-", "-", "-", "-", "-", "no series")
    return (
        s.group,
        str(s.series),
        fmt(s.mean_dice),
        f"{s.failures} ({pct(s.failure_rate)})",
        f"{pct(s.pieces_found_rate, 1)} ({s.pieces_found}/{s.pieces_total})",
        f"{pct(s.median_abs_csa_error, 1)} ({s.legs} legs)",
        fmt(s.mean_uncertainty),
        fmt(s.median_seconds, 2),
        "missed: " + ", ".join(s.missed) if s.missed else "met",
    )


def print_summaries(rows: Sequence[Summary]) -> None:
    header = (
        "series",
        "n",
        "mean Dice",
        "failures",
        "pieces found",
        "median abs CSA error",
        "mean uncertainty",
        "median s",
        "targets",
    )
    target = (
        "target",
        "",
        f">= {TARGET_DICE:.2f}",
        f"<= {pct(TARGET_FAILURE_RATE)}",
        f">= {pct(TARGET_PIECES_FOUND)}",
        f"<= {pct(TARGET_CSA_ERROR)}",
        "",
        "",
        "",
    )
    print_table(header, [target, *(summary_row(s) for s in rows)])


def describe_model(model: Model) -> str:
    info = model.info
    size = f"{info['parameters'] / 1e6:.2f} M parameters"
    if model.name == "seed":
        return (
            f"seed: {size}; budget {info['budget_seconds'] / 60:g} min: {info['steps']} steps of batch 1 "
            f"({info['epochs_completed']:.2f} epochs of {info['montages_per_epoch']} montages), "
            f"{info['seconds_with_validation']:.0f} s with validation; no clean-up, no target"
        )
    if info["trained_here"]:
        same = "bit-identical to the shipped model" if info["same_as_shipped_model"] else "not the shipped model"
        return (
            f"production: cascade, {size}; trained here: {info['epochs']} epochs, {info['steps']} steps, "
            f"{info['seconds']:.0f} s; release sha256 {info['release_sha256'][:12]}... ({same})"
        )
    checked = "checked" if info["sha256_verified"] else "NOT checked"
    return (
        f"production: {info['checkpoint']} ({size}, sha256 {info['sha256'][:12]}... {checked}, "
        f"best epoch {info['best_epoch']})"
    )


def report(info: dict[str, Any], models: Sequence[Model], results: dict[str, list[SeriesResult]]) -> bool:
    """Print everything; True when the production model meets every target in every row."""
    print()
    for line in describe_machine(info):
        print(line)
    for model in models:
        print(describe_model(model))
    passed = True
    for model in models:
        rows = results[model.name]
        table = summaries(rows)
        rho = rank_correlation(rows)
        print(f"\n### {model.name}: {len(rows)} held-out phantom v2 series\n")
        print_subjects(rows)
        print()
        print_summaries(table)
        print(f"\nSpearman rank correlation of uncertainty with Dice: {fmt(rho, 2)} (baseline 0; a warning is < 0)")
        if model.name == PRODUCTION:
            passed = not any(s.missed for s in table)
    print(f"\nproduction model: {'PASS' if passed else 'MISS'}")
    return passed


def write_json(
    path: Path,
    args: argparse.Namespace,
    info: dict[str, Any],
    models: Sequence[Model],
    results: dict[str, list[SeriesResult]],
    passed: bool,
) -> None:
    document = {
        "benchmark": "quality",
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": info,
        "targets": {
            "mean_dice": TARGET_DICE,
            "failure_rate": TARGET_FAILURE_RATE,
            "failure_dice": FAILURE_DICE,
            "pieces_found": TARGET_PIECES_FOUND,
            "median_abs_csa_error": TARGET_CSA_ERROR,
        },
        "models": {m.name: m.info for m in models},
        "results": {name: [asdict(r) for r in rows] for name, rows in results.items()},
        "summaries": {name: [asdict(s) for s in summaries(rows)] for name, rows in results.items()},
        "spearman_uncertainty_dice": {name: rank_correlation(rows) for name, rows in results.items()},
        "passed": passed,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--checkpoint", type=Path, help=f"production model to evaluate (default {SHIPPED_MODEL.name})")
    parser.add_argument("--sha256", type=Path, help="file with the checkpoint's sha256 (default: PATH.sha256)")
    parser.add_argument("--train", action="store_true", help="train the cascade here instead of loading a checkpoint")
    parser.add_argument("--train-subjects", type=int, default=DEFAULT_SUBJECTS, help="phantom subjects to train on")
    parser.add_argument("--train-seed", type=int, default=DEFAULT_SEED, help="phantom, split and training seed")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="cascade training epochs (--train)")
    parser.add_argument("--test-subjects", type=int, default=TEST_SUBJECTS, help="held-out phantom subjects")
    parser.add_argument("--test-seeds", default=",".join(map(str, TEST_SEEDS)), help="held-out phantom seeds")
    parser.add_argument("--with-seed-budget-minutes", type=float, help="also train the seed for N minutes")
    parser.add_argument("--seed-val-subjects", type=int, default=2, help="validation subjects for the seed")
    parser.add_argument("--save-seed-checkpoint", type=Path, help="keep the budget-trained seed checkpoint here")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    args.test_seeds = parse_seeds(args.test_seeds)
    if args.train_seed in args.test_seeds:
        parser.error("the test seeds must differ from the training seed")
    if args.train and (args.checkpoint or args.sha256):
        parser.error("--train trains the model; --checkpoint and --sha256 load one")
    if args.test_subjects < 1:
        parser.error("--test-subjects must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(THREADS)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="sciatic-bench-quality-") as tmp:
        work = Path(tmp)
        models = build_models(args, work)
        print(f"generating {args.test_subjects} held-out subjects (seeds {args.test_seeds}) ...", flush=True)
        test_cases = held_out_cases(work, args.test_subjects, args.test_seeds)
        results: dict[str, list[SeriesResult]] = {m.name: [] for m in models}
        for case in test_cases:
            loaded = load_case(case)
            for model in models:
                results[model.name].append(evaluate(model, loaded))
            print(
                f"  {case.record.patient_id}: " + ", ".join(f"{n} Dice {r[-1].dice:.3f}" for n, r in results.items()),
                flush=True,
            )
    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    passed = report(info, models, results)
    if args.json:
        write_json(args.json, args, info, models, results, passed)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
