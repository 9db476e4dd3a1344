"""Coded values stored in the database (as short strings)."""

from __future__ import annotations

from enum import StrEnum


class Cohort(StrEnum):
    CONTROL = "control"
    PATIENT = "patient"
    UNKNOWN = "unknown"


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
