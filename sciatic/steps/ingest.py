"""One ingest pass: drop folder -> indexed instances -> complete series -> NIfTI volumes.

Nothing is lost. Every file found in the drop folder ends in exactly one of
three places, each recorded in the database:

- archived (``archive/<StudyUID>/<SeriesUID>/``) once its series is converted
  (or refused: a refused series is valid DICOM, kept with its reason);
- recorded as a duplicate (same SOP Instance UID, same bytes) and moved to
  ``archive/_duplicates/``;
- quarantined with a reason code (not DICOM, truncated, not MR, a SOP UID
  seen with other bytes, a symlink, too large, an abandoned partial file).

Every file move is recorded in the database *before* it happens and marked
done after, and each pass starts by finishing moves a crash interrupted, so a
pass killed at any line and run again converges to the same state. Passes are
serialised by a database lock (PostgreSQL advisory lock; a file lock beside
the SQLite file), so two passes never handle the same file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISFIFO, S_ISLNK, S_ISREG, S_ISSOCK

import numpy as np
from nibabel.orientations import aff2axcodes
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from sciatic.config import Settings
from sciatic.db import audit
from sciatic.db.enums import Cohort, EligibilityReason, InstanceState, SeriesStatus
from sciatic.db.locks import named_lock
from sciatic.db.models import DicomInstance, DuplicateFile, Quarantine, Series, Study, Subject, utcnow
from sciatic.db.pseudonym import pseudonymise
from sciatic.db.session import session_scope
from sciatic.dicom import eligibility
from sciatic.dicom.convert import load_volume
from sciatic.dicom.scan import DicomHeader, read_header
from sciatic.dicom.series import CompletenessState, SeriesPlan, check_completeness, plan_series
from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.faults import crash_point
from sciatic.imaging.volume import Volume, write_volume
from sciatic.layout import DataLayout
from sciatic.storage import move_file, sha256_file

log = logging.getLogger(__name__)

STEP = "ingest"
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".filepart", "~")
ABANDONED_AFTER_SECONDS = 24 * 3600  # a temporary file untouched this long is quarantined
INCOMPLETE_GIVE_UP_FACTOR = 30  # convert anyway after quiet period x this, noting the shortfall
BATCH = 200  # files per database transaction while indexing
READ_WHOLE_FILE_BYTES = 64 * 1024**2  # smaller files are hashed and parsed from one read
COHORT_PATTERN = re.compile(r"\bcohort\s*=\s*(control|patient)\b", re.IGNORECASE)


@dataclass
class IngestReport:
    """What one pass did; ``skipped_busy`` when another pass held the lock."""

    indexed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    still_writing: int = 0
    converted: list[int] = field(default_factory=list)  # series ids with a new volume
    refused: list[int] = field(default_factory=list)
    superseded: list[int] = field(default_factory=list)
    waiting_series: int = 0
    recovered_moves: int = 0
    removed_leftovers: int = 0  # temporary files of writes a crash interrupted
    skipped_busy: bool = False

    def summary(self) -> str:
        if self.skipped_busy:
            return "another ingest pass is running; this one did nothing"
        return (
            f"indexed {self.indexed} files, {self.duplicates} duplicates, {self.quarantined} quarantined, "
            f"{self.still_writing} still being written; converted {len(self.converted)} series "
            f"({len(self.superseded)} superseding an older version), refused {len(self.refused)}, "
            f"{self.waiting_series} waiting for more instances"
        )


def run_pass(settings: Settings, engine: Engine, now: float | None = None) -> IngestReport:
    """One complete pass; safe to run at any time, any number of times."""
    report = IngestReport()
    with named_lock(engine, STEP, wait=False) as acquired:
        if not acquired:
            report.skipped_busy = True
            return report
        report.recovered_moves = finish_pending_moves(engine)
        report.removed_leftovers = remove_write_leftovers(DataLayout.of(settings).volumes)
        index_drop_folder(settings, engine, time.time() if now is None else now, report)
        convert_quiet_series(settings, engine, time.time() if now is None else now, report)
    log.info("ingest: %s", report.summary())
    return report


# --------------------------------------------------------------------------- moves


def finish_pending_moves(engine: Engine) -> int:
    """Complete every move recorded before a crash; return how many were finished."""
    done = 0
    with session_scope(engine) as session:
        for row in session.scalars(select(Quarantine).where(Quarantine.moved_at.is_(None))):
            if _move(Path(row.drop_path), Path(row.quarantine_path)):
                row.moved_at = utcnow()
                done += 1
        for dup in session.scalars(select(DuplicateFile).where(DuplicateFile.moved_at.is_(None))):
            if _move(Path(dup.drop_path), Path(dup.stored_path)):
                dup.moved_at = utcnow()
                done += 1
        for inst in session.scalars(select(DicomInstance).where(DicomInstance.state == InstanceState.ARCHIVING)):
            assert inst.archive_path is not None
            if _move(Path(inst.drop_path), Path(inst.archive_path)):
                inst.state = InstanceState.ARCHIVED
                inst.archived_at = utcnow()
                done += 1
    crash_point("moves finished")
    return done


def _move(source: Path, destination: Path) -> bool:
    """One recorded move; a file that cannot be moved now stays recorded, is left in place and retried."""
    try:
        return move_file(source, destination)
    except OSError as exc:
        log.warning("cannot move %s to %s (%s); it stays recorded and is retried next pass", source, destination, exc)
        return False


def remove_write_leftovers(root: Path) -> int:
    """Delete the hidden temporary files that interrupted atomic writes left under ``root``.

    Only ingest writes volumes, and it holds the pass lock, so every such file
    under the volumes folder is a leftover of a crash.
    """
    removed = 0
    for leftover in root.rglob(".*.tmp"):
        if leftover.is_file() and not leftover.is_symlink():
            leftover.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes under %s", removed, root)
    return removed


# --------------------------------------------------------------------------- indexing


@dataclass(frozen=True)
class _Found:
    path: Path
    size: int
    mtime: float
    arrived: float  # inode change time, never later than the pass: when the file landed here


def _is_temporary(name: str) -> bool:
    return name.startswith(".") or name.endswith(TEMPORARY_SUFFIXES)


def _walk(drop: Path) -> Iterator[Path]:
    """Every entry under ``drop`` that is not a directory; symlinks are yielded, never followed."""
    for root, dirs, files in os.walk(drop, followlinks=False):
        base = Path(root)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                yield base / name
        dirs[:] = sorted(d for d in dirs if not (base / d).is_symlink())
        for name in sorted(files):
            yield base / name


def index_drop_folder(settings: Settings, engine: Engine, now: float, report: IngestReport) -> None:
    drop = DataLayout.of(settings).drop
    with session_scope(engine) as session:
        known = set(
            session.scalars(select(DicomInstance.drop_path).where(DicomInstance.state == InstanceState.INDEXED))
        )
        # recorded but not moved yet (it could not be): not examined again
        known |= set(session.scalars(select(Quarantine.drop_path).where(Quarantine.moved_at.is_(None))))
        known |= set(session.scalars(select(DuplicateFile.drop_path).where(DuplicateFile.moved_at.is_(None))))
    batch: list[tuple[_Found, DicomHeader | InputRefusedError, str | None]] = []
    for found_path in _walk(drop):
        path = _with_a_storable_name(engine, drop, found_path)
        if path is None or str(path) in known:
            continue
        outcome = _examine(settings, path, now, report)
        if outcome is not None:
            batch.append(outcome)
        if len(batch) >= BATCH:
            _record_batch(settings, engine, batch, report)
            batch = []
    if batch:
        _record_batch(settings, engine, batch, report)


def _with_a_storable_name(engine: Engine, drop: Path, path: Path) -> Path | None:
    """``path``, or the name it was given because its bytes are not UTF-8 (None when it vanished).

    Databases store text, and a name that is not UTF-8 cannot be stored as it
    is: the file is renamed in the drop folder (top level, a name derived from
    the original bytes) before anything else, and the rename is in the audit trail.
    """
    try:
        str(path).encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    raw = os.fsencode(path)
    readable = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.name.encode("utf-8", "replace").decode())
    target = drop / f"renamed-{hashlib.sha256(raw).hexdigest()[:16]}-{readable[-64:]}"
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    with session_scope(engine) as session:
        original = raw.decode("utf-8", "backslashreplace")
        audit.record(session, STEP, "renamed", detail=f"name is not UTF-8: {original!r}", to=str(target))
    log.warning("renamed %r (not UTF-8) to %s", raw, target)
    return target


def _examine(
    settings: Settings, path: Path, now: float, report: IngestReport
) -> tuple[_Found, DicomHeader | InputRefusedError, str | None] | None:
    """Read one entry: (file, header or refusal, sha256), or None when it is not ready yet."""
    try:
        stat = path.lstat()
    except FileNotFoundError:  # removed by its writer since the listing
        return None
    found = _Found(path, stat.st_size, stat.st_mtime, min(stat.st_ctime, now))
    if S_ISLNK(stat.st_mode):
        target = os.fsencode(os.readlink(path)).decode("utf-8", "backslashreplace")
        return found, InputRefusedError(ReasonCode.UNSAFE_PATH, f"symbolic link to {target} is not followed"), None
    if not S_ISREG(stat.st_mode):
        kind = "FIFO" if S_ISFIFO(stat.st_mode) else "socket" if S_ISSOCK(stat.st_mode) else "device or special file"
        return found, InputRefusedError(ReasonCode.NOT_A_FILE, f"a {kind}, not a regular file: never opened"), None
    age = now - stat.st_mtime
    if _is_temporary(path.name):
        if age < ABANDONED_AFTER_SECONDS:
            report.still_writing += 1
            return None
        detail = f"temporary file untouched for {age / 3600:.0f} h: its writer gave up"
        return found, InputRefusedError(ReasonCode.ABANDONED_TEMPORARY, detail), None
    if age < settings.file_settle_seconds:
        report.still_writing += 1
        return None
    if stat.st_size > settings.max_file_bytes:
        detail = f"{stat.st_size} bytes is over the limit of {settings.max_file_bytes} (SCIATIC_MAX_FILE_BYTES)"
        return found, InputRefusedError(ReasonCode.TOO_LARGE, detail), None
    try:
        digest, data = _hash(path, stat.st_size)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return found, InputRefusedError(ReasonCode.UNREADABLE_FILE, f"cannot be read: {exc.strerror or exc}"), None
    header: DicomHeader | InputRefusedError
    try:
        header = read_header(path, data, fast=settings.fast_header_reader)  # the bytes just hashed, if kept
    except InputRefusedError as exc:
        header = exc
    after = path.lstat()
    if (after.st_size, after.st_mtime) != (stat.st_size, stat.st_mtime):
        report.still_writing += 1  # changed while we read it: next pass
        return None
    return found, header, digest


def _hash(path: Path, size: int) -> tuple[str, bytes | None]:
    """The file's sha256, and its bytes when it is small enough to keep (the header is parsed from them)."""
    if size > READ_WHOLE_FILE_BYTES:
        return sha256_file(path), None
    with open(path, "rb") as handle:
        data = handle.read()
    return hashlib.sha256(data).hexdigest(), data


