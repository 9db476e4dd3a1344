"""Adaptation to a new site through the real retraining path: does the shipped model, fine-tuned on N of the
site's labels, become one that works there, without forgetting the old site?

The new site is phantom v2's ``site_b`` profile (another vendor's PD contrast,
coarser pixels and thicker slices, another coil: docs/phantom.md, "Sites"),
which the shipped model never saw. For each N of ``--n``, in a fresh data
folder (embedded SQLite, or a throwaway database on the PostgreSQL server of
``--database-url``), with every other ``SCIATIC_`` setting cleared:

1. the champion (``--checkpoint``, the shipped model) is installed as
   production with its sha256, as ``sciatic models add --promote`` does;
2. N new-site studies (seed ``--label-seed``, localizer and T1 coronal
   included) arrive in the drop folder and the real nightly job runs
   (``run_nightly``: ingest, conversion, eligibility, segmentation by the
   champion, metrics, QC);
3. their N ground-truth labels are put into the labels folder and imported by
   the real label import (``pipeline.label_import``: ``sciatic labels import``);
4. the real retraining path runs, as the ``sciatic_retrain`` DAG calls it:
   ``pipeline.start_training_run`` (a subject split; fine-tuning from the
   champion, replay from its training runs or regenerated phantom studies
   like the shipped model's, and the old site's reference series, as the
   service's defaults say),
   ``pipeline.train_challenger`` with ``SCIATIC_TRAIN_MAX_MINUTES`` =
   ``--budget-minutes``, and ``pipeline.evaluate_and_decide`` (promoted or
   kept, on the run's own test subjects, with the paired bootstrap interval
   recorded in ``training_run``);
5. champion and challenger are scored with ``score_cases`` (the project's one
   evaluation loop) on ``--test`` held-out new-site series (seed
   ``--test-seed``) and ``--old-test`` old-site series (phantom v2 default,
   seed ``--old-seed``). The champion is the same file for every N, so it is
   scored once. The report also lists the old-site series the last N's
   challenger lost most on, with the kind of study each is (forgetting tends
   to sit in a few series of one kind rather than everywhere), and each
   model's mask size against the truth's (the median over the series moving
   away from 1 says that the probabilities' calibration shifted).

Targets, at the largest N (16 by default): the challenger is promoted; the
production model after the run has mean Dice >= 0.85 and failures (Dice <
``SCIATIC_FAILURE_DICE``) <= 5% on the new site's held-out series; its
old-site mean Dice is within 0.02 of the champion's (no forgetting). One draw
of studies is a noisy judge (20 held-out series, one training run), so
``--draws K`` repeats everything with every seed moved by 10, 20, ...: the
challenger must then be promoted in every draw, and Dice, failures and
forgetting are judged over all draws (means; failures pooled). The tables are
markdown; the exit status is 1 when a target is missed.

    .venv/bin/python benchmarks/adaptation.py [--n 4,8,16] [--budget-minutes 20] [--test 20] [--old-test 20]
        [--epochs E] [--lr-factor F] [--replay-share S] [--replay-pool P]
        [--label-seed 401] [--test-seed 402] [--old-seed 301] [--draws 1] [--slices K]
        [--checkpoint PT] [--database-url postgresql+psycopg2://user@host/postgres] [--work DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import describe_machine, machine, print_table
from benchmarks._service import configure_service, fresh_postgres, work_folder
from sciatic.model.demo_model import PhantomCase, phantom_cases, read_digest
from sciatic.model.shipped import SHIPPED_MODEL
from sciatic.phantom import PhantomV2Options, generate_v2
from sciatic.phantom.v2.manifest import SubjectRecordV2

if TYPE_CHECKING:
    from sciatic.model.train import Evaluation
    from sciatic.nightly import NightlySummary

NEW_SITE = "site_b"
RUN_ID = "benchmark-adaptation"
MIN_LABELLED = 3  # a training run needs a train, a validation and a test subject (steps.retrain)
TARGET_DICE = 0.85
TARGET_FAILURES = 0.05
TARGET_FORGETTING = 0.02
DRAW_STEP = 10  # seeds of draw k: each given seed + 10 k


def parse_counts(text: str) -> tuple[int, ...]:
    counts = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    if not counts or counts[0] < MIN_LABELLED:
        raise argparse.ArgumentTypeError(f"give label counts of at least {MIN_LABELLED}, e.g. 4,8,16")
    return counts


@dataclass(frozen=True)
class Draw:
    """One draw of studies: the seeds of the labelled, the held-out new-site and the held-out old-site series."""

    index: int
    label_seed: int
    test_seed: int
    old_seed: int

    @classmethod
    def nth(cls, args: argparse.Namespace, index: int) -> Draw:
        """Draw ``index``: every seed moved by ``DRAW_STEP`` per draw (draw 0 is the seeds given)."""
        step = DRAW_STEP * index
        return cls(index, args.label_seed + step, args.test_seed + step, args.old_seed + step)

    def describe(self) -> str:
        seeds = f"{self.label_seed} (labelled), {self.test_seed} (new site), {self.old_seed} (old site)"
        return f"draw {self.index + 1}: seeds {seeds}"


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("give at least 1")
    return value


# --------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class Score:
    """One model on one set of held-out series."""

    mean_dice: float
    failure_rate: float
    series: int
    dice: dict[str, float]
    size_ratio: dict[str, float]  # mask voxels / truth voxels

    @classmethod
    def of(cls, evaluation: Evaluation) -> Score:
        return cls(
            evaluation.mean_dice,
            evaluation.failure_rate,
            len(evaluation.dice),
            dict(evaluation.dice),
            dict(evaluation.size_ratio),
        )

    @property
    def median_size(self) -> float:
        """The median over the series of mask size / truth size (1: no bias; below 1: masks too small)."""
        return statistics.median(self.size_ratio.values())


def score(checkpoint: Path, sha256: str, cases: Sequence[PhantomCase]) -> Score:
    """``score_cases`` of the checkpoint on ``cases``, with the service's failure threshold and clean-up."""
    from sciatic.config import get_settings
    from sciatic.model.data import as_case
    from sciatic.model.infer import load_model
    from sciatic.model.train import score_cases

    settings = get_settings()
    bundle = load_model(checkpoint, sha256, settings.device)
    items = [as_case(case.item, name=case.record.patient_id) for case in cases]
    return Score.of(score_cases(bundle, items, settings.failure_dice, settings.drop_stray_components))


