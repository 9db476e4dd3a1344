"""dicom_instance.arrived_at: when each file landed in the drop folder; the quiet period counts from it

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Until now a series' quiet period counted from the pass that indexed its last
file, so a study waited one extra ingest interval before conversion. The
arrival time is the file's inode change time, which a copy that preserves
modification times (``cp -p``, ``rsync -a``) cannot set in the past. Rows
indexed before this revision keep NULL and count from ``indexed_at``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dicom_instance") as batch:
        batch.add_column(
            sa.Column(
                "arrived_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="when the file landed in the drop folder (its inode change time); NULL: see indexed_at",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("dicom_instance") as batch:
        batch.drop_column("arrived_at")
