"""
### sciatic_retrain

Weekly (Sunday 03:00 local) **or** whenever `sciatic_labels` updates the
`sciatic://labels` Asset: when `retrain_due()` (at least
`SCIATIC_RETRAIN_MIN_NEW_LABELS` new labels since the last training run; a manual
run with conf `{"force": true}` skips this check), freeze a subject-level split,
train a challenger on the Celery queue `gpu` in the pool `gpu`, evaluate challenger
and production on the same test subjects, and promote the challenger only if it is
better. Otherwise the run ends at `retrain_due` (short-circuit).
"""

from __future__ import annotations

import logging

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task
from sciatic_common import (
    DEFAULT_ARGS,
    GPU_POOL,
    GPU_QUEUE,
    LABELS,
    LOCAL_TZ,
    RETRAIN_SCHEDULE,
    START_DATE,
    TAGS,
    airflow_run_id,
)

log = logging.getLogger(__name__)

# How the run was started, as recorded in training_run.trigger.
TRIGGERS = {"scheduled": "schedule", "asset_triggered": "labels", "manual": "manual"}


@dag(
    dag_id="sciatic_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(RETRAIN_SCHEDULE, timezone=LOCAL_TZ),
        assets=LABELS,
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    params={"force": Param(False, type="boolean", description="Retrain even when too few new labels arrived.")},
    doc_md=__doc__,
)
def sciatic_retrain() -> None:
    @task.short_circuit
    def retrain_due() -> bool:
        """Enough new labels since the last training run (or a forced manual run)?"""
        from sciatic import pipeline

        if get_current_context()["params"]["force"]:
            log.info("forced run: retraining regardless of new labels")
            return True
        due = pipeline.retrain_due(run_id=airflow_run_id())
        log.info("retraining due: %s", due)
        return due

    @task
    def start_training_run() -> int:
        """Freeze the split of the labelled series; returns the training_run id."""
        from sciatic import pipeline

        run_type = str(get_current_context()["dag_run"].run_type)
        training_run_id = pipeline.start_training_run(TRIGGERS.get(run_type, run_type), run_id=airflow_run_id())
        log.info("training run %d started (%s)", training_run_id, run_type)
        return training_run_id

    @task(queue=GPU_QUEUE, pool=GPU_POOL, retries=1)
    def train_challenger(training_run_id: int) -> int:
        """Train the challenger on the frozen split; returns its model_version id."""
        from sciatic import pipeline

        model_id = pipeline.train_challenger(training_run_id, run_id=airflow_run_id())
        log.info("training run %d -> challenger model_version %d", training_run_id, model_id)
        return model_id

    @task
    def evaluate_and_decide(training_run_id: int) -> str:
        """Challenger vs production on the same test subjects; promote or keep."""
        from sciatic import pipeline

        decision = pipeline.evaluate_and_decide(training_run_id, run_id=airflow_run_id())
        log.info("training run %d: %s", training_run_id, decision)
        return decision

    training_run = start_training_run()
    retrain_due() >> training_run
    train_challenger(training_run) >> evaluate_and_decide(training_run)


sciatic_retrain()
