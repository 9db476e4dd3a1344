"""`sciatic models add` and `sciatic models export`: checked installs, refusals, a round trip to another site."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from sciatic.cli import main
from sciatic.config import get_settings
from sciatic.db.models import ModelVersion
from sciatic.db.session import default_engine, session_scope
from sciatic.model.checkpoint import save_checkpoint
from sciatic.model.shipped import SHIPPED_MODEL, SHIPPED_MODEL_SHA256_FILE
from sciatic.model.unet import build_model
from sciatic.storage import sha256_file
from tests._model_synthetic import TINY_CASCADE
from tests.pipeline_helpers import configure


def _checkpoint(path: Path, seed: int = 0) -> str:
    torch.manual_seed(seed)
    return save_checkpoint(path, build_model(TINY_CASCADE), TINY_CASCADE, epoch=2, metrics={"val_dice": 0.5})


def _versions() -> list[ModelVersion]:
    with session_scope(default_engine()) as session:
        return list(session.scalars(sa.select(ModelVersion).order_by(ModelVersion.id)))


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("sciatic: error:") and "Recovery:" in lines[1], err
    assert all(word in lines[0] for word in words), err


class _Payload:
    """Unpickling this would run code: weights_only loading must refuse it instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "ran"))  # type: ignore[return-value]


def test_add_refuses_tampered_foreign_and_invalid_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(monkeypatch)
    good = tmp_path / "good.pt"
    sha = _checkpoint(good)
    (tmp_path / "good.sha256").write_text(f"{sha}  good.pt\n")
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered = tmp_path / "tampered.pt"
    tampered.write_bytes(bytes(data))
    (tmp_path / "tampered.sha256").write_text(f"{sha}  tampered.pt\n")
    _refused(["models", "add", str(tampered)], capsys, "tampered.pt", sha, "came with it")
    _refused(["models", "add", str(good), "--sha256", "0" * 64], capsys, "came with it")

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    _refused(["models", "add", str(junk)], capsys, "cannot be loaded")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    _refused(["models", "add", str(other)], capsys, "not a sciatic checkpoint")
    marker = tmp_path / "code-ran.txt"
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": _Payload(marker)}, pickled)
    _refused(["models", "add", str(pickled)], capsys, "cannot be loaded")
    assert not marker.exists()  # weights_only: nothing in the file was executed

    state = torch.load(good, weights_only=True)
    state["config"]["crop_size"] = 30  # not a multiple of 2**depth
    torch.save(state, bad_config := tmp_path / "bad-config.pt")
    _refused(["models", "add", str(bad_config)], capsys, "configuration is not valid")
    state = torch.load(good, weights_only=True)
    state["config"]["net"]["width"] = 16  # the weights were trained at width 8
    torch.save(state, misfit := tmp_path / "misfit.pt")
    _refused(["models", "add", str(misfit)], capsys, "weights do not fit")
    _refused(["models", "add", str(good), "--name", "../escape"], capsys, "model name")
    _refused(["models", "add", str(tmp_path / "absent.pt")], capsys, "cannot read")

    assert _versions() == [] and list(get_settings().dir("model").rglob("*.pt")) == []
    assert main(["models", "add", str(good)]) == 0  # the untouched file is accepted, verified by its .sha256
    assert "sha256 verified" in capsys.readouterr().out
    (version,) = _versions()
    assert version.checkpoint_sha256 == sha and version.name == "good"


@pytest.mark.db
def test_export_round_trips_to_another_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pg_database: str
) -> None:
    configure(monkeypatch)  # site A: SQLite
    source = tmp_path / "gpu-box.pt"
    sha = _checkpoint(source)
    assert main(["models", "add", str(source), "--name", "site-a", "--promote"]) == 0
    assert "NOT verified" in capsys.readouterr().out
    (version,) = _versions()
    assert version.status.value == "production" and version.origin and "gpu-box.pt" in version.origin
    installed = Path(version.checkpoint_path)
    assert installed.parent == get_settings().dir("model") and sha256_file(installed) == sha
    assert version.card_path and Path(version.card_path).is_file()

    out = tmp_path / "to-site-b"
    assert main(["models", "export", str(version.id), "-o", str(out)]) == 0
    exported = out / "site-a.pt"
    assert sha256_file(exported) == sha
    assert (out / "site-a.sha256").read_text() == f"{sha}  site-a.pt\n"
    card = (out / "site-a.md").read_text()
    assert "# Model card: site-a" in card and sha in card and "not for clinical use" in card

    monkeypatch.setenv("SCIATIC_DATA_DIR", str(tmp_path / "site-b"))  # site B: its own data and PostgreSQL
    configure(monkeypatch, pg_database)
    assert main(["models", "add", str(exported)]) == 0
    assert "sha256 verified" in capsys.readouterr().out
    (imported,) = _versions()
    assert imported.checkpoint_sha256 == sha and imported.name == "site-a" and imported.status.value == "candidate"
    assert Path(imported.checkpoint_path).is_relative_to(tmp_path / "site-b")
    assert sha256_file(imported.checkpoint_path) == sha
    assert imported.config == version.config and imported.metrics == {"val_dice": 0.5}
    assert imported.card_path is not None
    assert "## The card it came with" in Path(imported.card_path).read_text()
    assert main(["models", "add", str(exported), "--promote"]) == 0  # the same bytes again: no second model
    assert "registered already" in capsys.readouterr().out
    assert [(v.id, v.status.value) for v in _versions()] == [(imported.id, "production")]

    data = bytearray(exported.read_bytes())
    data[-100] ^= 0x01
    exported.write_bytes(bytes(data))
    _refused(["models", "add", str(exported), "--name", "again"], capsys, "came with it")


def test_a_fresh_site_gets_its_production_model_from_the_shipped_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(monkeypatch)
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    command = f"sciatic models add {SHIPPED_MODEL} --promote"
    assert "no production model" in out and command in out
    assert main(shlex.split(command)[1:]) == 0
    assert "sha256 verified" in capsys.readouterr().out
    (version,) = _versions()
    assert version.name == "phantom-cascade" and version.status.value == "production"
    assert version.checkpoint_sha256 == SHIPPED_MODEL_SHA256_FILE.read_text().split()[0]
    assert version.card_path is not None
    card = Path(version.card_path).read_text()
    assert "imported from phantom-cascade.pt" in card and "Research use only" in card
    assert main(["run"]) == 0
    assert "no production model" not in capsys.readouterr().out
