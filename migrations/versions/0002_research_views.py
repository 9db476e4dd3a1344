"""research schema: pseudonymised views and the sciatic_research role (PostgreSQL only)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

The role ``sciatic_research`` is a NOLOGIN group role: sites grant it to
their staff's login roles. It may read the views of schema ``research`` and
nothing else. Roles belong to the whole PostgreSQL cluster, so the downgrade
revokes this database's grants and drops the schema but leaves the role for
other databases of the cluster. On SQLite this revision does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "sciatic_research"

# The newest non-superseded segmentation context shared by the views.
VIEWS: dict[str, str] = {
    "nerve_measurements": """
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
    """,
    "slice_measurements": """
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
    """,
    "qc_summary": """
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
            lb.failed
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
    """,
    "model_performance": """
        SELECT
            mv.id AS model_version_id,
            mv.name AS model_name,
            mv.config_name,
            mv.status AS model_status,
            mv.created_at,
            mv.promoted_at,
            count(DISTINCT sg.id) AS cases,
            count(DISTINCT lb.segmentation_id) AS labelled_cases,
            avg(lb.dice) AS mean_dice,
            avg(CASE WHEN lb.failed THEN 1.0 WHEN lb.failed IS NOT NULL THEN 0.0 END) AS failure_rate,
            avg(lb.dice) FILTER (WHERE NOT lb.failed) AS mean_dice_when_working,
            count(DISTINCT lf.segmentation_id) FILTER (WHERE lf.status = 'review') AS qc_review,
            count(DISTINCT lf.segmentation_id) FILTER (WHERE lf.status = 'fail') AS qc_fail
        FROM model_version mv
        LEFT JOIN segmentation sg ON sg.model_version_id = mv.id
        LEFT JOIN qc_result lb ON lb.segmentation_id = sg.id AND lb.manual_label_id IS NOT NULL
        LEFT JOIN qc_result lf ON lf.segmentation_id = sg.id AND lf.manual_label_id IS NULL
        GROUP BY mv.id
    """,
}


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _is_postgres():
        return
    op.execute(
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                CREATE ROLE {ROLE} NOLOGIN;
            END IF;
        END $$"""
    )
    op.execute("CREATE SCHEMA IF NOT EXISTS research")
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW research.{name} AS {body}")
    op.execute(f"GRANT USAGE ON SCHEMA research TO {ROLE}")
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA research TO {ROLE}")


def downgrade() -> None:
    if not _is_postgres():
        return
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA research FROM {ROLE}")
    op.execute(f"REVOKE ALL ON SCHEMA research FROM {ROLE}")
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW research.{name}")
    op.execute("DROP SCHEMA research")
