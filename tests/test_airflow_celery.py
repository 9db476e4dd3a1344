"""A real distributed Airflow: api-server, scheduler, dag-processor and two Celery workers.

The stack is ``tools.airflow_stack`` (what ``python -m tools.airflow_stack up``
starts), with Redis on 127.0.0.1:6379 as broker and fresh PostgreSQL databases
for Airflow's metadata / Celery results and for sciatic. Phantom studies go into
the drop folder; ingest and segment are triggered through the REST API; the
task_instance rows then say which worker ran what: the U-Net tasks on the
``gpu`` worker, everything else on the ``default`` worker.
"""

from __future__ import annotations

import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests._airflow_helpers import readable_task_log, register_untrained_production_model
from tests.postgres import create_database, drop_database
from tools.airflow_stack import AirflowStack, StackConfig, free_port

pytestmark = [pytest.mark.slow, pytest.mark.db, pytest.mark.timeout(330)]

REPO_ROOT = Path(__file__).resolve().parents[1]
REDIS = ("127.0.0.1", 6379)
REDIS_DB = 13  # apart from the stack of `make airflow-up` (7); keys carry a per-test prefix as well
PROBE = "sciatic_stack_probe"
SUBJECTS = 2
MODEL_TASKS = {("sciatic_segment", "segment_chunk"), ("sciatic_retrain", "train_challenger")}

# Routing check that does not depend on the pipeline: one task per queue.
PROBE_DAG = '''
"""Test-only: one task on each Celery queue."""
from airflow.sdk import dag, task
from sciatic_common import DEFAULT_ARGS, GPU_POOL, GPU_QUEUE, START_DATE


@dag(dag_id="sciatic_stack_probe", schedule=None, start_date=START_DATE, catchup=False,
     default_args={**DEFAULT_ARGS, "retries": 0}, doc_md=__doc__)
def sciatic_stack_probe():
    @task
    def on_default() -> str:
        return "default"

    @task(queue=GPU_QUEUE, pool=GPU_POOL)
    def on_gpu() -> str:
        return "gpu"

    on_default() >> on_gpu()


sciatic_stack_probe()
'''


