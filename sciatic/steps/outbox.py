"""The PACS outbox: send the queued DICOM objects, retry with back-off, never twice once acknowledged.

``steps.export.queue_results`` adds one ``outbox`` row per object (SEG, SR,
SC) and destination. ``drain`` sends every due pending row, one association
per destination, and records each object's outcome as soon as the PACS
answers: ``sent`` (never selected again), or another attempt after an
exponential back-off (``SCIATIC_PACS_RETRY_SECONDS``, doubled per attempt, at
most an hour), or ``failed`` after ``SCIATIC_PACS_MAX_ATTEMPTS``. One
drainer at a time (a named lock). Should a process die between the PACS's
answer and the commit, the object goes again: a PACS keeps one copy per
SOP Instance UID.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select, update

from sciatic.config import Settings
from sciatic.db import audit
from sciatic.db.enums import OutboxKind, OutboxStatus
from sciatic.db.locks import named_lock
from sciatic.db.models import Outbox, utcnow
from sciatic.db.session import session_scope

__all__ = ["DrainReport", "OutboxEntry", "backoff", "drain", "entries", "retry"]

log = logging.getLogger(__name__)
STEP = "outbox"
LOCK = "outbox-drain"
MAX_BACKOFF_SECONDS = 3600.0


@dataclass
class DrainReport:
    """One pass over the outbox: row ids sent, tried again later (with why), given up on (with why)."""

    sent: list[int] = field(default_factory=list)
    retrying: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    busy: bool = False  # another process was draining: this pass did nothing

    def summary(self) -> str:
        if self.busy:
            return "outbox: another process is sending; nothing done"
        return f"outbox: {len(self.sent)} sent, {len(self.retrying)} to retry, {len(self.failed)} failed"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox row, as ``sciatic outbox list`` shows it."""

    id: int
    segmentation_id: int
    kind: OutboxKind
    status: OutboxStatus
    destination: str
    attempts: int
    next_attempt_at: dt.datetime
    sent_at: dt.datetime | None
    last_error: str | None
    sop_instance_uid: str
    file_path: str


def backoff(settings: Settings, attempts: int) -> dt.timedelta:
    """Wait after the ``attempts``-th failed try: the retry interval doubled per try, at most an hour."""
    seconds = settings.pacs_retry_seconds * 2.0 ** max(0, attempts - 1)
    return dt.timedelta(seconds=min(seconds, max(MAX_BACKOFF_SECONDS, settings.pacs_retry_seconds)))


def drain(settings: Settings, engine: Engine, now: dt.datetime | None = None) -> DrainReport:
    """Send every pending row that is due (``next_attempt_at`` passed), grouped by destination."""
    report = DrainReport()
    with named_lock(engine, LOCK, wait=False) as acquired:
        if not acquired:
            report.busy = True
            return report
        moment = now or utcnow()
        with session_scope(engine) as session:
            due = [
                (row.id, row.destination, row.file_path, row.file_sha256)
                for row in session.scalars(
                    select(Outbox)
                    .where(Outbox.status == OutboxStatus.PENDING, Outbox.next_attempt_at <= moment)
                    .order_by(Outbox.id)
                )
            ]
        by_destination: dict[str, list[tuple[int, str, str]]] = {}
        for row_id, target, path, sha in due:
            by_destination.setdefault(target, []).append((row_id, path, sha))
        for target, rows in by_destination.items():
            _send_to(settings, engine, target, rows, moment, report)
    if due:
        log.info("%s", report.summary())
    return report


