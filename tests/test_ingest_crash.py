"""Crash safety and concurrency of ingest, with real processes killed by SIGKILL.

``SCIATIC_FAULT_AT=k`` makes the ingest process kill itself at its k-th
checkpoint (after each commit, file move or volume write; see
``sciatic/faults.py``). For every k up to a full pass, a fresh mixed drop
folder is ingested by a process killed at k, then by one killed early in its
recovery, then by a clean one: nothing may be lost, duplicated or half-written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from sciatic.db import migrate
from sciatic.db.models import DicomInstance, Series
from sciatic.imaging.volume import read_volume
from sciatic.storage import sha256_file
from tests.ingest_helpers import assert_nothing_lost, fill_drop_folder
from tests.postgres import create_database, drop_database

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.db)]


def _ingest(env: dict[str, str], fault_at: int | None = None) -> subprocess.CompletedProcess[str]:
    run_env = dict(env)
    if fault_at is not None:
        run_env["SCIATIC_FAULT_AT"] = str(fault_at)
    return subprocess.run(
        [sys.executable, "-m", "sciatic.cli", "ingest"], env=run_env, capture_output=True, text=True, timeout=120
    )


def _setup(root: Path, database_url: str | None) -> tuple[dict[str, str], sa.Engine, Path]:
    data = root / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIATIC_")}
    env |= {"SCIATIC_DATA_DIR": str(data), "SCIATIC_SERIES_QUIET_SECONDS": "0", "SCIATIC_FILE_SETTLE_SECONDS": "0"}
    url = database_url or f"sqlite:///{data}/sciatic.db"
    env["SCIATIC_DATABASE_URL"] = url
    data.mkdir(parents=True)
    migrate.upgrade(url)
    return env, sa.create_engine(url), data / "drop"


def _assert_volumes_whole(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        for path, sha in connection.execute(sa.select(Series.volume_path, Series.volume_sha256)):
            if path is not None:
                assert sha256_file(path) == sha
                read_volume(path)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_at_every_checkpoint_loses_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("pg_server") if backend == "postgres" else None
    k = 1
    while True:
        url = create_database(server) if server else None
        try:
            env, engine, drop = _setup(tmp_path / f"k{k}", url)
            contents = fill_drop_folder(drop, tmp_path / f"k{k}" / "src")
            first = _ingest(env, fault_at=k)
            if first.returncode == 0:
                assert k > 5, f"a full pass passed only {k - 1} checkpoints: {first.stderr[-2000:]}"
                break
            assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
            second = _ingest(env, fault_at=2)  # crash again, early in the recovery
            assert second.returncode in (0, -signal.SIGKILL), second.stderr[-2000:]
            final = _ingest(env)
            assert final.returncode == 0, final.stderr[-2000:]
            assert_nothing_lost(engine, drop, contents)
            _assert_volumes_whole(engine)
            with engine.connect() as connection:
                uids = connection.execute(sa.select(DicomInstance.sop_instance_uid)).scalars().all()
                assert len(uids) == len(set(uids))
                versions = connection.execute(sa.select(Series.series_instance_uid, Series.version)).all()
                assert len(versions) == 3, f"killed at checkpoint {k}: series rows {versions}"
            engine.dispose()
        finally:
            if server and url:
                drop_database(server, url)
        k += 1


@pytest.mark.slow
@pytest.mark.db
def test_two_passes_at_once_never_handle_a_file_twice(tmp_path: Path, pg_database: str) -> None:
    env, engine, drop = _setup(tmp_path, pg_database)
    contents = fill_drop_folder(drop, tmp_path / "src")
    command = [sys.executable, "-m", "sciatic.cli", "ingest"]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert_nothing_lost(engine, drop, contents)
    engine.dispose()
