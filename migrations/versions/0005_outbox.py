"""outbox: the DICOM objects (SEG, SR, SC) of each segmentation on their way to the PACS

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

One row per object and destination; a row goes from pending to sent once the
PACS acknowledged it (never sent again), or to failed after its last attempt.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("segmentation_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("file_path", sa.Text(), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("destination", sa.String(length=128), nullable=False, comment="AE_TITLE@host:port"),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, comment="not sent before this time"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True, comment="when the PACS acknowledged it"),
        sa.ForeignKeyConstraint(
            ["segmentation_id"], ["segmentation.id"], name=op.f("fk_outbox_segmentation_id_segmentation")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint(
            "segmentation_id", "kind", "destination", name=op.f("uq_outbox_segmentation_id_kind_destination")
        ),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_outbox_sop_instance_uid")),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.create_index(batch.f("ix_outbox_segmentation_id"), ["segmentation_id"], unique=False)
        batch.create_index(batch.f("ix_outbox_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index(batch.f("ix_outbox_status"))
        batch.drop_index(batch.f("ix_outbox_segmentation_id"))
    op.drop_table("outbox")