# --------------------------------------------------------------------------- the service's set-up


def configure(data: Path, database_url: str | None, args: argparse.Namespace) -> None:
    """Point the service at ``data`` (and ``database_url``), no waiting, the training settings given; nothing else."""
    settings = {"train_max_minutes": str(args.budget_minutes)}
    if database_url is not None:
        settings["database_url"] = database_url
    for option, setting in TRAINING_OPTIONS.items():
        if getattr(args, option) is not None:
            settings[setting] = str(getattr(args, option))
    configure_service(data, **settings)


#: benchmark option -> service setting, set only when given (otherwise the service's default)
TRAINING_OPTIONS = {
    "epochs": "train_epochs",
    "lr_factor": "train_fine_tune_lr_factor",
    "replay_share": "train_replay_share",
    "replay_pool": "train_replay_pool",
}


def install_champion(checkpoint: Path) -> tuple[int, str]:
    """Migrate the database and install ``checkpoint`` (sha256 from its ``.sha256`` file) as production."""
    from sciatic.config import get_settings
    from sciatic.db import migrate
    from sciatic.db.session import default_engine
    from sciatic.steps.models import add_model

    settings = get_settings()
    migrate.upgrade(settings.effective_database_url)
    added = add_model(settings, default_engine(), checkpoint, promote=True, sha256=champion_sha256(checkpoint))
    return added.model_id, added.name


def champion_sha256(checkpoint: Path) -> str:
    return read_digest(checkpoint.with_suffix(".sha256"))


# --------------------------------------------------------------------------- what a site does


@dataclass(frozen=True)
class SiteStudies:
    """N generated new-site studies: their folders (outside the service) and their ground truth."""

    root: Path
    truth: Path
    subjects: list[SubjectRecordV2]


def make_site_studies(work: Path, n: int, seed: int, slices: int | None) -> SiteStudies:
    root, truth = work / "incoming", work / "truth"
    options = PhantomV2Options(slices=slices, site=NEW_SITE)
    return SiteStudies(root, truth, generate_v2(root, n, seed, labels_dir=truth, options=options).subjects)


def deliver(studies: SiteStudies, drop: Path) -> None:
    """The study folders into the drop folder, as from the scanner (the manifest stays behind)."""
    for record in studies.subjects:
        shutil.move(str(studies.root / record.dicom_dir), drop / record.dicom_dir)


