"""The schema on real PostgreSQL and on SQLite: migrations, ORM agreement, research role."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

from sciatic.db import migrate
from sciatic.db.models import Base
from sciatic.db.session import make_engine

RESEARCH_VIEWS = {
    "nerve_measurements",
    "slice_measurements",
    "qc_summary",
    "model_performance",
    "series_eligibility",
    "nerve_sides",
    "nerve_asymmetry",
}
PHI_WORDS = ("patient_id", "patient_name", "birth", "patientid", "accession")


def _tables(url: str, schema: str | None = None) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


def _schema_diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


@pytest.mark.db
def test_upgrade_downgrade_upgrade_on_postgres(pg_database: str) -> None:
    migrate.upgrade(pg_database)
    assert set(Base.metadata.tables) <= _tables(pg_database)
    engine = make_engine(pg_database)
    views = set(sa.inspect(engine).get_view_names(schema="research"))
    engine.dispose()
    assert views == RESEARCH_VIEWS

    migrate.downgrade(pg_database, "base")
    assert _tables(pg_database) == {"alembic_version"}
    engine = make_engine(pg_database)
    assert "research" not in sa.inspect(engine).get_schema_names()
    engine.dispose()

    migrate.upgrade(pg_database)
    assert set(Base.metadata.tables) <= _tables(pg_database)


@pytest.mark.db
def test_orm_and_migrated_schema_agree_on_postgres(pg_database: str) -> None:
    migrate.upgrade(pg_database)
    assert _schema_diff(pg_database) == []


def test_migrations_run_on_sqlite(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    migrate.upgrade(url)
    assert set(Base.metadata.tables) <= _tables(url)
    migrate.downgrade(url, "base")
    assert _tables(url) == {"alembic_version"}
    migrate.upgrade(url)
    assert _schema_diff(url) == []
    engine = make_engine(url)
    assert migrate.status(engine).up_to_date
    engine.dispose()


def test_status_reports_an_empty_database_as_behind(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/empty.db")
    state = migrate.status(engine)
    engine.dispose()
    assert state.current is None and not state.up_to_date
    assert "sciatic db upgrade" in state.describe()


@pytest.mark.db
def test_research_role_reads_views_and_nothing_else(pg_server: str, pg_database: str) -> None:
    migrate.upgrade(pg_database)
    login = f"sciatic_test_reader_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE ROLE {login} LOGIN"))
        connection.execute(sa.text(f"GRANT sciatic_research TO {login}"))
    reader = sa.create_engine(make_url(pg_database).set(username=login))
    try:
        with reader.connect() as connection:
            for view in sorted(RESEARCH_VIEWS):
                connection.execute(sa.text(f"SELECT * FROM research.{view}")).fetchall()
        for table in [*sorted(Base.metadata.tables), "alembic_version"]:
            with reader.connect() as connection, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                connection.execute(sa.text(f"SELECT * FROM {table}"))
        with reader.connect() as connection:
            columns = connection.execute(
                sa.text("SELECT column_name FROM information_schema.columns WHERE table_schema = 'research'")
            ).scalars()
            names = {str(c).lower() for c in columns}
        assert names, "research views have no visible columns"
        assert not [n for n in names if any(word in n for word in PHI_WORDS)]
        assert "pseudonym" in names and "cohort" in names
    finally:
        reader.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP ROLE {login}"))
        admin.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.db)])
def test_at_most_one_production_model(backend: str, request: pytest.FixtureRequest, tmp_path: object) -> None:
    from sciatic.db.enums import ModelStatus
    from sciatic.db.models import ModelVersion
    from sciatic.db.session import session_scope

    url = request.getfixturevalue("pg_database") if backend == "postgres" else f"sqlite:///{tmp_path}/m.db"
    migrate.upgrade(url)
    engine = make_engine(url)

    def model(n: int, status: ModelStatus) -> ModelVersion:
        return ModelVersion(
            name=f"m{n}",
            config_name="fast",
            config={},
            checkpoint_path=f"/m{n}.pt",
            checkpoint_sha256=f"{n:064d}",
            status=status,
            sciatic_version="test",
        )

    with session_scope(engine) as session:
        session.add_all([model(1, ModelStatus.PRODUCTION), model(2, ModelStatus.CANDIDATE)])
    with pytest.raises(sa.exc.IntegrityError), session_scope(engine) as session:
        session.add(model(3, ModelStatus.PRODUCTION))
    engine.dispose()