def _record_batch(
    settings: Settings,
    engine: Engine,
    batch: list[tuple[_Found, DicomHeader | InputRefusedError, str | None]],
    report: IngestReport,
) -> None:
    """Index, de-duplicate or quarantine a batch in one transaction; then do the recorded moves."""
    with session_scope(engine) as session:
        uids = [h.sop_instance_uid for _, h, _ in batch if isinstance(h, DicomHeader)]
        rows = session.execute(
            select(DicomInstance.sop_instance_uid, DicomInstance.sha256, DicomInstance.id).where(
                DicomInstance.sop_instance_uid.in_(uids)
            )
        ).all()
        existing = {uid: sha for uid, sha, _ in rows}
        ids = {uid: row_id for uid, _, row_id in rows}
        new_rows: list[dict[str, object]] = []  # instances new in this batch, inserted in one statement
        for found, header, digest in batch:
            if isinstance(header, InputRefusedError):
                _quarantine(session, settings, found, digest, header.reason, header.detail)
                report.quarantined += 1
                continue
            assert digest is not None
            known_sha = existing.get(header.sop_instance_uid)
            if known_sha is None:
                new_rows.append(
                    {
                        "sop_instance_uid": header.sop_instance_uid,
                        "sop_class_uid": header.sop_class_uid,
                        "series_instance_uid": header.series_instance_uid,
                        "study_instance_uid": header.study_instance_uid,
                        "instance_number": header.instance_number,
                        "sha256": digest,
                        "size_bytes": found.size,
                        "drop_path": str(found.path),
                        "arrived_at": dt.datetime.fromtimestamp(found.arrived, dt.UTC),
                    }
                )
                existing[header.sop_instance_uid] = digest
                report.indexed += 1
            elif known_sha == digest:
                if header.sop_instance_uid not in ids:  # a copy of an instance new in this batch
                    _insert_instances(session, new_rows)
                    new_rows = []
                    ids[header.sop_instance_uid] = session.scalars(
                        select(DicomInstance.id).where(DicomInstance.sop_instance_uid == header.sop_instance_uid)
                    ).one()
                duplicate = DuplicateFile(
                    instance_id=ids[header.sop_instance_uid],
                    sha256=digest,
                    size_bytes=found.size,
                    drop_path=str(found.path),
                    stored_path="",
                )
                session.add(duplicate)
                session.flush()  # the row id makes the stored name unique
                duplicate.stored_path = str(DataLayout.of(settings).duplicate(duplicate.id, found.path.name))
                report.duplicates += 1
            else:
                detail = (
                    f"SOP Instance UID {header.sop_instance_uid} was already indexed with sha256 {known_sha}; "
                    f"this copy has different bytes ({digest})"
                )
                _quarantine(
                    session,
                    settings,
                    found,
                    digest,
                    ReasonCode.SOP_CONFLICT,
                    detail,
                    sop_uid=header.sop_instance_uid,
                    series_uid=header.series_instance_uid,
                    other_sha=known_sha,
                )
                report.quarantined += 1
        _insert_instances(session, new_rows)
        audit.record(session, STEP, "indexed_batch", files=len(batch))
    crash_point("batch recorded")
    finish_pending_moves(engine)


