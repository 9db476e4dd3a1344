"""The QC step: label-free flags from the stored metric rows, and agreement with every manual label.

The flags are computed from the ``slice_metric`` and ``nerve_metric`` rows the
measure step wrote (no file is read for them); Dice and the surface distances
against a manual label need both masks, which are read from their files. All
QC rows of the segmentation are replaced in one transaction (idempotent; re-run
it after a threshold change).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from sqlalchemy import Engine, delete, select

from sciatic.config import Settings
from sciatic.db import audit
from sciatic.db.enums import QcStatus, Side
from sciatic.db.locks import named_lock
from sciatic.db.models import ManualLabel, NerveMetric, QcResult, Segmentation, Series, SliceMetric
from sciatic.db.queries import current_series
from sciatic.db.session import session_scope
from sciatic.errors import SciaticError
from sciatic.evaluation.metrics import NerveMetrics, SeriesMetrics, SliceMetrics
from sciatic.evaluation.qc import (
    LegFacts,
    MaskComparison,
    QcFlag,
    QcVerdict,
    assess,
    assess_legs,
    compare_masks,
    inter_rater_summary,
    snr_findings,
    status_of,
    uncertainty_findings,
)
from sciatic.evaluation.thresholds import QcThresholds
from sciatic.imaging.volume import pixel_area_mm2, read_mask, slice_normal, slice_spacing_mm

__all__ = ["NotMeasuredError", "inter_rater_agreement", "quality_control", "segmentations_needing_label_qc"]

log = logging.getLogger(__name__)
STEP = "qc"


class NotMeasuredError(SciaticError):
    """A segmentation has no metric rows yet, so QC has nothing to assess.

    Recovery: run the measure step first (`sciatic run` and the segment DAG do
    it before QC); then run QC again.
    """


def stored_metrics(engine: Engine, segmentation_id: int, side: Side = Side.ALL) -> NerveMetrics:
    """The :class:`NerveMetrics` of a segmentation (the whole mask, or one leg's nerve), rebuilt from its rows."""
    with session_scope(engine) as session:
        segmentation = session.get(Segmentation, segmentation_id)
        if segmentation is None:
            raise SciaticError(f"no segmentation with id {segmentation_id}")
        series = session.get(Series, segmentation.series_id)
        assert series is not None
        nerve = session.scalars(
            select(NerveMetric).where(NerveMetric.segmentation_id == segmentation_id, NerveMetric.side == side)
        ).first()
        rows = list(
            session.scalars(
                select(SliceMetric)
                .where(SliceMetric.segmentation_id == segmentation_id, SliceMetric.side == side)
                .order_by(SliceMetric.slice_index)
            )
        )
        if nerve is None or series.affine is None:
            raise NotMeasuredError(f"segmentation {segmentation_id} has not been measured")
        affine = np.asarray(series.affine, dtype=np.float64)
        area = pixel_area_mm2(affine)
        slices = tuple(
            SliceMetrics(
                slice_index=r.slice_index,
                voxel_count=round(r.csa_mm2 / area),
                area_mm2=r.csa_mm2,
                centroid_ras_mm=_centroid(r),
                signal_mean=r.signal_mean,
                signal_sd=r.signal_sd,
                n_components=r.n_components,
            )
            for r in rows
        )
        present = [s.slice_index for s in slices if s.has_nerve]
        first, last = (present[0], present[-1]) if present else (None, None)
        summary = SeriesMetrics(
            # a leg's rows cover its nerve slices only: compare with the series' slice count
            n_slices=len(slices) if side is Side.ALL else series.n_slices or len(slices),
            n_nerve_slices=len(present),
            first_slice=first,
            last_slice=last,
            gap_slices=0 if first is None or last is None else (last - first + 1) - len(present),
            voxel_count=sum(s.voxel_count for s in slices),
            volume_mm3=nerve.volume_mm3,
            csa_mean_mm2=nerve.csa_mean_mm2,
            csa_median_mm2=nerve.csa_median_mm2,
            csa_max_mm2=nerve.csa_max_mm2,
            covered_length_mm=nerve.covered_length_mm,
            signal_mean=nerve.signal_mean,
            n_components_3d=nerve.n_components_3d or 0,
            max_pieces=nerve.max_pieces or 0,
            bifurcation_z_mm=nerve.bifurcation_z_mm,
        )
        normal = slice_normal(affine)
        return NerveMetrics(
            summary,
            slices,
            area,
            slice_spacing_mm(affine),
            (float(normal[0]), float(normal[1]), float(normal[2])),
        )


def quality_control(settings: Settings, engine: Engine, segmentation_id: int) -> QcStatus:
    """Label-free flags, plus agreement with every manual label of the series; return the QC status."""
    with named_lock(engine, f"qc-{segmentation_id}"):
        return _quality_control(settings, engine, segmentation_id)


def _quality_control(settings: Settings, engine: Engine, segmentation_id: int) -> QcStatus:
    metrics = stored_metrics(engine, segmentation_id)
    thresholds = settings.qc_thresholds()
    verdict = _with_legs(assess(metrics, thresholds), _legs(engine, segmentation_id), thresholds)
    with session_scope(engine) as session:
        segmentation = session.get(Segmentation, segmentation_id)
        doubt = segmentation.uncertainty if segmentation is not None else None
        snr = segmentation.image_snr if segmentation is not None else None
    if QcFlag.EMPTY_MASK not in verdict.flags:
        findings = (*verdict.findings, *uncertainty_findings(doubt, thresholds), *snr_findings(snr, thresholds))
        verdict = QcVerdict(status_of(findings), findings)
    with session_scope(engine) as session:
        segmentation = session.get(Segmentation, segmentation_id)
        assert segmentation is not None
        mask_file = segmentation.mask_path
        labels = [
            (label.id, label.mask_path)
            for label in session.scalars(
                select(ManualLabel).where(ManualLabel.series_id == segmentation.series_id).order_by(ManualLabel.id)
            )
        ]
    comparisons: list[tuple[int, MaskComparison, QcVerdict]] = []
    if labels:
        prediction = read_mask(mask_file)
        for label_id, label_file in labels:
            label = read_mask(label_file)
            comparison = compare_masks(prediction.data, prediction.affine, label.data, label.affine)
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


def _legs(engine: Engine, segmentation_id: int) -> list[LegFacts]:
    """Each thigh's facts from its rows (an empty row: a thigh in view without a nerve)."""
    with session_scope(engine) as session:
        rows = list(
            session.scalars(
                select(NerveMetric)
                .where(NerveMetric.segmentation_id == segmentation_id, NerveMetric.side != Side.ALL)
                .order_by(NerveMetric.side)
            )
        )
        facts = [(row.side, row.volume_mm3 > 0, row.anterior_offset_mm) for row in rows]
    return [
        LegFacts(side.value, stored_metrics(engine, segmentation_id, side) if has_nerve else None, offset)
        for side, has_nerve, offset in facts
    ]


def _with_legs(whole: QcVerdict, legs: list[LegFacts], thresholds: QcThresholds) -> QcVerdict:
    """The whole mask's verdict, judged per thigh where the field of view holds two of them.

    An empty mask stays a plain failure. With one thigh its nerve is the whole
    mask: only the thigh's own flag (a nerve in front of it) is added. With two,
    the flags that assume a single nerve are taken per thigh instead.
    """
    if not legs or QcFlag.EMPTY_MASK in whole.flags:
        return whole
    per_leg = assess_legs(legs, thresholds)
    if len(legs) == 1:
        added = [f for f in per_leg.findings if f.flag in (QcFlag.NERVE_NOT_POSTERIOR, QcFlag.LEG_WITHOUT_NERVE)]
        findings = [*whole.findings, *added]
    else:
        label = [f for f in whole.findings if f.flag is QcFlag.LABEL_DICE_FAILED]
        findings = [*per_leg.findings, *label]
    return QcVerdict(status_of(findings), tuple(findings))


def _centroid(row: SliceMetric) -> tuple[float, float, float] | None:
    if row.centroid_x_mm is None or row.centroid_y_mm is None or row.centroid_z_mm is None:
        return None
    return (row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm)


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


def inter_rater_agreement(engine: Engine, series_instance_uid: str) -> dict[str, object]:
    """Pairwise Dice between the raters who labelled the newest version of a series (at least two)."""
    with session_scope(engine) as session:
        series = current_series(session, series_instance_uid)
        if series is None:
            raise SciaticError(f"no converted series with SeriesInstanceUID {series_instance_uid}")
        labels = {
            label.rater: label.mask_path
            for label in session.scalars(
                select(ManualLabel).where(ManualLabel.series_id == series.id).order_by(ManualLabel.id)
            )
        }
    if len(labels) < 2:
        raise SciaticError(f"series {series_instance_uid} has {len(labels)} rater(s); agreement needs two or more")
    masks = {rater: read_mask(path) for rater, path in labels.items()}
    summary = inter_rater_summary({rater: (m.data, m.affine) for rater, m in masks.items()})
    return {"series_instance_uid": series_instance_uid, **summary.to_dict()}