def label_studies(studies: SiteStudies, labels: Path) -> tuple[int, int]:
    """Staff's labels into the labels folder, then ``sciatic labels import``; (imported, refused or waiting)."""
    from sciatic import pipeline

    labels.mkdir(parents=True, exist_ok=True)
    for record in studies.subjects:
        shutil.copy2(studies.truth / str(record.label_file), labels / str(record.label_file))
    report = pipeline.label_import(run_id=RUN_ID)
    return len(report.imported), len(report.refused) + len(report.waiting)


# --------------------------------------------------------------------------- retraining as the DAG runs it


@dataclass(frozen=True)
class TrainingOutcome:
    """What ``training_run`` and the audit trail say about one run."""

    training_run_id: int
    retrain_due: bool  # what the DAG's first task would have said (the benchmark trains either way)
    initial_model_id: int | None  # the champion when fine-tuning; None: from scratch
    split: dict[str, int]  # series per part: train, val, test, replay, reference; phantom replay and reference
    decision: str
    decision_detail: str
    dice_difference: float | None
    dice_difference_low: float | None
    dice_difference_high: float | None
    reference_change: float | None  # challenger - champion mean Dice on the old site's reference series
    challenger_model_id: int
    challenger_checkpoint: str
    challenger_sha256: str
    training_seconds: float  # train(): the budgeted part
    epochs: int
    steps: int
    stopped_by_budget: bool
    device: str
    wall_seconds: float  # start_training_run + train_challenger + evaluate_and_decide


def retrain() -> TrainingOutcome:
    """The three retraining tasks of ``sciatic_retrain``, in order, then what they recorded."""
    from sciatic import pipeline

    due = pipeline.retrain_due(run_id=RUN_ID)
    start = time.perf_counter()
    training_run_id = pipeline.start_training_run("manual", run_id=RUN_ID)
    pipeline.train_challenger(training_run_id, run_id=RUN_ID)
    pipeline.evaluate_and_decide(training_run_id, run_id=RUN_ID)
    return recorded(training_run_id, due, time.perf_counter() - start)


def recorded(training_run_id: int, due: bool, wall_seconds: float) -> TrainingOutcome:
    from sqlalchemy import select

    from sciatic.db import registry
    from sciatic.db.models import PipelineEvent, TrainingRun
    from sciatic.db.session import default_engine, session_scope

    with session_scope(default_engine()) as session:
        run = session.get(TrainingRun, training_run_id)
        assert run is not None and run.challenger_model_id is not None
        challenger = registry.get(session, run.challenger_model_id)
        query = select(PipelineEvent).where(
            PipelineEvent.step == "retrain",
            PipelineEvent.action == "challenger_trained",
            PipelineEvent.entity == "training_run",
            PipelineEvent.entity_id == training_run_id,
        )
        trained = dict(session.scalars(query).one().detail or {})
        challenger_reference = dict(run.challenger_metrics or {}).get("reference")
        champion_reference = dict(run.champion_metrics or {}).get("reference")
        reference_change = (
            float(challenger_reference["mean_dice"]) - float(champion_reference["mean_dice"])
            if challenger_reference and champion_reference
            else None
        )
        return TrainingOutcome(
            training_run_id=training_run_id,
            retrain_due=due,
            initial_model_id=run.initial_model_id,
            split={
                **{part: len(run.split.get(part, [])) for part in ("train", "val", "test", "replay", "reference")},
                "phantom_replay": int(trained.get("replayed_phantoms", 0)),
                "phantom_reference": int(dict(run.split.get("phantom") or {}).get("reference_subjects", 0)),
            },
            decision=run.decision.value,
            decision_detail=run.decision_detail or "",
            dice_difference=run.dice_difference,
            dice_difference_low=run.dice_difference_low,
            dice_difference_high=run.dice_difference_high,
            reference_change=reference_change,
            challenger_model_id=challenger.id,
            challenger_checkpoint=challenger.checkpoint_path,
            challenger_sha256=challenger.checkpoint_sha256,
            training_seconds=float(trained["seconds"]),
            epochs=int(trained["epochs"]),
            steps=int(trained["steps"]),
            stopped_by_budget=bool(trained["stopped_by_budget"]),
            device=str(trained["device"]),
            wall_seconds=wall_seconds,
        )


# --------------------------------------------------------------------------- one N


