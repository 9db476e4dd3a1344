"""Phantom studies in a configured data directory, and a registered model, for pipeline tests."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from sciatic.config import get_settings
from sciatic.db import migrate, registry
from sciatic.db.session import default_engine, session_scope
from sciatic.model.checkpoint import save_checkpoint
from sciatic.model.configs import UNetConfig, config_to_dict, get_config
from sciatic.model.unet import build_model
from sciatic.phantom.generate import generate
from sciatic.phantom.manifest import Manifest


def configure(monkeypatch: object, database_url: str | None = None) -> None:
    """Immediate quiet period, and the given database (SQLite under the data dir when None), migrated."""
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    if database_url:
        monkeypatch.setenv("SCIATIC_DATABASE_URL", database_url)
    monkeypatch.setenv("SCIATIC_SERIES_QUIET_SECONDS", "0")
    monkeypatch.setenv("SCIATIC_FILE_SETTLE_SECONDS", "0")
    monkeypatch.setenv("SCIATIC_DEVICE", "cpu")
    get_settings.cache_clear()
    settings = get_settings()
    settings.dir("drop")
    migrate.upgrade(settings.effective_database_url)


def drop_phantoms(source: Path, subjects: int = 2, seed: int = 7, with_labels: bool = True) -> Manifest:
    """Generate phantom studies (cached in ``source``) and copy them into the drop and labels folders."""
    settings = get_settings()
    if not (source / "manifest.json").exists():
        generate(source / "dicom", subjects, seed, labels_dir=source / "labels")
        shutil.copy(source / "dicom" / "manifest.json", source / "manifest.json")
    shutil.copytree(source / "dicom", settings.dir("drop"), dirs_exist_ok=True)
    (settings.drop_dir / "manifest.json").unlink()  # not DICOM: would be quarantined
    if with_labels:
        shutil.copytree(source / "labels", settings.dir("labels"), dirs_exist_ok=True)
    return Manifest.read(source / "manifest.json")


def register_tiny_model(promote: bool = True, seed: int = 0) -> int:
    """An untrained, tiny cascade model registered (and promoted): exercises the plumbing, not quality."""
    torch.manual_seed(seed)
    base = get_config("cascade")
    config = dataclasses.replace(
        base,
        net=dataclasses.replace(base.net, width=4, depth=2),
        localizer=UNetConfig(in_channels=base.net.in_channels, width=4, depth=2, norm="batch", bilinear=True),
        crop_size=32,
    )
    path = get_settings().dir("model") / f"tiny-{seed}.pt"
    sha = save_checkpoint(path, build_model(config), config)
    with session_scope(default_engine()) as session:
        version = registry.register(session, path, sha, config.name, config_to_dict(config), name=f"tiny-{seed}")
        if promote:
            registry.promote(session, version.id)
        return version.id


def segmentation_from_mask(series_id: int, model_id: int, mask_path: str) -> int:
    """A segmentation row whose mask is a given file (e.g. a label): results with a known truth."""
    from sciatic.db.models import Segmentation
    from sciatic.storage import sha256_file

    with session_scope(default_engine()) as session:
        row = Segmentation(
            series_id=series_id,
            model_version_id=model_id,
            mask_path=mask_path,
            mask_sha256=sha256_file(mask_path),
            device="cpu",
            batch_size=1,
            load_seconds=0.0,
            inference_seconds=0.0,
            total_seconds=0.0,
        )
        session.add(row)
        session.flush()
        return row.id
