"""Exporting results back to the hospital: a segmentation as DICOM SEG, SR and SC, sent or queued for the PACS.

The DICOM SEG outlines the nerve on the source images; the SR (TID 1500)
reports the nerve metrics and QC and references that SEG; the SC is the
series' montage with the nerve outline burnt in, for any viewer.
``queue_results`` writes all three for the PACS outbox (``steps.outbox``
sends them); the ``export_*`` functions write one to a given file and may
send it at once (``sciatic export seg|sr|sc``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select

from sciatic.config import Settings
from sciatic.db import audit, queries
from sciatic.db.enums import OutboxKind, OutboxStatus, QcStatus, SeriesStatus
from sciatic.db.locks import named_lock
from sciatic.db.models import ModelVersion, NerveMetric, Outbox, QcResult, Segmentation, Series, utcnow
from sciatic.db.session import session_scope
from sciatic.dicom.seg import SegExport, export_seg
from sciatic.errors import SciaticError
from sciatic.layout import DataLayout

if TYPE_CHECKING:
    from sciatic.dicom.sc import ScExport
    from sciatic.dicom.sr import NerveMeasurements, SrExport

log = logging.getLogger(__name__)


__all__ = [
    "ReportExport",
    "destination",
    "export_picture",
    "export_report",
    "export_segmentation",
    "queue_new_results",
    "queue_results",
    "results_to_queue",
]

STEP = "export"


@dataclass(frozen=True, slots=True)
class ReportExport:
    """An SR written by ``export_report``, and the SEG it references."""

    sr: SrExport
    seg_path: Path
    seg_written: bool  # False when an existing SEG was given


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the three objects are made of (read once per export)."""

    segmentation_id: int
    series_uid: str
    mask_path: str
    volume_path: str | None
    model_name: str
    model_version: str
    sources: list[Path]
    groups: tuple[NerveMeasurements, ...]  # one per nerve_metric row (side); empty before the measure step
    qc_status: QcStatus | None


def destination(settings: Settings) -> str:
    """The configured PACS node as an outbox destination, ``AE_TITLE@host:port``."""
    return f"{settings.pacs_ae_title}@{settings.pacs_host}:{settings.pacs_port}"


# --------------------------------------------------------------------------- one object to a file


def export_segmentation(
    settings: Settings, engine: Engine, segmentation_id: int, out: str | Path, send: bool = False
) -> SegExport:
    """Write one segmentation as a DICOM SEG referencing its source images; ``send`` it to the PACS too."""
    facts = _facts(engine, segmentation_id)
    result = _write_seg(facts, Path(out))
    _record(engine, "seg_written", segmentation_id, result.path, result.sop_instance_uid)
    if send:
        _send(settings, engine, segmentation_id, [result.path], "SEG")
    return result


def export_report(
    settings: Settings,
    engine: Engine,
    segmentation_id: int,
    out: str | Path,
    send: bool = False,
    seg: str | Path | None = None,
) -> ReportExport:
    """Write the DICOM SR measurement report of one segmentation; ``send`` it (and its SEG) to the PACS too.

    The SR references the DICOM SEG ``seg`` (one written for this
    segmentation's series), else a new SEG written beside ``out`` as
    ``<name>-seg.dcm``.
    """
    from sciatic.dicom.seg import seg_reference

    facts = _facts(engine, segmentation_id)
    target = Path(out)
    if seg is None:
        seg_path = target.with_name(f"{target.stem}-seg.dcm")
        written = _write_seg(facts, seg_path)
        _record(engine, "seg_written", segmentation_id, written.path, written.sop_instance_uid)
    else:
        seg_path = Path(seg)
        if seg_reference(seg_path).referenced_series_instance_uid != facts.series_uid:
            raise SciaticError(f"{seg_path} is not a SEG of series {facts.series_uid} (segmentation {segmentation_id})")
    result = ReportExport(_write_sr(facts, seg_path, target), seg_path, seg is None)
    _record(engine, "sr_written", segmentation_id, result.sr.path, result.sr.sop_instance_uid)
    if send:
        _send(settings, engine, segmentation_id, [seg_path, result.sr.path], "SEG and SR")
    return result


def export_picture(
    settings: Settings, engine: Engine, segmentation_id: int, out: str | Path, send: bool = False
) -> ScExport:
    """Write the overlay picture of one segmentation as DICOM Secondary Capture; ``send`` it to the PACS too."""
    facts = _facts(engine, segmentation_id)
    result = _write_sc(facts, Path(out))
    _record(engine, "sc_written", segmentation_id, result.path, result.sop_instance_uid)
    if send:
        _send(settings, engine, segmentation_id, [result.path], "SC")
    return result


# --------------------------------------------------------------------------- the outbox


