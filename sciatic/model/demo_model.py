"""The shipped phantom model (``sciatic/model/phantom-cascade.pt``), rebuilt bit for bit from a seed.

``build_demo_model`` generates realistic synthetic thigh studies with
``sciatic.phantom.generate_v2`` (one or both thighs, the bifurcation, fatty
infiltration, fat-sat, 2D and 3D: docs/phantom.md), converts them with the service's own converter
(``sciatic.dicom.convert.convert_directory``), so that the training volumes
are exactly what the service sees, pairs every volume with its label, splits
the subjects into training and validation sets, trains the ``cascade``
configuration on the CPU and writes a release checkpoint (no optimiser
state). Everything follows from the seed: on the same CPU architecture, with
the same thread count and library versions, the same arguments give the
same bytes.

Command line (what ``make model`` runs)::

    python -m sciatic.model.demo_model \
        --out sciatic/model/phantom-cascade.pt --check sciatic/model/phantom-cascade.sha256

With ``--check`` the model is rebuilt and its sha256 compared with the one
recorded in the file: exit status 0 when they match, 1 (and a message) when
they do not, in which case the file at ``--out`` is left as it was. The model
card is ``docs/model-card.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sciatic.dicom.convert import ConversionStatus, convert_directory
from sciatic.model.checkpoint import release_checkpoint
from sciatic.model.configs import ModelConfig, get_config
from sciatic.model.data import Item
from sciatic.model.train import TrainResult, train
from sciatic.phantom import PhantomOptions, PhantomV2Options, SubjectRecord, generate, generate_v2
from sciatic.phantom.v2 import SubjectRecordV2

DEFAULT_OUT = Path("sciatic/model/phantom-cascade.pt")
#: Many subjects and few epochs: with the cascade's 12 slices per subject an epoch is about 100 steps.
#: Twice the subjects of 40 epochs on 72 at about the same number of steps generalised better
#: (docs/benchmarks.md, "What the CSA error is made of").
DEFAULT_SUBJECTS = 144
DEFAULT_SEED = 11  # phantom subjects, the train/validation split and training all follow from it
DEFAULT_EPOCHS = 20
VALIDATION_FRACTION = 0.1
#: Intra-op threads while training. CPU results depend on the thread count
#: (reductions are split differently), so it is fixed rather than taken from
#: the machine; 2 threads also run on a single core, only slower.
THREADS = 2
#: Phantom v2 with its default mix (half bilateral, half with the
#: bifurcation, a quarter fat-sat, a quarter 3D, half patients with fatty
#: infiltration); only the PD axial series, the one with a label, is written.
PHANTOM_OPTIONS = PhantomV2Options(other_series=False)
AnyPhantomOptions = PhantomOptions | PhantomV2Options
MAX_RELEASE_BYTES = 4 * 1024 * 1024
REPRODUCIBILITY_NOTE = (
    "Bit-identical rebuilds need the same CPU architecture, the same thread count "
    f"({THREADS}, fixed by the build) and the same library versions (torch, numpy, scipy, "
    "pydicom, nibabel); on another machine or software stack the rebuilt model may differ "
    "in its last bits."
)


@dataclass(frozen=True)
class PhantomCase:
    """One generated subject after conversion: its volume, its label, and the generator's record."""

    volume: Path  # <SeriesInstanceUID>.nii.gz written by convert_directory
    label: Path  # <SeriesInstanceUID>.nii.gz written by the phantom generator
    record: SubjectRecord | SubjectRecordV2

    @property
    def item(self) -> tuple[Path, Path]:
        """The ``(volume, mask)`` training item."""
        return (self.volume, self.label)


def phantom_cases(
    work_dir: str | Path, subjects: int, seed: int, options: AnyPhantomOptions = PHANTOM_OPTIONS
) -> list[PhantomCase]:
    """Generate ``subjects`` phantom studies under ``work_dir`` and convert them as the service would.

    ``options`` picks the generator: ``PhantomV2Options`` (the default) or
    v1's ``PhantomOptions``.

    Writes ``work_dir/dicom`` (the studies), ``work_dir/labels`` (the truth)
    and ``work_dir/volumes`` (the converter's output). Returns one case per
    subject, in the generator's order. Raises ``RuntimeError`` when a series
    does not convert: the phantom and the converter disagree, a bug.
    """
    work = Path(work_dir)
    dicom, labels, volumes = work / "dicom", work / "labels", work / "volumes"
    records: list[SubjectRecord] | list[SubjectRecordV2]
    if isinstance(options, PhantomV2Options):
        records = generate_v2(dicom, subjects, seed, labels_dir=labels, options=options).subjects
    else:
        records = generate(dicom, subjects, seed, labels_dir=labels, options=options).subjects
    report = convert_directory(dicom, volumes)
    converted = {
        s.series_instance_uid: s.output
        for s in report.series
        if s.status is ConversionStatus.CONVERTED and s.output is not None
    }
    cases = []
    for record in records:
        output = converted.get(record.series_instance_uid)
        refusal = next((s for s in report.series if s.series_instance_uid == record.series_instance_uid), None)
        if output is None or record.label_file is None:
            detail = f"{refusal.reason}: {refusal.detail}" if refusal is not None else "no series found"
            raise RuntimeError(f"phantom subject {record.patient_id} did not convert ({detail})")
        cases.append(PhantomCase(volume=output, label=labels / record.label_file, record=record))
    return cases


