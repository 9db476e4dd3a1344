"""Ingest on SQLite and real PostgreSQL: indexing, quarantine, duplicates, conversion, versions, locks."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from sciatic import pipeline
from sciatic.config import get_settings
from sciatic.db import migrate
from sciatic.db.enums import SeriesStatus
from sciatic.db.locks import named_lock
from sciatic.db.models import DicomInstance, PipelineEvent, Quarantine, Series, Study, Subject
from sciatic.db.session import default_engine
from sciatic.imaging.volume import read_volume
from sciatic.storage import sha256_file
from tests._dicom_synthetic import write_stack
from tests.ingest_helpers import assert_nothing_lost, fill_drop_folder

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.db)]


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    """A migrated database of each kind, with an immediate quiet period."""
    if request.param == "postgres":
        monkeypatch.setenv("SCIATIC_DATABASE_URL", request.getfixturevalue("pg_database"))
    monkeypatch.setenv("SCIATIC_SERIES_QUIET_SECONDS", "0")
    monkeypatch.setenv("SCIATIC_FILE_SETTLE_SECONDS", "0")
    get_settings.cache_clear()
    settings = get_settings()
    settings.dir("drop")
    migrate.upgrade(settings.effective_database_url)
    return default_engine()


def _count(engine: sa.Engine, model: type) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(model)).scalar_one())


def test_mixed_drop_folder_is_fully_accounted_for(database: sa.Engine, tmp_path: Path) -> None:
    drop = get_settings().drop_dir
    contents = fill_drop_folder(drop, tmp_path / "src")
    report = pipeline.ingest()
    assert len(report.converted) == contents.good_series and len(report.refused) == 1
    assert report.duplicates == contents.duplicates
    assert_nothing_lost(database, drop, contents)
    with database.connect() as connection:
        reasons = Counter(r for r in connection.execute(sa.select(Quarantine.reason)).scalars())
        assert reasons == contents.expected_quarantine
        series = connection.execute(sa.select(Series)).mappings().all()
    converted = [s for s in series if s["status"] == SeriesStatus.CONVERTED]
    for row in converted:
        volume = read_volume(row["volume_path"])
        assert sha256_file(row["volume_path"]) == row["volume_sha256"]
        assert volume.shape == (row["n_columns"], row["n_rows"], row["n_slices"])
        np.testing.assert_allclose(volume.affine, np.array(row["affine"]), atol=1e-5)
    (refused,) = [s for s in series if s["status"] == SeriesStatus.REFUSED]
    assert refused["refusal_reason"] == "single_slice" and refused["refusal_detail"]
    archived = {Path(p).parent.name for p in Path(get_settings().archive_dir).rglob("*.dcm")}
    assert {s["series_instance_uid"] for s in series} <= archived


def test_second_pass_adds_nothing(database: sa.Engine, tmp_path: Path) -> None:
    fill_drop_folder(get_settings().drop_dir, tmp_path / "src")
    pipeline.ingest()
    counts = {m: _count(database, m) for m in (DicomInstance, Quarantine, Series, Study, Subject)}
    report = pipeline.ingest()
    assert report.indexed == report.quarantined == report.duplicates == 0 and not report.converted
    assert counts == {m: _count(database, m) for m in counts}


def test_pseudonyms_only(database: sa.Engine, tmp_path: Path) -> None:
    write_stack(get_settings().drop_dir, count=3, PatientID="MRN-4711")
    pipeline.ingest()
    with database.connect() as connection:
        (pseudonym,) = connection.execute(sa.select(Subject.pseudonym)).scalars()
        dumped = " ".join(str(r) for r in connection.execute(sa.select(PipelineEvent.detail)).scalars())
    assert pseudonym.startswith("sub-") and "4711" not in pseudonym and "4711" not in dumped


def test_late_instance_supersedes_the_converted_version(database: sa.Engine, tmp_path: Path) -> None:
    drop = get_settings().drop_dir
    paths = write_stack(tmp_path / "src", count=5, series_uid="1.2.826.0.1.99")
    for path in paths[:4]:
        shutil.copy(path, drop / path.name)
    first = pipeline.ingest()
    assert len(first.converted) == 1
    shutil.copy(paths[4], drop / paths[4].name)
    second = pipeline.ingest()
    assert len(second.converted) == 1 and second.superseded == second.converted
    with database.connect() as connection:
        rows = connection.execute(sa.select(Series).order_by(Series.version)).mappings().all()
    assert [(r["version"], r["status"], r["n_slices"]) for r in rows] == [
        (1, SeriesStatus.SUPERSEDED, 4),
        (2, SeriesStatus.CONVERTED, 5),
    ]
    assert rows[1]["supersedes_id"] == rows[0]["id"]
    assert Path(rows[0]["volume_path"]).exists(), "the old volume is kept"


def test_quiet_period_and_files_being_written(
    database: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIATIC_SERIES_QUIET_SECONDS", "3600")
    monkeypatch.setenv("SCIATIC_FILE_SETTLE_SECONDS", "60")
    get_settings.cache_clear()
    drop = get_settings().drop_dir
    paths = write_stack(drop, count=3)
    old = time.time() - 120
    for path in paths[:2]:
        os.utime(path, (old, old))
    (drop / ".incoming.dcm.tmp").write_bytes(b"half a file")
    report = pipeline.ingest()
    assert report.indexed == 2 and report.still_writing == 2 and report.waiting_series == 1
    assert not report.converted


def test_the_quiet_period_counts_from_arrival_not_from_indexing(
    database: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A series that went quiet between two passes is converted by the pass that first sees it.

    Arrival is the inode change time: a copy that keeps old modification times
    (as ``cp -p`` and ``rsync -a`` do) still counts as arriving now.
    """
    monkeypatch.setenv("SCIATIC_SERIES_QUIET_SECONDS", "2")
    get_settings.cache_clear()
    drop = get_settings().drop_dir
    old = time.time() - 3600
    for path in write_stack(drop / "copied", count=3):
        os.utime(path, (old, old))  # modification times an hour old: arrival is still now
    first = pipeline.ingest()
    assert first.indexed == 3 and first.waiting_series == 1 and not first.converted
    time.sleep(2.5)
    write_stack(drop / "landed", count=3)
    time.sleep(2.5)  # both series now quiet for more than 2 s; the second was never seen by a pass
    second = pipeline.ingest()
    assert second.indexed == 3 and len(second.converted) == 2
    with database.connect() as connection:
        rows = connection.execute(sa.select(DicomInstance.arrived_at, DicomInstance.indexed_at)).all()
    assert all(arrived is not None and arrived <= indexed for arrived, indexed in rows)


