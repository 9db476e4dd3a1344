"""Exporting results back to the hospital: a segmentation as DICOM SEG, optionally sent to PACS."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine

from sciatic.config import Settings
from sciatic.db import audit, queries
from sciatic.db.models import ModelVersion, Segmentation
from sciatic.db.session import session_scope
from sciatic.dicom.seg import SegExport, export_seg
from sciatic.errors import SciaticError

log = logging.getLogger(__name__)


__all__ = ["export_segmentation"]

STEP = "export"


def export_segmentation(
    settings: Settings, engine: Engine, segmentation_id: int, out: str | Path, send: bool = False
) -> SegExport:
    """Write one segmentation as a DICOM SEG referencing its source images; ``send`` it to the PACS too."""
    from sciatic.dicom.scu import send as send_files
    from sciatic.imaging.volume import read_volume

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
        sources = queries.source_files(session, series_id)
    mask = read_volume(mask_path)
    result = export_seg(mask.data, mask.affine, sources, out, model_name=model_name, model_version=model_sha[:16])
    with session_scope(engine) as session:
        audit.record(
            session,
            STEP,
            "seg_written",
            "segmentation",
            segmentation_id,
            path=str(result.path),
            sop_instance_uid=result.sop_instance_uid,
        )
    if send:
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
                STEP,
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
