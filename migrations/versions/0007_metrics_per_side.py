"""metrics per leg: slice_metric and nerve_metric rows gain a side (all, left, right), branches and bifurcation level

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

``series.laterality`` keeps the Laterality tag that sides a unilateral study.
Existing rows become side ``all`` (every nerve of the mask together, as
before); the measure step adds one row per leg. The research views that read
these tables keep showing the ``all`` rows; two new views show the legs:
``research.nerve_sides`` (one row per segmentation and leg) and
``research.nerve_asymmetry`` (left against right, one row per segmentation).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "sciatic_research"

# the two views of 0002 that join these tables: before (0002's text) and after (only the ``all`` rows)
NERVE_MEASUREMENTS_BEFORE = """
        SELECT
            sub.pseudonym,
            sub.cohort,
            st.id AS study_id,
            st.study_date,
            se.id AS series_id,
            se.version AS series_version,
            se.status = 'superseded' AS superseded,
            se.description AS series_description,
            mv.name AS model_name,
            mv.status AS model_status,
            sg.id AS segmentation_id,
            sg.created_at AS segmented_at,
            nm.volume_mm3,
            nm.csa_mean_mm2,
            nm.csa_median_mm2,
            nm.csa_max_mm2,
            nm.covered_length_mm,
            nm.signal_mean,
            nm.n_slices_with_nerve,
            qc.status AS qc_status
        FROM segmentation sg
        JOIN series se ON se.id = sg.series_id
        JOIN study st ON st.id = se.study_id
        JOIN subject sub ON sub.id = st.subject_id
        JOIN model_version mv ON mv.id = sg.model_version_id
        LEFT JOIN nerve_metric nm ON nm.segmentation_id = sg.id
        LEFT JOIN qc_result qc ON qc.segmentation_id = sg.id AND qc.manual_label_id IS NULL
    """
NERVE_MEASUREMENTS_AFTER = """
        SELECT
            sub.pseudonym,
            sub.cohort,
            st.id AS study_id,
            st.study_date,
            se.id AS series_id,
            se.version AS series_version,
            se.status = 'superseded' AS superseded,
            se.description AS series_description,
            mv.name AS model_name,
            mv.status AS model_status,
            sg.id AS segmentation_id,
            sg.created_at AS segmented_at,
            nm.volume_mm3,
            nm.csa_mean_mm2,
            nm.csa_median_mm2,
            nm.csa_max_mm2,
            nm.covered_length_mm,
            nm.signal_mean,
            nm.n_slices_with_nerve,
            qc.status AS qc_status
        FROM segmentation sg
        JOIN series se ON se.id = sg.series_id
        JOIN study st ON st.id = se.study_id
        JOIN subject sub ON sub.id = st.subject_id
        JOIN model_version mv ON mv.id = sg.model_version_id
        LEFT JOIN nerve_metric nm ON nm.segmentation_id = sg.id AND nm.side = 'all'
        LEFT JOIN qc_result qc ON qc.segmentation_id = sg.id AND qc.manual_label_id IS NULL
    """
SLICE_MEASUREMENTS_BEFORE = """
        SELECT
            sub.pseudonym,
            sub.cohort,
            st.study_date,
            se.id AS series_id,
            se.status = 'superseded' AS superseded,
            mv.name AS model_name,
            sg.id AS segmentation_id,
            sm.slice_index,
            sm.csa_mm2,
            sm.centroid_x_mm,
            sm.centroid_y_mm,
            sm.centroid_z_mm,
            sm.signal_mean,
            sm.signal_sd,
            sm.n_components
        FROM slice_metric sm
        JOIN segmentation sg ON sg.id = sm.segmentation_id
        JOIN series se ON se.id = sg.series_id
        JOIN study st ON st.id = se.study_id
        JOIN subject sub ON sub.id = st.subject_id
        JOIN model_version mv ON mv.id = sg.model_version_id
    """
SLICE_MEASUREMENTS_AFTER = """
        SELECT
            sub.pseudonym,
            sub.cohort,
            st.study_date,
            se.id AS series_id,
            se.status = 'superseded' AS superseded,
            mv.name AS model_name,
            sg.id AS segmentation_id,
            sm.slice_index,
            sm.csa_mm2,
            sm.centroid_x_mm,
            sm.centroid_y_mm,
            sm.centroid_z_mm,
            sm.signal_mean,
            sm.signal_sd,
            sm.n_components
        FROM slice_metric sm
        JOIN segmentation sg ON sg.id = sm.segmentation_id
        JOIN series se ON se.id = sg.series_id
        JOIN study st ON st.id = se.study_id
        JOIN subject sub ON sub.id = st.subject_id
        JOIN model_version mv ON mv.id = sg.model_version_id
        WHERE sm.side = 'all'
