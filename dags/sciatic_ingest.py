"""
### sciatic_ingest

Every `SCIATIC_INGEST_INTERVAL_SECONDS` (default 30 s): one ingest pass over
the drop folder (`sciatic.pipeline.ingest`): index new DICOM files, quarantine bad ones
with a reason, convert the series that have gone quiet to NIfTI volumes. When the pass
converted at least one series, the same task updates the `sciatic://volumes` Asset (through
the alias `sciatic-new-volumes`; its extra lists the new series ids), which starts
`sciatic_segment`. A pass that found nothing new emits nothing. One task, so that a study
pays for one task start on its way to segmentation.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import dag, get_current_context, task
from sciatic_common import DEFAULT_ARGS, INGEST_INTERVAL, NEW_VOLUMES, START_DATE, TAGS, VOLUMES, airflow_run_id

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
    @task(outlets=[NEW_VOLUMES])
    def ingest() -> list[int]:
        """One pass over the drop folder; announces and returns the ids of newly converted series."""
        from sciatic import pipeline

        report = pipeline.ingest(run_id=airflow_run_id())
        log.info("ingest: %s", report.summary())
        converted = list(report.converted)
        if converted:
            get_current_context()["outlet_events"][NEW_VOLUMES].add(VOLUMES, extra={"series_ids": converted})
            log.info("asset %s updated for series %s", VOLUMES.uri, converted)
        return converted

    ingest()


sciatic_ingest()
