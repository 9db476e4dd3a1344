"""series eligibility: which converted series are PD axial thigh series, and why the others are not

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Only an eligible series is segmented. ``eligible`` is NULL for series that
were never assessed (refused, or converted before this revision: those count
as eligible, as they were segmented before). The acquisition facts the rules
read are kept for research. On PostgreSQL the view ``research.series_eligibility``
shows every converted series with its verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "sciatic_research"
VIEW = """
    SELECT
        sub.pseudonym,
        sub.cohort,
        st.study_date,
        se.id AS series_id,
        se.version AS series_version,
        se.status = 'superseded' AS superseded,
        se.series_number,
        se.description AS series_description,
        se.n_slices,
        se.orientation,
        se.repetition_time_ms,
        se.echo_time_ms,
        se.body_part,
        coalesce(se.eligible, true) AS eligible,
        se.eligibility_reason,
        se.eligibility_detail
    FROM series se
    JOIN study st ON st.id = se.study_id
    JOIN subject sub ON sub.id = st.subject_id
    WHERE se.status IN ('converted', 'superseded')
"""


def upgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("repetition_time_ms", sa.Float(), nullable=True))
        batch.add_column(sa.Column("echo_time_ms", sa.Float(), nullable=True))
        batch.add_column(sa.Column("body_part", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("eligible", sa.Boolean(), nullable=True, comment="segmented only when true (NULL: not assessed)")
        )
        batch.add_column(sa.Column("eligibility_reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("eligibility_detail", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE VIEW research.series_eligibility AS {VIEW}")
        op.execute(f"GRANT SELECT ON research.series_eligibility TO {ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"REVOKE ALL ON research.series_eligibility FROM {ROLE}")
        op.execute("DROP VIEW research.series_eligibility")
    with op.batch_alter_table("series") as batch:
        for column in (
            "eligibility_detail",
            "eligibility_reason",
            "eligible",
            "body_part",
            "echo_time_ms",
            "repetition_time_ms",
        ):
            batch.drop_column(column)