"""
NEW_VIEWS: dict[str, str] = {
    "nerve_sides": """
        SELECT
            sub.pseudonym,
            sub.cohort,
            st.study_date,
            se.id AS series_id,
            se.status = 'superseded' AS superseded,
            mv.name AS model_name,
            sg.id AS segmentation_id,
            nm.side,
            nm.volume_mm3,
            nm.csa_mean_mm2,
            nm.csa_median_mm2,
            nm.csa_max_mm2,
            nm.covered_length_mm,
            nm.signal_mean,
            nm.n_slices_with_nerve,
            nm.max_pieces,
            nm.bifurcation_z_mm
        FROM nerve_metric nm
        JOIN segmentation sg ON sg.id = nm.segmentation_id
        JOIN series se ON se.id = sg.series_id
        JOIN study st ON st.id = se.study_id
        JOIN subject sub ON sub.id = st.subject_id
        JOIN model_version mv ON mv.id = sg.model_version_id
        WHERE nm.side IN ('left', 'right')
    """,
    "nerve_asymmetry": """
        SELECT
            sub.pseudonym,
            sub.cohort,
            st.study_date,
            se.id AS series_id,
            se.status = 'superseded' AS superseded,
            mv.name AS model_name,
            sg.id AS segmentation_id,
            l.csa_median_mm2 AS left_csa_median_mm2,
            r.csa_median_mm2 AS right_csa_median_mm2,
            l.volume_mm3 AS left_volume_mm3,
            r.volume_mm3 AS right_volume_mm3,
            (l.csa_median_mm2 - r.csa_median_mm2) / nullif((l.csa_median_mm2 + r.csa_median_mm2) / 2, 0)
                AS csa_asymmetry
        FROM segmentation sg
        JOIN nerve_metric l ON l.segmentation_id = sg.id AND l.side = 'left'
        JOIN nerve_metric r ON r.segmentation_id = sg.id AND r.side = 'right'
        JOIN series se ON se.id = sg.series_id
        JOIN study st ON st.id = se.study_id
        JOIN subject sub ON sub.id = st.subject_id
        JOIN model_version mv ON mv.id = sg.model_version_id
    """,
}


def upgrade() -> None:
    with op.batch_alter_table("segmentation") as batch:
        batch.add_column(
            sa.Column("uncertainty", sa.Float(), nullable=True, comment="the network's doubt, 0 (sure) to 1")
        )
        batch.add_column(
            sa.Column("slice_uncertainty", sa.JSON(), nullable=True, comment="per slice; null where it saw nothing")
        )
    with op.batch_alter_table("series") as batch:
        batch.add_column(
            sa.Column(
                "laterality", sa.String(length=1), nullable=True, comment="Laterality / ImageLaterality: R, L, B, U"
            )
        )
    side = sa.Column("side", sa.String(length=32), nullable=False, server_default="all", comment="all, left or right")
    with op.batch_alter_table("slice_metric") as batch:
        batch.add_column(side.copy())
        batch.drop_constraint("uq_slice_metric_segmentation_id_slice_index", type_="unique")
        batch.create_unique_constraint(
            "uq_slice_metric_segmentation_id_side_slice_index", ["segmentation_id", "side", "slice_index"]
        )
    with op.batch_alter_table("nerve_metric") as batch:
        batch.add_column(side.copy())
        batch.add_column(sa.Column("max_pieces", sa.Integer(), nullable=True, comment="most pieces in one slice"))
        batch.add_column(
            sa.Column("bifurcation_z_mm", sa.Float(), nullable=True, comment="RAS z where the nerve splits for good")
        )
        batch.add_column(
            sa.Column(
                "anterior_offset_mm",
                sa.Float(),
                nullable=True,
                comment="nerve centroid minus thigh centre along RAS +y (a leg's row; negative: posterior)",
            )
        )
        batch.drop_constraint("uq_nerve_metric_segmentation_id", type_="unique")
        batch.create_unique_constraint("uq_nerve_metric_segmentation_id_side", ["segmentation_id", "side"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE OR REPLACE VIEW research.nerve_measurements AS {NERVE_MEASUREMENTS_AFTER}")
        op.execute(f"CREATE OR REPLACE VIEW research.slice_measurements AS {SLICE_MEASUREMENTS_AFTER}")
        for name, body in NEW_VIEWS.items():
            op.execute(f"CREATE VIEW research.{name} AS {body}")
            op.execute(f"GRANT SELECT ON research.{name} TO {ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in reversed(list(NEW_VIEWS)):
            op.execute(f"REVOKE ALL ON research.{name} FROM {ROLE}")
            op.execute(f"DROP VIEW research.{name}")
        op.execute(f"CREATE OR REPLACE VIEW research.slice_measurements AS {SLICE_MEASUREMENTS_BEFORE}")
        op.execute(f"CREATE OR REPLACE VIEW research.nerve_measurements AS {NERVE_MEASUREMENTS_BEFORE}")
    op.execute("DELETE FROM slice_metric WHERE side <> 'all'")
    op.execute("DELETE FROM nerve_metric WHERE side <> 'all'")
    with op.batch_alter_table("nerve_metric") as batch:
        batch.drop_constraint("uq_nerve_metric_segmentation_id_side", type_="unique")
        batch.create_unique_constraint("uq_nerve_metric_segmentation_id", ["segmentation_id"])
        for column in ("anterior_offset_mm", "bifurcation_z_mm", "max_pieces", "side"):
            batch.drop_column(column)
    with op.batch_alter_table("slice_metric") as batch:
        batch.drop_constraint("uq_slice_metric_segmentation_id_side_slice_index", type_="unique")
        batch.create_unique_constraint(
            "uq_slice_metric_segmentation_id_slice_index", ["segmentation_id", "slice_index"]
        )
        batch.drop_column("side")
    with op.batch_alter_table("series") as batch:
        batch.drop_column("laterality")
    with op.batch_alter_table("segmentation") as batch:
        batch.drop_column("slice_uncertainty")
        batch.drop_column("uncertainty")