def _send_to(
    settings: Settings,
    engine: Engine,
    target: str,
    rows: list[tuple[int, str, str]],
    moment: dt.datetime,
    report: DrainReport,
) -> None:
    """One association to ``target`` for its due rows; each outcome committed as the PACS answers."""
    from sciatic.dicom.scu import SendError, send
    from sciatic.storage import sha256_file

    ready: dict[Path, int] = {}
    for row_id, path, sha in rows:
        file = Path(path)
        if not file.is_file() or sha256_file(file) != sha:
            _outcome(
                settings,
                engine,
                row_id,
                f"{file} is missing or changed since it was queued",
                moment,
                report,
                final=True,
            )
        else:
            ready[file] = row_id
    if not ready:
        return
    ae_title, _, address = target.rpartition("@")
    host, _, port = address.rpartition(":")

    answered: set[int] = set()

    def on_result(path: Path, reason: str | None) -> None:
        answered.add(ready[path])
        _outcome(settings, engine, ready[path], reason, moment, report)

    try:
        send(list(ready), host, int(port), ae_title, calling_ae=settings.scp_ae_title, on_result=on_result)
    except Exception as exc:  # no association (SendError), or the link broke: the rest try again later
        error = str(exc) if isinstance(exc, SendError) else f"{type(exc).__name__}: {exc}"
        for row_id in ready.values():
            if row_id not in answered:
                _outcome(settings, engine, row_id, error, moment, report)


def _outcome(
    settings: Settings,
    engine: Engine,
    row_id: int,
    error: str | None,
    moment: dt.datetime,
    report: DrainReport,
    final: bool = False,
) -> None:
    """Record one try of one row: sent (error None), or another attempt later, or failed."""
    with session_scope(engine) as session:
        row = session.get(Outbox, row_id)
        if row is None or row.status is not OutboxStatus.PENDING:
            return  # only a pending row changes: a sent row stays sent
        row.attempts += 1
        if error is None:
            row.status, row.sent_at, row.last_error = OutboxStatus.SENT, utcnow(), None
            report.sent.append(row_id)
            audit.record(session, STEP, "sent", "outbox", row_id, destination=row.destination, kind=row.kind.value)
            return
        row.last_error = error[:2000]
        if final or row.attempts >= settings.pacs_max_attempts:
            row.status = OutboxStatus.FAILED
            report.failed.append((row_id, error))
            audit.record(session, STEP, "failed", "outbox", row_id, attempts=row.attempts, error=row.last_error)
            log.error("outbox row %s (%s) failed after %d attempt(s): %s", row_id, row.kind.value, row.attempts, error)
        else:
            row.next_attempt_at = max(moment, utcnow()) + backoff(settings, row.attempts)
            report.retrying.append((row_id, error))
            log.warning(
                "outbox row %s: attempt %d failed (%s); next at %s", row_id, row.attempts, error, row.next_attempt_at
            )


def entries(engine: Engine, status: OutboxStatus | None = None) -> list[OutboxEntry]:
    """Outbox rows (of one status, or all) in id order."""
    query = select(Outbox).order_by(Outbox.id)
    if status is not None:
        query = query.where(Outbox.status == status)
    with session_scope(engine) as session:
        return [
            OutboxEntry(
                id=r.id,
                segmentation_id=r.segmentation_id,
                kind=r.kind,
                status=r.status,
                destination=r.destination,
                attempts=r.attempts,
                next_attempt_at=r.next_attempt_at,
                sent_at=r.sent_at,
                last_error=r.last_error,
                sop_instance_uid=r.sop_instance_uid,
                file_path=r.file_path,
            )
            for r in session.scalars(query)
        ]


def retry(engine: Engine, ids: Sequence[int] = (), now: dt.datetime | None = None) -> list[int]:
    """Queue failed rows again (all, or those of ``ids``, pending ones too): due now, attempts from zero.

    A sent row is never queued again. Returns the ids queued.
    """
    which = Outbox.id.in_(list(ids)) if ids else Outbox.status == OutboxStatus.FAILED
    with session_scope(engine) as session:
        queued = list(
            session.scalars(select(Outbox.id).where(which, Outbox.status != OutboxStatus.SENT).order_by(Outbox.id))
        )
        if queued:
            session.execute(
                update(Outbox)
                .where(Outbox.id.in_(queued), Outbox.status != OutboxStatus.SENT)
                .values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now or utcnow())
            )
            audit.record(session, STEP, "retry", "outbox", None, ids=queued)
    return queued
