"""Inference speed per subject: the seed-faithful path against the production path, on the same subjects.

Usage::

    .venv/bin/python benchmarks/inference.py [--subjects 5] [--repeats 2]
                                             [--model sciatic/model/phantom-cascade.pt] [--seed-checkpoint PATH]
                                             [--json OUT.json]

Subjects are held-out phantoms, generated and converted exactly as in
``benchmarks/quality.py`` (the same seeds and count; ``--subjects`` of them,
evenly spread, are timed). Both sides run in this process, on the CPU, with
the same torch thread count:

a. **seed** (the abstract's method): U-Net width 64, depth 4, fp32, montages
   of 5 slices (256x1280), batch 1, eager, output = every voxel with
   probability > 0.5. Speed does not depend on the weights: by default they
   are seeded random ones (then its Dice means nothing); ``--seed-checkpoint``
   takes trained ones (e.g. from ``quality.py --save-seed-checkpoint``).
b. **production**: the shipped cascade ``--model`` (sha256 checked against
   ``MODEL.sha256`` when that file exists), batch 64, with the
   stray-speck clean-up (``drop_stray``).

Timed: ``segment_volume`` on a volume already in memory (normalisation,
networks, unmontage or paste, clean-up). Loading the model is timed once,
apart. Both sides are first warmed up on a 5-slice piece of the first
subject. Then, ``--repeats`` times, each subject runs on both sides, the order
alternating, and the median over all runs of a side is its seconds per
subject. Target: production at least 10x faster, with Dice equal or better.
The exit status is 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
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
    LoadedCase,
    describe_machine,
    held_out_cases,
    load_case,
    load_checked,
    machine,
    parameters,
    parse_seeds,
    print_table,
    run_case,
    untrained_bundle,
)
from sciatic.model.configs import get_config  # noqa: E402
from sciatic.model.demo_model import DEFAULT_OUT, THREADS  # noqa: E402
from sciatic.model.infer import ModelBundle, load_model, segment_volume  # noqa: E402

TARGET_RATIO = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--subjects", type=int, default=5, help="subjects timed (evenly spread over the test set)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each subject on each side")
    parser.add_argument("--test-subjects", type=int, default=TEST_SUBJECTS, help="held-out set size (as quality.py)")
    parser.add_argument("--test-seeds", default=",".join(map(str, TEST_SEEDS)), help="held-out phantom seeds")
    parser.add_argument("--model", type=Path, default=REPO / DEFAULT_OUT, help="production checkpoint")
    parser.add_argument("--seed-checkpoint", type=Path, help="trained seed weights (default: seeded random weights)")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    args = parser.parse_args(argv)
    if not 1 <= args.subjects <= args.test_subjects or args.repeats < 1:
        parser.error("need 1 <= --subjects <= --test-subjects and --repeats >= 1")

    torch.set_num_threads(THREADS)
    info = machine()
    start = time.perf_counter()
    production, checked = load_checked(args.model)
    load_seconds = time.perf_counter() - start
    if args.seed_checkpoint:
        seed_bundle = load_model(args.seed_checkpoint, None, device="cpu")
        seed_weights = f"trained ({args.seed_checkpoint})"
    else:
        seed_bundle = untrained_bundle(get_config("seed"))
        seed_weights = "untrained (seeded random)"
    sides: dict[str, tuple[ModelBundle, bool]] = {"seed": (seed_bundle, False), "production": (production, True)}

    with tempfile.TemporaryDirectory(prefix="sciatic-bench-inference-") as tmp:
        print(f"generating {args.test_subjects} held-out subjects (seeds {args.test_seeds}) ...", flush=True)
        cases = held_out_cases(Path(tmp), args.test_subjects, parse_seeds(args.test_seeds))
        step = len(cases) / args.subjects
        chosen = [cases[int(k * step)] for k in range(args.subjects)]
        loaded = [load_case(c) for c in chosen]

    _warm_up(sides, loaded[0])
    samples: dict[str, list[CaseResult]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(args.repeats):
        for i, case in enumerate(loaded):
            order = names if (r + i) % 2 == 0 else names[::-1]
            for name in order:
                bundle, largest = sides[name]
                samples[name].append(run_case(bundle, case, drop_stray=largest))
            print(
                f"  round {r + 1}, {case.case.record.patient_id}: "
                + ", ".join(f"{n} {samples[n][-1].seconds:.2f} s" for n in names),
                flush=True,
            )
    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]

    median = {n: statistics.median(s.seconds for s in samples[n]) for n in names}
    dice = {n: statistics.fmean(s.dice for s in samples[n][: len(loaded)]) for n in names}
    ratio = median["seed"] / median["production"]
    passed = ratio >= TARGET_RATIO and dice["production"] >= dice["seed"]

    print()
    for line in describe_machine(info):
        print(line)
    print(f"seed: {parameters(get_config('seed')) / 1e6:.1f} M parameters, {seed_weights} weights, fp32, batch 1")
    print(
        f"production: {args.model.name} ({parameters(production.config) / 1e6:.2f} M parameters, "
        f"sha256 {'checked' if checked else 'not checked'}), batch {production.config.infer_batch_size}; "
        f"loading it took {load_seconds:.2f} s"
    )
    print(f"{len(loaded)} subjects x {args.repeats} runs per side, interleaved; medians")
    print()
    header = ("subject", "matrix", "seed s", "production s", "ratio", "seed Dice", "production Dice")
    rows = []
    for i, case in enumerate(loaded):
        per = {
            n: statistics.median(samples[n][i + k * len(loaded)].seconds for k in range(args.repeats)) for n in names
        }
        rows.append(
            (
                case.case.record.patient_id,
                samples["seed"][i].matrix,
                f"{per['seed']:.2f}",
                f"{per['production']:.3f}",
                f"{per['seed'] / per['production']:.1f}",
                f"{samples['seed'][i].dice:.3f}",
                f"{samples['production'][i].dice:.3f}",
            )
        )
    rows.append(
        (
            "median / mean Dice",
            "",
            f"{median['seed']:.2f}",
            f"{median['production']:.3f}",
            f"{ratio:.1f}",
            f"{dice['seed']:.3f}",
            f"{dice['production']:.3f}",
        )
    )
    print_table(header, rows)
    print()
    print(
        f"speed-up {ratio:.1f}x (target >= {TARGET_RATIO:g}x at equal or better Dice): {'PASS' if passed else 'MISS'}"
    )
    if args.json:
        document: dict[str, Any] = {
            "benchmark": "inference",
            "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": info,
            "seed_weights": seed_weights,
            "production_load_seconds": load_seconds,
            "samples": {n: [asdict(s) for s in samples[n]] for n in names},
            "median_seconds": median,
            "mean_dice": dice,
            "ratio": ratio,
            "target_ratio": TARGET_RATIO,
            "passed": passed,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if passed else 1


def _warm_up(sides: dict[str, tuple[ModelBundle, bool]], case: LoadedCase) -> None:
    """One untimed run per side on a 5-slice piece (first-call allocations, lazy initialisation)."""
    piece = case.volume[:, :, :5]
    for bundle, largest in sides.values():
        segment_volume(bundle, piece, case.affine, drop_stray=largest)


if __name__ == "__main__":
    sys.exit(main())