@dataclass(frozen=True)
class HeldOut:
    """The held-out series of both sites, and the champion's scores on them."""

    new_site: list[PhantomCase]
    old_site: list[PhantomCase]
    champion_new: Score
    champion_old: Score


@dataclass(frozen=True)
class Adaptation:
    """One N: what the service did, and how its challenger scores."""

    n: int
    champion_model_id: int
    nightly: str
    segmented: int
    problems: list[str]  # new-site PD series the nightly job did not segment, and why
    labels_imported: int
    labels_not_imported: int
    training: TrainingOutcome
    challenger_new: Score
    challenger_old: Score

    @property
    def promoted(self) -> bool:
        return self.training.decision == "promoted"


def adapt(
    args: argparse.Namespace, draw: Draw, work: Path, n: int, held_out: HeldOut, database_url: str | None
) -> Adaptation:
    """Fresh data folder, champion in production, N new-site studies labelled, retraining, scores."""
    configure(work / "data", database_url, args)
    from sciatic.config import get_settings
    from sciatic.layout import DataLayout
    from sciatic.nightly import run_nightly

    layout = DataLayout.of(get_settings())
    print(f"N={n}: {n} new-site studies (seed {draw.label_seed}) ...", flush=True)
    studies = make_site_studies(work, n, draw.label_seed, args.slices)
    champion_id, _ = install_champion(args.checkpoint)
    deliver(studies, layout.drop)
    summary = run_nightly(run_id=RUN_ID, progress=sys.stderr.isatty())
    imported, not_imported = label_studies(studies, layout.labels)
    print(f"N={n}: nightly job: {summary.ingest}; {imported} labels imported; retraining ...", flush=True)
    training = retrain()
    print(f"N={n}: {training.decision} after {training.training_seconds:.0f} s of training; scoring ...", flush=True)
    challenger = Path(training.challenger_checkpoint)
    return Adaptation(
        n=n,
        champion_model_id=champion_id,
        nightly=summary.ingest,
        segmented=len(summary.segmented),
        problems=nightly_problems(summary),
        labels_imported=imported,
        labels_not_imported=not_imported,
        training=training,
        challenger_new=score(challenger, training.challenger_sha256, held_out.new_site),
        challenger_old=score(challenger, training.challenger_sha256, held_out.old_site),
    )


def nightly_problems(summary: NightlySummary) -> list[str]:
    """PD series refused by the eligibility rules or failed (the localizer and T1 coronal are refused by design)."""
    refused = [f"{what} not segmented: {why}" for _, what, why in summary.not_segmented if what.startswith("PD")]
    return refused + [f"series {series_id} failed: {error}" for series_id, error in summary.failed_series]


def prepare_held_out(args: argparse.Namespace, draw: Draw, work: Path) -> HeldOut:
    """Generate and convert the held-out series of both sites; score the champion on them once."""
    configure(work / "scoring", None, args)  # the service's settings for scoring
    print(
        f"{draw.describe()}; held-out series: {args.test} new-site, {args.old_test} old-site; scoring the champion ...",
        flush=True,
    )
    new_site = phantom_cases(
        work / "held-out-new", args.test, draw.test_seed, PhantomV2Options(slices=args.slices, site=NEW_SITE)
    )
    old_site = phantom_cases(work / "held-out-old", args.old_test, draw.old_seed, PhantomV2Options(slices=args.slices))
    sha256 = champion_sha256(args.checkpoint)
    champion_new = score(args.checkpoint, sha256, new_site)
    champion_old = score(args.checkpoint, sha256, old_site)
    return HeldOut(new_site, old_site, champion_new, champion_old)


@dataclass(frozen=True)
class DrawResult:
    """One draw: its held-out series and champion scores, and each N's run."""

    draw: Draw
    held_out: HeldOut
    results: list[Adaptation]


def run_draw(args: argparse.Namespace, draw: Draw, work: Path) -> DrawResult:
    held_out = prepare_held_out(args, draw, work)
    results = []
    for n in args.n:
        folder = work / f"n{n}"
        with (
            fresh_postgres(args.database_url, "sciatic_bench_adaptation")
            if args.database_url
            else nullcontext(None) as url
        ):
            results.append(adapt(args, draw, folder, n, held_out, url))
    return DrawResult(draw, held_out, results)


def run(args: argparse.Namespace, work: Path) -> list[DrawResult]:
    draws = [Draw.nth(args, k) for k in range(args.draws)]
    return [run_draw(args, draw, work / f"draw{draw.index + 1}" if args.draws > 1 else work) for draw in draws]


