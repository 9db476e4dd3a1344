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

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "sciatic_research"

# 0002's text, with a place for the appended columns
QC_SUMMARY = """
        SELECT
            sub.pseudonym,
            sub.cohort,
            st.study_date,
            se.id AS series_id,
            se.status = 'superseded' AS superseded,
            mv.name AS model_name,
            sg.id AS segmentation_id,
            lf.status AS qc_status,
            lf.flags AS qc_flags,
            coalesce(lb.n_labels, 0) AS n_labels,
            lb.mean_dice,
            lb.min_dice,
            lb.mean_hd95_mm,
            lb.mean_assd_mm,
            lb.failed{appended}
        FROM segmentation sg
        JOIN series se ON se.id = sg.series_id
        JOIN study st ON st.id = se.study_id
        JOIN subject sub ON sub.id = st.subject_id
        JOIN model_version mv ON mv.id = sg.model_version_id
        LEFT JOIN qc_result lf ON lf.segmentation_id = sg.id AND lf.manual_label_id IS NULL
        LEFT JOIN (
            SELECT segmentation_id,
                   count(*) AS n_labels,
                   avg(dice) AS mean_dice,
                   min(dice) AS min_dice,
                   avg(hd95_mm) AS mean_hd95_mm,
                   avg(assd_mm) AS mean_assd_mm,
                   bool_or(failed) AS failed
            FROM qc_result
            WHERE manual_label_id IS NOT NULL
            GROUP BY segmentation_id
        ) lb ON lb.segmentation_id = sg.id
    """
APPENDED = """,
            sg.uncertainty,
            sg.image_snr"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE OR REPLACE VIEW research.qc_summary AS {QC_SUMMARY.format(appended=APPENDED)}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW research.qc_summary")
        op.execute(f"CREATE VIEW research.qc_summary AS {QC_SUMMARY.format(appended='')}")
        op.execute(f"GRANT SELECT ON research.qc_summary TO {ROLE}")
