"""Nerve metrics and QC of stored segmentations (the steps after segmentation).

Both steps recompute from the mask and volume files and replace earlier rows,
so they are idempotent and can be re-run after a threshold change.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from sqlalchemy import Engine, delete, select

from sciatic.config import Settings
from sciatic.db import audit
from sciatic.db.enums import QcStatus
from sciatic.db.models import ManualLabel, NerveMetric, QcResult, Segmentation, Series, SliceMetric
from sciatic.db.session import session_scope
from sciatic.errors import SciaticError

if TYPE_CHECKING:
    from sciatic.evaluation.metrics import NerveMetrics

log = logging.getLogger(__name__)
STEP = "measure"


def _load(engine: Engine, segmentation_id: int) -> tuple[str, str, list[tuple[int, str]]]:
    """Mask path, volume path and (label id, label mask path) of every manual label of the series."""
    with session_scope(engine) as session:
        segmentation = session.get(Segmentation, segmentation_id)
        if segmentation is None:
            raise SciaticError(f"no segmentation with id {segmentation_id}")
        series = session.get(Series, segmentation.series_id)
        assert series is not None and series.volume_path is not None
        labels = [
            (label.id, label.mask_path)
            for label in session.scalars(
                select(ManualLabel).where(ManualLabel.series_id == series.id).order_by(ManualLabel.id)
            )
        ]
        return segmentation.mask_path, series.volume_path, labels


def compute_metrics(engine: Engine, segmentation_id: int) -> NerveMetrics:
    from sciatic.dicom.nifti import read_nifti
    from sciatic.evaluation.metrics import nerve_metrics
    from sciatic.evaluation.qc import check_same_grid

    mask_file, volume_file, _ = _load(engine, segmentation_id)
    mask, volume = read_nifti(mask_file), read_nifti(volume_file)
    check_same_grid(mask.shape, mask.affine, volume.shape, volume.affine)
    return nerve_metrics(mask.data, mask.affine, volume.data)


def measure(settings: Settings, engine: Engine, segmentation_id: int) -> None:
    """Store slice and nerve metrics of one segmentation, replacing any earlier ones."""
    metrics = compute_metrics(engine, segmentation_id)
    s = metrics.series
    with session_scope(engine) as session:
        session.execute(delete(SliceMetric).where(SliceMetric.segmentation_id == segmentation_id))
        session.execute(delete(NerveMetric).where(NerveMetric.segmentation_id == segmentation_id))
        for m in metrics.slices:
            x, y, z = m.centroid_ras_mm if m.centroid_ras_mm is not None else (None, None, None)
            session.add(
                SliceMetric(
                    segmentation_id=segmentation_id,
                    slice_index=m.slice_index,
                    csa_mm2=m.area_mm2,
                    centroid_x_mm=x,
                    centroid_y_mm=y,
                    centroid_z_mm=z,
                    signal_mean=m.signal_mean,
                    signal_sd=m.signal_sd,
                    n_components=m.n_components,
                )
            )
        session.add(
            NerveMetric(
                segmentation_id=segmentation_id,
                volume_mm3=s.volume_mm3,
                csa_mean_mm2=s.csa_mean_mm2,
                csa_median_mm2=s.csa_median_mm2,
                csa_max_mm2=s.csa_max_mm2,
                covered_length_mm=s.covered_length_mm,
                signal_mean=s.signal_mean,
                n_slices_with_nerve=s.n_nerve_slices,
            )
        )
        audit.record(session, STEP, "measured", "segmentation", segmentation_id, volume_mm3=round(s.volume_mm3, 1))
    log.info(
        "segmentation %s: volume %.0f mm³, mean CSA %s mm² over %d slices",
        segmentation_id,
        s.volume_mm3,
        "-" if s.csa_mean_mm2 is None else f"{s.csa_mean_mm2:.1f}",
        s.n_nerve_slices,
    )


def quality_control(settings: Settings, engine: Engine, segmentation_id: int) -> QcStatus:
    """Label-free flags, plus agreement with every manual label of the series; return the QC status."""
    from sciatic.evaluation.qc import assess, compare_masks, load_mask

    metrics = compute_metrics(engine, segmentation_id)
    thresholds = settings.qc_thresholds()
    verdict = assess(metrics, thresholds)
    mask_file, _, labels = _load(engine, segmentation_id)
    comparisons = []
    if labels:
        prediction, affine = load_mask(mask_file)
        for label_id, label_file in labels:
            label, label_affine = load_mask(label_file)
            comparison = compare_masks(prediction, affine, label, label_affine)
            comparisons.append((label_id, comparison, assess(metrics, thresholds, comparison)))
    with session_scope(engine) as session:
        session.execute(delete(QcResult).where(QcResult.segmentation_id == segmentation_id))
        session.add(
            QcResult(
                segmentation_id=segmentation_id,
                status=verdict.status,
                flags=[f.to_dict() for f in verdict.findings],
            )
        )
        for label_id, comparison, with_label in comparisons:
            session.add(
                QcResult(
                    segmentation_id=segmentation_id,
                    manual_label_id=label_id,
                    status=with_label.status,
                    flags=[f.to_dict() for f in with_label.findings],
                    dice=comparison.dice,
                    hd95_mm=_finite(comparison.hd95_mm),
                    assd_mm=_finite(comparison.assd_mm),
                    volume_similarity=comparison.volume_similarity,
                    failed=comparison.failed,
                )
            )
        audit.record(
            session,
            STEP,
            "qc",
            "segmentation",
            segmentation_id,
            status=verdict.status.value,
            flags=[f.value for f in verdict.flags],
            dice=[round(c.dice, 4) for _, c, _ in comparisons],
        )
    log.info(
        "segmentation %s QC %s %s",
        segmentation_id,
        verdict.status.value,
        ", ".join(f.value for f in verdict.flags) or "(no flags)",
    )
    return verdict.status


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def segmentations_needing_label_qc(engine: Engine) -> list[int]:
    """Segmentations of series with a manual label that has no QC row against that segmentation."""
    with session_scope(engine) as session:
        pairs = session.execute(
            select(Segmentation.id, ManualLabel.id).join(ManualLabel, ManualLabel.series_id == Segmentation.series_id)
        ).all()
        done = {
            (seg, label)
            for seg, label in session.execute(
                select(QcResult.segmentation_id, QcResult.manual_label_id).where(QcResult.manual_label_id.is_not(None))
            )
        }
        return sorted({seg for seg, label in pairs if (seg, label) not in done})
