"""segmentation.image_snr: the segmented image's signal-to-noise ratio, for the QC flag low_snr

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

A series buried in noise can still give a plausible-looking nerve; the
estimate (``sciatic.imaging.noise``) lets QC send it to review. Rows written
before this revision keep NULL, and QC raises no noise flag for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("segmentation") as batch:
        batch.add_column(
            sa.Column(
                "image_snr",
                sa.Float(),
                nullable=True,
                comment="the segmented image's signal-to-noise ratio, estimated from the image (sciatic.imaging.noise)",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("segmentation") as batch:
        batch.drop_column("image_snr")
