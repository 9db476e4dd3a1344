"""CPU inference in channels_last (NHWC) order against eager NCHW: seconds per volume and mask agreement.

``load_model`` puts a CPU model's weights in ``torch.channels_last`` order and
the batch runner gives it NHWC inputs. This compares that with the plain
NCHW network on held-out phantom v2 volumes (seed ``--seed``, ``--subjects``
of them, generated and converted as the service would), each volume
segmented by both in turn through ``segment_volume``. Targets: faster, and
the masks identical or Dice >= 0.999 against eager for every volume; the exit
status is 1 when either is missed.

    .venv/bin/python benchmarks/channels_last.py [--subjects 12] [--seed 101] [--model PT]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import describe_machine, machine
from sciatic.imaging.volume import read_volume
from sciatic.model.demo_model import phantom_cases
from sciatic.model.infer import ModelBundle, load_model, segment_volume
from sciatic.model.shipped import SHIPPED_MODEL

MIN_DICE = 0.999


def nchw(bundle: ModelBundle) -> ModelBundle:
    """The same weights in the default (NCHW) order, run without NHWC inputs."""
    bundle.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return dataclasses.replace(bundle, channels_last=False)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    args = parser.parse_args(argv)
    info = machine()
    fast = load_model(args.model, None, "cpu")
    eager = nchw(load_model(args.model, None, "cpu"))
    if not fast.channels_last:
        parser.error("load_model did not put the CPU model in channels_last order")
    seconds = {"eager": 0.0, "channels_last": 0.0}
    agreement = []
    with tempfile.TemporaryDirectory(prefix="sciatic-channels-last-") as tmp:
        cases = phantom_cases(Path(tmp), args.subjects, args.seed)
        segment_volume(fast, read_volume(cases[0].volume).data[..., :5], read_volume(cases[0].volume).affine)
        segment_volume(eager, read_volume(cases[0].volume).data[..., :5], read_volume(cases[0].volume).affine)
        for i, case in enumerate(cases):
            volume = read_volume(case.volume)
            masks = {}
            for name, bundle in (("eager", eager), ("channels_last", fast))[:: 1 if i % 2 == 0 else -1]:
                start = time.perf_counter()
                masks[name] = segment_volume(bundle, volume.data, volume.affine).mask
                seconds[name] += time.perf_counter() - start
            agreement.append(dice(masks["eager"], masks["channels_last"]))
    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    for line in describe_machine(info):
        print(line)
    n = len(agreement)
    ratio = seconds["eager"] / seconds["channels_last"]
    identical = sum(d == 1.0 for d in agreement)
    print(
        f"{n} volumes (seed {args.seed}): eager {seconds['eager'] / n:.3f} s, channels_last "
        f"{seconds['channels_last'] / n:.3f} s a volume; eager / channels_last {ratio:.2f}"
    )
    print(f"masks identical {identical}/{n}; lowest Dice against eager {min(agreement):.5f} (target >= {MIN_DICE})")
    return 0 if ratio > 1 and min(agreement) >= MIN_DICE else 1


if __name__ == "__main__":
    sys.exit(main())
