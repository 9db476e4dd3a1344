"""
### sciatic_segment

Nightly (cron `SCIATIC_SEGMENT_SCHEDULE`, default 01:00 local) **or** whenever
`sciatic_ingest` updates the `sciatic://volumes` Asset: list the series still
without a segmentation by the production model, then for each series (one mapped
task group instance per series): segment with the U-Net on the Celery queue `gpu`
in the pool `gpu` -> nerve metrics -> QC flags. A failure in one series leaves
the other series' tasks running.
"""

from __future__ import annotations

import logging

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task, task_group
from sciatic_common import (
    DEFAULT_ARGS,
    GPU_POOL,
    GPU_QUEUE,
    LOCAL_TZ,
    MAX_MAPPED,
    SEGMENT_SCHEDULE,
    START_DATE,
    TAGS,
    VOLUMES,
    airflow_run_id,
)

log = logging.getLogger(__name__)


@dag(
    dag_id="sciatic_segment",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(SEGMENT_SCHEDULE, timezone=LOCAL_TZ),
        assets=VOLUMES,
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def sciatic_segment() -> None:
    @task
    def pending_series() -> list[int]:
        """Ids of converted series without a segmentation by the production model."""
        from sciatic import pipeline

        ids = pipeline.pending_series(run_id=airflow_run_id())
        if len(ids) > MAX_MAPPED:
            log.info("%d series pending; this run takes %d, the next run the rest", len(ids), MAX_MAPPED)
            ids = ids[:MAX_MAPPED]
        log.info("%d series to segment: %s", len(ids), ids)
        return ids

    @task(queue=GPU_QUEUE, pool=GPU_POOL)
    def segment(series_id: int) -> int:
        """Run the production U-Net on one series; returns the segmentation id."""
        from sciatic import pipeline

        segmentation_id = pipeline.segment(series_id, run_id=airflow_run_id())
        log.info("series %d -> segmentation %d", series_id, segmentation_id)
        return segmentation_id

    @task
    def measure(segmentation_id: int) -> int:
        """Slice and nerve metrics (CSA, volume, signal) of one segmentation."""
        from sciatic import pipeline

        pipeline.measure(segmentation_id, run_id=airflow_run_id())
        log.info("segmentation %d measured", segmentation_id)
        return segmentation_id

    @task
    def quality_control(segmentation_id: int) -> str:
        """QC flags (and Dice against any manual label); returns the QC status."""
        from sciatic import pipeline

        status = pipeline.quality_control(segmentation_id, run_id=airflow_run_id())
        log.info("segmentation %d QC: %s", segmentation_id, status)
        return status

    @task_group
    def per_series(series_id: int) -> None:
        quality_control(measure(segment(series_id)))

    per_series.expand(series_id=pending_series())


sciatic_segment()
