from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from sciatic.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_help_lists_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "sciatic.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for name in _subparsers(build_parser()):
        assert name in result.stdout


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for name, sub in _subparsers(parser).items():
            with pytest.raises(SystemExit) as exit_info:
                main([*prefix, name, "--help"])
            assert exit_info.value.code == 0
            assert "usage:" in capsys.readouterr().out
            walk(sub, [*prefix, name])

    walk(build_parser(), [])


def test_config_and_db_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "status"]) == 1
    assert "sciatic db upgrade" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "status"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["config"]) == 0
    assert "SCIATIC_DROP_DIR" in capsys.readouterr().out


def test_configuration_error_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCIATIC_DEVICE", "tpu")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "SCIATIC_DEVICE" in err and "Recovery:" in err and "Traceback" not in err
