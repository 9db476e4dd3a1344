"""
### sciatic_ingest

Every `SCIATIC_INGEST_INTERVAL_SECONDS` (default 300 s, 5 minutes): one ingest pass over
the drop folder (`sciatic.pipeline.ingest`): index new DICOM files, quarantine bad ones
with a reason, convert quiet series to NIfTI volumes. When the pass converted at least one series, the `sciatic://volumes`
Asset is updated (its extra lists the new series ids), which starts `sciatic_segment`.
A pass that found nothing new ends at `new_volumes` (short-circuit) and emits nothing.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import dag, get_current_context, task
from sciatic_common import DEFAULT_ARGS, INGEST_INTERVAL, START_DATE, TAGS, VOLUMES, airflow_run_id

log = logging.getLogger(__name__)


@dag(
    dag_id="sciatic_ingest",
    schedule=INGEST_INTERVAL,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=1),
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def sciatic_ingest() -> None:
    @task
    def ingest() -> list[int]:
        """One pass over the drop folder; returns the ids of newly converted series."""
        from sciatic import pipeline

        report = pipeline.ingest(run_id=airflow_run_id())
        log.info("ingest: %s", report.summary())
        log.info("new series ids: %s", report.converted)
        return list(report.converted)

    @task.short_circuit
    def new_volumes(series_ids: list[int]) -> bool:
        """Go on to announce the volumes only when the pass converted something."""
        log.info("%d new volume(s)", len(series_ids))
        return bool(series_ids)

    @task(outlets=[VOLUMES])
    def announce_volumes(series_ids: list[int]) -> None:
        """Emit the volumes Asset event (its extra names the new series)."""
        get_current_context()["outlet_events"][VOLUMES].extra = {"series_ids": series_ids}
        log.info("asset %s updated for series %s", VOLUMES.uri, series_ids)

    converted = ingest()
    new_volumes(converted) >> announce_volumes(converted)


sciatic_ingest()
