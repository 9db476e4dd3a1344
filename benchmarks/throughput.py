"""Throughput and latency: the same phantom studies through `sciatic run` and through a real local Airflow.

Usage::

    .venv/bin/python benchmarks/throughput.py [--studies 20] [--repeats 3] [--ingest-interval S] [--quiet-seconds 10]
                                              [--settle-seconds 5] [--idle-window 60] [--chunk-size N]
                                              [--airflow-env AIRFLOW__SECTION__KEY=VALUE ...]
                                              [--server-url URL] [--redis-url URL] [--timeout 1800]
                                              [--skip-latency] [--json OUT.json] [--keep DIR]

Needs a PostgreSQL server (``--server-url``; every database made there is
dropped at the end) and Redis (``--redis-url``; a private key prefix, deleted
at the end). Every Airflow process started is stopped at the end, also after
an error, Ctrl-C or SIGTERM.

Inputs: ``--studies`` phantom studies (``sciatic.phantom.generate``, matrix
256x256, 40 slices) per round, new ones each round (seed ``--seed`` + round);
both paths get their own copy of the same studies. Each path has its own data
folder and its own PostgreSQL database on ``--server-url``, made fresh for
this run, with the shipped model installed and promoted by ``sciatic models
add SHIPPED --promote``. The studies are complete when they land (quiet
period and file settle time 0, as in ``sciatic demo``), and each study folder
is moved into the drop folder by one rename. ``--repeats`` rounds (default 3)
run both paths, the order alternating; the Airflow stack is stopped while the
in-process path runs, so each path has the machine to itself. The medians
count.

a. **in-process**: ``sciatic run`` (one process: ingest, segment, measure,
   QC, labels, outbox) is started the moment the studies are in the drop folder.
b. **Airflow**: ``tools.airflow_stack`` (api-server, scheduler, dag-processor,
   Celery workers for ``default`` and ``gpu``; Redis broker, PostgreSQL
   metadata) on a copy of ``dags/``; ``sciatic_ingest`` and ``sciatic_segment``
   are unpaused and no run is active at the drop; then the studies
   are dropped and ``sciatic_ingest`` is triggered through the REST API (as
   ``tests/test_airflow_celery.py`` does); the ``sciatic://volumes`` Asset
   starts ``sciatic_segment``.

Measured on both paths from the same database rows: seconds from the drop to
the last series converted, and to the last QC row (``qc_result``, label-free).
Target: Airflow / in-process <= 1.5 for the drop to the last QC row (the
ratio of the medians; the ratio of each round is printed too). Also
printed: CPU seconds (the ``sciatic run`` process; every process of the stack,
with the task processes its workers reaped; the database and Redis servers
count for neither), and per task, from Airflow's ``task_instance`` table, the
durations and the waits from queued to started, and how long no task ran.

c. **latency** on the same Airflow stack, once it is idle: the sciatic settings
   file of the stack (``SCIATIC_CONFIG_FILE``) is switched to a quiet period of
   ``--quiet-seconds`` and a settle time of ``--settle-seconds``, the idle stack
   is watched for ``--idle-window`` seconds (its CPU time, its ingest runs
   that find nothing), then one new
   study is written into the drop folder file by file, as a receiver would, and
   nothing is triggered: the ingest schedule has to find it. Measured: the
   last file's mtime to its QC row. Target: <= quiet period + 60 s.

``--ingest-interval`` sets ``SCIATIC_INGEST_INTERVAL_SECONDS`` of the stack,
the ingest DAG's schedule (default: the service's own, 30 s; before it was
300 s, with which the latency target could not be met). ``--airflow-env`` passes an
Airflow option to every component, to measure a tuning. The exit status is 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._machine import cpu_model  # noqa: E402
from sciatic.model.shipped import SHIPPED_MODEL  # noqa: E402
from sciatic.phantom.generate import generate  # noqa: E402
from tools.airflow_stack import AirflowStack, StackConfig, free_port  # noqa: E402

DEFAULT_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"  # apart from `make airflow-up` (7) and the Celery test (13)
DAGS = ("sciatic_ingest", "sciatic_segment")
TARGET_RATIO = 1.5
TARGET_LATENCY_OVER_QUIET = 60.0
PSEUDONYM_KEY = "throughput-benchmark-key"  # synthetic studies only
SCIATIC = Path(sys.executable).with_name("sciatic")


# --------------------------------------------------------------------------- databases


def create_database(server_url: str, prefix: str) -> str:
    """A new, empty PostgreSQL database on the server; its URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def server_version(server_url: str) -> str:
    return str(query(server_url, "SHOW server_version")[0][0])


