"""Create or update the research staff's PostgreSQL login role (run by docker/init.sh).

The migrations create the NOLOGIN group role ``sciatic_research``, which may
read the views of schema ``research`` and nothing else. This script gives
``RESEARCH_DB_USER`` (password ``RESEARCH_DB_PASSWORD``) a login and that
group role, on the database ``SCIATIC_DATABASE_URL`` names. Idempotent: run
again, it only resets the password. Without ``RESEARCH_DB_USER`` it does nothing.
"""

from __future__ import annotations

import os
import re
import sys

import sqlalchemy as sa

GROUP_ROLE = "sciatic_research"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def setup_research_role(url: str, user: str, password: str) -> str:
    """Create or update ``user`` as a login member of ``sciatic_research``; return what was done."""
    if not _NAME.match(user):
        raise ValueError(f"RESEARCH_DB_USER {user!r} must be a lower-case PostgreSQL identifier")
    if len(password) < 12:
        raise ValueError("RESEARCH_DB_PASSWORD must be at least 12 characters long")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name != "postgresql":
                return "not PostgreSQL: no roles to set up"
            group = connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": GROUP_ROLE})
            if group.scalar() is None:
                raise RuntimeError(f"role {GROUP_ROLE} is missing: run `sciatic db upgrade` first")
            exists = connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": user}).scalar()
            quoted = connection.dialect.identifier_preparer.quote(user)
            literal = "'" + password.replace("'", "''") + "'"  # DDL takes no bind parameters
            verb = "ALTER" if exists else "CREATE"
            connection.execute(sa.text(f"{verb} ROLE {quoted} LOGIN PASSWORD {literal}"))
            connection.execute(sa.text(f"GRANT {GROUP_ROLE} TO {quoted}"))
            database = connection.dialect.identifier_preparer.quote(
                str(connection.scalar(sa.text("SELECT current_database()")))
            )
            connection.execute(sa.text(f"GRANT CONNECT ON DATABASE {database} TO {quoted}"))
    finally:
        engine.dispose()
    return f"{'updated' if exists else 'created'} login role {user} (member of {GROUP_ROLE})"


def main() -> int:
    user = os.environ.get("RESEARCH_DB_USER", "").strip()
    if not user:
        print("RESEARCH_DB_USER is not set: no research login role")
        return 0
    url = os.environ.get("SCIATIC_DATABASE_URL", "")
    if not url:
        print("SCIATIC_DATABASE_URL is not set", file=sys.stderr)
        return 1
    try:
        print(setup_research_role(url, user, os.environ.get("RESEARCH_DB_PASSWORD", "")))
    except (ValueError, RuntimeError, sa.exc.SQLAlchemyError) as exc:
        print(f"research role: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