# --------------------------------------------------------------------------- targets and tables


def production_after(result: Adaptation, held_out: HeldOut) -> tuple[Score, Score]:
    """(new-site, old-site) scores of the model in production after the run."""
    if result.promoted:
        return result.challenger_new, result.challenger_old
    return held_out.champion_new, held_out.champion_old


def targets(draws: Sequence[DrawResult]) -> dict[str, tuple[str, bool]]:
    """Each target at the largest N, over the draws: the value reached, in words, and whether it is met.

    The challenger must be promoted in every draw; Dice and forgetting are the means over the draws and
    failures are pooled over their held-out series (with one draw: that draw's figures).
    """
    largest = [d.results[-1] for d in draws]
    after = [production_after(r, d.held_out) for r, d in zip(largest, draws, strict=True)]
    dice = [new.mean_dice for new, _ in after]
    changes = [old.mean_dice - d.held_out.champion_old.mean_dice for (_, old), d in zip(after, draws, strict=True)]
    failed = sum(new.failure_rate * new.series for new, _ in after)
    failures = failed / sum(new.series for new, _ in after)
    promoted = sum(r.promoted for r in largest)

    def over_draws(values: list[float], text: str) -> str:
        return text if len(values) == 1 else f"{text} (mean; draws: {', '.join(f'{v:.3f}' for v in values)})"

    mean_dice, mean_change = statistics.fmean(dice), statistics.fmean(changes)
    decisions = largest[0].training.decision if len(largest) == 1 else f"{promoted} of {len(largest)} draws"
    return {
        "challenger promoted": (decisions, promoted == len(largest)),
        f"new-site mean Dice >= {TARGET_DICE}": (over_draws(dice, f"{mean_dice:.3f}"), mean_dice >= TARGET_DICE),
        f"new-site failures <= {TARGET_FAILURES:.0%}": (f"{failures:.0%}", failures <= TARGET_FAILURES),
        f"old-site Dice within {TARGET_FORGETTING} of the champion's": (
            over_draws(changes, f"{mean_change:+.3f}"),
            -mean_change <= TARGET_FORGETTING,
        ),
    }


def interval(training: TrainingOutcome) -> str:
    if training.dice_difference is None:
        return "-"
    low, high = training.dice_difference_low, training.dice_difference_high
    bounds = "-" if low is None or high is None else f"{low:+.3f}, {high:+.3f}"
    return f"{training.dice_difference:+.3f} [{bounds}]"


def new_site_rows(held_out: HeldOut, results: list[Adaptation]) -> list[list[str]]:
    champion = held_out.champion_new
    rows = []
    for r in results:
        t = r.training
        budget = ", budget reached" if t.stopped_by_budget else ""
        replayed = t.split["replay"] + t.split["phantom_replay"]
        rows.append(
            [
                str(r.n),
                f"{t.split['train']}/{t.split['val']}/{t.split['test']}/{replayed}",
                f"{t.training_seconds:.0f} ({t.epochs} epochs, {t.steps} steps{budget})",
                f"{champion.mean_dice:.3f}",
                f"{champion.failure_rate:.0%}",
                f"{r.challenger_new.mean_dice:.3f}",
                f"{r.challenger_new.failure_rate:.0%}",
                f"{t.decision} ({t.split['test']} test series)",
                interval(t),
            ]
        )
    return rows


NEW_SITE_HEADER = [
    "N labels",
    "train/val/test/replay series",
    "training s",
    "champion Dice",
    "champion failures",
    "challenger Dice",
    "challenger failures",
    "decision",
    "Dice difference [95% interval]",
]


def old_site_rows(held_out: HeldOut, results: list[Adaptation]) -> list[list[str]]:
    champion = held_out.champion_old
    rows = []
    for r in results:
        change = r.challenger_old.mean_dice - champion.mean_dice
        rows.append(
            [
                str(r.n),
                f"{champion.mean_dice:.3f}",
                f"{r.challenger_old.mean_dice:.3f}",
                f"{change:+.3f}",
                "yes" if -change <= TARGET_FORGETTING else "**no**",
                f"{champion.median_size:.2f} -> {r.challenger_old.median_size:.2f}",
            ]
        )
    return rows


