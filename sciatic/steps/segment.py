"""The segmentation step: one series volume + one model version -> a mask NIfTI and a row.

The model is loaded once per process (``sciatic.model.infer.cached_model``)
so that a batch of series pays the load once. Re-running for the same series
and model is a no-op unless forced; a forced re-run replaces the mask and drops
the metrics and QC that were computed from the old one.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine, delete, select

from sciatic.config import Settings
from sciatic.db import audit, queries, registry
from sciatic.db.enums import SeriesStatus
from sciatic.db.locks import named_lock
from sciatic.db.models import NerveMetric, QcResult, Segmentation, Series, SliceMetric
from sciatic.db.session import session_scope
from sciatic.errors import SciaticError
from sciatic.layout import DataLayout

__all__ = ["SeriesNotSegmentableError", "pending_series", "segment_series"]

log = logging.getLogger(__name__)
STEP = "segment"


class SeriesNotSegmentableError(SciaticError):
    """The series has no current volume (refused, superseded or not yet converted).

    Recovery: none for this series; its newest version is segmented instead.
    """


def pending_series(settings: Settings, engine: Engine) -> list[int]:
    """Converted, current, eligible series that the production model has not segmented yet."""
    rules = settings.eligibility_rules()
    with session_scope(engine) as session:
        return queries.pending_series(session, registry.production(session).id, rules.include_uids, rules.exclude_uids)


def segment_series(
    settings: Settings, engine: Engine, series_id: int, model_id: int | None = None, force: bool = False
) -> int:
    """Segment one series; return the segmentation id.

    Two processes asked for the same series and model take turns (a named
    lock): the second finds the first one's segmentation and returns it.
    """
    with session_scope(engine) as session:
        chosen = model_id if model_id is not None else registry.production(session).id
    with named_lock(engine, f"segment-{series_id}-{chosen}"):
        return _segment(settings, engine, series_id, chosen, force)


def _segment(settings: Settings, engine: Engine, series_id: int, model_id: int, force: bool) -> int:
    from sciatic.imaging.noise import estimate_snr
    from sciatic.imaging.volume import Volume, is_remembered, read_volume_known, write_volume
    from sciatic.model.infer import cached_model, segment_volume
    from sciatic.storage import sha256_file

    with session_scope(engine) as session:
        series = session.get(Series, series_id)
        if series is None or series.status is not SeriesStatus.CONVERTED or series.volume_path is None:
            state = "missing" if series is None else series.status.value
            raise SeriesNotSegmentableError(f"series {series_id} cannot be segmented ({state})")
        model = registry.get(session, model_id)
        existing = session.scalars(
            select(Segmentation).where(Segmentation.series_id == series_id, Segmentation.model_version_id == model.id)
        ).first()
        if existing is not None and not force:
            log.info("series %s already segmented by %s (segmentation %s)", series_id, model.name, existing.id)
            return existing.id
        target = DataLayout.of(settings).mask(series.series_instance_uid, series.version, model.name)
        volume_path, volume_sha = series.volume_path, series.volume_sha256
        checkpoint, checkpoint_sha, model_name, version_id = (
            model.checkpoint_path,
            model.checkpoint_sha256,
            model.name,
            model.id,
        )
    start = time.perf_counter()
    if volume_sha and not is_remembered(volume_sha) and sha256_file(volume_path) != volume_sha:  # else: as written
        raise SciaticError(f"volume {volume_path} of series {series_id} changed since conversion (sha256 differs)")
    bundle = cached_model(checkpoint, checkpoint_sha, settings.device, settings.cpu_runtime)
    # from memory when this process converted it; otherwise read, and kept for measure (its sha256 checked above)
    volume = read_volume_known(volume_path, volume_sha, verified=bool(volume_sha))
    result = segment_volume(
        bundle,
        volume.data,
        volume.affine,
        drop_stray=settings.drop_stray_components,
    )
    mask_sha = write_volume(Volume(result.mask, volume.affine), target)
    snr = estimate_snr(volume.data)
    total = time.perf_counter() - start
    with session_scope(engine) as session:
        row = session.scalars(
            select(Segmentation).where(Segmentation.series_id == series_id, Segmentation.model_version_id == version_id)
        ).first()
        if row is None:
            row = Segmentation(series_id=series_id, model_version_id=version_id)
            session.add(row)
        else:  # forced: results computed from the old mask no longer hold
            for table in (SliceMetric, NerveMetric, QcResult):
                session.execute(delete(table).where(table.segmentation_id == row.id))
        row.mask_path, row.mask_sha256 = str(target), mask_sha
        row.device, row.batch_size = result.device, result.batch_size
        row.uncertainty, row.slice_uncertainty = result.uncertainty, list(result.slice_uncertainty)
        row.image_snr = snr
        row.load_seconds, row.inference_seconds, row.total_seconds = (
            result.load_seconds,
            result.inference_seconds,
            total,
        )
        session.flush()
        audit.record(
            session,
            STEP,
            "segmented",
            "segmentation",
            row.id,
            series_id=series_id,
            model=model_name,
            voxels=int(result.mask.sum()),
            device=result.device,
            seconds=round(total, 3),
            forced=force,
        )
        log.info(
            "series %s segmented by %s on %s in %.2f s: %d voxels",
            series_id,
            model_name,
            result.device,
            total,
            int(result.mask.sum()),
        )
        return row.id
