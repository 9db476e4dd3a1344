"""Model files in and out of the registry: ``sciatic models add`` and ``sciatic models export``.

``add_model`` installs a checkpoint made elsewhere (on a GPU machine, at
another site, the shipped phantom model): it checks the bytes against the
sha256 given with it (``--sha256``, or a ``<file>.sha256`` beside it), loads
them with ``weights_only=True``, checks the configuration and that the weights
fit it, copies the file into the models folder, registers it and writes its
model card. ``export_model`` writes a registered checkpoint (bytes unchanged),
its ``.sha256`` and its card into a folder, ready for ``add_model`` elsewhere.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from sciatic.config import Settings
from sciatic.db import audit, cards, registry
from sciatic.db.session import session_scope
from sciatic.errors import ModelIntegrityError, SciaticError
from sciatic.layout import DataLayout
from sciatic.storage import atomic_write

if TYPE_CHECKING:
    from sciatic.model.configs import ModelConfig

log = logging.getLogger(__name__)
STEP = "models"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelImportError(SciaticError):
    """A checkpoint cannot be installed under the name asked for, or its checksum cannot be read.

    Recovery: choose another ``--name`` (``sciatic models list`` shows the
    names in use), or give the sha256 as 64 hexadecimal digits.
    """


class TamperedCheckpointError(SciaticError):
    """A checkpoint's bytes do not match the sha256 that came with it: it was changed or damaged on the way.

    Recovery: copy the file again from where it was exported (``sciatic models
    export`` writes ``NAME.pt`` with ``NAME.sha256``) and compare the checksums
    there; never install a file whose checksum differs.
    """


@dataclass(frozen=True)
class AddedModel:
    model_id: int
    name: str
    sha256: str
    path: Path
    card: Path
    verified: bool  # checked against a given sha256
    new: bool  # False: these bytes were registered already
    promoted: bool


@dataclass(frozen=True)
class ExportedModel:
    checkpoint: Path
    sha256_file: Path
    card: Path


def _expected_sha256(source: Path, given: str | None) -> str | None:
    """The sha256 given on the command line, else the one in ``<file>.sha256`` beside it, else None."""
    sidecar = source.with_suffix(".sha256")
    if given is None and sidecar.is_file():
        words = sidecar.read_text(errors="replace").split()
        given = words[0] if words else ""
        where = f"{sidecar}"
    else:
        where = "--sha256"
    if given is None:
        return None
    if not SHA256.fullmatch(given.lower()):
        raise ModelImportError(f"{where} does not hold a sha256 (64 hexadecimal digits)")
    return given.lower()


def _check(source: Path, data: bytes, expected: str | None) -> tuple[str, ModelConfig, dict[str, Any]]:
    """sha256, configuration and contents of ``data``: verified, loaded weights-only, built and filled."""
    from sciatic.model.checkpoint import (
        CheckpointConfigError,
        NotACheckpointError,
        checkpoint_config,
        checkpoint_from_bytes,
        sha256_bytes,
    )
    from sciatic.model.unet import build_model

    actual = sha256_bytes(data)
    if expected is not None and actual != expected:
        raise TamperedCheckpointError(f"{source} has sha256 {actual}, but {expected} came with it")
    state = checkpoint_from_bytes(data, str(source))  # weights_only; NotACheckpointError for anything else
    try:
        state["metrics"] = {str(k): float(v) for k, v in dict(state["metrics"]).items()}
    except (TypeError, ValueError) as exc:
        raise NotACheckpointError(f"checkpoint {source} has metrics that are not numbers") from exc
    config = checkpoint_config(state)  # CheckpointConfigError when this version cannot use it
    try:
        build_model(config).load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointConfigError(f"{source}: the weights do not fit configuration {config.name}: {reason}") from exc
    return actual, config, state


def add_model(
    settings: Settings,
    engine: Engine,
    source: Path,
    name: str | None = None,
    promote: bool = False,
    sha256: str | None = None,
) -> AddedModel:
    """Install the checkpoint ``source`` as a registered model (promoted to production when ``promote``).

    Adding bytes that are registered already installs nothing new and returns
    that model (promoting it when asked).
    """
    from sciatic.model.configs import config_to_dict

    source = Path(source)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ModelIntegrityError(f"cannot read {source}: {exc.strerror or exc}") from exc
    expected = _expected_sha256(source, sha256)
    actual, config, state = _check(source, data, expected)
    name = name or source.stem
    if not NAME.fullmatch(name):
        raise ModelImportError(f"model name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    layout = DataLayout.of(settings)
    came_with = source.with_suffix(".md")
    with session_scope(engine) as session:
        version = registry.by_sha256(session, actual)
        new = version is None
        if version is None:
            taken = registry.by_name(session, name)
            if taken is not None:
                raise ModelImportError(f"model name {name!r} is taken by model {taken.id} (another checkpoint)")
            target = layout.installed_model(f"{name}.pt")
            atomic_write(target, lambda handle: handle.write(data))
            version = registry.register(
                session,
                target,
                actual,
                config.name,
                config_to_dict(config),
                metrics=state["metrics"],
                name=name,
                origin=f"imported from {source.name} with `sciatic models add`",
            )
            audit.record(
                session, STEP, "imported", "model_version", version.id, source=str(source), verified=bool(expected)
            )
        if promote:
            registry.promote(session, version.id, reason="sciatic models add")
        card = Path(version.card_path) if version.card_path else None
        if new or promote or card is None:
            session.flush()
            card = cards.write_card(
                session,
                version.id,
                layout.model_card(version.name),
                previous_card=came_with.read_text(errors="replace") if came_with.is_file() else None,
            )
        return AddedModel(
            model_id=version.id,
            name=version.name,
            sha256=actual,
            path=Path(version.checkpoint_path),
            card=card,
            verified=expected is not None,
            new=new,
            promoted=promote,
        )


def export_model(settings: Settings, engine: Engine, model_id: int, out_dir: Path) -> ExportedModel:
    """Write ``NAME.pt`` (the registered bytes, verified), ``NAME.sha256`` and ``NAME.md`` (its card) to ``out_dir``."""
    from sciatic.model.card import render
    from sciatic.model.checkpoint import sha256_bytes

    with session_scope(engine) as session:
        version = registry.get(session, model_id)
        name, sha256, path = version.name, version.checkpoint_sha256, Path(version.checkpoint_path)
        card_path = Path(version.card_path) if version.card_path else None
        card_text = (
            card_path.read_text()
            if card_path is not None and card_path.is_file()
            else render(cards.card_facts(session, model_id))
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelIntegrityError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if sha256_bytes(data) != sha256:
        raise ModelIntegrityError(f"checkpoint {path} no longer has the sha256 {sha256} of model {model_id}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / f"{name}.pt"
    sidecar, card = checkpoint.with_suffix(".sha256"), checkpoint.with_suffix(".md")
    atomic_write(checkpoint, lambda handle: handle.write(data))
    atomic_write(sidecar, lambda handle: handle.write(f"{sha256}  {checkpoint.name}\n".encode()))
    atomic_write(card, lambda handle: handle.write(card_text.encode()))
    with session_scope(engine) as session:
        audit.record(session, STEP, "exported", "model_version", model_id, path=str(checkpoint))
    return ExportedModel(checkpoint=checkpoint, sha256_file=sidecar, card=card)