def test_a_pass_does_nothing_while_another_holds_the_lock(database: sa.Engine) -> None:
    settings = get_settings()
    write_stack(settings.drop_dir, count=3)
    holder = sa.create_engine(settings.effective_database_url)  # another process's connection
    with named_lock(holder, "ingest") as held:
        assert held and pipeline.ingest().skipped_busy
    holder.dispose()
    assert _count(database, DicomInstance) == 0
    assert len(pipeline.ingest().converted) == 1


def test_absurdly_large_files_are_refused_unread(
    database: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIATIC_MAX_FILE_BYTES", "1000")
    get_settings.cache_clear()
    drop = get_settings().drop_dir
    (drop / "huge.dcm").write_bytes(b"\0" * 5000)
    (drop / "small.txt").write_bytes(b"tiny")
    report = pipeline.ingest()
    assert report.quarantined == 2
    with database.connect() as connection:
        reasons = {
            row.drop_path: row.reason for row in connection.execute(sa.select(Quarantine.drop_path, Quarantine.reason))
        }
    assert reasons == {str(drop / "huge.dcm"): "too_large", str(drop / "small.txt"): "not_dicom"}


def test_a_pass_removes_what_interrupted_volume_writes_left(database: sa.Engine) -> None:
    settings = get_settings()
    leftover = settings.dir("volumes") / "1.2.3" / "1.2.3.4" / ".v1.nii.gz.0a1b2c3d4e5f.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a volume")
    kept = leftover.with_name("v1.nii.gz")
    kept.write_bytes(b"a volume")
    report = pipeline.ingest()
    assert report.removed_leftovers == 1
    assert not leftover.exists() and kept.exists()
