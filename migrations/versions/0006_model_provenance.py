"""model provenance and promotion statistics: fine-tuning start, bootstrap interval, origin and model card

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

training_run.initial_model_id names the model whose weights a challenger was
fine-tuned from (NULL: trained from scratch); dice_difference(_low, _high) is
the mean per-series test Dice difference (challenger - champion) and its
paired bootstrap confidence interval, the facts the promotion rule decides on.
model_version.origin says where a model came from (a training run, an imported
file) and card_path where its model card is. Earlier rows keep NULL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_training_run_initial_model_id_model_version"


def upgrade() -> None:
    with op.batch_alter_table("model_version") as batch:
        batch.add_column(
            sa.Column("origin", sa.Text(), nullable=True, comment="a training run, or the file it was imported from")
        )
        batch.add_column(sa.Column("card_path", sa.Text(), nullable=True, comment="its model card (Markdown)"))
    with op.batch_alter_table("training_run") as batch:
        batch.add_column(
            sa.Column(
                "initial_model_id",
                sa.Integer(),
                nullable=True,
                comment="the weights training started from (fine-tuning); NULL: from scratch",
            )
        )
        batch.add_column(
            sa.Column(
                "dice_difference", sa.Float(), nullable=True, comment="mean per-series test Dice, challenger - champion"
            )
        )
        batch.add_column(
            sa.Column("dice_difference_low", sa.Float(), nullable=True, comment="its paired bootstrap interval: low")
        )
        batch.add_column(
            sa.Column("dice_difference_high", sa.Float(), nullable=True, comment="its paired bootstrap interval: high")
        )
        batch.create_foreign_key(FK, "model_version", ["initial_model_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("training_run") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        for column in ("dice_difference_high", "dice_difference_low", "dice_difference", "initial_model_id"):
            batch.drop_column(column)
    with op.batch_alter_table("model_version") as batch:
        batch.drop_column("card_path")
        batch.drop_column("origin")
