"""
### sciatic_labels

Hourly: import new manual labels from the labels folder (`import_labels`), then
compute Dice QC for every segmentation whose series now has a label without a
Dice row (one mapped task per segmentation). When new labels were imported the
`sciatic://labels` Asset is updated (extra: the new manual_label ids), which lets
`sciatic_retrain` check whether enough labels arrived to retrain.
"""

from __future__ import annotations

import logging

from airflow.sdk import dag, get_current_context, task
from sciatic_common import DEFAULT_ARGS, LABELS, MAX_MAPPED, START_DATE, TAGS, airflow_run_id

log = logging.getLogger(__name__)


@dag(
    dag_id="sciatic_labels",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def sciatic_labels() -> None:
    @task
    def import_labels() -> list[int]:
        """Import new labels; returns the ids of the new manual_label rows."""
        from sciatic import pipeline

        ids = pipeline.import_labels(run_id=airflow_run_id())
        log.info("%d new manual label(s): %s", len(ids), ids)
        return ids

    @task
    def needing_label_qc() -> list[int]:
        """Segmentations of labelled series that lack a Dice QC row against a label."""
        from sciatic import pipeline

        ids = pipeline.segmentations_needing_label_qc(run_id=airflow_run_id())[:MAX_MAPPED]
        log.info("%d segmentation(s) to check against labels: %s", len(ids), ids)
        return ids

    @task
    def label_qc(segmentation_id: int) -> str:
        """Dice (and the other agreement metrics) of one segmentation against its labels."""
        from sciatic import pipeline

        status = pipeline.quality_control(segmentation_id, run_id=airflow_run_id())
        log.info("segmentation %d QC: %s", segmentation_id, status)
        return status

    @task.short_circuit
    def new_labels(label_ids: list[int]) -> bool:
        """Go on to announce the labels only when some were imported."""
        return bool(label_ids)

    @task(outlets=[LABELS])
    def announce_labels(label_ids: list[int]) -> None:
        """Emit the labels Asset event (its extra names the new manual_label rows)."""
        get_current_context()["outlet_events"][LABELS].extra = {"manual_label_ids": label_ids}
        log.info("asset %s updated for manual labels %s", LABELS.uri, label_ids)

    imported = import_labels()
    to_check = needing_label_qc()
    imported >> to_check
    label_qc.expand(segmentation_id=to_check)
    new_labels(imported) >> announce_labels(imported)


sciatic_labels()
