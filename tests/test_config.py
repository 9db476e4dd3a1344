from __future__ import annotations

from pathlib import Path

import pytest

from sciatic.config import Settings, get_settings, mask_url
from sciatic.db.pseudonym import pseudonymise
from sciatic.errors import ConfigurationError


def test_directories_default_beneath_data_dir(isolated_settings: Path) -> None:
    settings = get_settings()
    assert settings.data_dir == isolated_settings.resolve()
    for name in ("drop", "archive", "quarantine", "labels", "model", "volumes", "results"):
        assert getattr(settings, f"{name}_dir").parent == settings.data_dir
    assert settings.effective_database_url == f"sqlite:///{settings.data_dir}/sciatic.db"


def test_environment_overrides_file_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "sciatic.toml"
    config_file.write_text('device = "cpu"\nseries_quiet_seconds = 30\ndrop_dir = "/srv/drop"\n')
    monkeypatch.setenv("SCIATIC_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("SCIATIC_SERIES_QUIET_SECONDS", "45")
    settings = Settings()
    assert settings.device == "cpu"
    assert settings.series_quiet_seconds == 45
    assert settings.drop_dir == Path("/srv/drop")


def test_unknown_file_key_and_bad_value_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIATIC_DEVICE", "gpu")
    with pytest.raises(ConfigurationError, match="SCIATIC_DEVICE"):
        get_settings()
    monkeypatch.delenv("SCIATIC_DEVICE")
    get_settings.cache_clear()
    monkeypatch.setenv("SCIATIC_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        get_settings()


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIATIC_DATABASE_URL", "postgresql+psycopg2://sciatic:s3cret@db/sciatic")
    monkeypatch.setenv("SCIATIC_PSEUDONYM_KEY", "a-very-long-secret-key")
    shown = " ".join(value for _, value, _ in get_settings().describe())
    assert "s3cret" not in shown and "a-very-long-secret-key" not in shown
    assert "sciatic:***@db" in shown
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_pseudonym_key_generated_once_and_kept(isolated_settings: Path) -> None:
    first = get_settings().pseudonym_secret()
    get_settings.cache_clear()
    assert get_settings().pseudonym_secret() == first
    assert (isolated_settings / ".pseudonym_key").stat().st_mode & 0o077 == 0


def test_short_pseudonym_key_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIATIC_PSEUDONYM_KEY", "short")
    with pytest.raises(ConfigurationError, match="16 characters"):
        get_settings().pseudonym_secret()


def test_pseudonym_is_keyed_stable_and_hides_the_id() -> None:
    a = pseudonymise("PAT-0001", b"k" * 32)
    assert a == pseudonymise(" PAT-0001 ", b"k" * 32)
    assert a != pseudonymise("PAT-0001", b"j" * 32)
    assert a != pseudonymise("PAT-0002", b"k" * 32)
    assert a.startswith("sub-") and "0001" not in a and len(a) == 20


def test_configuration_doc_table_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    from sciatic.cli import main

    main(["config", "--markdown"])
    table = capsys.readouterr().out.strip()
    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert table in doc, "docs/configuration.md is stale: paste the output of `sciatic config --markdown`"


def test_qc_threshold_defaults_agree_with_the_qc_module() -> None:
    from sciatic.evaluation.thresholds import QcThresholds

    assert get_settings().qc_thresholds() == QcThresholds()
