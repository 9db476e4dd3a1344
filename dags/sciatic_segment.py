"""
### sciatic_segment

Nightly (cron `SCIATIC_SEGMENT_SCHEDULE`, default 01:00 local) **or** whenever
`sciatic_ingest` updates the `sciatic://volumes` Asset: list the eligible series
still without a segmentation by the production model, cut them into chunks of
`SCIATIC_SEGMENT_CHUNK_SIZE`, and run one mapped `segment_chunk` task per chunk on
the Celery queue `gpu` in the pool `gpu`: it loads the model once and segments,
measures and QCs every series of its chunk. A series that fails is recorded and
the chunk goes on; the task then fails, and its retry redoes only the failed
series. Other chunks are not affected.
"""

from __future__ import annotations

import logging

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task
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


class ChunkFailedError(RuntimeError):
    """Some series of the chunk failed (the others are done); a retry redoes only those."""


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
    def pending_series() -> list[list[int]]:
        """Chunks of the eligible series without a segmentation by the production model."""
        from sciatic import pipeline

        chunks = pipeline.chunks(pipeline.pending_series(run_id=airflow_run_id()))
        if len(chunks) > MAX_MAPPED:
            log.info("%d chunks pending; this run takes %d, the next run the rest", len(chunks), MAX_MAPPED)
            chunks = chunks[:MAX_MAPPED]
        log.info("%d series in %d chunk(s): %s", sum(map(len, chunks)), len(chunks), chunks)
        return chunks

    @task(queue=GPU_QUEUE, pool=GPU_POOL)
    def segment_chunk(series_ids: list[int]) -> list[int]:
        """Segment, measure and QC a chunk of series (the model loaded once); returns the segmentation ids."""
        from sciatic import pipeline

        report = pipeline.segment_chunk(series_ids, run_id=airflow_run_id())
        log.info("chunk %s: %s", series_ids, report.summary())
        for series_id, error in report.failed:
            log.error("series %d failed: %s", series_id, error)
        if report.failed:
            raise ChunkFailedError(f"{len(report.failed)} of {len(series_ids)} series failed: {report.failed}")
        return report.done

    segment_chunk.expand(series_ids=pending_series())


sciatic_segment()
