"""Mistakes in configuration and setup end in one line that says what to do, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres import free_port


def _sciatic(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCIATIC_")}
    base["SCIATIC_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [sys.executable, "-m", "sciatic.cli", *args],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_one_clear_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sciatic: ")]
    assert 1 <= len(lines) <= 2 and len(result.stderr.splitlines()) == len(lines), result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


def test_a_config_file_that_is_not_toml(tmp_path: Path) -> None:
    bad = tmp_path / "sciatic.toml"
    bad.write_text("data_dir = [\n")
    _assert_one_clear_error(_sciatic(tmp_path, "config", SCIATIC_CONFIG_FILE=str(bad)), "cannot be read", str(bad))


def test_a_misspelt_variable_is_refused_with_the_right_name(tmp_path: Path) -> None:
    result = _sciatic(tmp_path, "run", SCIATIC_DATABASE_ULR="postgresql://x@y/z")
    _assert_one_clear_error(result, "SCIATIC_DATABASE_ULR", "did you mean SCIATIC_DATABASE_URL?")
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_variables_that_are_not_settings_are_accepted(tmp_path: Path) -> None:
    result = _sciatic(tmp_path, "config", SCIATIC_DB_PASSWORD="for-compose", SCIATIC_TEST_ANYTHING="1")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "status"], ["models", "list"], ["run"]])
def test_a_database_url_that_is_no_url(tmp_path: Path, command: list[str]) -> None:
    result = _sciatic(tmp_path, *command, SCIATIC_DATABASE_URL="not a url at all")
    _assert_one_clear_error(result, "SCIATIC_DATABASE_URL", "not a usable database URL")


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "status"], ["models", "list"], ["ingest"]])
def test_a_database_that_cannot_be_reached(tmp_path: Path, command: list[str]) -> None:
    url = f"postgresql+psycopg2://sciatic:secret-password@127.0.0.1:{free_port()}/sciatic"
    result = _sciatic(tmp_path, *command, SCIATIC_DATABASE_URL=url)
    _assert_one_clear_error(result, "cannot reach the database")
    assert "secret-password" not in result.stderr


def test_a_data_folder_that_cannot_be_created(tmp_path: Path) -> None:
    result = _sciatic(tmp_path, "ingest", SCIATIC_DATA_DIR="/dev/null/sciatic")
    _assert_one_clear_error(result, "cannot create /dev/null/sciatic", "SCIATIC_DATA_DIR")


@pytest.mark.parametrize("command", [["models", "list"], ["ingest"], ["report", "-o", "r.html"]])
def test_a_database_that_was_never_upgraded(tmp_path: Path, command: list[str]) -> None:
    _assert_one_clear_error(_sciatic(tmp_path, *command), "sciatic db upgrade")
