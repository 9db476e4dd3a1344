"""Alembic, driven from Python: ``sciatic db upgrade|downgrade|status|revision``."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from sciatic.config import mask_url
from sciatic.errors import ConfigurationError, DatabaseNotReadyError, DatabaseUnreachableError


def migrations_dir() -> Path:
    """The Alembic scripts: package ``sciatic.migrations`` (the top-level ``migrations/`` of the source tree)."""
    spec = importlib.util.find_spec("sciatic.migrations")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        if (Path(location) / "env.py").is_file():
            return Path(location)
    raise ConfigurationError("the sciatic.migrations package is missing: reinstall sciatic (pip install sciatic-*.whl)")


def alembic_config(url: str) -> Config:
    try:
        make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"SCIATIC_DATABASE_URL {mask_url(url)!r} is not a usable database URL: {exc}") from exc
    scripts = migrations_dir()
    cfg = Config()
    cfg.set_main_option("script_location", str(scripts))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def new_revision(url: str, message: str, autogenerate: bool = True) -> None:
    """Write ``migrations/versions/NNNN_slug.py`` numbered after the current head."""
    cfg = alembic_config(url)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    rev_id = f"{int(head or 0) + 1:04d}"
    command.revision(cfg, message=message, autogenerate=autogenerate, rev_id=rev_id)


@dataclass(frozen=True)
class DbStatus:
    url: str
    current: str | None
    head: str | None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        state = "up to date" if self.up_to_date else "behind: run `sciatic db upgrade`"
        return (
            f"database {self.url}\ncurrent revision {self.current or '(empty)'}\nhead revision    {self.head}\n{state}"
        )


@functools.cache
def code_head() -> str | None:
    """The newest migration this code ships, read once per process (every step checks the schema against it)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return ScriptDirectory.from_config(cfg).get_current_head()


def status(engine: Engine) -> DbStatus:
    alembic_config(engine.url.render_as_string(hide_password=False))  # a clear error for an unusable URL
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        url = mask_url(engine.url.render_as_string(hide_password=False))
        raise DatabaseUnreachableError(f"cannot reach the database {url}: {reason}") from exc
    return DbStatus(mask_url(engine.url.render_as_string(hide_password=False)), current, code_head())


def require_head(engine: Engine) -> None:
    """Raise DatabaseNotReadyError unless the schema is at the code's head revision."""
    state = status(engine)
    if not state.up_to_date:
        raise DatabaseNotReadyError(
            f"database schema is at {state.current or 'nothing'}, code expects {state.head}: run `sciatic db upgrade`"
        )
