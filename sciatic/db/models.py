"""The data model: SQLAlchemy 2 typed ORM.

Migrations in ``migrations/versions`` create exactly this schema (a test runs
Alembic's autogenerate against a migrated database and expects no difference).
Add a column here only together with a new migration.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sciatic.db.enums import (
    Cohort,
    EligibilityReason,
    InstanceState,
    LabelFormat,
    ModelStatus,
    OutboxKind,
    OutboxStatus,
    QcStatus,
    SeriesStatus,
    Side,
    TrainingDecision,
)
from sciatic.db.types import StrEnumType
from sciatic.errors import ReasonCode

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UID = String(64)  # DICOM UIDs are at most 64 characters
SHA256 = String(64)
PATH = Text


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Subject(Base):
    """A person, known only by a keyed pseudonym of their PatientID."""

    __tablename__ = "subject"
    id: Mapped[int] = mapped_column(primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(32), unique=True)
    cohort: Mapped[Cohort] = mapped_column(StrEnumType(Cohort), default=Cohort.UNKNOWN)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="subject")


class Study(Base):
    __tablename__ = "study"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_date: Mapped[dt.date | None] = mapped_column(Date)
    description: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    subject: Mapped[Subject] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    """One version of one DICOM series' volume.

    An instance arriving after conversion creates a new version (``version``
    + 1) whose ``supersedes_id`` points at the old row; the old row and its
    results are kept with status ``superseded``.
    """

    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("series_instance_uid", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    version: Mapped[int] = mapped_column(default=1)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("series.id"))
    status: Mapped[SeriesStatus] = mapped_column(StrEnumType(SeriesStatus), default=SeriesStatus.RECEIVING)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(String(128))
    patient_position: Mapped[str | None] = mapped_column(String(16))
    expected_instances: Mapped[int | None] = mapped_column(Integer)
    n_instances: Mapped[int] = mapped_column(default=0)
    last_instance_at: Mapped[dt.datetime | None] = mapped_column()
    # geometry of the converted volume (docs/conventions.md)
    n_columns: Mapped[int | None] = mapped_column(Integer)
    n_rows: Mapped[int | None] = mapped_column(Integer)
    n_slices: Mapped[int | None] = mapped_column(Integer)
    spacing_x_mm: Mapped[float | None] = mapped_column(Float)
    spacing_y_mm: Mapped[float | None] = mapped_column(Float)
    spacing_z_mm: Mapped[float | None] = mapped_column(Float)
    affine: Mapped[list[Any] | None] = mapped_column(comment="4x4 RAS+ voxel-to-world matrix, mm")
    orientation: Mapped[str | None] = mapped_column(String(3), comment="nibabel axis codes, e.g. LPS")
    volume_path: Mapped[str | None] = mapped_column(PATH)
    volume_sha256: Mapped[str | None] = mapped_column(SHA256)
    converted_at: Mapped[dt.datetime | None] = mapped_column()
    refusal_reason: Mapped[ReasonCode | None] = mapped_column(StrEnumType(ReasonCode))
    refusal_detail: Mapped[str | None] = mapped_column(Text)
    # acquisition facts the eligibility rules read (docs/eligibility.md)
    repetition_time_ms: Mapped[float | None] = mapped_column(Float)
    echo_time_ms: Mapped[float | None] = mapped_column(Float)
    body_part: Mapped[str | None] = mapped_column(String(64))
    laterality: Mapped[str | None] = mapped_column(String(1), comment="Laterality / ImageLaterality: R, L, B, U")
    eligible: Mapped[bool | None] = mapped_column(comment="segmented only when true (NULL: not assessed)")
    eligibility_reason: Mapped[EligibilityReason | None] = mapped_column(StrEnumType(EligibilityReason))
    eligibility_detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")


class DicomInstance(Base):
    """One SOP instance, indexed once (its first copy); later copies are duplicates."""

    __tablename__ = "dicom_instance"
    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    series_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    study_instance_uid: Mapped[str] = mapped_column(UID)
    series_id: Mapped[int | None] = mapped_column(ForeignKey("series.id"), index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(SHA256)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    drop_path: Mapped[str] = mapped_column(PATH, comment="where the file was found")
    archive_path: Mapped[str | None] = mapped_column(PATH, comment="set before the move (intent)")
    state: Mapped[InstanceState] = mapped_column(StrEnumType(InstanceState), default=InstanceState.INDEXED)
    indexed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    arrived_at: Mapped[dt.datetime | None] = mapped_column(
        comment="when the file landed in the drop folder (its inode change time); NULL: see indexed_at"
    )
    archived_at: Mapped[dt.datetime | None] = mapped_column()


class DuplicateFile(Base):
    """A second copy of an already indexed instance (same SOP UID, same bytes)."""

    __tablename__ = "duplicate_file"
    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("dicom_instance.id"), index=True)
    sha256: Mapped[str] = mapped_column(SHA256)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    drop_path: Mapped[str] = mapped_column(PATH)
    stored_path: Mapped[str] = mapped_column(PATH, comment="where the copy was moved")
    moved_at: Mapped[dt.datetime | None] = mapped_column(comment="NULL while the move is pending")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Quarantine(Base):
    """A file that could not be used, moved aside with the reason."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(primary_key=True)
    drop_path: Mapped[str] = mapped_column(PATH)
    quarantine_path: Mapped[str] = mapped_column(PATH)
    sha256: Mapped[str | None] = mapped_column(SHA256)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[ReasonCode] = mapped_column(StrEnumType(ReasonCode), index=True)
    detail: Mapped[str] = mapped_column(Text)
    sop_instance_uid: Mapped[str | None] = mapped_column(UID)
    series_instance_uid: Mapped[str | None] = mapped_column(UID)
    other_sha256: Mapped[str | None] = mapped_column(SHA256, comment="the indexed copy, for sop_conflict")
    moved_at: Mapped[dt.datetime | None] = mapped_column(comment="NULL while the move is pending")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """A trained checkpoint in the registry. At most one is ``production``."""

    __tablename__ = "model_version"
    __table_args__ = (
        Index(
            "uq_model_version_one_production",
            "status",
            unique=True,
            postgresql_where=text("status = 'production'"),
            sqlite_where=text("status = 'production'"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    config_name: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column()
    checkpoint_path: Mapped[str] = mapped_column(PATH)
    checkpoint_sha256: Mapped[str] = mapped_column(SHA256, unique=True)
    status: Mapped[ModelStatus] = mapped_column(StrEnumType(ModelStatus), default=ModelStatus.CANDIDATE)
    metrics: Mapped[dict[str, Any] | None] = mapped_column()
    sciatic_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[dt.datetime | None] = mapped_column()
    retired_at: Mapped[dt.datetime | None] = mapped_column()
    origin: Mapped[str | None] = mapped_column(Text, comment="a training run, or the file it was imported from")
    card_path: Mapped[str | None] = mapped_column(PATH, comment="its model card (Markdown)")


class TrainingRun(Base):
    """One training of a challenger and the promotion decision that followed."""

    __tablename__ = "training_run"
    id: Mapped[int] = mapped_column(primary_key=True)
    trigger: Mapped[str] = mapped_column(String(32), comment="cli, schedule, labels")
    config_name: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column()
    seed: Mapped[int] = mapped_column(Integer)
    split: Mapped[dict[str, Any]] = mapped_column(comment="series ids per part: train, val, test")
    challenger_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    champion_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    initial_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_version.id"), comment="the weights training started from (fine-tuning); NULL: from scratch"
    )
    challenger_metrics: Mapped[dict[str, Any] | None] = mapped_column()
    champion_metrics: Mapped[dict[str, Any] | None] = mapped_column()
    dice_difference: Mapped[float | None] = mapped_column(
        Float, comment="mean per-series test Dice, challenger - champion"
    )
    dice_difference_low: Mapped[float | None] = mapped_column(Float, comment="its paired bootstrap interval: low")
    dice_difference_high: Mapped[float | None] = mapped_column(Float, comment="its paired bootstrap interval: high")
    decision: Mapped[TrainingDecision] = mapped_column(StrEnumType(TrainingDecision), default=TrainingDecision.RUNNING)
    decision_detail: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column()


class Segmentation(Base):
    """The mask one model version produced for one series version."""

    __tablename__ = "segmentation"
    __table_args__ = (UniqueConstraint("series_id", "model_version_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"), index=True)
    mask_path: Mapped[str] = mapped_column(PATH)
    mask_sha256: Mapped[str] = mapped_column(SHA256)
    uncertainty: Mapped[float | None] = mapped_column(Float, comment="the network's doubt, 0 (sure) to 1")
    slice_uncertainty: Mapped[list[Any] | None] = mapped_column(comment="per slice; null where it saw nothing")
    image_snr: Mapped[float | None] = mapped_column(
        Float, comment="the segmented image's signal-to-noise ratio, estimated from the image (sciatic.imaging.noise)"
    )
    device: Mapped[str] = mapped_column(String(32))
    batch_size: Mapped[int] = mapped_column(Integer)
    load_seconds: Mapped[float] = mapped_column(Float)
    inference_seconds: Mapped[float] = mapped_column(Float)
    total_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SliceMetric(Base):
    __tablename__ = "slice_metric"
    __table_args__ = (UniqueConstraint("segmentation_id", "side", "slice_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    segmentation_id: Mapped[int] = mapped_column(ForeignKey("segmentation.id"))
    side: Mapped[Side] = mapped_column(
        StrEnumType(Side), default=Side.ALL, server_default="all", comment="all, left or right"
    )
    slice_index: Mapped[int] = mapped_column(Integer, comment="k in the converted volume, 0-based")
    csa_mm2: Mapped[float] = mapped_column(Float, comment="cross-sectional area in the slice plane, mm²")
    centroid_x_mm: Mapped[float | None] = mapped_column(Float, comment="RAS+, mm")
    centroid_y_mm: Mapped[float | None] = mapped_column(Float, comment="RAS+, mm")
    centroid_z_mm: Mapped[float | None] = mapped_column(Float, comment="RAS+, mm")
    signal_mean: Mapped[float | None] = mapped_column(Float, comment="source signal inside the ROI")
    signal_sd: Mapped[float | None] = mapped_column(Float)
    n_components: Mapped[int] = mapped_column(Integer)


class NerveMetric(Base):
    __tablename__ = "nerve_metric"
    __table_args__ = (UniqueConstraint("segmentation_id", "side"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    segmentation_id: Mapped[int] = mapped_column(ForeignKey("segmentation.id"))
    side: Mapped[Side] = mapped_column(
        StrEnumType(Side), default=Side.ALL, server_default="all", comment="all, left or right"
    )
    volume_mm3: Mapped[float] = mapped_column(Float)
    csa_mean_mm2: Mapped[float | None] = mapped_column(Float)
    csa_median_mm2: Mapped[float | None] = mapped_column(Float)
    csa_max_mm2: Mapped[float | None] = mapped_column(Float)
    covered_length_mm: Mapped[float] = mapped_column(Float)
    signal_mean: Mapped[float | None] = mapped_column(Float)
    n_slices_with_nerve: Mapped[int] = mapped_column(Integer)
    n_components_3d: Mapped[int | None] = mapped_column(Integer, comment="26-connected pieces of the 3D mask")
    max_pieces: Mapped[int | None] = mapped_column(Integer, comment="most pieces in one slice")
    bifurcation_z_mm: Mapped[float | None] = mapped_column(Float, comment="RAS z where the nerve splits for good")
    anterior_offset_mm: Mapped[float | None] = mapped_column(
        Float, comment="nerve centroid minus thigh centre along RAS +y (a leg's row; negative: posterior)"
    )


class ManualLabel(Base):
    """A hand-drawn nerve mask of one series version, by one rater."""

    __tablename__ = "manual_label"
    __table_args__ = (UniqueConstraint("series_id", "rater", "source_sha256"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    rater: Mapped[str] = mapped_column(String(64))
    format: Mapped[LabelFormat] = mapped_column(StrEnumType(LabelFormat))
    source_path: Mapped[str] = mapped_column(PATH)
    source_sha256: Mapped[str] = mapped_column(SHA256)
    mask_path: Mapped[str] = mapped_column(PATH)
    mask_sha256: Mapped[str] = mapped_column(SHA256)
    n_voxels: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class QcResult(Base):
    """QC of a segmentation: label-free flags (no label) or agreement with one label."""

    __tablename__ = "qc_result"
    __table_args__ = (
        UniqueConstraint("segmentation_id", "manual_label_id"),
        Index(
            "uq_qc_result_label_free",
            "segmentation_id",
            unique=True,
            postgresql_where=text("manual_label_id IS NULL"),
            sqlite_where=text("manual_label_id IS NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    segmentation_id: Mapped[int] = mapped_column(ForeignKey("segmentation.id"), index=True)
    manual_label_id: Mapped[int | None] = mapped_column(ForeignKey("manual_label.id"))
    status: Mapped[QcStatus] = mapped_column(StrEnumType(QcStatus))
    flags: Mapped[list[Any]] = mapped_column()
    dice: Mapped[float | None] = mapped_column(Float)
    hd95_mm: Mapped[float | None] = mapped_column(Float)
    assd_mm: Mapped[float | None] = mapped_column(Float, comment="mean symmetric surface distance, mm")
    volume_similarity: Mapped[float | None] = mapped_column(Float)
    failed: Mapped[bool | None] = mapped_column(Boolean, comment="Dice below the failure threshold")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Outbox(Base):
    """A DICOM object (SEG, SR, SC) of one segmentation on its way to a PACS node: the durable send queue."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("segmentation_id", "kind", "destination"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    segmentation_id: Mapped[int] = mapped_column(ForeignKey("segmentation.id"), index=True)
    kind: Mapped[OutboxKind] = mapped_column(StrEnumType(OutboxKind))
    file_path: Mapped[str] = mapped_column(PATH)
    file_sha256: Mapped[str] = mapped_column(SHA256)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    destination: Mapped[str] = mapped_column(String(128), comment="AE_TITLE@host:port")
    status: Mapped[OutboxStatus] = mapped_column(StrEnumType(OutboxStatus), default=OutboxStatus.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow, comment="not sent before this time")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(comment="when the PACS acknowledged it")


class PipelineEvent(Base):
    """Audit trail: what happened to what, when, by which step and version."""

    __tablename__ = "pipeline_event"
    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    step: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str | None] = mapped_column(String(32))
    entity_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any] | None] = mapped_column()
    sciatic_version: Mapped[str] = mapped_column(String(32))
    hostname: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(255), comment="Airflow run id or CLI invocation")
