"""Named locks shared by every sciatic process on one database: which step may work on what, now.

On PostgreSQL a session-level advisory lock (held on its own connection, so
it is released when the process dies); on SQLite a ``flock`` on a file in
``locks/`` beside the database file (an in-memory database has one process:
nothing to lock). ``wait=False`` answers at once whether the lock was
free; ``wait=True`` blocks until it is.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

__all__ = ["named_lock"]


def _key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name`` (the same in every process)."""
    return int.from_bytes(hashlib.sha256(f"sciatic:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def named_lock(engine: Engine, name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock ``name`` for the ``with`` block; yield False (and hold nothing) when busy and not waiting."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            key = _key(name)
            if wait:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                got = True
            else:
                got = bool(connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            connection.commit()
            try:
                yield got
            finally:
                if got:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    connection.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield True
        return
    lock_dir = Path(database).resolve().parent / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