def queue_results(settings: Settings, engine: Engine, segmentation_id: int) -> list[int]:
    """Write the SEG, SR and SC of a segmentation for the configured PACS and queue them; the outbox row ids.

    Nothing when no PACS is configured, or when ``SCIATIC_PACS_SEND_QC`` is
    ``pass`` and the QC status is not. Idempotent: a segmentation already
    queued for this destination returns its rows and writes nothing.
    """
    if not settings.pacs_host:
        log.info("no PACS configured (SCIATIC_PACS_HOST): results of segmentation %s not queued", segmentation_id)
        return []
    target = destination(settings)
    with named_lock(engine, f"outbox-queue-{segmentation_id}"):
        with session_scope(engine) as session:
            queued = list(
                session.scalars(
                    select(Outbox.id)
                    .where(Outbox.segmentation_id == segmentation_id, Outbox.destination == target)
                    .order_by(Outbox.id)
                )
            )
        if queued:
            return queued
        facts = _facts(engine, segmentation_id)
        if settings.pacs_send_qc == "pass" and facts.qc_status is not QcStatus.PASS:
            status = facts.qc_status.value if facts.qc_status else "not assessed"
            log.info(
                "segmentation %s not queued for the PACS: QC %s (SCIATIC_PACS_SEND_QC=pass)", segmentation_id, status
            )
            return []
        return _queue(settings, engine, facts, target)


def results_to_queue(settings: Settings, engine: Engine, now: dt.datetime | None = None) -> list[int]:
    """Segmentations made in the last ``SCIATIC_PACS_QUEUE_DAYS`` with a QC result, not queued for the PACS yet.

    Only those whose label-free QC passed when ``SCIATIC_PACS_SEND_QC`` is
    ``pass``; none when no PACS is configured. Current series only.
    """
    if not settings.pacs_host:
        return []
    since = (now or utcnow()) - dt.timedelta(days=settings.pacs_queue_days)
    checked = select(QcResult.segmentation_id).where(QcResult.manual_label_id.is_(None))
    if settings.pacs_send_qc == "pass":
        checked = checked.where(QcResult.status == QcStatus.PASS)
    queued = select(Outbox.segmentation_id).where(Outbox.destination == destination(settings))
    with session_scope(engine) as session:
        return list(
            session.scalars(
                select(Segmentation.id)
                .join(Series, Series.id == Segmentation.series_id)
                .where(
                    Series.status == SeriesStatus.CONVERTED,
                    Segmentation.created_at >= since,
                    Segmentation.id.in_(checked),
                    Segmentation.id.not_in(queued),
                )
                .order_by(Segmentation.id)
            )
        )


def queue_new_results(settings: Settings, engine: Engine) -> list[int]:
    """``queue_results`` for every segmentation of ``results_to_queue``; the new outbox row ids.

    One segmentation that cannot be queued does not stop the others; the
    error names them all at the end.
    """
    ids: list[int] = []
    problems: list[str] = []
    for segmentation_id in results_to_queue(settings, engine):
        try:
            ids += queue_results(settings, engine, segmentation_id)
        except Exception as exc:  # one broken segmentation never stops the others
            log.exception("results of segmentation %s not queued", segmentation_id)
            problems.append(f"{segmentation_id} ({type(exc).__name__}: {exc})")
    if problems:
        raise SciaticError(f"results not queued for segmentation(s) {'; '.join(problems)}")
    return ids


