"""Is the network's uncertainty a useful warning? Rank correlation with Dice, and deliberately wrong inputs.

Runs the shipped model on held-out phantom subjects (seeds it was not trained
on) and on deliberately wrong versions of them: the nerve region blanked (no
nerve to find), heavily corrupted (noise at the image's own scale), and a
real brain series from ../shared/data/dicom-real forced through the model.
Prints each case's Dice and uncertainty (``sciatic.model.infer.uncertainty``),
the Spearman rank correlation of uncertainty with Dice on the good cases
(baseline: 0, no information; a useful warning is clearly negative), and the
uncertainty of every wrong input against the largest of the good ones.

    .venv/bin/python benchmarks/uncertainty.py [--subjects 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    TEST_SEEDS,
    describe_machine,
    held_out_cases,
    load_case,
    load_checked,
    machine,
    spearman,
)
from sciatic.dicom.convert import ConversionStatus, convert_directory
from sciatic.evaluation.qc import dice
from sciatic.imaging.volume import read_volume
from sciatic.model.infer import segment_volume
from sciatic.model.shipped import SHIPPED_MODEL, SHIPPED_MODEL_SHA256_FILE

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom-real"


def _row(case: str, kind: str, uncertainty: float, mask: np.ndarray, label: np.ndarray) -> dict[str, object]:
    return {"case": case, "kind": kind, "uncertainty": uncertainty, "dice": dice(mask, label)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    info = machine()
    bundle, _ = load_checked(SHIPPED_MODEL, SHIPPED_MODEL_SHA256_FILE)
    rng = np.random.default_rng(0)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{args.subjects} held-out phantom subjects (seeds {TEST_SEEDS}) ...", flush=True)
        for case in held_out_cases(Path(tmp), args.subjects, TEST_SEEDS):
            loaded = load_case(case)
            name = loaded.case.record.patient_id
            result = segment_volume(bundle, loaded.volume, loaded.affine)
            rows.append(
                {
                    "case": loaded.case.record.patient_id,
                    "kind": "good",
                    "dice": dice(result.mask, loaded.label),
                    "uncertainty": result.uncertainty,
                }
            )
            blanked = loaded.volume.astype(np.float32).copy()
            nerve = np.asarray(loaded.label) > 0
            blanked[nerve] = np.median(blanked[~nerve & (blanked > np.percentile(blanked, 60))])
            wrong = segment_volume(bundle, blanked, loaded.affine)
            rows.append(
                _row(loaded.case.record.patient_id, "nerve blanked", wrong.uncertainty, wrong.mask, loaded.label)
            )
            noisy = loaded.volume.astype(np.float32) + rng.normal(0, float(loaded.volume.std()), loaded.volume.shape)
            wrong = segment_volume(bundle, noisy.astype(np.float32), loaded.affine)
            rows.append(_row(name, "corrupted", wrong.uncertainty, wrong.mask, loaded.label))
        if REAL.is_dir():
            for name in ("t1_sag_hfs", "xa30_classic_5001", "siemens_gre_fieldmap"):
                report = convert_directory(REAL / name, Path(tmp) / "real" / name)
                for outcome in report.series:
                    if outcome.status is ConversionStatus.CONVERTED and outcome.output is not None:
                        volume = read_volume(outcome.output)
                        forced = segment_volume(bundle, volume.data, volume.affine)
                        rows.append({"case": name, "kind": "real brain, forced", "uncertainty": forced.uncertainty})
    good = [r for r in rows if r["kind"] == "good"]
    rho = spearman([float(r["uncertainty"]) for r in good], [float(r["dice"]) for r in good])  # type: ignore[arg-type]
    top_good = max(float(r["uncertainty"]) for r in good)  # type: ignore[arg-type]
    print()
    for line in describe_machine(info):
        print(line)
    print()
    for kind in ("good", "nerve blanked", "corrupted", "real brain, forced"):
        values = [float(r["uncertainty"]) for r in rows if r["kind"] == kind]  # type: ignore[arg-type]
        if values:
            above = sum(v > top_good for v in values)
            print(
                f"{kind:<20} n={len(values):>3}  uncertainty median {statistics.median(values):.3f} "
                f"[{min(values):.3f}, {max(values):.3f}]  above the largest good case: {above}/{len(values)}"
            )
    print(f"\nSpearman rank correlation of uncertainty with Dice on good cases: {rho:+.2f} (baseline 0)")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows, "spearman": rho}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
