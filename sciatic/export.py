"""Exporting results back to the hospital: a segmentation as DICOM SEG, optionally sent to PACS."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select

from sciatic.config import get_settings
from sciatic.db import audit
from sciatic.db.models import DicomInstance, ModelVersion, Segmentation, Series
from sciatic.db.session import default_engine, session_scope
from sciatic.dicom.seg import SegExport, export_seg
from sciatic.errors import SciaticError

log = logging.getLogger(__name__)


def source_files(series_id: int) -> list[Path]:
    """The archived DICOM files of a series (the instances its volume was made from)."""
    with session_scope(default_engine()) as session:
        series = session.get(Series, series_id)
        if series is None:
            raise SciaticError(f"no series with id {series_id}")
        paths = session.scalars(
            select(DicomInstance.archive_path).where(DicomInstance.series_instance_uid == series.series_instance_uid)
        ).all()
    return [Path(p) for p in paths if p]


def export_segmentation(segmentation_id: int, out: str | Path, send: bool = False) -> SegExport:
    from sciatic.dicom.nifti import read_nifti
    from sciatic.dicom.scu import send as send_files

    settings = get_settings()
    engine = default_engine()
    with session_scope(engine) as session:
        segmentation = session.get(Segmentation, segmentation_id)
        if segmentation is None:
            raise SciaticError(f"no segmentation with id {segmentation_id}")
        model = session.get(ModelVersion, segmentation.model_version_id)
        assert model is not None
        mask_path, series_id, model_name, model_sha = (
            segmentation.mask_path,
            segmentation.series_id,
            model.name,
            model.checkpoint_sha256,
        )
    mask = read_nifti(mask_path)
    result = export_seg(
        mask.data, mask.affine, source_files(series_id), out, model_name=model_name, model_version=model_sha[:16]
    )
    with session_scope(engine) as session:
        audit.record(
            session,
            "export",
            "seg_written",
            "segmentation",
            segmentation_id,
            path=str(result.path),
            sop_instance_uid=result.sop_instance_uid,
        )
    if send or settings.send_seg:
        if not settings.pacs_host:
            raise SciaticError("no PACS configured: set SCIATIC_PACS_HOST (and _PORT, _AE_TITLE)")
        report = send_files(
            [result.path],
            settings.pacs_host,
            settings.pacs_port,
            settings.pacs_ae_title,
            calling_ae=settings.scp_ae_title,
        )
        with session_scope(engine) as session:
            audit.record(
                session,
                "export",
                "seg_sent",
                "segmentation",
                segmentation_id,
                host=settings.pacs_host,
                sent=len(report.sent),
                failed=[reason for _, reason in report.failed],
            )
        if report.failed:
            raise SciaticError(f"the PACS refused the SEG: {report.failed[0][1]}")
        log.info("SEG of segmentation %s sent to %s", segmentation_id, settings.pacs_ae_title)
    return result
