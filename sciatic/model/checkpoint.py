"""Checkpoints: one schema, written atomically, verified by sha256 before loading.

Schema (every value loadable with ``torch.load(..., weights_only=True)``)::

    {"model": state_dict, "optimizer": state_dict | {}, "epoch": int,
     "config": dict (configs.config_to_dict), "metrics": {str: float},
     "sciatic_version": str}
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sciatic import __version__
from sciatic.errors import ModelIntegrityError
from sciatic.model.configs import ModelConfig, config_from_dict, config_to_dict
from sciatic.storage import atomic_write

KEYS = ("model", "optimizer", "epoch", "config", "metrics", "sciatic_version")


class NotACheckpointError(ModelIntegrityError):
    """A file is not a sciatic checkpoint (not loadable with ``weights_only=True``, or not this schema).

    Recovery: use the ``.pt`` file written by ``sciatic train`` or ``sciatic
    models export``; for a registered model, restore its file from backup or
    retire it (``sciatic models retire ID``).
    """


class CheckpointConfigError(ModelIntegrityError):
    """A checkpoint's configuration is not valid for this sciatic version, or its weights do not fit it.

    Recovery: export the model from a site running a compatible sciatic
    version, or train a new one here (``sciatic train``).
    """


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and values: identifies weights, not file bytes."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ModelConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    metrics: dict[str, float] | None = None,
) -> str:
    """Write a checkpoint atomically and return the sha256 of its bytes."""
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "epoch": int(epoch),
        "config": config_to_dict(config),
        "metrics": {str(k): float(v) for k, v in (metrics or {}).items()},
        "sciatic_version": __version__,
    }
    return _write_state(Path(path), state)


def _write_state(path: Path, state: dict[str, Any]) -> str:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return atomic_write(path, lambda handle: handle.write(data))


def release_checkpoint(src: str | Path, dst: str | Path, expected_sha256: str | None) -> str:
    """Copy a checkpoint to ``dst`` without its optimiser state (``"optimizer": {}``); return the new sha256.

    A release is for inference only: same schema, same weights, configuration,
    epoch and metrics, about a third of the size of a checkpoint that can
    resume AdamW. ``src`` is verified against ``expected_sha256`` first.
    """
    state = load_checkpoint(src, expected_sha256, map_location="cpu")
    release = {key: state[key] for key in KEYS}
    release["optimizer"] = {}
    return _write_state(Path(dst), release)


def load_checkpoint(
    path: str | Path, expected_sha256: str | None, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The checkpoint dict, after checking its sha256 (``None`` skips the check: ad-hoc use only).

    Raises ``ModelIntegrityError`` when the bytes do not match, or when the
    file is not a checkpoint of this schema (``NotACheckpointError``).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelIntegrityError(f"cannot read checkpoint {path}: {exc}") from exc
    actual = sha256_bytes(data)
    if expected_sha256 is not None and actual != expected_sha256.lower():
        raise ModelIntegrityError(f"checkpoint {path} has sha256 {actual}, expected {expected_sha256}")
    return checkpoint_from_bytes(data, str(path), map_location)


def checkpoint_from_bytes(data: bytes, label: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Deserialise checkpoint bytes with ``weights_only=True`` and check the schema; ``label`` names them in errors."""
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # a corrupt or foreign file
        raise NotACheckpointError(f"checkpoint {label} cannot be loaded: {_first_line(exc)}") from exc
    missing = [k for k in KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise NotACheckpointError(f"checkpoint {label} lacks {missing}; not a sciatic checkpoint")
    state["sha256"] = sha256_bytes(data)
    return dict(state)


def checkpoint_config(state: dict[str, Any]) -> ModelConfig:
    """The configuration stored in a loaded checkpoint."""
    try:
        return config_from_dict(state["config"])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointConfigError(f"checkpoint configuration is not valid for this version: {exc}") from exc
