"""Checkpoint schema, atomic writes and sha256 verification."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sciatic.errors import ModelIntegrityError
from sciatic.model.checkpoint import (
    KEYS,
    CheckpointConfigError,
    NotACheckpointError,
    checkpoint_config,
    load_checkpoint,
    save_checkpoint,
    state_digest,
)
from sciatic.model.configs import config_from_dict
from sciatic.model.infer import load_model
from sciatic.model.train import make_optimizer
from sciatic.model.unet import build_model
from sciatic.storage import sha256_file
from tests._model_synthetic import TINY_CASCADE

torch.set_num_threads(2)


def _saved(path: Path) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(0)
    model = build_model(TINY_CASCADE)
    optimizer = make_optimizer(TINY_CASCADE, model)
    model(torch.randn(2, 3, 16, 16)).mean().backward()
    optimizer.step()
    sha = save_checkpoint(path, model, TINY_CASCADE, optimizer=optimizer, epoch=3, metrics={"val_dice": 0.5, "n": 2})
    return model, sha


def test_round_trip_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "models" / "m.pt"
    model, sha = _saved(path)
    assert sha == sha256_file(path)
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary file left
    state = torch.load(path, weights_only=True)
    assert set(state) == set(KEYS)
    assert state["epoch"] == 3 and state["metrics"] == {"val_dice": 0.5, "n": 2.0}
    assert all(type(v) is float for v in state["metrics"].values())
    assert config_from_dict(state["config"]) == TINY_CASCADE
    assert state["optimizer"]["state"]  # AdamW moments were saved
    for key, value in model.state_dict().items():
        assert torch.equal(state["model"][key], value)
    bundle = load_model(path, sha, device="cpu")
    assert bundle.config == TINY_CASCADE and bundle.epoch == 3 and bundle.sha256 == sha
    assert not bundle.model.training and bundle.load_seconds > 0
    for key, value in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value)


def test_sha_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    _, sha = _saved(path)
    with pytest.raises(ModelIntegrityError, match="expected"):
        load_model(path, "0" * 64, device="cpu")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        load_checkpoint(path, sha)


def test_foreign_or_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="cannot read"):
        load_checkpoint(tmp_path / "absent.pt", None)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(NotACheckpointError, match="not a sciatic checkpoint"):
        load_checkpoint(other, sha256_file(other))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(NotACheckpointError, match="cannot be loaded") as info:
        load_checkpoint(junk, None)
    assert isinstance(info.value, ModelIntegrityError) and "\n" not in str(info.value)


def test_an_invalid_configuration_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    _saved(path)
    state = load_checkpoint(path, None)
    state["config"]["crop_size"] = 30  # not a multiple of 2**depth
    with pytest.raises(CheckpointConfigError, match="not valid for this version"):
        checkpoint_config(state)


def test_state_digest_follows_the_weights_not_the_file(tmp_path: Path) -> None:
    model, _ = _saved(tmp_path / "a.pt")
    save_checkpoint(tmp_path / "b.pt", model, TINY_CASCADE, epoch=9)  # other bytes, same weights
    a, b = (load_checkpoint(tmp_path / name, None)["model"] for name in ("a.pt", "b.pt"))
    assert state_digest(a) == state_digest(b) == state_digest(model.state_dict())
    changed = {k: v.clone() for k, v in a.items()}
    key = next(k for k, v in changed.items() if v.is_floating_point())
    changed[key].view(-1)[0] += 1
    assert state_digest(changed) != state_digest(a)


def test_overwrite_is_atomic_and_hash_follows_content(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    _, first = _saved(path)
    model = build_model(TINY_CASCADE)
    second = save_checkpoint(path, model, TINY_CASCADE, epoch=4)
    assert second != first and sha256_file(path) == second
    assert load_checkpoint(path, second)["optimizer"] == {}


def test_checkpoint_is_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    _saved(path)
    assert path.stat().st_mode & 0o777 == 0o644