LOSSES = 5  # old-site series listed, largest drop first
LOSSES_HEADER = [
    "series",
    "field of view",
    "bifurcation",
    "fat-sat",
    "2D/3D",
    "fat grade",
    "pixel mm",
    "champion Dice",
    "challenger Dice",
    "change",
    "mask / truth size: champion -> challenger",
]


def old_site_changes(held_out: HeldOut, result: Adaptation) -> dict[str, float]:
    """Challenger minus champion Dice on each held-out old-site series."""
    return {k: result.challenger_old.dice[k] - d for k, d in held_out.champion_old.dice.items()}


def loss_rows(held_out: HeldOut, result: Adaptation) -> list[list[str]]:
    """The old-site series whose Dice dropped most from champion to challenger, with what kind of study each is."""
    changes = old_site_changes(held_out, result)
    records = {case.record.patient_id: case.record for case in held_out.old_site}
    rows = []
    for key in sorted(changes, key=changes.__getitem__)[:LOSSES]:
        r = records[key]
        assert isinstance(r, SubjectRecordV2)  # the held-out series are phantom v2 studies
        rows.append(
            [
                key,
                r.field_of_view,
                "yes" if r.bifurcation else "no",
                "yes" if r.fat_sat else "no",
                r.acquisition,
                str(r.fatty_infiltration_grade),
                f"{r.pixel_spacing_mm[0]:.2f}",
                f"{held_out.champion_old.dice[key]:.3f}",
                f"{result.challenger_old.dice[key]:.3f}",
                f"{changes[key]:+.3f}",
                f"{held_out.champion_old.size_ratio[key]:.2f} -> {result.challenger_old.size_ratio[key]:.2f}",
            ]
        )
    return rows


OLD_SITE_HEADER = [
    "N labels",
    "champion Dice",
    "challenger Dice",
    "change",
    f"within {TARGET_FORGETTING}",
    "mask / truth size, median: champion -> challenger",
]


def start_of(training: TrainingOutcome) -> str:
    """Where the challenger's weights came from, and whether anything was replayed."""
    if training.initial_model_id is None:
        return "from scratch"
    split = training.split
    replayed = f"{split['replay']} labelled series and {split['phantom_replay']} regenerated phantom studies replayed"
    guard = f"{split['reference']} earlier test series and {split['phantom_reference']} phantom studies as the old site"
    return f"fine-tuned from model {training.initial_model_id}; {replayed}; {guard}"


def report(args: argparse.Namespace, info: dict[str, Any], draws: list[DrawResult]) -> bool:
    """Print the tables of each draw, then the targets; True when every target at the largest N is met."""
    print()
    for line in describe_machine(info):
        print(line)
    print(
        f"champion {args.checkpoint.name}; training budget {args.budget_minutes:g} min "
        f"(SCIATIC_TRAIN_MAX_MINUTES), epochs {args.epochs or 'the service default'}, fine-tuning learning-rate "
        f"factor {args.lr_factor or 'the service default'}, replay share {args.replay_share or 'the service default'}, "
        f"replay pool {args.replay_pool or 'the service default'}; "
        f"device {draws[0].results[0].training.device}"
    )
    for d in draws:
        report_draw(args, d)
    if len(draws) > 1:
        print(f"\nEvery draw at N={args.n[-1]}:\n")
        print_table(DRAWS_HEADER, draw_rows(draws))
    met = targets(draws)
    print(f"\nTargets at N={args.n[-1]} (the production model after the run):\n")
    print_table(["target", "value", "met"], [[k, v, "yes" if ok else "**no**"] for k, (v, ok) in met.items()])
    return all(ok for _, ok in met.values())


def report_draw(args: argparse.Namespace, draw: DrawResult) -> None:
    held_out, results = draw.held_out, draw.results
    if args.draws > 1:
        print(f"\n### {draw.draw.describe()}\n")
    for r in results:
        print(
            f"N={r.n}: {start_of(r.training)}; nightly job: {r.segmented} segmented; "
            f"labels {r.labels_imported} imported, {r.labels_not_imported} not; retrain due by the service's "
            f"rule: {'yes' if r.training.retrain_due else 'no'}; {r.training.decision_detail}"
        )
        for line in r.problems:
            print(f"PROBLEM: N={r.n}: {line}")
    seeds = draw.draw
    print(f"\nNew site ({NEW_SITE}), {held_out.champion_new.series} held-out series (seed {seeds.test_seed}):\n")
    print_table(NEW_SITE_HEADER, new_site_rows(held_out, results))
    print(f"\nOld site (v2 default), {held_out.champion_old.series} held-out series (seed {seeds.old_seed}):\n")
    print_table(OLD_SITE_HEADER, old_site_rows(held_out, results))
    last = results[-1]
    changes = list(old_site_changes(held_out, last).values())
    print(
        f"\nOld-site series the N={last.n} challenger lost most on (median change over the "
        f"{len(changes)} series {statistics.median(changes):+.3f}):\n"
    )
    print_table(LOSSES_HEADER, loss_rows(held_out, last))


