"""Helpers shared by the Airflow tests: a bootstrap production model and readable task logs."""

from __future__ import annotations

import json
from pathlib import Path


def register_untrained_production_model() -> int:
    """Put an untrained model in production (the flow is under test, not the quality); its id."""
    from sciatic.config import get_settings
    from sciatic.db import registry
    from sciatic.db.session import session_scope
    from sciatic.model.checkpoint import save_checkpoint
    from sciatic.model.configs import config_to_dict, get_config
    from sciatic.model.unet import build_model

    config = get_config()
    path = get_settings().dir("model") / "bootstrap" / "model.pt"
    sha256 = save_checkpoint(path, build_model(config), config)
    with session_scope() as session:
        version = registry.register(session, path, sha256, config.name, config_to_dict(config), name="bootstrap")
        registry.promote(session, version.id, reason="test bootstrap")
        return version.id


def readable_task_log(path: Path, last: int = 40) -> str:
    """An Airflow 3 task log (JSON lines) as text: level, event, and each exception with where it arose."""
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        lines.append(f"{record.get('level', '')}: {record.get('event', '')}")
        for error in record.get("error_detail") or []:
            frame = (error.get("frames") or [{}])[-1]
            where = f"{frame.get('filename')}:{frame.get('lineno')}"
            lines.append(f"    {error.get('exc_type')}: {error.get('exc_value')} (at {where})")
    return "\n".join(lines[-last:])