def _queue(settings: Settings, engine: Engine, facts: _Facts, target: str) -> list[int]:
    from pydicom.uid import generate_uid

    if not facts.groups or facts.volume_path is None:  # refused before any file is written
        raise SciaticError(f"segmentation {facts.segmentation_id} has no metrics or no volume: measure it first")
    layout = DataLayout.of(settings)
    uids = {kind: str(generate_uid()) for kind in OutboxKind}
    paths = {kind: layout.outbox_object(facts.segmentation_id, kind.value, uids[kind]) for kind in OutboxKind}
    seg = _write_seg(facts, paths[OutboxKind.SEG], uids[OutboxKind.SEG])
    sr = _write_sr(facts, seg.path, paths[OutboxKind.SR], uids[OutboxKind.SR])
    sc = _write_sc(facts, paths[OutboxKind.SC], uids[OutboxKind.SC])
    now = utcnow()
    with session_scope(engine) as session:
        rows = [
            Outbox(
                segmentation_id=facts.segmentation_id,
                kind=kind,
                file_path=str(written.path),
                file_sha256=written.sha256,
                sop_instance_uid=written.sop_instance_uid,
                destination=target,
                status=OutboxStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            for kind, written in ((OutboxKind.SEG, seg), (OutboxKind.SR, sr), (OutboxKind.SC, sc))
        ]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
        audit.record(session, STEP, "queued", "segmentation", facts.segmentation_id, destination=target, outbox=ids)
    log.info("segmentation %s: SEG, SR and SC queued for %s", facts.segmentation_id, target)
    return ids


# --------------------------------------------------------------------------- reading and writing


def _facts(engine: Engine, segmentation_id: int) -> _Facts:
    from sciatic.dicom.sr import NerveMeasurements

    with session_scope(engine) as session:
        segmentation = session.get(Segmentation, segmentation_id)
        if segmentation is None:
            raise SciaticError(f"no segmentation with id {segmentation_id}")
        model = session.get(ModelVersion, segmentation.model_version_id)
        series = session.get(Series, segmentation.series_id)
        assert model is not None and series is not None
        (info,) = queries.case_infos(session, [segmentation_id])
        metrics = session.scalars(
            select(NerveMetric).where(NerveMetric.segmentation_id == segmentation_id).order_by(NerveMetric.id)
        )
        groups = tuple(
            NerveMeasurements(
                volume_mm3=m.volume_mm3,
                covered_length_mm=m.covered_length_mm,
                csa_mean_mm2=m.csa_mean_mm2,
                csa_median_mm2=m.csa_median_mm2,
                csa_max_mm2=m.csa_max_mm2,
                signal_mean=m.signal_mean,
                qc_status=info.qc_status,
                qc_flags=info.flags,
                side=None if m.side.value == "all" else m.side.value,  # every nerve together, or one leg's
            )
            for m in metrics
        )
        return _Facts(
            segmentation_id=segmentation_id,
            series_uid=series.series_instance_uid,
            mask_path=segmentation.mask_path,
            volume_path=series.volume_path,
            model_name=model.name,
            model_version=model.checkpoint_sha256[:16],
            sources=queries.source_files(session, series.id),
            groups=groups,
            qc_status=info.qc_status,
        )


def _write_seg(facts: _Facts, out: Path, sop_instance_uid: str | None = None) -> SegExport:
    from sciatic.imaging.volume import read_volume

    mask = read_volume(facts.mask_path)
    return export_seg(
        mask.data,
        mask.affine,
        facts.sources,
        out,
        model_name=facts.model_name,
        model_version=facts.model_version,
        sop_instance_uid=sop_instance_uid,
    )


def _write_sr(facts: _Facts, seg_path: Path, out: Path, sop_instance_uid: str | None = None) -> SrExport:
    from sciatic.dicom.sr import export_sr

    if not facts.groups:
        raise SciaticError(f"segmentation {facts.segmentation_id} has not been measured: run the measure step first")
    return export_sr(
        facts.groups,
        seg_path,
        facts.sources,
        out,
        model_name=facts.model_name,
        model_version=facts.model_version,
        sop_instance_uid=sop_instance_uid,
    )


def _write_sc(facts: _Facts, out: Path, sop_instance_uid: str | None = None) -> ScExport:
    import numpy as np

    from sciatic.dicom.sc import export_sc, patient_orientation
    from sciatic.imaging.picture import outline_picture
    from sciatic.imaging.volume import check_same_grid, read_volume

    if facts.volume_path is None:
        raise SciaticError(f"the series of segmentation {facts.segmentation_id} has no converted volume")
    volume, mask = read_volume(facts.volume_path), read_volume(facts.mask_path)
    check_same_grid(mask.shape, mask.affine, volume.shape, volume.affine, names=("mask", "volume"))
    picture = np.rint(outline_picture(volume.data, mask.data) * 255).astype(np.uint8)
    return export_sc(
        picture,
        facts.sources,
        out,
        orientation=patient_orientation(volume.affine),
        model_name=facts.model_name,
        model_version=facts.model_version,
        sop_instance_uid=sop_instance_uid,
    )


def _record(engine: Engine, action: str, segmentation_id: int, path: Path, sop_instance_uid: str) -> None:
    with session_scope(engine) as session:
        audit.record(
            session, STEP, action, "segmentation", segmentation_id, path=str(path), sop_instance_uid=sop_instance_uid
        )


def _send(settings: Settings, engine: Engine, segmentation_id: int, paths: list[Path], what: str) -> None:
    """Send files to the configured PACS at once (not through the outbox); refuse when it does not take them."""
    from sciatic.dicom.scu import send as send_files

    if not settings.pacs_host:
        raise SciaticError("no PACS configured: set SCIATIC_PACS_HOST (and _PORT, _AE_TITLE)")
    report = send_files(
        paths, settings.pacs_host, settings.pacs_port, settings.pacs_ae_title, calling_ae=settings.scp_ae_title
    )
    with session_scope(engine) as session:
        audit.record(
            session,
            STEP,
            f"{what.lower().replace(' and ', '_')}_sent",
            "segmentation",
            segmentation_id,
            host=settings.pacs_host,
            sent=len(report.sent),
            failed=[reason for _, reason in report.failed],
        )
    if report.failed:
        raise SciaticError(f"the PACS refused the {what}: {report.failed[0][1]}")
    log.info("%s of segmentation %s sent to %s", what, segmentation_id, settings.pacs_ae_title)