def _insert_instances(session: Session, rows: list[dict[str, object]]) -> None:
    """Insert new instances in one executemany (column defaults apply: state INDEXED, indexed_at now)."""
    if rows:
        session.execute(insert(DicomInstance), rows)


def _quarantine(
    session: Session,
    settings: Settings,
    found: _Found,
    digest: str | None,
    reason: ReasonCode,
    detail: str,
    sop_uid: str | None = None,
    series_uid: str | None = None,
    other_sha: str | None = None,
) -> None:
    row = Quarantine(
        drop_path=str(found.path),
        quarantine_path="",
        sha256=digest,
        size_bytes=found.size,
        reason=reason,
        detail=detail,
        sop_instance_uid=sop_uid,
        series_instance_uid=series_uid,
        other_sha256=other_sha,
    )
    session.add(row)
    session.flush()  # the row id makes the quarantined name unique
    row.quarantine_path = str(DataLayout.of(settings).quarantined(reason, row.id, found.path.name))
    log.warning("quarantined %s: %s: %s", found.path, reason.value, detail)


# --------------------------------------------------------------------------- conversion


def _as_utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)  # SQLite drops the zone


def convert_quiet_series(settings: Settings, engine: Engine, now: float, report: IngestReport) -> None:
    """Convert every series whose new instances have been quiet long enough.

    Quiet since its last file arrived in the drop folder (older rows: since it
    was indexed), so a study that went quiet between two passes is converted
    by the pass that finds it, not by the one after.
    """
    last_arrival = func.max(func.coalesce(DicomInstance.arrived_at, DicomInstance.indexed_at))
    with session_scope(engine) as session:
        pending = session.execute(
            select(DicomInstance.series_instance_uid, last_arrival)
            .where(DicomInstance.state == InstanceState.INDEXED)
            .group_by(DicomInstance.series_instance_uid)
            .order_by(DicomInstance.series_instance_uid)
        ).all()
    for series_uid, last_indexed in pending:
        quiet = now - _as_utc(last_indexed).timestamp()
        if quiet < settings.series_quiet_seconds:
            report.waiting_series += 1
            continue
        _convert_series(settings, engine, series_uid, quiet, report)


