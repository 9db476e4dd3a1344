"""Coded values stored in the database (as short strings)."""

from __future__ import annotations

from enum import StrEnum


class Cohort(StrEnum):
    CONTROL = "control"
    PATIENT = "patient"
    UNKNOWN = "unknown"


class Side(StrEnum):
    """Which nerve a metric row describes: every nerve of the mask together, or one leg's."""

    ALL = "all"
    LEFT = "left"
    RIGHT = "right"


class SeriesStatus(StrEnum):
    RECEIVING = "receiving"  # instances indexed, waiting for the quiet period
    CONVERTED = "converted"  # volume written; ready for segmentation
    REFUSED = "refused"  # not a usable 3D volume (reason recorded)
    SUPERSEDED = "superseded"  # a later version of the same series replaced it


class InstanceState(StrEnum):
    INDEXED = "indexed"  # in the drop folder, header read
    ARCHIVING = "archiving"  # converted; the move to archive_path is recorded but may be pending
    ARCHIVED = "archived"  # moved to archive/<StudyUID>/<SeriesUID>/


class ModelStatus(StrEnum):
    CANDIDATE = "candidate"
    PRODUCTION = "production"
    RETIRED = "retired"


class TrainingDecision(StrEnum):
    RUNNING = "running"
    PROMOTED = "promoted"
    KEPT = "kept"  # challenger not better; production unchanged
    FAILED = "failed"


class QcStatus(StrEnum):
    PASS = "pass"
    REVIEW = "review"
    FAIL = "fail"


class LabelFormat(StrEnum):
    NIFTI = "nifti"
    DICOM_SEG = "dicom_seg"


class EligibilityReason(StrEnum):
    """Why a converted series is not segmented (it stays converted: it is valid DICOM)."""

    NOT_AXIAL = "not_axial"  # slices not across the leg's long axis
    TOO_FEW_SLICES = "too_few_slices"
    LOCALIZER = "localizer"  # ImageType LOCALIZER / SCOUT, or a scout-sized series
    NOT_MAGNITUDE = "not_magnitude"  # phase, real, imaginary or derived maps
    NOT_PD = "not_pd"  # the timing (TR, TE) or the description says another weighting
    BODY_PART = "body_part"  # BodyPartExamined names something other than the thigh or leg
    FORCED_OUT = "forced_out"  # the site listed the SeriesInstanceUID in SCIATIC_ELIGIBILITY_EXCLUDE


class OutboxKind(StrEnum):
    """The DICOM objects of one segmentation that go to the PACS."""

    SEG = "seg"  # the mask as DICOM SEG
    SR = "sr"  # the measurement report (TID 1500), referencing the SEG
    SC = "sc"  # the overlay picture as Secondary Capture


class OutboxStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    SENT = "sent"  # the PACS acknowledged it: never sent again
    FAILED = "failed"  # gave up after the last attempt; `sciatic outbox retry` queues it again
