"""Create what the sciatic DAGs need inside Airflow: the ``gpu`` pool.

Runs Airflow's own CLI (``airflow pools set``) against the Airflow metadata
database of the calling environment (``AIRFLOW_HOME`` / ``AIRFLOW__*``), so it
works wherever ``airflow`` itself works. Idempotent: running it again only
updates the slot count.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from sciatic.errors import ConfigurationError

__all__ = ["GPU_POOL", "GPU_QUEUE", "airflow_executable", "setup_airflow"]

# Celery queue and Airflow pool of the tasks that run the U-Net (the DAGs import these).
GPU_QUEUE = "gpu"
GPU_POOL = "gpu"
GPU_POOL_DESCRIPTION = "sciatic: U-Net inference and training; one slot per GPU"


def airflow_executable() -> str:
    """The ``airflow`` command of this Python environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("airflow")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("airflow")
    if found is None:
        raise ConfigurationError("the `airflow` command is not installed in this environment")
    return found


def setup_airflow(gpu_slots: int = 1, env: Mapping[str, str] | None = None) -> str:
    """Create or update the ``gpu`` pool with ``gpu_slots`` slots; return what was done.

    ``env`` replaces the process environment for the Airflow CLI (tests use it
    to aim at a private Airflow). Raises ``ConfigurationError`` when Airflow refuses.
    """
    if gpu_slots < 1:
        raise ConfigurationError(f"the gpu pool needs at least one slot, got {gpu_slots}")
    command = [airflow_executable(), "pools", "set", GPU_POOL, str(gpu_slots), GPU_POOL_DESCRIPTION]
    result = subprocess.run(
        command,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ConfigurationError(f"`airflow pools set {GPU_POOL}` failed: " + " | ".join(detail))
    return f"Airflow pool {GPU_POOL!r}: {gpu_slots} slot(s)"