DRAWS_HEADER = [
    "draw (seeds: labelled, new site, old site)",
    "training s",
    "new site: champion -> challenger",
    "challenger failures",
    "old site: champion, change",
    "reference studies",
    "test split: Dice difference [95% interval]",
    "decision",
]


def draw_rows(draws: Sequence[DrawResult]) -> list[list[str]]:
    rows = []
    for d in draws:
        r, seeds = d.results[-1], d.draw
        champion_new, champion_old = d.held_out.champion_new, d.held_out.champion_old
        rows.append(
            [
                f"{seeds.index + 1} ({seeds.label_seed}, {seeds.test_seed}, {seeds.old_seed})",
                f"{r.training.training_seconds:.0f}",
                f"{champion_new.mean_dice:.3f} -> {r.challenger_new.mean_dice:.3f}",
                f"{r.challenger_new.failure_rate:.0%}",
                f"{champion_old.mean_dice:.3f}, {r.challenger_old.mean_dice - champion_old.mean_dice:+.3f}",
                "-" if r.training.reference_change is None else f"{r.training.reference_change:+.3f}",
                interval(r.training),
                r.training.decision,
            ]
        )
    return rows


def record(args: argparse.Namespace, info: dict[str, Any], draws: list[DrawResult], met: bool) -> dict[str, Any]:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "database_url"}
    settings["database"] = "postgresql" if args.database_url else "sqlite"
    return {
        "settings": settings,
        "machine": info,
        "draws": [
            {
                "seeds": asdict(d.draw),
                "champion": {"new_site": asdict(d.held_out.champion_new), "old_site": asdict(d.held_out.champion_old)},
                "results": [asdict(r) for r in d.results],
            }
            for d in draws
        ],
        "targets": {k: {"value": v, "met": ok} for k, (v, ok) in targets(draws).items()},
        "targets_met": met,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=parse_counts, default=(4, 8, 16), help="labelled new-site studies (4,8,16)")
    parser.add_argument("--budget-minutes", type=float, default=20.0, help="training budget per run (20)")
    parser.add_argument("--epochs", type=int, help="SCIATIC_TRAIN_EPOCHS (default: the service's)")
    parser.add_argument("--lr-factor", type=float, help="SCIATIC_TRAIN_FINE_TUNE_LR_FACTOR (default: the service's)")
    parser.add_argument("--replay-share", type=float, help="SCIATIC_TRAIN_REPLAY_SHARE (default: the service's)")
    parser.add_argument("--replay-pool", type=int, help="SCIATIC_TRAIN_REPLAY_POOL (default: the service's)")
    parser.add_argument("--test", type=int, default=20, help="held-out new-site series (20)")
    parser.add_argument("--old-test", type=int, default=20, help="held-out old-site series (20)")
    parser.add_argument("--label-seed", type=int, default=401, help="seed of the labelled new-site studies")
    parser.add_argument("--test-seed", type=int, default=402, help="seed of the held-out new-site series")
    parser.add_argument("--old-seed", type=int, default=301, help="seed of the held-out old-site series")
    parser.add_argument(
        "--draws", type=positive, default=1, help=f"draws of studies; draw k adds {DRAW_STEP} k to every seed (1)"
    )
    parser.add_argument("--slices", type=int, help="PD slices of every study (default: drawn per study)")
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED_MODEL, help="the champion (with NAME.sha256)")
    parser.add_argument("--database-url", help="PostgreSQL server URL allowed to CREATE DATABASE (default: SQLite)")
    parser.add_argument("--work", type=Path, help="keep studies and data folders here (a new folder)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    info = machine()
    with work_folder(args.work, "sciatic-adaptation-") as work:
        draws = run(args, work)
    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    met = report(args, info, draws)
    if args.json:
        args.json.write_text(json.dumps(record(args, info, draws, met), indent=2, default=str))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
