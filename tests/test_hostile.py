"""Hostile and careless input in the drop folder: the pass finishes, names every bad input, loses nothing.

One drop folder holds valid studies beside everything an attacker or a broken
sender could put there (docs/security.md). ``sciatic ingest`` runs as a real
process under a memory limit and a timeout, on SQLite and on PostgreSQL
(without the capabilities that let root ignore file permissions, when the
tests run as root, so that an unreadable file is unreadable). Then: the pass
ended cleanly, the valid series are converted, nothing appeared outside the
data folder, every input is archived, a recorded duplicate or quarantined with
its reason, and a second pass is clean.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import RLELossless, generate_uid

from sciatic.db import migrate
from sciatic.db.enums import SeriesStatus
from sciatic.db.models import DicomInstance, DuplicateFile, Quarantine, Series
from tests._dicom_synthetic import mr_dataset, save, slice_pixels, write_stack

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.db)]
MEMORY_LIMIT = 3 * 1024**3  # address space of the ingest process: far below what the bombs would need
TIMEOUT = 240
# as root, drop the capabilities that bypass file permissions (util-linux's setpriv)
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


@dataclass
class Drop:
    """What was put into the drop folder, and what must come of it."""

    valid_series: dict[str, str] = field(default_factory=dict)  # SeriesInstanceUID -> what it shows
    refused_series: dict[str, str] = field(default_factory=dict)  # SeriesInstanceUID -> reason
    quarantined: Counter[str] = field(default_factory=Counter)  # reason -> files
    duplicates: int = 0
    inputs: int = 0  # entries that must leave the drop folder
    growing: Path | None = None


def _valid(drop: Path, name: str, expect: Drop, count: int = 3, **extra: object) -> list[Path]:
    paths = write_stack(drop / name, count=count, rows=16, columns=16, **extra)
    uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
    expect.valid_series[uid] = name
    expect.inputs += count
    return paths


def _one(drop: Path, name: str, pixels: np.ndarray | None = None, **tags: object) -> pydicom.Dataset:
    ds = mr_dataset(pixels if pixels is not None else slice_pixels(16, 16, 0), series_uid=generate_uid(), **tags)
    save(ds, drop / name)
    return ds


def fill(drop: Path, outside: Path) -> Drop:
    expect = Drop()
    # valid studies the bad input must not hold up
    plain = _valid(drop, "valid-plain", expect)
    _valid(drop, "valid-nul-text", expect, SeriesDescription="PD\x00 ax\x07 thigh")
    _valid(drop, "valid-long-text", expect, SeriesDescription="PD " * 20_000, PatientComments="x" * 100_000)
    dashed = _valid(drop, "valid-dashes", expect)
    dashed[0].rename(dashed[0].with_name("-rf --help.dcm"))
    odd = _valid(drop, "valid-odd-name", expect)
    os.rename(odd[0], os.fsencode(odd[0].parent) + b"/\xff\xfe bad name.dcm")  # not UTF-8

    # path traversal through UIDs, and UIDs that are not DICOM UIDs
    for name, uids in {
        "dotdot.dcm": {"study_uid": "..", "series_uid": ".."},
        "slash.dcm": {"study_uid": "1.2/../../x", "series_uid": "1.2.3"},
        "leading-zero.dcm": {"study_uid": "1.02.3", "series_uid": "1.2.3.4"},
        "empty-component.dcm": {"study_uid": "1..2", "series_uid": "1.2.3.5"},
    }.items():
        save(mr_dataset(slice_pixels(16, 16, 0), **uids), drop / name)  # type: ignore[arg-type]
        expect.quarantined["missing_uid"] += 1
    # not regular files: never opened
    os.mkfifo(drop / "fifo.dcm")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(drop / "socket.dcm"))
    expect.quarantined["not_a_file"] += 2
    # a file nobody may read (the ingest runs unprivileged)
    unreadable = _one(drop, "unreadable.dcm")
    (drop / "unreadable.dcm").chmod(0)
    del unreadable
    expect.quarantined["unreadable_file"] += 1
    # zero bytes, garbage, a symbolic link out of the drop folder
    (drop / "empty.dcm").write_bytes(b"")
    (drop / "garbage.dcm").write_bytes(os.urandom(4096))
    (drop / "link.dcm").symlink_to(outside / "secret.txt")
    expect.quarantined["not_dicom"] += 2
    expect.quarantined["unsafe_path"] += 1
    # pixel data longer than Rows x Columns says (64x64 pixels declared as 32x32)
    longer = mr_dataset(slice_pixels(64, 64, 0), series_uid=generate_uid())
    longer.Rows = longer.Columns = 32
    save(longer, drop / "longer-pixels.dcm")
    expect.quarantined["unreadable_pixels"] += 1
    # a billion frames declared on one small file
    frames = mr_dataset(slice_pixels(16, 16, 0), series_uid=generate_uid())
    frames.NumberOfFrames = 1_000_000_000
    save(frames, drop / "billion-frames.dcm")
    expect.quarantined["too_large"] += 1
    # decompression bomb: a few hundred bytes of RLE declaring 16384 x 16384 pixels, three slices
    bomb_uid = generate_uid()
    for k in range(3):
        ds = mr_dataset(np.zeros((64, 64), np.uint16), series_uid=bomb_uid, position=(0.0, 0.0, 3.0 * k))
        ds.compress(RLELossless)
        ds.Rows = ds.Columns = 16384
        save(ds, drop / "bomb" / f"{k}.dcm")
    expect.refused_series[bomb_uid] = "too_large"
    expect.inputs += 3
    # a hard link and a byte copy of a valid file: duplicates
    os.link(plain[1], drop / "hardlink.dcm")
    shutil.copy(plain[2], drop / "copy.dcm")
    expect.duplicates += 2
    # a file still being written (modified "now", in the future of the pass): left for a later pass
    expect.growing = drop / "growing.dcm"
    _one(drop, "growing.dcm")
    future = time.time() + 3600
    os.utime(expect.growing, (future, future))

    expect.inputs += sum(expect.quarantined.values()) + expect.duplicates
    return expect


def _limits() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _ingest(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if UNPRIVILEGED and shutil.which(UNPRIVILEGED[0]) is None:
        pytest.fail("setpriv not found: install Debian's util-linux")
    return subprocess.run(
        [*UNPRIVILEGED, sys.executable, "-m", "sciatic.cli", "ingest"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_limits,
        check=False,
    )


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hostile_drop_folder_is_survived(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    root = tmp_path / "site"
    data, outside = root / "data", root / "outside"
    drop = data / "drop"
    drop.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the archive")
    url = request.getfixturevalue("pg_database") if backend == "postgres" else f"sqlite:///{data}/sciatic.db"
    migrate.upgrade(url)
    expect = fill(drop, outside)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIATIC_")}
    env |= {
        "SCIATIC_DATA_DIR": str(data),
        "SCIATIC_DATABASE_URL": url,
        "SCIATIC_SERIES_QUIET_SECONDS": "0",
        "SCIATIC_FILE_SETTLE_SECONDS": "0",
        "SCIATIC_PSEUDONYM_KEY": "a-test-key-of-enough-length",
        "HOME": str(root),
    }
    before_outside, before_root = _tree(outside), set(os.listdir(root))

    first = _ingest(env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr, first.stderr[-3000:]

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        series = {row.series_instance_uid: row for row in connection.execute(sa.select(Series))}
        instances = connection.execute(sa.select(DicomInstance)).all()
        duplicates = connection.execute(sa.select(DuplicateFile)).all()
        quarantine = connection.execute(sa.select(Quarantine)).all()
    engine.dispose()

    for uid, name in expect.valid_series.items():
        assert series[uid].status is SeriesStatus.CONVERTED, (name, series[uid].refusal_detail)
    for uid, reason in expect.refused_series.items():
        assert series[uid].status is SeriesStatus.REFUSED and series[uid].refusal_reason.value == reason
    descriptions = {series[uid].description for uid in expect.valid_series}
    assert "PD ax thigh" in descriptions and all(d is None or "\x00" not in d for d in descriptions)
    assert Counter(row.reason.value for row in quarantine) == expect.quarantined
    assert all(row.detail and "\x00" not in row.detail for row in quarantine)
    assert len(duplicates) == expect.duplicates

    # nothing lost: every input left the drop folder for a recorded place (the growing file waits)
    assert len(instances) + len(duplicates) + len(quarantine) == expect.inputs
    left = [p for p in drop.rglob("*") if not p.is_dir()]
    assert left == [expect.growing], left
    for row in instances:
        assert Path(row.archive_path).is_relative_to(data / "archive") and Path(row.archive_path).exists()
    for row in quarantine:
        stored = Path(row.quarantine_path)
        assert stored.is_relative_to(data / "quarantine") and (stored.exists() or stored.is_symlink())
    # nothing outside the data folder
    assert _tree(outside) == before_outside and set(os.listdir(root)) == before_root
    assert (outside / "secret.txt").read_text() == "not for the archive"

    second = _ingest(env)
    assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert "indexed 0 files" in second.stdout and "0 quarantined" in second.stdout, second.stdout
