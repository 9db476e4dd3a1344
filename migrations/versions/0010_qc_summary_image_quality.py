"""research.qc_summary gains the network's uncertainty and the image's signal-to-noise ratio

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

Both numbers are stored per segmentation (revisions 0007 and 0009) and drive
the QC flags ``high_uncertainty`` and ``low_snr``; research staff can now sort
and filter on them. The two columns are appended, so the view is replaced in
place and its grant stays; the downgrade recreates it without them.
On SQLite this revision does nothing (there are no research views).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "sciatic_research"

# the view as revision 0002 created it, and the same with the two columns appended
BEFORE: str = import_module("sciatic.migrations.versions.0002_research_views").VIEWS["qc_summary"]
LAST_COLUMN = "lb.failed\n"
assert BEFORE.count(LAST_COLUMN) == 1, "revision 0002's qc_summary changed"
AFTER = BEFORE.replace(LAST_COLUMN, "lb.failed,\n            sg.uncertainty,\n            sg.image_snr\n")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE OR REPLACE VIEW research.qc_summary AS {AFTER}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW research.qc_summary")
        op.execute(f"CREATE VIEW research.qc_summary AS {BEFORE}")
        op.execute(f"GRANT SELECT ON research.qc_summary TO {ROLE}")
