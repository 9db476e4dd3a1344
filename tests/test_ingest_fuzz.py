"""Seeded mutation fuzzing of the whole ingest pass (not only the header reader).

Each round writes a valid series plus dozens of mutants of another series'
files (bytes flipped in the header, cut short, chunks repeated or zeroed,
length fields overwritten) into the drop folder and runs a real pass. The pass
must finish, convert the valid series, account for every file (archived,
duplicate or quarantined with a reason), leave nothing in the drop folder or
outside the data folder, and a second pass must have nothing to do. The seeds
are fixed so a failure reproduces; raise ROUNDS locally for a longer search.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import sqlalchemy as sa

from sciatic import pipeline
from sciatic.config import get_settings
from sciatic.db import migrate
from sciatic.db.enums import SeriesStatus
from sciatic.db.models import DicomInstance, DuplicateFile, Quarantine, Series
from sciatic.db.session import default_engine
from tests._dicom_synthetic import write_stack

ROUNDS = 12
MUTANTS = 50


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    kind = rng.randrange(6)
    header_end = min(len(buf), 132 + 1200)  # most mutations hit the preamble, meta and header elements
    if kind == 0:  # flip a few bytes in the header
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(128, header_end)] ^= 1 << rng.randrange(8)
    elif kind == 1:  # cut short
        del buf[rng.randrange(1, len(buf)) :]
    elif kind == 2:  # repeat a chunk
        start = rng.randrange(128, header_end)
        buf[start:start] = buf[start : start + rng.randint(1, 64)] * rng.randint(1, 4)
    elif kind == 3:  # zero a range
        start = rng.randrange(128, header_end)
        buf[start : start + rng.randint(1, 32)] = bytes(rng.randint(1, 32))
    elif kind == 4:  # overwrite what may be a 32-bit length with something large
        start = rng.randrange(128, header_end - 4)
        buf[start : start + 4] = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x10000, 0]).to_bytes(4, "little")
    else:  # random bytes after the magic
        start = rng.randrange(132, header_end)
        buf[start : start + 16] = rng.randbytes(16)
    return bytes(buf)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    monkeypatch.setenv("SCIATIC_SERIES_QUIET_SECONDS", "0")
    monkeypatch.setenv("SCIATIC_FILE_SETTLE_SECONDS", "0")
    get_settings.cache_clear()
    get_settings().dir("drop")
    migrate.upgrade(get_settings().effective_database_url)
    return default_engine()


@pytest.mark.parametrize("seed", range(ROUNDS))
def test_mutated_files_never_break_a_pass(engine: sa.Engine, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    settings = get_settings()
    drop = settings.dir("drop")
    valid = write_stack(drop / "valid", count=3, rows=12, columns=10)
    base = write_stack(tmp_path / "base", count=3, rows=12, columns=10)
    originals = [p.read_bytes() for p in base]
    for index in range(MUTANTS):
        (drop / "mutants" / f"m{index:03d}.dcm").parent.mkdir(parents=True, exist_ok=True)
        (drop / "mutants" / f"m{index:03d}.dcm").write_bytes(_mutate(rng.choice(originals), rng))
    before = set(tmp_path.iterdir())

    report = pipeline.ingest()
    assert not report.skipped_busy

    with engine.connect() as connection:
        instances = connection.execute(sa.select(DicomInstance)).all()
        duplicates = connection.execute(sa.select(DuplicateFile)).all()
        quarantine = connection.execute(sa.select(Quarantine)).all()
        series = connection.execute(sa.select(Series)).all()
    assert len(instances) + len(duplicates) + len(quarantine) == len(valid) + MUTANTS
    assert [p for p in drop.rglob("*") if not p.is_dir()] == []
    assert all(row.reason and row.detail for row in quarantine)
    valid_uid = {row.series_instance_uid for row in instances if Path(row.drop_path).parent.name == "valid"}
    (valid_series,) = [s for s in series if s.series_instance_uid in valid_uid]
    assert valid_series.status is SeriesStatus.CONVERTED
    assert all(s.status in (SeriesStatus.CONVERTED, SeriesStatus.REFUSED) for s in series)
    assert set(tmp_path.iterdir()) == before  # nothing written beside the data folder

    again = pipeline.ingest()
    assert (again.indexed, again.quarantined, again.duplicates, again.converted) == (0, 0, 0, [])
