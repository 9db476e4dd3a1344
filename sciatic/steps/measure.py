"""The measure step: slice and nerve metrics of one segmentation, stored as rows.

Computed from the mask and volume files (on the same grid, checked; from
memory when the same process has just written them) and
written in one transaction that replaces earlier rows, so the step is
idempotent. The QC step (``sciatic.steps.qc``) reads these rows.
"""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from sciatic.db import audit
from sciatic.db.enums import Side
from sciatic.db.locks import named_lock
from sciatic.db.models import NerveMetric, Segmentation, Series, SliceMetric
from sciatic.db.session import session_scope
from sciatic.errors import SciaticError
from sciatic.evaluation.anatomy import legs_in_view
from sciatic.evaluation.metrics import NerveMetrics, nerve_metrics, nerve_metrics_by_side
from sciatic.imaging.volume import check_same_grid, read_volume_known

__all__ = ["compute_metrics", "measure"]

log = logging.getLogger(__name__)
STEP = "measure"


def compute_metrics(engine: Engine, segmentation_id: int) -> dict[Side, tuple[NerveMetrics, float | None]]:
    """Metrics of one stored segmentation: every nerve together (``Side.ALL``) and each leg's nerve.

    The nerves go to legs by patient coordinates, or by the series' Laterality tag
    when the study is unilateral (``sciatic.evaluation.metrics.split_sides``). Every
    thigh seen in the image (``sciatic.evaluation.anatomy.legs_in_view``) gets a row,
    an empty one when no nerve was found in it, with how far its nerve lies anterior
    to the thigh's centre (mm; negative: posterior, as it should be).
    """
    with session_scope(engine) as session:
        segmentation = session.get(Segmentation, segmentation_id)
        if segmentation is None:
            raise SciaticError(f"no segmentation with id {segmentation_id}")
        series = session.get(Series, segmentation.series_id)
        assert series is not None and series.volume_path is not None
        mask_file, volume_file, laterality = segmentation.mask_path, series.volume_path, series.laterality or ""
        mask_sha, volume_sha = segmentation.mask_sha256, series.volume_sha256
    # from memory when this process just wrote them (segment, then measure, in one chunk)
    mask, volume = read_volume_known(mask_file, mask_sha), read_volume_known(volume_file, volume_sha)
    check_same_grid(mask.shape, mask.affine, volume.shape, volume.affine)
    side_tag = laterality if laterality in ("L", "R") else ""
    every = nerve_metrics(mask.data, mask.affine, volume.data)
    by_side = nerve_metrics_by_side(mask.data, mask.affine, volume.data, side_tag)
    measured: dict[Side, tuple[NerveMetrics, float | None]] = {Side.ALL: (every, None)}
    legs = {leg.side: leg for leg in legs_in_view(volume.data, volume.affine, side_tag)}
    for side in sorted(set(by_side) | set(legs)):
        metrics = by_side.get(side) or nerve_metrics(np.zeros(mask.shape, dtype=bool), mask.affine)
        leg = legs.get(side)
        nerve_y = [s.centroid_ras_mm[1] for s in metrics.slices if s.centroid_ras_mm is not None]
        offset = float(np.mean(nerve_y)) - leg.centroid_ras_mm[1] if leg is not None and nerve_y else None
        measured[side] = (metrics, offset)
    return measured


def measure(engine: Engine, segmentation_id: int) -> None:
    """Store slice and nerve metrics of one segmentation, replacing any earlier ones (one process at a time)."""
    with named_lock(engine, f"measure-{segmentation_id}"):
        _measure(engine, segmentation_id)


def _measure(engine: Engine, segmentation_id: int) -> None:
    measured = compute_metrics(engine, segmentation_id)
    with session_scope(engine) as session:
        session.execute(delete(SliceMetric).where(SliceMetric.segmentation_id == segmentation_id))
        session.execute(delete(NerveMetric).where(NerveMetric.segmentation_id == segmentation_id))
        for side, (metrics, offset) in measured.items():
            _add_rows(session, segmentation_id, side, metrics, offset)
        s = measured[Side.ALL][0].series
        audit.record(
            session,
            STEP,
            "measured",
            "segmentation",
            segmentation_id,
            volume_mm3=round(s.volume_mm3, 1),
            sides=[side.value for side in measured if side is not Side.ALL],
        )
    log.info(
        "segmentation %s: volume %.0f mm³, mean CSA %s mm² over %d slices, sides %s",
        segmentation_id,
        s.volume_mm3,
        "-" if s.csa_mean_mm2 is None else f"{s.csa_mean_mm2:.1f}",
        s.n_nerve_slices,
        "/".join(side.value for side in measured if side is not Side.ALL) or "-",
    )


def _add_rows(
    session: Session, segmentation_id: int, side: Side, metrics: NerveMetrics, anterior_offset_mm: float | None
) -> None:
    for m in metrics.slices:
        if side is not Side.ALL and not m.has_nerve:
            continue  # a leg's rows: only its nerve slices (the ``all`` rows keep every slice)
        x, y, z = m.centroid_ras_mm if m.centroid_ras_mm is not None else (None, None, None)
        session.add(
            SliceMetric(
                segmentation_id=segmentation_id,
                side=side,
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
    s = metrics.series
    session.add(
        NerveMetric(
            segmentation_id=segmentation_id,
            side=side,
            volume_mm3=s.volume_mm3,
            csa_mean_mm2=s.csa_mean_mm2,
            csa_median_mm2=s.csa_median_mm2,
            csa_max_mm2=s.csa_max_mm2,
            covered_length_mm=s.covered_length_mm,
            signal_mean=s.signal_mean,
            n_slices_with_nerve=s.n_nerve_slices,
            n_components_3d=s.n_components_3d,
            max_pieces=s.max_pieces,
            bifurcation_z_mm=s.bifurcation_z_mm,
            anterior_offset_mm=anterior_offset_mm,
        )
    )
