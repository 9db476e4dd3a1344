"""The data folder layout: the one place that builds a path from an id, a UID or a name.

Every file the service writes lives under one of the configured directories
(``docs/configuration.md``); this module says where, for every kind of file::

    drop/                                        what arrives (scanner, `sciatic scp`)
    archive/<StudyUID>/<SeriesUID>/<SOPUID>.dcm  originals, once their series is converted
    archive/_duplicates/<id>_<name>              byte-identical second copies
    quarantine/<reason>/<id>_<name>              refused files, reason in the database
    volumes/<StudyUID>/<SeriesUID>/v<N>.nii.gz   converted series, version N
    results/<SeriesUID>/v<N>/<model>/mask.nii.gz nerve masks
    results/labels/<SeriesUID>/v<N>/<rater>-<sha>.nii.gz  imported manual labels
    results/overlays/segmentation-<id>.png       pictures; results/report.html
    results/outbox/segmentation-<id>/<kind>-<SOPUID>.dcm  DICOM SEG / SR / SC queued for the PACS
    models/<name>, models/run-<NNNN>/            installed checkpoints, training runs
    models/cards/<model name>.md                 model cards
    locks/ (beside the SQLite file)              lock files of the steps (sciatic.db.locks)

Values that come from outside (UIDs, file names, rater and model names) are
used only as single path components, and every path is checked to resolve
inside its root: a hostile header can never place a file elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sciatic.config import Settings
from sciatic.errors import InputRefusedError, ReasonCode

__all__ = ["DUPLICATES_DIR", "DataLayout", "safe_component"]

DUPLICATES_DIR = "_duplicates"
MAX_COMPONENT = 255


def safe_component(value: str, what: str) -> str:
    """``value`` when it can be one path component (no separator, not ``.``/``..``, not empty)."""
    if not value or value in {".", ".."} or "/" in value or "\\" in value or "\x00" in value:
        raise InputRefusedError(ReasonCode.UNSAFE_PATH, f"{what} {value!r} cannot be used as a file or folder name")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
        raise InputRefusedError(ReasonCode.UNSAFE_PATH, f"{what} is longer than {MAX_COMPONENT} bytes")
    return value


def _inside(root: Path, *parts: str) -> Path:
    """``root / parts``, proven to resolve inside ``root``."""
    path = root.joinpath(*parts)
    resolved_root = root.resolve()
    if not path.resolve().is_relative_to(resolved_root):
        raise InputRefusedError(ReasonCode.UNSAFE_PATH, f"{path} would leave {resolved_root}")
    return path


@dataclass(frozen=True)
class DataLayout:
    """Where each kind of file lives, for one configuration."""

    data: Path
    drop: Path
    archive: Path
    quarantine: Path
    labels: Path
    models: Path
    volumes: Path
    results: Path

    @classmethod
    def of(cls, settings: Settings) -> DataLayout:
        return cls(
            data=settings.data_dir,
            drop=settings.dir("drop"),
            archive=settings.dir("archive"),
            quarantine=settings.dir("quarantine"),
            labels=settings.dir("labels"),
            models=settings.dir("model"),
            volumes=settings.dir("volumes"),
            results=settings.dir("results"),
        )

    # ------------------------------------------------------------------ ingest

    def archived_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return _inside(
            self.archive,
            safe_component(study_uid, "StudyInstanceUID"),
            safe_component(series_uid, "SeriesInstanceUID"),
            safe_component(sop_uid, "SOPInstanceUID") + ".dcm",
        )

    def duplicate(self, row_id: int, name: str) -> Path:
        return _inside(self.archive, DUPLICATES_DIR, safe_component(f"{row_id}_{name}", "file name"))

    def quarantined(self, reason: ReasonCode, row_id: int, name: str) -> Path:
        return _inside(self.quarantine, reason.value, safe_component(f"{row_id}_{name}", "file name"))

    def volume(self, study_uid: str, series_uid: str, version: int) -> Path:
        return _inside(
            self.volumes,
            safe_component(study_uid, "StudyInstanceUID"),
            safe_component(series_uid, "SeriesInstanceUID"),
            f"v{version}.nii.gz",
        )

    # ------------------------------------------------------------------ results

    def mask(self, series_uid: str, version: int, model_name: str) -> Path:
        return _inside(
            self.results,
            safe_component(series_uid, "SeriesInstanceUID"),
            f"v{version}",
            safe_component(model_name, "model name"),
            "mask.nii.gz",
        )

    def label_mask(self, series_uid: str, version: int, rater: str, sha256: str) -> Path:
        return _inside(
            self.results,
            "labels",
            safe_component(series_uid, "SeriesInstanceUID"),
            f"v{version}",
            f"{safe_component(rater, 'rater')}-{safe_component(sha256[:12], 'sha256')}.nii.gz",
        )

    def overlay(self, segmentation_id: int) -> Path:
        return self.results / "overlays" / f"segmentation-{segmentation_id}.png"

    def outbox_object(self, segmentation_id: int, kind: str, sop_uid: str) -> Path:
        return _inside(
            self.results,
            "outbox",
            f"segmentation-{segmentation_id}",
            safe_component(f"{kind}-{sop_uid}.dcm", "outbox file name"),
        )

    def report(self) -> Path:
        return self.results / "report.html"

    # ------------------------------------------------------------------ models

    def installed_model(self, name: str) -> Path:
        return _inside(self.models, safe_component(name, "checkpoint name"))

    def training_run(self, training_run_id: int) -> Path:
        return self.models / f"run-{training_run_id:04d}"

    def model_card(self, model_name: str) -> Path:
        return _inside(self.models, "cards", safe_component(f"{model_name}.md", "model name"))
