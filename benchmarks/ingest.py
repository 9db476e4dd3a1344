"""Ingest and conversion speed, each as a ratio against a baseline run on the same files in this command.

Usage::

    .venv/bin/python benchmarks/ingest.py [--files 400] [--series-shape 256,256,40] [--repeats 5]
                                          [--database-url postgresql+psycopg2://user@host/postgres]
                                          [--json OUT.json]

Measurements (warm page cache: every file is read once before timing; each
measurement is repeated ``--repeats`` times, the sides interleaved, and the
median is reported):

1. Indexing rate: ``sciatic.steps.ingest.index_drop_folder`` on a fresh, migrated
   SQLite database (and a fresh PostgreSQL database on the server of
   ``--database-url``: a throwaway ``sciatic_bench_*`` database is created
   and dropped, nothing else on the server is touched), against header-only
   ``pydicom.dcmread(path, stop_before_pixels=True)`` over the same files.
   Target: at least 0.7 of the raw rate.
2. Conversion of one series (read headers, sort, decode, write ``.nii.gz``)
   in a warm process (``convert_series`` + ``write_volume``) against the
   ``dcm2niix -z y -b n`` command on the same series. Target: at most 2x.
3. The same as whole processes, interpreter start-up included:
   ``sciatic convert DIR -o OUT`` against ``dcm2niix -z y -o OUT DIR``
   (no target; printed so that nobody is misled by the warm number).

Test files are synthetic thigh studies from ``sciatic.phantom`` (realistic
16-bit MR slices, explicit VR little endian, uncompressed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import nibabel
import pydicom
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._machine import cpu_model  # noqa: E402
from benchmarks._service import fresh_postgres  # noqa: E402
from sciatic.config import Settings  # noqa: E402
from sciatic.db import migrate  # noqa: E402
from sciatic.db.session import make_engine  # noqa: E402
from sciatic.dicom.convert import convert_series  # noqa: E402
from sciatic.dicom.scan import read_header  # noqa: E402
from sciatic.imaging.volume import GZIP_LEVEL, write_volume  # noqa: E402
from sciatic.steps.ingest import IngestReport, index_drop_folder  # noqa: E402

nib: Any = nibabel  # nibabel's partial annotations do not pass --strict
BIN = Path(sys.executable).parent
INDEX_TARGET = 0.7  # sciatic indexing rate / raw header-read rate, at least
CONVERT_TARGET = 2.0  # sciatic conversion time / dcm2niix time, at most
DCM2NIIX_GZIP_LEVEL = 6  # dcm2niix's default (-1..-9); without pigz it compresses with internal zlib


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    measurement: str
    unit: str
    sciatic: float
    baseline: float
    baseline_name: str
    ratio: float | None  # sciatic / baseline
    target: str
    passed: bool | None  # None: no target, informational
    samples_sciatic: list[float]
    samples_baseline: list[float]


# --------------------------------------------------------------------------- test data


def make_files(drop: Path, files: int, rows: int, columns: int, slices: int) -> list[Path]:
    """Write ceil(files / slices) series of rows x columns x slices into ``drop``; return exactly ``files`` paths.

    Only DICOM files go into ``drop`` (one folder per series), so every file
    indexes cleanly and no pass moves anything: the same folder serves every run.
    """
    n_series = max(1, math.ceil(files / slices))
    generated = drop.with_name(drop.name + "-generated")
    try:
        from sciatic.phantom.generate import PhantomOptions, generate
    except ImportError:
        from tests._dicom_synthetic import write_stack

        for k in range(n_series):
            write_stack(generated / f"series{k:03d}", rows=rows, columns=columns, count=slices)
    else:
        options = PhantomOptions(matrix=(rows, columns), slices=slices, hard_fraction=0)
        generate(generated, n_series, seed=2024, options=options)
    paths = sorted(generated.rglob("*.dcm"))[:files]
    kept = []
    for path in paths:
        target = drop / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        kept.append(target)
    shutil.rmtree(generated)
    return kept


def warm(paths: list[Path]) -> int:
    """Read every file once so that all timings run from the page cache; return the bytes read."""
    return sum(len(p.read_bytes()) for p in paths)


# --------------------------------------------------------------------------- indexing


def raw_header_reads(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        pydicom.dcmread(path, stop_before_pixels=True)
    return time.perf_counter() - start


@contextmanager
def fresh_database(kind: str, work: Path, server_url: str | None) -> Iterator[str]:
    if kind == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="db-", dir=work))
        try:
            yield f"sqlite:///{directory / 'sciatic.db'}"
        finally:
            shutil.rmtree(directory)
    else:
        assert server_url is not None
        with fresh_postgres(server_url) as url:
            yield url


def index_once(kind: str, drop: Path, work: Path, server_url: str | None, expected: int) -> float:
    """Seconds for ``index_drop_folder`` over ``drop`` into a fresh, migrated database."""
    with fresh_database(kind, work, server_url) as url:
        migrate.upgrade(url)
        data = Path(tempfile.mkdtemp(prefix="data-", dir=work))
        settings = Settings(data_dir=data, drop_dir=drop, database_url=url, file_settle_seconds=0)
        engine = make_engine(url)
        try:
            report = IngestReport()
            start = time.perf_counter()
            index_drop_folder(settings, engine, time.time(), report)
            elapsed = time.perf_counter() - start
        finally:
            engine.dispose()
            shutil.rmtree(data)
        if (report.indexed, report.quarantined, report.duplicates) != (expected, 0, 0):
            raise RuntimeError(f"indexing went wrong: {report.summary()}")
        return elapsed


# --------------------------------------------------------------------------- conversion


def sciatic_convert_warm(series: list[Path], out: Path) -> float:
    """Read headers, plan (sort), decode and write one series in this (warm) process."""
    target = out / "series.nii.gz"
    start = time.perf_counter()
    headers = [read_header(p) for p in series]
    write_volume(convert_series(headers), target)
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def run_command(argv: list[str], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    shutil.rmtree(out)
    return elapsed


@dataclass(frozen=True)
class Output:
    """The ``.nii.gz`` one command wrote: compressed and uncompressed bytes, voxel type."""

    compressed: int
    uncompressed: int
    dtype: str

    def describe(self) -> str:
        ratio = self.uncompressed / self.compressed
        return f"{self.compressed / 1024:.0f} KiB {self.dtype} ({ratio:.2f}:1 from {self.uncompressed / 1024:.0f} KiB)"


def output_of(argv: list[str], out: Path) -> Output:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (volume,) = out.glob("*.nii.gz")
    with gzip.open(volume, "rb") as stream:
        uncompressed = len(stream.read())
    result = Output(volume.stat().st_size, uncompressed, str(nib.load(volume).get_data_dtype()))
    shutil.rmtree(out)
    return result


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    versions = {name: metadata.version(name) for name in ("sciatic", "pydicom", "numpy", "nibabel", "SQLAlchemy")}
    versions["sqlite"] = sqlite3.sqlite_version
    dcm2niix = subprocess.run([str(BIN / "dcm2niix"), "-v"], capture_output=True, text=True)
    versions["dcm2niix"] = (dcm2niix.stdout.strip().splitlines() or ["?"])[-1]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "pigz": shutil.which("pigz") is not None,
    }


def print_table(rows: list[Row]) -> None:
    header = ("measurement", "sciatic", "baseline", "ratio", "target", "result")
    lines = [header]
    for r in rows:
        lines.append(
            (
                f"{r.measurement} [{r.unit}]",
                f"{r.sciatic:.3f}" if r.sciatic < 100 else f"{r.sciatic:.0f}",
                (f"{r.baseline:.3f}" if r.baseline < 100 else f"{r.baseline:.0f}") + f" ({r.baseline_name})",
                f"{r.ratio:.2f}" if r.ratio is not None else "-",
                r.target,
                "-" if r.passed is None else ("PASS" if r.passed else "MISS"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for k, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def interleave(repeats: int, sides: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each side once per round, in rotating order, ``repeats`` rounds."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for k in range(repeats):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            samples[name].append(sides[name]())
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=400, help="number of files to index (default 400)")
    parser.add_argument("--series-shape", default="256,256,40", help="rows,columns,slices (default 256,256,40)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each measurement; the median counts")
    parser.add_argument("--database-url", help="also index into PostgreSQL: a server URL allowed to CREATE DATABASE")
    parser.add_argument("--json", type=Path, help="write the numbers and the machine to this file")
    parser.add_argument("--workdir", type=Path, help="where the test files go (default: a temporary directory)")
    args = parser.parse_args(argv)
    rows_, columns, slices = (int(v) for v in args.series_shape.split(","))
    dcm2niix = str(BIN / "dcm2niix")
    sciatic = str(BIN / "sciatic")

    info = machine()
    if args.database_url:
        server = sa.create_engine(args.database_url)
        with server.connect() as connection:
            info["versions"]["postgresql"] = str(connection.execute(sa.text("SHOW server_version")).scalar())
        server.dispose()
    work = Path(tempfile.mkdtemp(prefix="sciatic-bench-", dir=args.workdir))
    try:
        drop = work / "drop"
        paths = make_files(drop, args.files, rows_, columns, slices)
        series_dir = paths[0].parent
        series = sorted(series_dir.glob("*.dcm"))
        total_bytes = warm(paths)
        print(
            f"{len(paths)} files ({total_bytes / len(paths) / 1024:.0f} KiB each) in "
            f"{len({p.parent for p in paths})} series of {rows_}x{columns}x{slices}; "
            f"{args.repeats} runs each, median; load average {info['load_average_at_start']}",
            flush=True,
        )

        # indexing
        sides: dict[str, Callable[[], float]] = {
            "raw": lambda: raw_header_reads(paths),
            "sqlite": lambda: index_once("sqlite", drop, work, None, len(paths)),
        }
        if args.database_url:
            sides["postgresql"] = lambda: index_once("postgresql", drop, work, args.database_url, len(paths))
        raw_header_reads(paths)  # warm imports and caches
        index_times = interleave(args.repeats, sides)
        raw_rate = len(paths) / statistics.median(index_times["raw"])
        results: list[Row] = []
        for kind in [k for k in sides if k != "raw"]:
            rate = len(paths) / statistics.median(index_times[kind])
            results.append(
                Row(
                    measurement=f"indexing, {'SQLite' if kind == 'sqlite' else 'PostgreSQL'}",
                    unit="files/s",
                    sciatic=rate,
                    baseline=raw_rate,
                    baseline_name="pydicom header-only",
                    ratio=rate / raw_rate,
                    target=f">= {INDEX_TARGET}",
                    passed=rate / raw_rate >= INDEX_TARGET,
                    samples_sciatic=[len(paths) / t for t in index_times[kind]],
                    samples_baseline=[len(paths) / t for t in index_times["raw"]],
                )
            )

        # conversion of one series, warm process against the dcm2niix command
        out = work / "out"
        out.mkdir()
        dcm_out = work / "dcm2niix-out"
        dcm_argv = [dcm2niix, "-z", "y", "-b", "n", "-o", str(dcm_out), str(series_dir)]
        sciatic_convert_warm(series, out)  # warm-up: imports, caches
        conv = interleave(
            args.repeats,
            {"sciatic": lambda: sciatic_convert_warm(series, out), "dcm2niix": lambda: run_command(dcm_argv, dcm_out)},
        )
        ours, theirs = statistics.median(conv["sciatic"]), statistics.median(conv["dcm2niix"])
        results.append(
            Row(
                measurement=f"convert one {rows_}x{columns}x{slices} series, warm process",
                unit="s",
                sciatic=ours,
                baseline=theirs,
                baseline_name="dcm2niix -z y -b n",
                ratio=ours / theirs,
                target=f"<= {CONVERT_TARGET}",
                passed=ours / theirs <= CONVERT_TARGET,
                samples_sciatic=conv["sciatic"],
                samples_baseline=conv["dcm2niix"],
            )
        )

        # whole processes, start-up included
        cli_out, cli_dcm_out = work / "cli-out", work / "cli-dcm2niix-out"
        cli_argv = [sciatic, "convert", str(series_dir), "-o", str(cli_out)]
        cli_dcm_argv = [dcm2niix, "-z", "y", "-o", str(cli_dcm_out), str(series_dir)]
        whole = interleave(
            args.repeats,
            {
                "sciatic": lambda: run_command(cli_argv, cli_out),
                "dcm2niix": lambda: run_command(cli_dcm_argv, cli_dcm_out),
            },
        )
        ours, theirs = statistics.median(whole["sciatic"]), statistics.median(whole["dcm2niix"])
        results.append(
            Row(
                measurement="convert one series, whole process (sciatic convert)",
                unit="s",
                sciatic=ours,
                baseline=theirs,
                baseline_name="dcm2niix -z y",
                ratio=ours / theirs,
                target="(none)",
                passed=None,
                samples_sciatic=whole["sciatic"],
                samples_baseline=whole["dcm2niix"],
            )
        )
        ours_output = output_of(cli_argv, cli_out)
        theirs_output = output_of(dcm_argv, dcm_out)
        raw_size = sum(p.stat().st_size for p in series)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), Python {info['python']}")
    print(
        f"load average (1, 5, 15 min): {info['load_average_at_start']} at start, {info['load_average_at_end']} at end"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print()
    print_table(results)
    print()
    print(f"one series as .nii.gz: sciatic {ours_output.describe()}, gzip level {GZIP_LEVEL} (ISA-L);")
    print(
        f"  dcm2niix {theirs_output.describe()}, gzip level {DCM2NIIX_GZIP_LEVEL} "
        f"({'pigz' if info['pigz'] else 'internal zlib'}); the DICOM files: {raw_size / 1024:.0f} KiB"
    )
    if args.json:
        document = {
            "benchmark": "ingest",
            "files": len(paths),
            "series_shape": [rows_, columns, slices],
            "repeats": args.repeats,
            "machine": info,
            "results": [asdict(r) for r in results],
            "output": {"sciatic": asdict(ours_output), "dcm2niix": asdict(theirs_output), "dicom_bytes": raw_size},
            "gzip_level": {"sciatic": GZIP_LEVEL, "dcm2niix": DCM2NIIX_GZIP_LEVEL},
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if all(r.passed is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
