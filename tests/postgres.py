"""Find or start a real PostgreSQL server for the tests, and make databases on it.

Order: ``SCIATIC_TEST_DATABASE_URL`` (a server URL) when set; else the local
server on 127.0.0.1:5432 (user postgres); else a throwaway cluster made with
``initdb``/``pg_ctl`` found on this machine. If none works the tests fail
with a message that says how to get one. There are no silent skips.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

LOCAL_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

HOW_TO_GET_ONE = (
    "No PostgreSQL server for the tests. Either set SCIATIC_TEST_DATABASE_URL to a server URL "
    "(e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/postgres, a role allowed to CREATE DATABASE "
    "and CREATE ROLE), start the local one with "
    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, "
    "or install PostgreSQL (apt-get install postgresql) so that a throwaway cluster can be made."
)


def _reachable(url: str) -> str | None:
    """None when a connection works, else the error text."""
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return None
    except sa.exc.OperationalError as exc:
        return str(exc.orig)
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temporary directory, stopped and removed at the end."""

    def __init__(self) -> None:
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        initdb = shutil.which("initdb") or next((f"{d}/initdb" for d in bindirs if os.path.exists(f"{d}/initdb")), None)
        if initdb is None:
            raise RuntimeError("initdb not found")
        self.bindir = Path(initdb).parent
        self.root = Path(tempfile.mkdtemp(prefix="sciatic-pg-"))
        self.port = free_port()
        # initdb refuses to run as root: run the cluster as the 'postgres' system user then.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.prefix:
            shutil.chown(self.root, "postgres")
        data = self.root / "data"
        subprocess.run(
            [
                *self.prefix,
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *self.prefix,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(self.root / "log"),
                "-o",
                f"-p {self.port} -k {self.root} -h 127.0.0.1",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the URL of a server on which databases and roles may be created."""
    explicit = os.environ.get("SCIATIC_TEST_DATABASE_URL")
    if explicit:
        error = _reachable(explicit)
        if error:
            raise RuntimeError(f"SCIATIC_TEST_DATABASE_URL={explicit} is not reachable: {error}\n{HOW_TO_GET_ONE}")
        yield explicit
        return
    if _reachable(LOCAL_URL) is None:
        yield LOCAL_URL
        return
    try:
        cluster = ThrowawayCluster()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        raise RuntimeError(f"{HOW_TO_GET_ONE} (throwaway cluster failed: {exc})") from exc
    try:
        yield cluster.url
    finally:
        cluster.stop()


def create_database(server_url: str, prefix: str = "sciatic_test") -> str:
    """Create an empty database with a unique name; returns its URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    for _ in range(3):
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            break
        except sa.exc.OperationalError:
            time.sleep(1)
    engine.dispose()
