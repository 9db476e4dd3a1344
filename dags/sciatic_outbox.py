"""
### sciatic_outbox

Every 5 minutes: results to the PACS (`SCIATIC_PACS_HOST`; nothing when unset).
`queue_results` writes the DICOM SEG, SR and SC of every segmentation of the last
`SCIATIC_PACS_QUEUE_DAYS` that has its QC (only QC `pass` while
`SCIATIC_PACS_SEND_QC=pass`) and is not queued yet, and adds them to the outbox
table; `drain_outbox` sends every due object, one association per PACS node. An
object the PACS does not take is tried again with exponential back-off, up to
`SCIATIC_PACS_MAX_ATTEMPTS`; an acknowledged one is never sent again.
`sciatic outbox list` shows the queue, `sciatic outbox retry` queues failed
objects again.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import dag, task
from sciatic_common import DEFAULT_ARGS, START_DATE, TAGS, airflow_run_id

log = logging.getLogger(__name__)


@dag(
    dag_id="sciatic_outbox",
    schedule=dt.timedelta(minutes=5),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=1),
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def sciatic_outbox() -> None:
    @task
    def queue_results() -> int:
        """SEG, SR and SC of the QC'd segmentations not queued yet, into the outbox; returns the objects queued."""
        from sciatic import pipeline

        queued = pipeline.queue_new_results(run_id=airflow_run_id())
        log.info("%d object(s) queued for the PACS", queued)
        return queued

    @task(trigger_rule="all_done")  # what is queued goes out even when queueing one segmentation failed
    def drain_outbox() -> dict[str, int]:
        """Send every due object to the PACS; returns how many went, wait for a retry, failed."""
        from sciatic import pipeline

        report = pipeline.drain_outbox(run_id=airflow_run_id())
        log.info("%s", report.summary())
        return {"sent": len(report.sent), "retrying": len(report.retrying), "failed": len(report.failed)}

    queue_results() >> drain_outbox()


sciatic_outbox()
