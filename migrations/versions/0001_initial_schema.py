"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("config_name", sa.String(length=32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("checkpoint_path", sa.Text(), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("sciatic_version", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
        sa.UniqueConstraint("checkpoint_sha256", name=op.f("uq_model_version_checkpoint_sha256")),
        sa.UniqueConstraint("name", name=op.f("uq_model_version_name")),
    )
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.create_index(
            "uq_model_version_one_production",
            ["status"],
            unique=True,
            postgresql_where=sa.text("status = 'production'"),
            sqlite_where=sa.text("status = 'production'"),
        )

    op.create_table(
        "pipeline_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=True),
        sa.Column("entity_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("sciatic_version", sa.String(length=32), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.String(length=255), nullable=True, comment="Airflow run id or CLI invocation"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_event")),
    )
    with op.batch_alter_table("pipeline_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pipeline_event_occurred_at"), ["occurred_at"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("drop_path", sa.Text(), nullable=False),
        sa.Column("quarantine_path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("other_sha256", sa.String(length=64), nullable=True, comment="the indexed copy, for sop_conflict"),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=True, comment="NULL while the move is pending"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quarantine_reason"), ["reason"], unique=False)

    op.create_table(
        "subject",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pseudonym", sa.String(length=32), nullable=False),
        sa.Column("cohort", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subject")),
        sa.UniqueConstraint("pseudonym", name=op.f("uq_subject_pseudonym")),
    )
    op.create_table(
        "study",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("description", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["subject_id"], ["subject.id"], name=op.f("fk_study_subject_id_subject")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study")),
        sa.UniqueConstraint("study_instance_uid", name=op.f("uq_study_study_instance_uid")),
    )
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_study_subject_id"), ["subject_id"], unique=False)

    op.create_table(
        "training_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False, comment="cli, schedule, labels"),
        sa.Column("config_name", sa.String(length=32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("split", sa.JSON(), nullable=False, comment="series ids per part: train, val, test"),
        sa.Column("challenger_model_id", sa.Integer(), nullable=True),
        sa.Column("champion_model_id", sa.Integer(), nullable=True),
        sa.Column("challenger_metrics", sa.JSON(), nullable=True),
        sa.Column("champion_metrics", sa.JSON(), nullable=True),
        sa.Column("decision", sa.String(length=32), nullable=False),
        sa.Column("decision_detail", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["challenger_model_id"],
            ["model_version.id"],
            name=op.f("fk_training_run_challenger_model_id_model_version"),
        ),
        sa.ForeignKeyConstraint(
            ["champion_model_id"], ["model_version.id"], name=op.f("fk_training_run_champion_model_id_model_version")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_run")),
    )
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("supersedes_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(length=128), nullable=True),
        sa.Column("patient_position", sa.String(length=16), nullable=True),
        sa.Column("expected_instances", sa.Integer(), nullable=True),
        sa.Column("n_instances", sa.Integer(), nullable=False),
        sa.Column("last_instance_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("n_columns", sa.Integer(), nullable=True),
        sa.Column("n_rows", sa.Integer(), nullable=True),
        sa.Column("n_slices", sa.Integer(), nullable=True),
        sa.Column("spacing_x_mm", sa.Float(), nullable=True),
        sa.Column("spacing_y_mm", sa.Float(), nullable=True),
        sa.Column("spacing_z_mm", sa.Float(), nullable=True),
        sa.Column("affine", sa.JSON(), nullable=True, comment="4x4 RAS+ voxel-to-world matrix, mm"),
        sa.Column("orientation", sa.String(length=3), nullable=True, comment="nibabel axis codes, e.g. LPS"),
        sa.Column("volume_path", sa.Text(), nullable=True),
        sa.Column("volume_sha256", sa.String(length=64), nullable=True),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refusal_reason", sa.String(length=32), nullable=True),
        sa.Column("refusal_detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["study.id"], name=op.f("fk_series_study_id_study")),
        sa.ForeignKeyConstraint(["supersedes_id"], ["series.id"], name=op.f("fk_series_supersedes_id_series")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_series")),
        sa.UniqueConstraint("series_instance_uid", "version", name=op.f("uq_series_series_instance_uid_version")),
    )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_series_series_instance_uid"), ["series_instance_uid"], unique=False)
        batch_op.create_index(batch_op.f("ix_series_study_id"), ["study_id"], unique=False)

    op.create_table(
        "dicom_instance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=True),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("drop_path", sa.Text(), nullable=False, comment="where the file was found"),
        sa.Column("archive_path", sa.Text(), nullable=True, comment="set before the move (intent)"),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name=op.f("fk_dicom_instance_series_id_series")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dicom_instance")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_dicom_instance_sop_instance_uid")),
    )
    with op.batch_alter_table("dicom_instance", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dicom_instance_series_id"), ["series_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_dicom_instance_series_instance_uid"), ["series_instance_uid"], unique=False
        )

    op.create_table(
        "manual_label",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("rater", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("mask_path", sa.Text(), nullable=False),
        sa.Column("mask_sha256", sa.String(length=64), nullable=False),
        sa.Column("n_voxels", sa.Integer(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name=op.f("fk_manual_label_series_id_series")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manual_label")),
        sa.UniqueConstraint(
            "series_id", "rater", "source_sha256", name=op.f("uq_manual_label_series_id_rater_source_sha256")
        ),
    )
    with op.batch_alter_table("manual_label", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_manual_label_series_id"), ["series_id"], unique=False)

    op.create_table(
        "segmentation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("mask_path", sa.Text(), nullable=False),
        sa.Column("mask_sha256", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("load_seconds", sa.Float(), nullable=False),
        sa.Column("inference_seconds", sa.Float(), nullable=False),
        sa.Column("total_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_version.id"], name=op.f("fk_segmentation_model_version_id_model_version")
        ),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name=op.f("fk_segmentation_series_id_series")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segmentation")),
        sa.UniqueConstraint("series_id", "model_version_id", name=op.f("uq_segmentation_series_id_model_version_id")),
    )
    with op.batch_alter_table("segmentation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_segmentation_model_version_id"), ["model_version_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_segmentation_series_id"), ["series_id"], unique=False)

    op.create_table(
        "duplicate_file",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("drop_path", sa.Text(), nullable=False),
        sa.Column("stored_path", sa.Text(), nullable=False, comment="where the copy was moved"),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=True, comment="NULL while the move is pending"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["dicom_instance.id"], name=op.f("fk_duplicate_file_instance_id_dicom_instance")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duplicate_file")),
    )
    with op.batch_alter_table("duplicate_file", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_duplicate_file_instance_id"), ["instance_id"], unique=False)

    op.create_table(
        "nerve_metric",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("segmentation_id", sa.Integer(), nullable=False),
        sa.Column("volume_mm3", sa.Float(), nullable=False),
        sa.Column("csa_mean_mm2", sa.Float(), nullable=True),
        sa.Column("csa_median_mm2", sa.Float(), nullable=True),
        sa.Column("csa_max_mm2", sa.Float(), nullable=True),
        sa.Column("covered_length_mm", sa.Float(), nullable=False),
        sa.Column("signal_mean", sa.Float(), nullable=True),
        sa.Column("n_slices_with_nerve", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["segmentation_id"], ["segmentation.id"], name=op.f("fk_nerve_metric_segmentation_id_segmentation")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nerve_metric")),
        sa.UniqueConstraint("segmentation_id", name=op.f("uq_nerve_metric_segmentation_id")),
    )
    op.create_table(
        "qc_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("segmentation_id", sa.Integer(), nullable=False),
        sa.Column("manual_label_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("dice", sa.Float(), nullable=True),
        sa.Column("hd95_mm", sa.Float(), nullable=True),
        sa.Column("assd_mm", sa.Float(), nullable=True, comment="mean symmetric surface distance, mm"),
        sa.Column("volume_similarity", sa.Float(), nullable=True),
        sa.Column("failed", sa.Boolean(), nullable=True, comment="Dice below the failure threshold"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["manual_label_id"], ["manual_label.id"], name=op.f("fk_qc_result_manual_label_id_manual_label")
        ),
        sa.ForeignKeyConstraint(
            ["segmentation_id"], ["segmentation.id"], name=op.f("fk_qc_result_segmentation_id_segmentation")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qc_result")),
        sa.UniqueConstraint(
            "segmentation_id", "manual_label_id", name=op.f("uq_qc_result_segmentation_id_manual_label_id")
        ),
    )
    with op.batch_alter_table("qc_result", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_qc_result_segmentation_id"), ["segmentation_id"], unique=False)
        batch_op.create_index(
            "uq_qc_result_label_free",
            ["segmentation_id"],
            unique=True,
            postgresql_where=sa.text("manual_label_id IS NULL"),
            sqlite_where=sa.text("manual_label_id IS NULL"),
        )

    op.create_table(
        "slice_metric",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("segmentation_id", sa.Integer(), nullable=False),
        sa.Column("slice_index", sa.Integer(), nullable=False, comment="k in the converted volume, 0-based"),
        sa.Column("csa_mm2", sa.Float(), nullable=False, comment="cross-sectional area in the slice plane, mm²"),
        sa.Column("centroid_x_mm", sa.Float(), nullable=True, comment="RAS+, mm"),
        sa.Column("centroid_y_mm", sa.Float(), nullable=True, comment="RAS+, mm"),
        sa.Column("centroid_z_mm", sa.Float(), nullable=True, comment="RAS+, mm"),
        sa.Column("signal_mean", sa.Float(), nullable=True, comment="source signal inside the ROI"),
        sa.Column("signal_sd", sa.Float(), nullable=True),
        sa.Column("n_components", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["segmentation_id"], ["segmentation.id"], name=op.f("fk_slice_metric_segmentation_id_segmentation")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slice_metric")),
        sa.UniqueConstraint("segmentation_id", "slice_index", name=op.f("uq_slice_metric_segmentation_id_slice_index")),
    )


def downgrade() -> None:

    op.drop_table("slice_metric")
    with op.batch_alter_table("qc_result", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_qc_result_label_free",
            postgresql_where=sa.text("manual_label_id IS NULL"),
            sqlite_where=sa.text("manual_label_id IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_qc_result_segmentation_id"))

    op.drop_table("qc_result")
    op.drop_table("nerve_metric")
    with op.batch_alter_table("duplicate_file", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_duplicate_file_instance_id"))

    op.drop_table("duplicate_file")
    with op.batch_alter_table("segmentation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_segmentation_series_id"))
        batch_op.drop_index(batch_op.f("ix_segmentation_model_version_id"))

    op.drop_table("segmentation")
    with op.batch_alter_table("manual_label", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_manual_label_series_id"))

    op.drop_table("manual_label")
    with op.batch_alter_table("dicom_instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dicom_instance_series_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_dicom_instance_series_id"))

    op.drop_table("dicom_instance")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_series_study_id"))
        batch_op.drop_index(batch_op.f("ix_series_series_instance_uid"))

    op.drop_table("series")
    op.drop_table("training_run")
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_subject_id"))

    op.drop_table("study")
    op.drop_table("subject")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_reason"))

    op.drop_table("quarantine")
    with op.batch_alter_table("pipeline_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_event_occurred_at"))

    op.drop_table("pipeline_event")
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_model_version_one_production",
            postgresql_where=sa.text("status = 'production'"),
            sqlite_where=sa.text("status = 'production'"),
        )

    op.drop_table("model_version")
