"""What the sciatic DAGs share: the Assets (declared once), defaults, and the run id helper.

Parse-time cost only: the sciatic settings (environment and config file), no database,
no connections.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import Asset, AssetAlias, get_current_context, timezone

from sciatic import airflow_setup
from sciatic.config import get_settings

log = logging.getLogger(__name__)

# New NIfTI volumes exist (emitted by sciatic_ingest); extra: {"series_ids": [...]}.
VOLUMES = Asset("sciatic://volumes")
# The ingest task's outlet: through it the task emits a VOLUMES event only when its pass converted something.
NEW_VOLUMES = AssetAlias("sciatic-new-volumes")
# New manual labels were imported (emitted by sciatic_labels); extra: {"manual_label_ids": [...]}.
LABELS = Asset("sciatic://labels")

TAGS = ["sciatic"]
# Naive wall-clock date: Airflow makes it aware in [core] default_timezone, so cron
# schedules below run on the hospital's local clock (set that option; see docs/airflow.md).
START_DATE = timezone.datetime(2025, 1, 1)
LOCAL_TZ = START_DATE.tzinfo
DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=30),
}

# Celery queue and pool of the tasks that run the U-Net: declared once, beside `sciatic airflow setup`.
GPU_QUEUE = airflow_setup.GPU_QUEUE
GPU_POOL = airflow_setup.GPU_POOL
# Dynamic task mapping is capped by [core] max_map_length (1024 by default); a run
# maps at most this many series and the next run takes the rest.
MAX_MAPPED = 1000

# SCIATIC_SEGMENT_SCHEDULE and SCIATIC_INGEST_INTERVAL_SECONDS (environment or config file),
# read when the file is parsed.
SEGMENT_SCHEDULE = get_settings().segment_schedule
INGEST_INTERVAL = dt.timedelta(seconds=get_settings().ingest_interval_seconds)
RETRAIN_SCHEDULE = "0 3 * * 0"  # Sunday 03:00, after the nightly segmentation


def airflow_run_id() -> str:
    """The Airflow run id of the running task: the pipeline records it in its audit trail."""
    return str(get_current_context()["run_id"])
