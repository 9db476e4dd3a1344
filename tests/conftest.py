"""Shared fixtures: an isolated data directory per test and real PostgreSQL databases."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sciatic.config import get_settings
from tests.postgres import create_database, drop_database, free_port, postgres_server

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DICOM = REPO_ROOT.parent / "shared" / "data" / "dicom-real"


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data directory and no SCIATIC_* from the caller's shell."""
    import os

    for name in list(os.environ):
        if name.startswith("SCIATIC_") and name != "SCIATIC_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    data_dir = tmp_path / "sciatic-data"
    monkeypatch.setenv("SCIATIC_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a PostgreSQL server where tests may create databases and roles."""
    try:
        with postgres_server() as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def pg_database(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    url = create_database(pg_server)
    try:
        yield url
    finally:
        drop_database(pg_server, url)


@pytest.fixture
def pg_settings(pg_database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point SCIATIC_DATABASE_URL at a fresh, migrated PostgreSQL database."""
    from sciatic.db import migrate

    monkeypatch.setenv("SCIATIC_DATABASE_URL", pg_database)
    get_settings.cache_clear()
    migrate.upgrade(pg_database)
    return pg_database


@contextmanager
def storescp_running(port: int, folder: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """dcmtk's storescp as a stand-in PACS (AE title PACS) on ``port``, storing into ``folder``; ``options`` added."""
    tool = shutil.which("storescp")
    if tool is None:
        pytest.fail("storescp not found: install Debian's dcmtk (`apt-get install dcmtk`)")
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [tool, "-aet", "PACS", "-od", str(folder), *options, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("storescp did not start")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """dcmtk's storescp as a stand-in PACS (AE title PACS), storing into a folder."""
    port, folder = free_port(), tmp_path / "pacs"
    with storescp_running(port, folder):
        yield port, folder
