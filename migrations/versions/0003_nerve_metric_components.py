"""nerve_metric.n_components_3d: the QC step reads every fact it needs from the metric rows

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Rows measured before this revision keep NULL; QC counts it as 0 until the segmentation is measured again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nerve_metric") as batch:
        batch.add_column(
            sa.Column("n_components_3d", sa.Integer(), nullable=True, comment="26-connected pieces of the 3D mask")
        )


def downgrade() -> None:
    with op.batch_alter_table("nerve_metric") as batch:
        batch.drop_column("n_components_3d")