def _convert_series(settings: Settings, engine: Engine, series_uid: str, quiet: float, report: IngestReport) -> None:
    with session_scope(engine) as session:
        instances = list(session.scalars(select(DicomInstance).where(DicomInstance.series_instance_uid == series_uid)))
    headers: list[DicomHeader] = []
    refusal: InputRefusedError | None = None
    for instance in instances:
        location = instance.archive_path if instance.state is InstanceState.ARCHIVED else instance.drop_path
        try:
            headers.append(read_header(Path(location or instance.drop_path), fast=settings.fast_header_reader))
        except InputRefusedError as exc:  # readable when indexed, not now: keep the series on record
            refusal = InputRefusedError(exc.reason, f"instance {instance.sop_instance_uid}: {exc.detail}")
    completeness = check_completeness(headers) if headers else None
    if (
        refusal is None
        and completeness is not None
        and completeness.state is CompletenessState.INCOMPLETE
        and quiet < settings.series_quiet_seconds * INCOMPLETE_GIVE_UP_FACTOR
    ):
        report.waiting_series += 1
        log.info("series %s waits for more instances: %s", series_uid, completeness.detail)
        return
    plan: SeriesPlan | None = None
    volume: Volume | None = None
    if refusal is None:
        try:
            plan = plan_series(headers, settings.series_limits())
            volume = load_volume(plan)
        except InputRefusedError as exc:
            refusal = exc
        except MemoryError:
            refusal = InputRefusedError(ReasonCode.TOO_LARGE, "ran out of memory while decoding the series")
        except Exception as exc:  # a decoder's surprise: this series is refused, the pass goes on
            log.exception("series %s: conversion failed", series_uid)
            refusal = InputRefusedError(ReasonCode.CONVERSION_FAILED, f"{type(exc).__name__}: {exc}")
        if refusal is not None:
            plan, volume = None, None
    first = headers[0] if headers else None
    with session_scope(engine) as session:
        previous = session.scalars(
            select(Series).where(Series.series_instance_uid == series_uid).order_by(Series.version.desc()).limit(1)
        ).first()
        version = previous.version + 1 if previous else 1
        study_uid = instances[0].study_instance_uid
    volume_path: Path | None = None
    volume_sha: str | None = None
    if volume is not None:
        volume_path = DataLayout.of(settings).volume(study_uid, series_uid, version)
        volume_sha = write_volume(volume, volume_path)
        crash_point("volume written")
    with session_scope(engine) as session:
        study = _get_or_create_study(session, settings, study_uid, first)
        series = Series(
            study_id=study.id,
            series_instance_uid=series_uid,
            version=version,
            supersedes_id=previous.id if previous else None,
            modality="MR",
            series_number=first.series_number if first else None,
            description=(first.series_description[:128] or None) if first else None,
            expected_instances=completeness.expected if completeness else None,
            n_instances=len(instances),
            last_instance_at=max(_as_utc(i.arrived_at or i.indexed_at) for i in instances),
        )
        if volume is not None and plan is not None and volume_path is not None:
            _set_geometry(series, volume, volume_path, volume_sha)
            _set_eligibility(series, headers, volume, settings)
        else:
            assert refusal is not None
            series.status = SeriesStatus.REFUSED
            series.refusal_reason = refusal.reason
            series.refusal_detail = refusal.detail
            _mark_refused_localizer(series, headers)
        session.add(series)
        session.flush()
        if previous is not None:
            old = session.get(Series, previous.id)
            assert old is not None
            old.status = SeriesStatus.SUPERSEDED
            report.superseded.append(series.id)
            audit.record(session, STEP, "superseded", "series", old.id, by=series.id)
        layout = DataLayout.of(settings)
        for instance in session.scalars(select(DicomInstance).where(DicomInstance.series_instance_uid == series_uid)):
            instance.series_id = series.id
            if instance.state is InstanceState.INDEXED:
                instance.archive_path = str(layout.archived_instance(study_uid, series_uid, instance.sop_instance_uid))
                instance.state = InstanceState.ARCHIVING
        if series.status is SeriesStatus.CONVERTED:
            report.converted.append(series.id)
            audit.record(session, STEP, "converted", "series", series.id, version=version, sha256=volume_sha)
        else:
            report.refused.append(series.id)
            reason = series.refusal_reason.value if series.refusal_reason else None
            audit.record(session, STEP, "refused", "series", series.id, reason=reason, detail=series.refusal_detail)
            log.warning("series %s refused: %s", series_uid, series.refusal_detail)
    crash_point("series recorded")
    finish_pending_moves(engine)