def redis_version(redis_url: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        info: dict[str, Any] = client.info("server")
        return str(info.get("redis_version", "?"))
    finally:
        client.close()


def delete_redis_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
    finally:
        client.close()


# --------------------------------------------------------------------------- CPU time


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's finished, waited-for children."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def group_cpu_seconds(process_groups: set[int]) -> float:
    """User + system CPU time of the live processes in these process groups, with their reaped children's."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) in process_groups:  # pgrp; then utime, stime, cutime, cstime are fields 14-17
            total += sum(int(value) for value in fields[11:15])
    return total / tick


def cpu_used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def describe_cpu(used: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in sorted(used.items(), key=lambda item: -item[1]))


# --------------------------------------------------------------------------- sciatic side


def base_environment() -> dict[str, str]:
    """This process's environment without any SCIATIC_* or AIRFLOW* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SCIATIC_", "AIRFLOW"))}


def sciatic_cli(env: Mapping[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(SCIATIC), *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"sciatic {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


def install_model(env: Mapping[str, str]) -> None:
    """Schema at head and the shipped model in production, as an operator does it."""
    sciatic_cli(env, "db", "upgrade")
    sciatic_cli(env, "models", "add", str(SHIPPED_MODEL), "--promote")


@dataclass
class SciaticState:
    """What the sciatic database says, with times as seconds since the epoch."""

    series: int = 0  # converted or refused (not superseded)
    converted: int = 0
    eligible: int = 0
    indexed_left: int = 0  # instances indexed but not yet part of a converted series
    segmentations: int = 0
    qc_rows: int = 0  # label-free QC rows
    first_converted: float | None = None
    last_converted: float | None = None
    first_segmentation: float | None = None
    last_segmentation: float | None = None
    first_qc: float | None = None
    last_qc: float | None = None
    segment_seconds: float = 0.0  # sum of segmentation.total_seconds (load + inference, as recorded)

    def finished(self, studies: int) -> bool:
        return self.series >= studies and self.indexed_left == 0 and self.qc_rows >= self.eligible > 0


def _epoch(moment: dt.datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def sciatic_state(url: str, since: float) -> SciaticState:
    """The rows made since ``since`` (a round's drop), and the instances still waiting to be converted."""
    after = dt.datetime.fromtimestamp(since, dt.UTC)
    series = query(
        url,
        "SELECT count(*) FILTER (WHERE status IN ('converted', 'refused')), count(*) FILTER (WHERE status = "
        "'converted'), count(*) FILTER (WHERE status = 'converted' AND eligible), min(converted_at), "
        "max(converted_at) FROM series WHERE status <> 'superseded' AND created_at >= :after",
        after=after,
    )[0]
    left = query(url, "SELECT count(*) FROM dicom_instance WHERE state = 'indexed'")[0][0]
    seg = query(
        url,
        "SELECT count(*), min(created_at), max(created_at), sum(total_seconds) FROM segmentation "
        "WHERE created_at >= :after",
        after=after,
    )[0]
    qc = query(
        url,
        "SELECT count(*), min(created_at), max(created_at) FROM qc_result WHERE manual_label_id IS NULL "
        "AND created_at >= :after",
        after=after,
    )[0]
    return SciaticState(
        series=series[0],
        converted=series[1],
        eligible=series[2],
        indexed_left=left,
        segmentations=seg[0],
        qc_rows=qc[0],
        first_converted=_epoch(series[3]),
        last_converted=_epoch(series[4]),
        first_segmentation=_epoch(seg[1]),
        last_segmentation=_epoch(seg[2]),
        first_qc=_epoch(qc[1]),
        last_qc=_epoch(qc[2]),
        segment_seconds=float(seg[3] or 0.0),
    )


@dataclass
class PathResult:
    """One path over the N studies: the database's timeline, relative to the drop."""

    name: str
    drop_at: float
    state: SciaticState
    wall_seconds: float  # in-process: the `sciatic run` process; Airflow: drop to the poll that saw the last QC row
    cpu_seconds: float  # in-process: the `sciatic run` process; Airflow: every stack process, drop to that poll
    cpu_by_component: dict[str, float] = field(default_factory=dict)  # Airflow: the same, per stack component

    def after_drop(self, moment: float | None) -> float | None:
        return None if moment is None else moment - self.drop_at

    @property
    def to_last_qc(self) -> float:
        value = self.after_drop(self.state.last_qc)
        if value is None:
            raise RuntimeError(f"{self.name}: no QC row")
        return value


def stage_copy(studies: Path, subjects: list[str], staging: Path) -> None:
    """A private copy of the study folders on the drop folder's file system (dropping is then a rename)."""
    staging.mkdir(parents=True)
    for subject in subjects:
        shutil.copytree(studies / subject, staging / subject)


def drop(staging: Path, subjects: list[str], drop_dir: Path) -> float:
    """Move every study folder into the drop folder (one rename each); the time it was complete."""
    drop_dir.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        (staging / subject).rename(drop_dir / subject)
    return time.time()


class InProcess:
    """``sciatic run`` on its own data folder and database (made here, dropped by ``close``)."""

    def __init__(self, work: Path, server_url: str, chunk_size: int | None) -> None:
        self.work = work
        self.server_url = server_url
        self.url = create_database(server_url, "sciatic_bench_run")
        self.data = work / "data"
        self.env = base_environment()
        self.env.update(
            SCIATIC_DATA_DIR=str(self.data),
            SCIATIC_DATABASE_URL=self.url,
            SCIATIC_SERIES_QUIET_SECONDS="0",
            SCIATIC_FILE_SETTLE_SECONDS="0",
            SCIATIC_DEVICE="cpu",
            SCIATIC_PSEUDONYM_KEY=PSEUDONYM_KEY,
        )
        if chunk_size:
            self.env["SCIATIC_SEGMENT_CHUNK_SIZE"] = str(chunk_size)
        install_model(self.env)

    def round(self, number: int, studies: Path, subjects: list[str], timeout: float) -> PathResult:
        """The studies dropped, then ``sciatic run`` started at once."""
        staging = self.work / f"staging-{number}"
        stage_copy(studies, subjects, staging)
        drop_at = drop(staging, subjects, self.data / "drop")
        start, cpu = time.monotonic(), children_cpu_seconds()
        run = subprocess.run(
            [str(SCIATIC), "run", "--run-id", f"throughput-benchmark-{number}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        wall, cpu = time.monotonic() - start, children_cpu_seconds() - cpu
        if run.returncode != 0:
            raise RuntimeError(f"sciatic run failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        state = sciatic_state(self.url, drop_at)
        if not state.finished(len(subjects)):
            raise RuntimeError(f"sciatic run left work undone: {state}")
        return PathResult("in-process", drop_at, state, wall, cpu)

    def close(self) -> None:
        drop_database(self.server_url, self.url)


# --------------------------------------------------------------------------- Airflow side


@dataclass(frozen=True)
class TaskRow:
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    state: str | None
    queued: float | None
    start: float | None
    end: float | None
    duration: float | None
    hostname: str | None


def task_rows(metadata_url: str, since: float, until: float | None = None) -> list[TaskRow]:
    """sciatic task instances queued or started in [since, until]."""
    rows = query(
        metadata_url,
        "SELECT dag_id, task_id, run_id, map_index, state, queued_dttm, start_date, end_date, duration, hostname "
        "FROM task_instance WHERE dag_id LIKE 'sciatic_%' AND coalesce(queued_dttm, start_date) IS NOT NULL "
        "ORDER BY coalesce(queued_dttm, start_date)",
    )
    found = [TaskRow(r[0], r[1], r[2], r[3], r[4], _epoch(r[5]), _epoch(r[6]), _epoch(r[7]), r[8], r[9]) for r in rows]
    first = [(t, t.queued if t.queued is not None else t.start) for t in found]
    return [t for t, at in first if at is not None and at >= since and (until is None or at <= until)]


def active_runs(metadata_url: str) -> int:
    return int(query(metadata_url, "SELECT count(*) FROM dag_run WHERE state IN ('queued', 'running')")[0][0])


def failed_tasks(metadata_url: str) -> list[tuple[Any, ...]]:
    return query(
        metadata_url,
        "SELECT dag_id, run_id, task_id, map_index, state FROM task_instance "
        "WHERE state IN ('failed', 'up_for_retry', 'upstream_failed')",
    )


def wait(stack: AirflowStack, what: str, done: Callable[[], bool], timeout: float, every: float = 1.0) -> float:
    """Poll ``done`` until it holds; the time it was seen to hold. Fails at once on a failed task."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        bad = failed_tasks(stack.config.metadata_url)
        if bad:
            raise RuntimeError(f"{what}: task failed: {bad}\n{task_log_hint(stack)}")
        if done():
            return time.time()
        time.sleep(every)
    raise TimeoutError(f"{what}: not done after {timeout:.0f} s\n{task_log_hint(stack)}")


def task_log_hint(stack: AirflowStack) -> str:
    return (
        f"task logs under {stack.config.home / 'logs'}\nworker-default:\n{stack.log_tail('worker-default', 15)}\n"
        f"worker-gpu:\n{stack.log_tail('worker-gpu', 15)}"
    )


def write_sciatic_file(path: Path, quiet: float, settle: float) -> None:
    """The stack's sciatic settings file: read by every task process when it starts."""
    path.write_text(f"series_quiet_seconds = {quiet}\nfile_settle_seconds = {settle}\n")


@dataclass
class TaskSummary:
    dag_id: str
    task_id: str
    instances: int
    total_seconds: float
    median_seconds: float
    max_seconds: float
    median_queue_wait: float | None  # queued (by the scheduler) to started (the task process running)


def summarize_tasks(rows: list[TaskRow]) -> list[TaskSummary]:
    grouped: dict[tuple[str, str], list[TaskRow]] = {}
    for row in rows:
        grouped.setdefault((row.dag_id, row.task_id), []).append(row)
    summaries = []
    for (dag_id, task_id), group in grouped.items():
        durations = [r.duration for r in group if r.duration is not None]
        waits = [r.start - r.queued for r in group if r.start is not None and r.queued is not None]
        summaries.append(
            TaskSummary(
                dag_id,
                task_id,
                len(group),
                sum(durations),
                statistics.median(durations) if durations else 0.0,
                max(durations, default=0.0),
                statistics.median(waits) if waits else None,
            )
        )
    return summaries


def covered_seconds(rows: list[TaskRow], start: float, end: float) -> float:
    """Seconds of [start, end] during which at least one task instance was running."""
    spans = sorted((max(r.start, start), min(r.end, end)) for r in rows if r.start is not None and r.end is not None)
    total, cursor = 0.0, start
    for lo, hi in spans:
        lo = max(lo, cursor)
        if hi > lo:
            total += hi - lo
            cursor = hi
    return total


@dataclass(frozen=True)
class IdleRun:
    """An ingest DAG run of the idle system: its cost when there is nothing to do."""

    run_seconds: float  # dag_run start to end
    task_seconds: float  # sum of its task instances' durations


def idle_ingest_runs(metadata_url: str, since: float, until: float) -> list[IdleRun]:
    runs = query(
        metadata_url,
        "SELECT r.start_date, r.end_date, coalesce(sum(t.duration), 0) FROM dag_run r "
        "LEFT JOIN task_instance t ON t.dag_id = r.dag_id AND t.run_id = r.run_id "
        "WHERE r.dag_id = 'sciatic_ingest' AND r.state = 'success' GROUP BY r.run_id, r.start_date, r.end_date",
    )
    found = []
    for start, end, tasks in runs:
        a, b = _epoch(start), _epoch(end)
        if a is not None and b is not None and since <= a and b <= until:
            found.append(IdleRun(b - a, float(tasks)))
    return found


@dataclass
class LatencyResult:
    quiet_seconds: float
    settle_seconds: float
    written_at: float  # mtime of the last file written
    indexed_at: float | None
    converted_at: float | None
    segmented_at: float | None
    qc_at: float
    ingest_runs: int  # ingest DAG runs with a task from the first write to the QC row
    task_instances: list[TaskRow] = field(default_factory=list)  # from the first write to the QC row
    idle_window: float = 0.0  # seconds the idle system was watched before the study was written
    idle_cpu_seconds: float = 0.0  # CPU time of every stack process in that window
    idle_cpu_by_component: dict[str, float] = field(default_factory=dict)
    idle_runs: list[IdleRun] = field(default_factory=list)  # ingest runs in that window (nothing to do)

    @property
    def seconds(self) -> float:
        return self.qc_at - self.written_at


class AirflowBench:
    """The stack for both Airflow measurements, with its databases; ``close`` stops and removes everything."""

    def __init__(self, work: Path, server_url: str, redis_url: str, env: Mapping[str, str]) -> None:
        self.work = work
        self.server_url = server_url
        self.redis_url = redis_url
        self.data = work / "data"
        self.settings_file = work / "sciatic.toml"
        self.sciatic_url = create_database(server_url, "sciatic_bench_airflow")
        self.metadata_url = create_database(server_url, "sciatic_bench_metadata")
        self.key_prefix = f"sciatic-bench-{uuid.uuid4().hex[:8]}:"
        self.prepared = False
        dags = work / "dags"
        shutil.copytree(REPO / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
        write_sciatic_file(self.settings_file, 0, 0)
        self.sciatic_env = {
            "SCIATIC_DATA_DIR": str(self.data),
            "SCIATIC_DATABASE_URL": self.sciatic_url,
            "SCIATIC_DEVICE": "cpu",
            "SCIATIC_PSEUDONYM_KEY": PSEUDONYM_KEY,
            "SCIATIC_CONFIG_FILE": str(self.settings_file),
            **env,
        }
        self.stack = AirflowStack(
            StackConfig(
                home=work / "airflow-home",
                metadata_url=self.metadata_url,
                broker_url=redis_url,
                dags_folder=dags,
                port=free_port(),
                key_prefix=self.key_prefix,
                env=self.sciatic_env,
            )
        )

    def up(self) -> float:
        """The stack running, healthy and idle with both DAGs unpaused (prepared the first time); seconds taken."""
        started = time.monotonic()
        if self.stack.processes:
            return 0.0
        if not self.prepared:
            install_model({**base_environment(), **self.sciatic_env})
            self.stack.prepare()
            self.prepared = True
        self.stack.start()
        self.stack.wait_healthy(timeout=300)
        self.stack.wait_for_dags(list(DAGS), timeout=300)
        for dag_id in DAGS:
            self.stack.unpause(dag_id)
        self.wait_idle(timeout=300)
        return time.monotonic() - started

    def down(self) -> None:
        """Ingest paused, no run left active, every component stopped (so the other path runs alone)."""
        if not self.stack.processes:
            return
        self.stack.api("PATCH", "/api/v2/dags/sciatic_ingest", {"is_paused": True})
        self.wait_idle(timeout=600)
        self.stack.stop()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far of each stack component (its processes and the task processes they reaped)."""
        return {name: group_cpu_seconds({process.pid}) for name, process in self.stack.processes.items()}

    def ingest_schedule(self) -> str:
        return str(self.stack.api("GET", "/api/v2/dags/sciatic_ingest").get("timetable_summary"))

    def wait_idle(self, timeout: float) -> None:
        """Until runs exist for both DAGs and none is queued or running."""

        def idle() -> bool:
            runs = query(self.metadata_url, "SELECT count(DISTINCT dag_id) FROM dag_run")[0][0]
            return bool(runs >= len(DAGS) and active_runs(self.metadata_url) == 0)

        wait(self.stack, "idle", idle, timeout, every=0.5)

    def round(
        self, number: int, studies: Path, subjects: list[str], timeout: float
    ) -> tuple[PathResult, list[TaskRow]]:
        """The studies dropped into the idle stack and ``sciatic_ingest`` triggered; the result and its tasks."""
        staging = self.work / f"staging-{number}"
        stage_copy(studies, subjects, staging)
        self.wait_idle(timeout=300)
        before = self.cpu_seconds()
        drop_at = drop(staging, subjects, self.data / "drop")
        self.stack.trigger("sciatic_ingest")
        seen = wait(
            self.stack,
            "Airflow throughput",
            lambda: sciatic_state(self.sciatic_url, drop_at).finished(len(subjects)),
            timeout,
        )
        state = sciatic_state(self.sciatic_url, drop_at)
        used = cpu_used(before, self.cpu_seconds())
        result = PathResult("Airflow", drop_at, state, seen - drop_at, sum(used.values()), used)
        self.wait_idle(timeout=600)
        return result, task_rows(self.metadata_url, drop_at, drop_at + result.to_last_qc)

    def latency(
        self,
        studies: Path,
        subject: str,
        series_uid: str,
        quiet: float,
        settle: float,
        idle_window: float,
        timeout: float,
    ) -> LatencyResult:
        """One study written file by file into the idle system (watched for ``idle_window`` s first); no trigger."""
        write_sciatic_file(self.settings_file, quiet, settle)
        self.wait_idle(timeout=600)
        idle_from, before = time.time(), self.cpu_seconds()
        time.sleep(idle_window)
        self.wait_idle(timeout=600)
        idle_cpu = cpu_used(before, self.cpu_seconds())
        target = self.data / "drop" / f"latency-{subject}"
        target.mkdir(parents=True)
        first_write = time.time()
        written = 0.0
        for source in sorted((studies / subject).iterdir()):
            shutil.copyfile(source, target / source.name)
            written = max(written, (target / source.name).stat().st_mtime)

        def done() -> bool:
            return bool(
                query(
                    self.sciatic_url,
                    "SELECT count(*) FROM qc_result q JOIN segmentation g ON g.id = q.segmentation_id "
                    "JOIN series s ON s.id = g.series_id WHERE s.series_instance_uid = :uid "
                    "AND q.manual_label_id IS NULL",
                    uid=series_uid,
                )[0][0]
            )

        wait(self.stack, "latency study", done, timeout, every=0.5)
        row = query(
            self.sciatic_url,
            "SELECT (SELECT max(indexed_at) FROM dicom_instance WHERE series_instance_uid = :uid), "
            "s.converted_at, g.created_at, q.created_at FROM series s JOIN segmentation g ON g.series_id = s.id "
            "JOIN qc_result q ON q.segmentation_id = g.id AND q.manual_label_id IS NULL "
            "WHERE s.series_instance_uid = :uid",
            uid=series_uid,
        )[0]
        qc_at = _epoch(row[3])
        assert qc_at is not None
        self.wait_idle(timeout=600)
        rows = task_rows(self.metadata_url, first_write, qc_at)
        return LatencyResult(
            quiet_seconds=quiet,
            settle_seconds=settle,
            written_at=written,
            indexed_at=_epoch(row[0]),
            converted_at=_epoch(row[1]),
            segmented_at=_epoch(row[2]),
            qc_at=qc_at,
            ingest_runs=len({r.run_id for r in rows if r.dag_id == "sciatic_ingest"}),
            task_instances=rows,
            idle_window=first_write - idle_from,
            idle_cpu_seconds=sum(idle_cpu.values()),
            idle_cpu_by_component=idle_cpu,
            idle_runs=idle_ingest_runs(self.metadata_url, idle_from, first_write),
        )

    def close(self) -> None:
        try:
            self.stack.stop()
        finally:
            for url in (self.metadata_url, self.sciatic_url):
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    drop_database(self.server_url, url)
            with contextlib.suppress(Exception):
                delete_redis_keys(self.redis_url, self.key_prefix)


# --------------------------------------------------------------------------- report


def machine(server_url: str, redis_url: str) -> dict[str, Any]:
    names = ("sciatic", "apache-airflow", "apache-airflow-providers-celery", "celery", "torch", "SQLAlchemy")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: metadata.version(name) for name in names},
        "postgresql": server_version(server_url),
        "redis": redis_version(redis_url),
        "load_average": {"start": [round(v, 2) for v in os.getloadavg()]},
    }


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for k, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@dataclass
class Round:
    """Both paths on the same new studies."""

    number: int
    seed: int
    in_process: PathResult
    airflow: PathResult
    tasks: list[TaskRow]  # Airflow task instances from the drop to the last QC row
    order: str  # which path ran first
    load_average: list[float]

    @property
    def ratio(self) -> float:
        return self.airflow.to_last_qc / self.in_process.to_last_qc


def report_rounds(rounds: list[Round]) -> float:
    print("\nThroughput: seconds after the studies were complete in the drop folder, from the database rows")
    header = ("round", "path", "series", "QC rows", "last converted", "first QC", "last QC", "segment s", "CPU s")
    rows = []
    for r in rounds:
        for p in (r.in_process, r.airflow):
            rows.append(
                (
                    f"{r.number + 1} (seed {r.seed})",
                    p.name,
                    str(p.state.series),
                    str(p.state.qc_rows),
                    fmt(p.after_drop(p.state.last_converted)),
                    fmt(p.after_drop(p.state.first_qc)),
                    fmt(p.to_last_qc),
                    fmt(p.state.segment_seconds),
                    fmt(p.cpu_seconds),
                )
            )
    print_table(header, rows)
    print("(segment s: the sum of segmentation.total_seconds, the model's own time per series)")
    local = statistics.median(r.in_process.to_last_qc for r in rounds)
    airflow = statistics.median(r.airflow.to_last_qc for r in rounds)
    ratio = airflow / local
    components: dict[str, float] = {}
    for r in rounds:
        for name, seconds in r.airflow.cpu_by_component.items():
            components[name] = components.get(name, 0.0) + seconds
    print(f"Airflow CPU s by component, all rounds: {describe_cpu(components)}")
    print(
        f"median drop -> last QC row: in-process {local:.1f} s, Airflow {airflow:.1f} s; per round "
        + ", ".join(f"{r.ratio:.2f}" for r in rounds)
    )
    print(
        f"ratio Airflow / in-process (medians): {ratio:.2f}  target <= {TARGET_RATIO}  {verdict(ratio <= TARGET_RATIO)}"
    )
    return ratio


def report_tasks(
    title: str,
    windows: list[tuple[list[TaskRow], float, float]],
    since: str,
    idle_because: str = "scheduling, queueing, task start",
) -> list[TaskSummary]:
    """Per task: instances, durations, queue waits; and how long no task ran in the windows."""
    summaries = summarize_tasks([row for rows, _, _ in windows for row in rows])
    print(f"\n{title}")
    header = ("DAG", "task", "instances", "total s", "median s", "max s", "median queued->started s")
    print_table(
        header,
        [
            (
                s.dag_id,
                s.task_id,
                str(s.instances),
                fmt(s.total_seconds),
                fmt(s.median_seconds),
                fmt(s.max_seconds),
                fmt(s.median_queue_wait),
            )
            for s in summaries
        ],
    )
    window = sum(end - start for _, start, end in windows)
    busy = sum(covered_seconds(rows, start, end) for rows, start, end in windows)
    waits = [r.start - r.queued for rows, _, _ in windows for r in rows if r.start is not None and r.queued is not None]
    print(
        f"of the {window:.1f} s from {since} to the QC row, a sciatic task was running {busy:.1f} s; "
        f"{window - busy:.1f} s ({(window - busy) / window:.0%}) no task was ({idle_because}); "
        f"{sum(w > 2 for w in waits)} of {len(waits)} task starts waited more than 2 s after being queued"
    )
    return summaries


def report_latency(result: LatencyResult, interval: str) -> bool:
    target = result.quiet_seconds + TARGET_LATENCY_OVER_QUIET

    def step(a: float | None, b: float | None) -> str:
        return "-" if a is None or b is None else f"{b - a:.1f}"

    print(
        f"\nLatency: one study written into the idle Airflow system, nothing triggered "
        f"(quiet period {result.quiet_seconds:g} s, settle {result.settle_seconds:g} s, ingest schedule {interval})"
    )
    print_table(
        ("written -> indexed", "indexed -> converted", "converted -> segmented", "segmented -> QC", "total"),
        [
            (
                step(result.written_at, result.indexed_at),
                step(result.indexed_at, result.converted_at),
                step(result.converted_at, result.segmented_at),
                step(result.segmented_at, result.qc_at),
                f"{result.seconds:.1f}",
            )
        ],
    )
    ok = result.seconds <= target
    print(
        f"last instance written -> QC row: {result.seconds:.1f} s  target <= {target:g} s "
        f"(quiet + {TARGET_LATENCY_OVER_QUIET:g})  {verdict(ok)}"
    )
    report_tasks(
        "Airflow task instances from the last file written to the QC row (task_instance)",
        [(result.task_instances, result.written_at, result.qc_at)],
        "the last file written",
        "waiting for the next ingest run, scheduling, queueing, task start",
    )
    idle = result.idle_runs
    print(
        f"idle system, watched {result.idle_window:.0f} s before the study was written: the stack used "
        f"{result.idle_cpu_seconds:.1f} CPU s ({result.idle_cpu_seconds / result.idle_window:.2f} cores: "
        f"{describe_cpu(result.idle_cpu_by_component)})"
    )
    if idle:
        task_seconds = sum(r.task_seconds for r in idle)
        run_seconds = statistics.median(r.run_seconds for r in idle)
        print(
            f"  {len(idle)} ingest run(s) with nothing to do, median {run_seconds:.1f} s from start to end and "
            f"{statistics.median(r.task_seconds for r in idle):.1f} s of task time each; task time "
            f"{task_seconds / result.idle_window:.0%} of the window"
        )
    else:
        print("  no ingest run in that window")
    return ok


# --------------------------------------------------------------------------- main


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # the finally blocks stop the stack and drop the databases


@contextlib.contextmanager
def workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=False)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="sciatic-throughput-") as folder:
        yield Path(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=20, help="phantom studies through each path (default 20)")
    parser.add_argument("--seed", type=int, default=7, help="phantom seed of the first round (default 7)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds, each path on new studies, the order alternating (default 3)"
    )
    parser.add_argument("--quiet-seconds", type=float, default=10.0, help="quiet period of the latency study")
    parser.add_argument("--settle-seconds", type=float, default=5.0, help="file settle time of the latency study")
    parser.add_argument(
        "--ingest-interval", type=int, help="SCIATIC_INGEST_INTERVAL_SECONDS of the stack (default: the service's)"
    )
    parser.add_argument(
        "--idle-window", type=float, default=60.0, help="seconds the idle stack is watched before the latency study"
    )
    parser.add_argument(
        "--chunk-size", type=int, help="SCIATIC_SEGMENT_CHUNK_SIZE for both paths (default: the service's, 32)"
    )
    parser.add_argument(
        "--airflow-env",
        action="append",
        default=[],
        metavar="AIRFLOW__SECTION__KEY=VALUE",
        help="an Airflow option for every stack component, to try a tuning (repeatable)",
    )
    parser.add_argument("--server-url", default=DEFAULT_SERVER, help="PostgreSQL server (databases are made there)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="Redis database of the Celery broker")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed for each path")
    parser.add_argument("--skip-latency", action="store_true", help="only the throughput comparison")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it (logs, data) afterwards")
    args = parser.parse_args(argv)

    stack_env: dict[str, str] = {}
    if args.chunk_size:
        stack_env["SCIATIC_SEGMENT_CHUNK_SIZE"] = str(args.chunk_size)
    if args.ingest_interval is not None:
        from sciatic.config import Settings

        if "ingest_interval_seconds" not in Settings.model_fields:
            parser.error("this sciatic has no SCIATIC_INGEST_INTERVAL_SECONDS: the ingest DAG's schedule is fixed")
        stack_env["SCIATIC_INGEST_INTERVAL_SECONDS"] = str(args.ingest_interval)
    for option in args.airflow_env:
        name, sep, value = option.partition("=")
        if not sep or not name.startswith("AIRFLOW__"):
            parser.error(f"--airflow-env takes AIRFLOW__SECTION__KEY=VALUE, not {option!r}")
        stack_env[name] = value
    for name in [n for n in os.environ if n.startswith("SCIATIC_")]:
        del os.environ[name]  # the stack's components inherit this environment: only the settings given here

    signal.signal(signal.SIGTERM, _terminate)
    info = machine(args.server_url, args.redis_url)
    print(
        f"machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), Python {info['python']}, "
        f"PostgreSQL {info['postgresql']}, Redis {info['redis']}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"load average at start: {info['load_average']['start']}")
    results: dict[str, Any] = {"machine": info, "arguments": {k: str(v) for k, v in vars(args).items()}}
    missed = False
    with workspace(args.keep) as work:
        started = time.monotonic()
        studies: list[tuple[int, Path, list[str]]] = []
        for number in range(args.repeats):
            folder = work / f"studies-{number}"
            manifest = generate(folder, subjects=args.studies, seed=args.seed + number)
            studies.append((args.seed + number, folder, [record.dicom_dir for record in manifest.subjects]))
        print(
            f"{args.repeats} x {args.studies} phantom studies (seeds {args.seed}..{args.seed + args.repeats - 1}, "
            f"256x256x40) in {time.monotonic() - started:.0f} s"
        )
        local = InProcess(work / "in-process", args.server_url, args.chunk_size)
        bench = AirflowBench(work / "airflow", args.server_url, args.redis_url, stack_env)
        rounds: list[Round] = []
        try:
            for number, (seed, folder, subjects) in enumerate(studies):
                first = "in-process" if number % 2 == 0 else "Airflow"  # alternate, so a drift of load hits both
                print(f"\nround {number + 1}/{args.repeats} ({first} first) ...", flush=True)
                results_of: dict[str, PathResult] = {}
                tasks: list[TaskRow] = []
                for side in ["in-process", "Airflow"] if first == "in-process" else ["Airflow", "in-process"]:
                    if side == "in-process":
                        bench.down()  # the stack stopped: the in-process path runs alone
                        results_of[side] = local.round(number, folder, subjects, args.timeout)
                        print(f"    in-process: sciatic run took {results_of[side].wall_seconds:.1f} s", flush=True)
                    else:
                        ready = bench.up()
                        if ready:
                            print(f"    Airflow stack ready in {ready:.0f} s", flush=True)
                        results_of[side], tasks = bench.round(number, folder, subjects, args.timeout)
                        print(
                            f"    Airflow: last QC row {results_of[side].to_last_qc:.1f} s after the drop", flush=True
                        )
                here = Round(
                    number, seed, results_of["in-process"], results_of["Airflow"], tasks, first,
                    [round(v, 2) for v in os.getloadavg()],
                )  # fmt: skip
                if (here.in_process.state.qc_rows, here.in_process.state.series) != (
                    here.airflow.state.qc_rows,
                    here.airflow.state.series,
                ):
                    raise RuntimeError(f"the paths did different work: {here.in_process.state} vs {here.airflow.state}")
                rounds.append(here)
            bench.up()
            interval = bench.ingest_schedule()
            ratio = report_rounds(rounds)
            missed |= ratio > TARGET_RATIO
            summaries = report_tasks(
                f"Airflow task instances from the drop to the last QC row, all rounds (task_instance); "
                f"ingest schedule {interval}",
                [(r.tasks, r.airflow.drop_at, r.airflow.drop_at + r.airflow.to_last_qc) for r in rounds],
                "the drop",
            )
            results.update(
                rounds=[{**asdict(r), "ratio": r.ratio} for r in rounds],
                ratio_of_medians=ratio,
                ingest_schedule=interval,
                airflow_tasks=[asdict(s) for s in summaries],
            )
            if not args.skip_latency:
                extra = generate(work / "latency-study", subjects=1, seed=args.seed + 1000)
                record = extra.subjects[0]
                print("\nlatency: one study into the idle system ...", flush=True)
                latency = bench.latency(
                    work / "latency-study",
                    record.dicom_dir,
                    record.series_instance_uid,
                    args.quiet_seconds,
                    args.settle_seconds,
                    idle_window=args.idle_window,
                    timeout=args.timeout,
                )
                missed |= not report_latency(latency, interval)
                results["latency"] = {**asdict(latency), "seconds": latency.seconds}
        finally:
            try:
                bench.close()
            finally:
                local.close()
        info["load_average"]["end"] = [round(v, 2) for v in os.getloadavg()]
        print(f"\nload average: {info['load_average']}; after each round: {[r.load_average for r in rounds]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