def split_cases(
    cases: Sequence[PhantomCase], seed: int, validation_fraction: float = VALIDATION_FRACTION
) -> tuple[list[PhantomCase], list[PhantomCase]]:
    """A seeded (training, validation) split; at least one subject in each."""
    if len(cases) < 2:
        raise ValueError("a split needs at least two subjects")
    n_val = min(len(cases) - 1, max(1, round(len(cases) * validation_fraction)))
    order = np.random.default_rng([seed, 0x5011]).permutation(len(cases))
    val = sorted(int(i) for i in order[:n_val])
    train_idx = sorted(int(i) for i in order[n_val:])
    return [cases[i] for i in train_idx], [cases[i] for i in val]


@contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``; the previous count is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_on_phantoms(
    config: ModelConfig,
    train_cases: Sequence[PhantomCase],
    val_cases: Sequence[PhantomCase],
    out_dir: str | Path,
    epochs: int,
    seed: int,
    progress: bool = True,
    max_seconds: float | None = None,
) -> TrainResult:
    """``train`` on the CPU with a fixed thread count, on converted phantom cases."""
    train_items: list[Item] = [c.item for c in train_cases]
    val_items: list[Item] = [c.item for c in val_cases]
    with fixed_threads(THREADS):
        return train(
            config,
            train_items,
            val_items,
            out_dir,
            epochs=epochs,
            seed=seed,
            device="cpu",
            progress=progress,
            max_seconds=max_seconds,
        )


def build_demo_model(
    out_path: str | Path,
    subjects: int = DEFAULT_SUBJECTS,
    seed: int = DEFAULT_SEED,
    epochs: int = DEFAULT_EPOCHS,
    progress: bool = True,
    *,
    options: AnyPhantomOptions = PHANTOM_OPTIONS,
    config: ModelConfig | None = None,
) -> tuple[Path, str]:
    """Build the phantom-trained model and write its release checkpoint to ``out_path``.

    ``subjects`` phantom v2 subjects from ``seed`` (``options``) are converted, split
    90/10 into training and validation (seeded), and the ``cascade``
    configuration (or ``config``) is trained for ``epochs`` on the CPU with
    training seed ``seed``. The best-validation epoch is written without
    optimiser state. Returns ``(path, sha256)``.
    """
    config = config or get_config("cascade")
    out = Path(out_path)

    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sciatic-demo-model-") as tmp:
        work = Path(tmp)
        say(f"generating and converting {subjects} phantom subjects (seed {seed}) ...")
        cases = phantom_cases(work / "phantom", subjects, seed, options)
        train_cases, val_cases = split_cases(cases, seed)
        sizes = f"{len(train_cases)} training, {len(val_cases)} validation subjects"
        say(f"training {config.name}: {sizes}, {epochs} epochs")
        result = train_on_phantoms(config, train_cases, val_cases, work / "train", epochs, seed, progress)
        sha256 = release_checkpoint(result.checkpoint, out, result.sha256)
    size = out.stat().st_size
    say(
        f"wrote {out} ({size / 1e6:.2f} MB, sha256 {sha256}); best epoch {result.best_epoch}, "
        f"validation Dice {result.metrics['val_dice']:.3f}; {time.perf_counter() - start:.0f} s"
    )
    return out, sha256


def read_digest(path: str | Path) -> str:
    """The hex sha256 recorded in a file (its first word, so ``sha256sum`` output works too)."""
    words = Path(path).read_text(encoding="utf-8").split()
    if not words or len(words[0]) != 64:
        raise ValueError(f"{path} does not hold a sha256 hex digest")
    return words[0].lower()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sciatic.model.demo_model",
        description="Build the shipped phantom-trained cascade model (deterministic, CPU).",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="release checkpoint to write (%(default)s)")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="SHA256_FILE",
        help="compare the rebuilt model's sha256 with the one in this file; exit 1 when they differ",
    )
    parser.add_argument("--write-sha256", type=Path, metavar="FILE", help="write the digest to this file")
    parser.add_argument("--subjects", type=int, default=DEFAULT_SUBJECTS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    expected = read_digest(args.check) if args.check else None
    out: Path = args.out
    # Build beside the target, so that a mismatch leaves the shipped file as it was.
    target = out.with_name(f".{out.name}.rebuilt") if expected else out
    _, digest = build_demo_model(target, args.subjects, args.seed, args.epochs, progress=not args.quiet)
    if target.stat().st_size >= MAX_RELEASE_BYTES:
        print(f"warning: {target} is {target.stat().st_size} bytes, over the 4 MiB budget", file=sys.stderr)
    if args.write_sha256:
        args.write_sha256.write_text(digest + "\n", encoding="utf-8")
    if expected is None:
        print(digest)
        return 0
    if digest == expected:
        os.replace(target, out)
        print(f"OK: rebuilt {out} is bit-identical (sha256 {digest})")
        return 0
    print(
        f"MISMATCH: the rebuilt model has sha256 {digest}, but {args.check} records {expected}.\n"
        f"{out} was left unchanged; the rebuilt model is at {target}.\n{REPRODUCIBILITY_NOTE}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