def _set_geometry(series: Series, volume: Volume, path: Path, sha: str | None) -> None:
    x, y, z = volume.shape
    series.status = SeriesStatus.CONVERTED
    series.n_columns, series.n_rows, series.n_slices = x, y, z
    series.spacing_x_mm, series.spacing_y_mm, series.spacing_z_mm = volume.voxel_size
    series.affine = [[float(v) for v in row] for row in volume.affine]
    series.orientation = "".join(aff2axcodes(volume.affine))  # type: ignore[no-untyped-call]
    series.volume_path = str(path)
    series.volume_sha256 = sha
    series.converted_at = utcnow()


def _mark_refused_localizer(series: Series, headers: list[DicomHeader]) -> None:
    """A localizer that could not become one volume (a 3-plane scout) is also an ineligible localizer.

    It is valid DICOM that was never meant for segmentation: the eligibility
    views list it with the other ineligible series, not only as a refusal.
    """
    scout = sorted({value for header in headers for value in header.image_type} & eligibility.LOCALIZER_TYPES)
    if scout:
        series.eligible = False
        series.eligibility_reason = EligibilityReason.LOCALIZER
        series.eligibility_detail = (
            f"a localizer or scout (ImageType {scout[0]}); not converted: {series.refusal_detail}"
        )


