"""Engines and sessions for the configured database (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from sciatic.config import get_settings, mask_url
from sciatic.errors import ConfigurationError


def make_engine(url: str) -> Engine:
    """An engine with the settings sciatic relies on for each backend (a URL that is none is refused)."""
    try:
        return _make_engine(url)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigurationError(f"SCIATIC_DATABASE_URL {mask_url(url)!r} is not a usable database URL: {exc}") from exc


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


_engines: dict[str, Engine] = {}


def engine_for(url: str) -> Engine:
    """One engine per URL per process."""
    if url not in _engines:
        _engines[url] = make_engine(url)
    return _engines[url]


def forget_engines() -> None:
    """Close every cached engine's connections and forget them (a database file is about to be replaced)."""
    while _engines:
        _engines.popitem()[1].dispose()


def default_engine() -> Engine:
    settings = get_settings()
    if settings.database_url is None:
        settings.dir("data")  # the embedded database lives there: a clear error when it cannot be created
    return engine_for(settings.effective_database_url)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    factory = sessionmaker(bind=engine or default_engine(), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
