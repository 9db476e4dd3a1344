"""Shared by the benchmarks that drive the service itself: its settings and throwaway databases."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url


def configure_service(data: Path, **settings: str) -> None:
    """Point the service at ``data`` with no waiting (quiet period, settle time 0) and only ``settings`` besides.

    Every other ``SCIATIC_*`` variable is removed, so the defaults apply; keys
    are setting names (``database_url="..."`` sets ``SCIATIC_DATABASE_URL``).
    """
    from sciatic.config import get_settings
    from sciatic.db.session import forget_engines

    forget_engines()
    for key in [k for k in os.environ if k.startswith("SCIATIC_")]:
        del os.environ[key]
    os.environ.update(
        {
            "SCIATIC_DATA_DIR": str(data),
            "SCIATIC_SERIES_QUIET_SECONDS": "0",
            "SCIATIC_FILE_SETTLE_SECONDS": "0",
            **{f"SCIATIC_{name.upper()}": value for name, value in settings.items()},
        }
    )
    get_settings.cache_clear()


@contextmanager
def fresh_postgres(server_url: str, prefix: str = "sciatic_bench") -> Iterator[str]:
    """A new, empty database on the server of ``server_url``, dropped afterwards; its URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        from sciatic.db.session import forget_engines

        forget_engines()  # no connection of this process may keep the database open
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def work_folder(keep: Path | None, prefix: str) -> Iterator[Path]:
    """``keep`` (created new, left for inspection) or a temporary folder deleted afterwards."""
    if keep is not None:
        keep.mkdir(parents=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
