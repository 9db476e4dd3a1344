"""The shipped phantom model's builder: deterministic bytes, release schema, command line."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
import torch

from sciatic.imaging.volume import read_volume
from sciatic.model import demo_model
from sciatic.model.checkpoint import KEYS, load_checkpoint
from sciatic.model.configs import config_to_dict, get_config
from sciatic.model.demo_model import build_demo_model, phantom_cases, read_digest, split_cases
from sciatic.model.infer import load_model, segment_volume
from sciatic.model.train import CHECKPOINT_NAME
from sciatic.phantom import PhantomOptions
from sciatic.storage import sha256_file

TINY = PhantomOptions(matrix=(96, 96), slices=8)


@pytest.fixture(autouse=True, scope="module")
def warmed_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One throwaway build first: the first CPU training in a fresh process can differ in its last bits
    (a first-call effect inside torch, seen in about 1 of 7 fresh processes); later builds agree."""
    _build(tmp_path_factory.mktemp("warm-up") / "model.pt")


def _build(path: Path, seed: int = 3) -> tuple[Path, str]:
    return build_demo_model(path, subjects=3, seed=seed, epochs=1, progress=False, options=TINY)


def test_two_builds_give_the_same_bytes_and_a_release_schema(tmp_path: Path) -> None:
    threads_before = torch.get_num_threads()
    a_path, a_sha = _build(tmp_path / "a" / "model.pt")
    b_path, b_sha = _build(tmp_path / "b" / "model.pt")
    assert a_sha == b_sha == sha256_file(a_path) == sha256_file(b_path)
    assert a_path.read_bytes() == b_path.read_bytes()
    assert torch.get_num_threads() == threads_before  # the fixed training thread count is restored

    state = load_checkpoint(a_path, a_sha)
    assert set(state) == {*KEYS, "sha256"}
    assert state["optimizer"] == {}  # a release: no AdamW moments
    assert state["config"] == config_to_dict(get_config("cascade"))
    assert set(state["metrics"]) == {"val_dice", "val_failure_rate", "train_loss"}
    raw = torch.load(io.BytesIO(a_path.read_bytes()), weights_only=True)
    assert set(raw) == set(KEYS)

    bundle = load_model(a_path, a_sha, device="cpu")
    case = phantom_cases(tmp_path / "check", 1, seed=99, options=TINY)[0]
    volume = read_volume(case.volume)
    assert segment_volume(bundle, volume.data, volume.affine).mask.shape == volume.shape


def test_another_seed_gives_another_model(tmp_path: Path) -> None:
    _, a = _build(tmp_path / "a.pt", seed=3)
    _, b = _build(tmp_path / "b.pt", seed=4)
    assert a != b


def test_phantom_cases_pair_converted_volumes_with_labels(tmp_path: Path) -> None:
    cases = phantom_cases(tmp_path, 4, seed=5, options=TINY)
    assert len(cases) == 4
    for case in cases:
        assert case.volume.name == case.label.name == f"{case.record.series_instance_uid}.nii.gz"
        assert case.volume.parent == tmp_path / "volumes" and case.label.parent == tmp_path / "labels"
    train, val = split_cases(cases, seed=5)
    assert len(val) == 1 and len(train) == 3
    assert {c.record.patient_id for c in train} | {c.record.patient_id for c in val} == {
        c.record.patient_id for c in cases
    }
    assert split_cases(cases, seed=5) == (train, val)
    with pytest.raises(ValueError):
        split_cases(cases[:1], seed=5)


def test_command_line_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = demo_model.build_demo_model

    def tiny_build(out: Path, subjects: int, seed: int, epochs: int, progress: bool = True) -> tuple[Path, str]:
        return original(out, 3, 3, 1, progress=False, options=TINY)

    monkeypatch.setattr(demo_model, "build_demo_model", tiny_build)
    out, record = tmp_path / "m.pt", tmp_path / "m.sha256"
    assert demo_model.main(["--out", str(out), "--write-sha256", str(record), "--quiet"]) == 0
    digest = read_digest(record)
    assert capsys.readouterr().out.strip() == digest == sha256_file(out)

    assert demo_model.main(["--out", str(out), "--check", str(record), "--quiet"]) == 0
    assert "bit-identical" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*rebuilt"))

    record.write_text("0" * 64 + "  m.pt\n")
    assert demo_model.main(["--out", str(out), "--check", str(record), "--quiet"]) == 1
    message = capsys.readouterr().err
    assert "MISMATCH" in message and "same CPU architecture, the same thread count" in message
    assert sha256_file(out) == digest  # the shipped file is left as it was


def test_training_directory_is_not_left_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    _build(tmp_path / "out.pt")
    assert not list((tmp_path / "tmp").rglob(CHECKPOINT_NAME))
