"""Manual label import: masks drawn by research staff, matched to their series.

A label is ``<SeriesInstanceUID>.nii.gz`` (or ``.nii``), or
``<SeriesInstanceUID>__<rater>.nii.gz`` when several raters label a series,
anywhere under the labels folder; DICOM SEG objects (``*.dcm``) are matched
through the series they reference. The label's grid must be the series
volume's (shape, and affine within tolerance): a mismatch is refused with a
reason, never resampled. An imported label is copied (binarised, with the
volume's exact affine) under ``results/labels/`` and recorded once per
(series, rater, file content); the source file stays where staff put it.
A label whose series has not arrived yet waits for a later pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select

from sciatic.config import Settings
from sciatic.db import audit, queries
from sciatic.db.enums import LabelFormat
from sciatic.db.locks import named_lock
from sciatic.db.models import ManualLabel, Quarantine, utcnow
from sciatic.db.session import session_scope
from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.imaging.volume import Volume, check_same_grid, read_mask, read_volume, write_volume
from sciatic.layout import DataLayout
from sciatic.storage import sha256_file

log = logging.getLogger(__name__)
STEP = "labels"
DEFAULT_RATER = "rater1"
RATER_SEPARATOR = "__"
NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class LabelReport:
    imported: list[int] = field(default_factory=list)
    already_known: int = 0
    waiting: list[str] = field(default_factory=list)  # files whose series has not been converted yet
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def summary(self) -> str:
        return (
            f"imported {len(self.imported)} labels, {self.already_known} already known, "
            f"{len(self.waiting)} waiting for their series, {len(self.refused)} refused"
        )


def parse_name(path: Path) -> tuple[str, str] | None:
    """(SeriesInstanceUID, rater) from a NIfTI label's file name, or None when it is not one."""
    name = path.name
    suffix = next((s for s in NIFTI_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        return None
    stem = name[: -len(suffix)]
    uid, _, rater = stem.partition(RATER_SEPARATOR)
    return uid, (rater or DEFAULT_RATER)


def import_labels(settings: Settings, engine: Engine) -> LabelReport:
    """One pass over the labels folder (passes take turns: a named lock)."""
    with named_lock(engine, STEP):
        return _import_labels(settings, engine)


def _import_labels(settings: Settings, engine: Engine) -> LabelReport:
    report = LabelReport()
    root = DataLayout.of(settings).labels
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            _import_one(settings, engine, path, report)
        except InputRefusedError as exc:
            report.refused.append((str(path), exc.reason.value))
            _record_refusal(engine, path, exc)
    log.info("labels: %s", report.summary())
    return report


def _identify(path: Path) -> tuple[str, str, LabelFormat] | None:
    """(SeriesInstanceUID, rater, format) of a label file; None for files that are not labels."""
    parsed = parse_name(path)
    if parsed is not None:
        return (*parsed, LabelFormat.NIFTI)
    if path.suffix.lower() != ".dcm":
        return None  # notes, screenshots: left alone
    from sciatic.dicom.seg import seg_reference

    reference = seg_reference(path)
    if not reference.referenced_series_instance_uid:
        raise InputRefusedError(ReasonCode.UNMATCHED_LABEL, f"{path.name} references no series")
    rater = "".join(c if c.isalnum() or c in "-_" else "_" for c in (reference.content_creator or "")).strip("_")
    return reference.referenced_series_instance_uid, rater or DEFAULT_RATER, LabelFormat.DICOM_SEG


def _read_label(path: Path, kind: LabelFormat, series_id: int, engine: Engine) -> Volume:
    """The label's mask with the affine it declares (checked against the volume's grid by the caller)."""
    if kind is LabelFormat.DICOM_SEG:
        from sciatic.dicom.seg import read_seg

        with session_scope(engine) as session:
            sources = queries.source_files(session, series_id)
        return read_seg(path, sources)
    return read_mask(path)


def _import_one(settings: Settings, engine: Engine, path: Path, report: LabelReport) -> None:
    from sciatic.imaging.volume import Volume

    identified = _identify(path)
    if identified is None:
        return
    series_uid, rater, kind = identified
    digest = sha256_file(path)
    with session_scope(engine) as session:
        series = queries.current_series(session, series_uid)
        if series is None:
            report.waiting.append(str(path))
            return
        known = session.scalars(
            select(ManualLabel.id).where(
                ManualLabel.series_id == series.id, ManualLabel.rater == rater, ManualLabel.source_sha256 == digest
            )
        ).first()
        if known is not None:
            report.already_known += 1
            return
        assert series.volume_path is not None
        series_id, volume_path, version = series.id, series.volume_path, series.version
    label = _read_label(path, kind, series_id, engine)
    volume = read_volume(volume_path)
    check_same_grid(label.shape, label.affine, volume.shape, volume.affine, names=("label", "series volume"))
    mask = (np.asarray(label.data) > 0).astype(np.uint8)
    target = DataLayout.of(settings).label_mask(series_uid, version, rater, digest)
    mask_sha = write_volume(Volume(mask, volume.affine), target)
    with session_scope(engine) as session:
        row = ManualLabel(
            series_id=series_id,
            rater=rater,
            format=kind,
            source_path=str(path),
            source_sha256=digest,
            mask_path=str(target),
            mask_sha256=mask_sha,
            n_voxels=int(mask.sum()),
        )
        session.add(row)
        session.flush()
        audit.record(session, STEP, "imported", "manual_label", row.id, series_id=series_id, rater=rater)
        report.imported.append(row.id)


def _record_refusal(engine: Engine, path: Path, exc: InputRefusedError) -> None:
    """Record a refused label once per file content; the file stays in place for staff to fix."""
    digest = sha256_file(path)
    with session_scope(engine) as session:
        seen = session.scalars(
            select(Quarantine.id).where(Quarantine.sha256 == digest, Quarantine.reason == exc.reason)
        ).first()
        if seen is None:
            session.add(
                Quarantine(
                    drop_path=str(path),
                    quarantine_path=str(path),
                    sha256=digest,
                    size_bytes=path.stat().st_size,
                    reason=exc.reason,
                    detail=exc.detail,
                    moved_at=utcnow(),  # nothing to move: it stays for staff to fix
                )
            )
    log.warning("label %s refused: %s: %s", path, exc.reason.value, exc.detail)
