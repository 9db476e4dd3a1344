"""The DAG files: they import cleanly, cheaply and without any connection, and keep the house rules.

The folder is parsed in a fresh process (tests/dagbag_probe.py) with Airflow's
own DagBag, a private AIRFLOW_HOME, both databases pointing at a closed port and
every socket connect refused, so nothing in this process or on the machine is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS = REPO_ROOT / "dags"
UNREACHABLE = "postgresql+psycopg2://nobody@127.0.0.1:9/nowhere"  # discard port: nothing listens
EXPECTED = {"sciatic_ingest", "sciatic_segment", "sciatic_labels", "sciatic_retrain", "sciatic_outbox"}
MODEL_TASKS = {("sciatic_segment", "segment_chunk"), ("sciatic_retrain", "train_challenger")}


def parse_dags(tmp_path: Path, dags: Path = DAGS, **env: str) -> dict[str, Any]:
    """What tests/dagbag_probe.py reports for a DAG folder under the given extra environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SCIATIC_"))}
    environment.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": UNREACHABLE,
            "SCIATIC_DATABASE_URL": UNREACHABLE,
            "SCIATIC_DATA_DIR": str(tmp_path / "no-data-dir"),
            **env,
        }
    )
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "dagbag_probe.py"), str(dags)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    marker = "DAGBAG-PROBE "
    lines = [line for line in result.stdout.splitlines() if line.startswith(marker)]
    assert result.returncode == 0 and lines, f"DAG probe failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    report: dict[str, Any] = json.loads(lines[-1].removeprefix(marker))
    return report


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return parse_dags(tmp_path_factory.mktemp("dagbag"))


def test_dag_folder_imports_without_errors_or_connections(parsed: dict[str, Any]) -> None:
    assert parsed["import_errors"] == {}
    assert parsed["connect_attempts"] == []
    assert set(parsed["dags"]) == EXPECTED
    assert not any(Path(f).name == "sciatic_common.py" for f in parsed["durations"]), "shared module is not a DAG file"


def test_the_probe_catches_a_dag_file_that_connects_at_parse_time(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "chatty.py").write_text(
        "import socket\nfrom airflow.sdk import dag\n"
        "socket.create_connection(('127.0.0.1', 5432), timeout=1)\n"
        "@dag(schedule=None)\ndef chatty():\n    pass\nchatty()\n"
    )
    parsed = parse_dags(tmp_path, dags)
    assert parsed["connect_attempts"] == ["('127.0.0.1', 5432)"]
    assert "chatty.py" in parsed["import_errors"]


def test_each_file_parses_well_under_a_second(parsed: dict[str, Any]) -> None:
    assert parsed["durations"], "no DAG file was parsed"
    slow = {name: seconds for name, seconds in parsed["durations"].items() if seconds >= 2.0}
    assert not slow, f"DAG files slow to parse (heavy imports or I/O at parse time?): {slow}"


def test_house_style(parsed: dict[str, Any]) -> None:
    for dag_id, dag in parsed["dags"].items():
        assert dag["file"] == f"{dag_id}.py"
        assert "sciatic" in dag["tags"], dag_id
        assert dag["catchup"] is False, dag_id
        assert dag["doc_md"], dag_id
        assert dag["start_date"] is not None, dag_id
        assert dag["max_active_runs"] == 1, dag_id
        assert {"retries", "retry_delay", "retry_exponential_backoff"} <= set(dag["default_args"]), dag_id
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 1, (dag_id, task_id)
            assert task["retry_exponential_backoff"], (dag_id, task_id)


def test_model_tasks_go_to_the_gpu_queue_and_pool_and_nothing_else_does(parsed: dict[str, Any]) -> None:
    seen = set()
    for dag_id, dag in parsed["dags"].items():
        for task_id, task in dag["tasks"].items():
            if (dag_id, task_id) in MODEL_TASKS:
                seen.add((dag_id, task_id))
                assert (task["queue"], task["pool"]) == ("gpu", "gpu"), (dag_id, task_id)
            else:
                assert (task["queue"], task["pool"]) == ("default", "default_pool"), (dag_id, task_id)
    assert seen == MODEL_TASKS


def test_schedules_and_assets(parsed: dict[str, Any]) -> None:
    dags, assets = parsed["dags"], parsed["assets"]
    ingest, segment, labels, retrain = (dags[f"sciatic_{n}"] for n in ("ingest", "segment", "labels", "retrain"))

    assert ingest["delta_seconds"] == 30  # SCIATIC_INGEST_INTERVAL_SECONDS default
    assert set(ingest["tasks"]) == {"ingest"}  # one task: a study pays for one task start
    assert ingest["tasks"]["ingest"]["outlets"] == [assets["new_volumes"]]

    assert segment["timetable"] == "AssetOrTimeSchedule"
    assert (segment["cron"], segment["schedule_assets"]) == ("0 1 * * *", [assets["volumes"]])
    assert segment["tasks"]["segment_chunk"]["mapped"] and set(segment["tasks"]) == {"pending_series", "segment_chunk"}
    assert not segment["tasks"]["pending_series"]["mapped"]

    assert labels["cron"] == "0 * * * *"
    assert labels["tasks"]["label_qc"]["mapped"]
    assert [t for t, task in labels["tasks"].items() if task["outlets"]] == ["announce_labels"]
    assert labels["tasks"]["announce_labels"]["outlets"] == [assets["labels"]]

    assert retrain["timetable"] == "AssetOrTimeSchedule"
    assert retrain["schedule_assets"] == [assets["labels"]]
    assert retrain["tasks"]["retrain_due"]["downstream"] == ["start_training_run"]


def test_outbox_queues_then_sends_every_five_minutes(parsed: dict[str, Any]) -> None:
    outbox = parsed["dags"]["sciatic_outbox"]
    assert outbox["delta_seconds"] == 300
    assert set(outbox["tasks"]) == {"queue_results", "drain_outbox"}
    assert outbox["tasks"]["queue_results"]["downstream"] == ["drain_outbox"]
    assert not any(task["outlets"] or task["mapped"] for task in outbox["tasks"].values())


def test_segment_cron_and_timezone_come_from_the_environment(tmp_path: Path) -> None:
    parsed = parse_dags(
        tmp_path, SCIATIC_SEGMENT_SCHEDULE="30 2 * * *", AIRFLOW__CORE__DEFAULT_TIMEZONE="Europe/Amsterdam"
    )
    segment = parsed["dags"]["sciatic_segment"]
    assert (segment["cron"], segment["timezone"]) == ("30 2 * * *", "Europe/Amsterdam")
    assert parsed["dags"]["sciatic_retrain"]["timezone"] == "Europe/Amsterdam"
    assert parsed["connect_attempts"] == []


@pytest.mark.db
@pytest.mark.slow
def test_setup_creates_the_gpu_pool(tmp_path: Path, pg_database: str) -> None:
    from sciatic.airflow_setup import airflow_executable, setup_airflow

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_database,
    )
    subprocess.run([airflow_executable(), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    setup_airflow(3, env=env)
    setup_airflow(2, env=env)  # again: updates, no error
    listed = subprocess.run(
        [airflow_executable(), "pools", "get", "gpu", "--output", "json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (pool,) = json.loads(listed.stdout)
    assert (pool["pool"], int(pool["slots"])) == ("gpu", 2)