def _require_redis() -> None:
    try:
        with socket.create_connection(REDIS, timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(64).startswith(b"+PONG"):
                raise OSError("no PONG")
    except OSError as exc:
        pytest.fail(
            f"Redis is needed on {REDIS[0]}:{REDIS[1]} as the Celery broker ({exc}); "
            "start it with `redis-server --daemonize yes` or `apt-get install redis-server`.",
            pytrace=False,
        )


def _delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis(host=REDIS[0], port=REDIS[1], db=REDIS_DB)
    try:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def stack(tmp_path: Path, pg_server: str, pg_settings: str, isolated_settings: Path) -> Iterator[AirflowStack]:
    """The running stack; stopped (process groups) and its metadata database dropped, whatever happens."""
    _require_redis()
    dags = tmp_path / "dags"
    shutil.copytree(REPO_ROOT / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    (dags / f"{PROBE}.py").write_text(PROBE_DAG)
    metadata_url = create_database(pg_server, prefix="sciatic_airflow")
    config = StackConfig(
        home=tmp_path / "airflow-home",
        metadata_url=metadata_url,
        broker_url=f"redis://{REDIS[0]}:{REDIS[1]}/{REDIS_DB}",
        dags_folder=dags,
        port=free_port(),
        key_prefix=f"sciatic-test-{uuid.uuid4().hex[:8]}:",
        env={
            "SCIATIC_DATABASE_URL": pg_settings,
            "SCIATIC_DATA_DIR": str(isolated_settings),
            "SCIATIC_SERIES_QUIET_SECONDS": "0",
            "SCIATIC_FILE_SETTLE_SECONDS": "0",
            "SCIATIC_DEVICE": "cpu",
            "SCIATIC_PSEUDONYM_KEY": "celery-test-pseudonym-key",
        },
    )
    harness = AirflowStack(config)
    try:
        harness.prepare()
        harness.start()
        yield harness
    finally:
        harness.stop()
        drop_database(pg_server, metadata_url)
        _delete_redis_keys(config.key_prefix)


def _sql(url: str, query: str) -> list[sa.Row[Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(query)))
    finally:
        engine.dispose()


def _fail_on_failed_tasks(stack: AirflowStack) -> None:
    """Any failed (or retrying) task instance, of any run, ends the test with its log."""
    bad = _sql(
        stack.config.metadata_url,
        "SELECT dag_id, run_id, task_id, map_index, state FROM task_instance "
        "WHERE state IN ('failed', 'up_for_retry') LIMIT 1",
    )
    if bad:
        dag_id, run_id, task_id, map_index, state = bad[0]
        folder = stack.config.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        logs = sorted(folder.glob("**/*.log"))
        log = readable_task_log(logs[-1]) if logs else "(no task log)"
        pytest.fail(f"{dag_id} {run_id}: {task_id}[{map_index}] {state}:\n{log}", pytrace=False)


def _wait(stack: AirflowStack, what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        _fail_on_failed_tasks(stack)
        if done():
            return
        time.sleep(2)
    runs = _sql(stack.config.metadata_url, "SELECT dag_id, run_id, state FROM dag_run ORDER BY id")
    tasks = _sql(stack.config.metadata_url, "SELECT dag_id, task_id, map_index, state FROM task_instance")
    pytest.fail(
        f"{what}: not done after {timeout:.0f} s\nruns {runs}\ntasks {tasks}\n"
        f"worker-default:\n{stack.log_tail('worker-default')}\nworker-gpu:\n{stack.log_tail('worker-gpu')}",
        pytrace=False,
    )


def _run_finished(stack: AirflowStack, dag_id: str, run_id: str) -> bool:
    return stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"] == "success"


def _all_runs_finished(stack: AirflowStack) -> bool:
    active = _sql(stack.config.metadata_url, "SELECT count(*) FROM dag_run WHERE state IN ('queued', 'running')")
    return active[0][0] == 0


def test_model_tasks_run_on_the_gpu_worker(stack: AirflowStack, pg_settings: str, tmp_path: Path) -> None:
    from sciatic.config import get_settings
    from sciatic.phantom.generate import generate

    started = time.monotonic()
    # The drop folder already holds complete studies and a model is in production.
    staging = tmp_path / "phantom"
    manifest = generate(staging, subjects=SUBJECTS, seed=7)
    drop = get_settings().dir("drop")
    for subject in manifest.subjects:
        shutil.move(str(staging / subject.dicom_dir), drop / subject.dicom_dir)  # no manifest: it is not DICOM
    register_untrained_production_model()

    stack.wait_healthy(timeout=150)
    stack.wait_for_dags(["sciatic_ingest", "sciatic_segment", PROBE], timeout=120)

    # Routing alone first: the probe's gpu task must reach the gpu worker.
    stack.unpause(PROBE)
    probe = stack.trigger(PROBE)
    _wait(stack, "probe run", lambda: _run_finished(stack, PROBE, probe), timeout=90)

    # Unpausing also starts each DAG's latest scheduled run; every run must end well.
    stack.unpause("sciatic_ingest")
    stack.unpause("sciatic_segment")
    ingest = stack.trigger("sciatic_ingest")
    _wait(stack, "ingest run", lambda: _run_finished(stack, "sciatic_ingest", ingest), timeout=90)
    converted = _sql(pg_settings, "SELECT count(*) FROM series WHERE status = 'converted'")[0][0]
    assert converted == SUBJECTS

    # The volumes Asset starts a segment run by itself; a manual run finds nothing left to do.
    segment = stack.trigger("sciatic_segment")
    _wait(stack, "segment run", lambda: _run_finished(stack, "sciatic_segment", segment), timeout=180)

    def segment_triggers() -> set[str]:
        sql = "SELECT run_type FROM dag_run WHERE dag_id = 'sciatic_segment'"
        return {row[0] for row in _sql(stack.config.metadata_url, sql)}

    # With one active run at a time, the Asset's run may appear only after the manual one: wait for it.
    _wait(stack, "asset-triggered segment run", lambda: "asset_triggered" in segment_triggers(), timeout=60)
    _wait(stack, "all runs", lambda: _all_runs_finished(stack), timeout=60)
    assert _sql(pg_settings, "SELECT count(*) FROM segmentation")[0][0] == SUBJECTS

    host = socket.getfqdn()
    rows = _sql(
        stack.config.metadata_url,
        "SELECT dag_id, task_id, map_index, hostname, queue FROM task_instance WHERE state = 'success'",
    )
    ran = {(row.dag_id, row.task_id) for row in rows}
    assert {(PROBE, "on_gpu"), ("sciatic_ingest", "ingest"), ("sciatic_segment", "segment_chunk")} <= ran
    assert 1 <= sum(1 for row in rows if row.task_id == "segment_chunk") <= SUBJECTS  # chunks, not series
    for row in rows:
        expected = "gpu" if (row.dag_id, row.task_id) in MODEL_TASKS or row.task_id == "on_gpu" else "default"
        assert (row.queue, row.hostname) == (expected, f"{expected}@{host}"), row
    assert time.monotonic() - started < 300