def _set_eligibility(series: Series, headers: list[DicomHeader], volume: Volume, settings: Settings) -> None:
    """Record whether the series is one the model may segment (a PD axial thigh series), and why not."""
    first = headers[0]
    direction = volume.affine[:3, 2] / np.linalg.norm(volume.affine[:3, 2])
    facts = eligibility.SeriesFacts(
        series_instance_uid=series.series_instance_uid,
        description=first.series_description,
        image_types=frozenset(value for header in headers for value in header.image_type),
        n_slices=volume.shape[2],
        slice_normal=(float(direction[0]), float(direction[1]), float(direction[2])),
        repetition_time_ms=first.repetition_time_ms,
        echo_time_ms=first.echo_time_ms,
        scanning_sequence=first.scanning_sequence,
        scan_options=first.scan_options,
        body_part=first.body_part,
    )
    verdict = eligibility.assess(facts, settings.eligibility_rules())
    series.repetition_time_ms, series.echo_time_ms = first.repetition_time_ms, first.echo_time_ms
    series.body_part = first.body_part or None
    series.laterality = first.laterality or None
    series.eligible, series.eligibility_reason, series.eligibility_detail = (
        verdict.eligible,
        verdict.reason,
        verdict.detail,
    )
    if not verdict.eligible:
        log.info("series %s is not segmented: %s", series.series_instance_uid, verdict.detail)


def _get_or_create_study(session: Session, settings: Settings, study_uid: str, header: DicomHeader | None) -> Study:
    study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).first()
    if study is not None:
        return study
    patient_id = header.patient_id if header and header.patient_id else f"(no PatientID) {study_uid}"
    pseudonym = pseudonymise(patient_id, settings.pseudonym_secret())
    subject = session.scalars(select(Subject).where(Subject.pseudonym == pseudonym)).first()
    if subject is None:
        subject = Subject(pseudonym=pseudonym, cohort=cohort_of(header))
        session.add(subject)
        session.flush()
        audit.record(session, STEP, "new_subject", "subject", subject.id)
    study = Study(
        subject_id=subject.id,
        study_instance_uid=study_uid,
        study_date=_parse_date(header.study_date if header else None),
        description=(header.study_description[:128] or None) if header else None,
    )
    session.add(study)
    session.flush()
    return study


def cohort_of(header: DicomHeader | None) -> Cohort:
    """The cohort a site wrote into PatientComments as ``cohort=control`` or ``cohort=patient``."""
    comments = header.patient_comments if header else None
    match = COHORT_PATTERN.search(comments or "")
    return Cohort(match.group(1).lower()) if match else Cohort.UNKNOWN


def _parse_date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None
