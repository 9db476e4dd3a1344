"""CPU runtimes of the U-Net against eager NCHW PyTorch: seconds per volume and mask agreement.

Three ways to run the same weights on the CPU, each volume segmented by all
three in turn (the order rotating) through ``segment_volume``:

- ``eager``: PyTorch, weights and inputs in the default NCHW order (the baseline);
- ``channels_last``: PyTorch with NHWC weights and inputs (``SCIATIC_CPU_RUNTIME=torch``);
- ``onnxruntime``: the networks exported to ONNX and run by ONNX Runtime (the default).

Inputs: held-out phantom v2 volumes (seed ``--seed``, ``--subjects`` of them,
generated and converted as the service would). Targets for each runtime kept
by the service: faster than eager, and masks identical or Dice >= 0.999
against eager for every volume; the exit status is 1 when one is missed.

    .venv/bin/python benchmarks/cpu_runtime.py [--subjects 12] [--seed 101] [--model PT]
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
    """The same weights in the default (NCHW) order, run by PyTorch without NHWC inputs."""
    bundle.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return dataclasses.replace(bundle, channels_last=False, onnx=None)


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
    bundles = {
        "eager": nchw(load_model(args.model, None, "cpu", cpu_runtime="torch")),
        "channels_last": load_model(args.model, None, "cpu", cpu_runtime="torch"),
        "onnxruntime": load_model(args.model, None, "cpu", cpu_runtime="onnxruntime"),
    }
    if not bundles["channels_last"].channels_last or bundles["onnxruntime"].onnx is None:
        parser.error("load_model did not give the runtimes asked for")
    names = list(bundles)
    seconds = dict.fromkeys(names, 0.0)
    agreement: dict[str, list[float]] = {name: [] for name in names[1:]}
    with tempfile.TemporaryDirectory(prefix="sciatic-cpu-runtime-") as tmp:
        cases = phantom_cases(Path(tmp), args.subjects, args.seed)
        first = read_volume(cases[0].volume)
        for bundle in bundles.values():  # warm-up (ONNX Runtime exports the networks for this matrix here)
            segment_volume(bundle, first.data, first.affine)
        for i, case in enumerate(cases):
            volume = read_volume(case.volume)
            masks = {}
            for name in names[i % 3 :] + names[: i % 3]:
                start = time.perf_counter()
                masks[name] = segment_volume(bundles[name], volume.data, volume.affine).mask
                seconds[name] += time.perf_counter() - start
            for name in agreement:
                agreement[name].append(dice(masks["eager"], masks[name]))
    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    for line in describe_machine(info):
        print(line)
    n = len(cases)
    print(f"{n} volumes (seed {args.seed}), seconds a volume (segment_volume: normalisation, networks, clean-up):")
    print(f"  {'runtime':<14} {'s/volume':>9} {'vs eager':>9} {'identical':>10} {'lowest Dice':>12}")
    print(f"  {'eager':<14} {seconds['eager'] / n:>9.3f} {1.0:>8.2f}x {'-':>10} {'-':>12}")
    ok = True
    for name, values in agreement.items():
        ratio = seconds["eager"] / seconds[name]
        identical = sum(d == 1.0 for d in values)
        print(f"  {name:<14} {seconds[name] / n:>9.3f} {ratio:>8.2f}x {f'{identical}/{n}':>10} {min(values):>12.5f}")
        ok &= ratio > 1 and min(values) >= MIN_DICE
    print(f"targets: faster than eager, lowest Dice >= {MIN_DICE}: {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
