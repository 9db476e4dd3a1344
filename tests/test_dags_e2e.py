"""The four DAGs end to end with ``dag.test()`` on phantom studies, against PostgreSQL.

Airflow's metadata and sciatic's data each get a fresh database; every DAG run
happens in its own process (tests/dag_test_runner.py) with tasks executed in
that process, in the order the Assets would chain them: ingest -> segment ->
labels -> retrain. After each run the rows it must leave are checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests._airflow_helpers import register_untrained_production_model
from tests.postgres import create_database, drop_database

pytestmark = [pytest.mark.slow, pytest.mark.db]

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = 3


@dataclass
class AirflowEnv:
    """A private Airflow (home + metadata database) and the sciatic settings its tasks see."""

    env: dict[str, str]
    sciatic_url: str

    def run(self, dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        """One ``dag.test()`` run; the run id, its state and every task instance."""
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "tests" / "dag_test_runner.py"), str(REPO_ROOT / "dags"), dag_id,
             json.dumps(conf or {})],
            env=self.env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        marker = "DAG-TEST "
        lines = [line for line in result.stdout.splitlines() if line.startswith(marker)]
        output = (result.stdout + result.stderr)[-6000:]
        assert result.returncode == 0 and lines, f"dag.test() of {dag_id} did not finish:\n{output}"
        outcome: dict[str, Any] = json.loads(lines[-1].removeprefix(marker))
        if outcome["state"] != "success":
            failed = [(t["task_id"], t["map_index"]) for t in outcome["tasks"] if t["state"] == "failed"]
            pytest.fail(f"{dag_id} run {outcome['state']}; failed tasks {failed}\n{output}", pytrace=False)
        return outcome

    def count(self, sql: str, *, metadata: bool = False, **params: Any) -> int:
        """A count from the sciatic database, or with ``metadata`` from Airflow's."""
        engine = sa.create_engine(self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] if metadata else self.sciatic_url)
        try:
            with engine.connect() as connection:
                return int(connection.execute(sa.text(sql), params).scalar_one())
        finally:
            engine.dispose()


def states(outcome: dict[str, Any]) -> dict[str, list[str]]:
    """task_id -> the states of its instances (one per map index)."""
    found: dict[str, list[str]] = {}
    for task in outcome["tasks"]:
        found.setdefault(task["task_id"], []).append(task["state"])
    return found


@pytest.fixture
def airflow(tmp_path: Path, pg_server: str, pg_settings: str, isolated_settings: Path) -> Iterator[AirflowEnv]:
    from sciatic.airflow_setup import airflow_executable, setup_airflow

    metadata_url = create_database(pg_server, prefix="sciatic_airflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "SCIATIC_DATABASE_URL": pg_settings,
            "SCIATIC_DATA_DIR": str(isolated_settings),
            "SCIATIC_SERIES_QUIET_SECONDS": "0",
            "SCIATIC_FILE_SETTLE_SECONDS": "0",
            "SCIATIC_DEVICE": "cpu",
            "SCIATIC_PSEUDONYM_KEY": "e2e-test-pseudonym-key",
            "SCIATIC_RETRAIN_MIN_NEW_LABELS": str(SUBJECTS),
            "SCIATIC_TRAIN_EPOCHS": "1",  # the flow is under test; training quality is tested elsewhere
            "SCIATIC_SEGMENT_CHUNK_SIZE": "2",  # three series: a chunk of two and a chunk of one
        }
    )
    try:
        migrated = subprocess.run(
            [airflow_executable(), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert migrated.returncode == 0, f"airflow db migrate failed:\n{migrated.stderr[-3000:]}"
        setup_airflow(1, env=env)
        yield AirflowEnv(env=env, sciatic_url=pg_settings)
    finally:
        drop_database(pg_server, metadata_url)


def test_ingest_without_new_files_emits_no_volumes(airflow: AirflowEnv) -> None:
    outcome = airflow.run("sciatic_ingest")
    assert states(outcome) == {"ingest": ["success"]}
    assert airflow.count("SELECT count(*) FROM asset_event", metadata=True) == 0  # nothing converted: no event


def test_ingest_segment_labels_retrain(airflow: AirflowEnv, tmp_path: Path) -> None:
    from sciatic.config import get_settings
    from sciatic.phantom.generate import generate

    settings = get_settings()
    staging, staged_labels = tmp_path / "phantom", tmp_path / "phantom-labels"
    manifest = generate(staging, subjects=SUBJECTS, seed=11, labels_dir=staged_labels)
    for subject in manifest.subjects:
        shutil.move(str(staging / subject.dicom_dir), settings.dir("drop") / subject.dicom_dir)
    register_untrained_production_model()

    # ingest: one converted series per subject, and the volumes Asset announced
    ingest = airflow.run("sciatic_ingest")
    assert states(ingest) == {"ingest": ["success"]}
    # one event of the volumes Asset (Airflow stores its URI as sciatic://volumes/), naming the new series
    event = "SELECT count(*) FROM asset_event JOIN asset ON asset.id = asset_event.asset_id WHERE asset.uri LIKE :u"
    assert airflow.count(event, metadata=True, u="sciatic://volumes%") == 1
    assert airflow.count("SELECT count(*) FROM series WHERE status = 'converted'") == SUBJECTS
    assert airflow.count("SELECT count(*) FROM pipeline_event WHERE run_id = :r", r=ingest["run_id"]) > 0

    # segment: chunks of two series; per series a segmentation, nerve metrics and label-free QC
    segment = airflow.run("sciatic_segment")
    assert states(segment)["segment_chunk"] == ["success"] * -(-SUBJECTS // 2)
    assert airflow.count("SELECT count(*) FROM segmentation") == SUBJECTS
    assert airflow.count("SELECT count(*) FROM nerve_metric WHERE side = 'all'") == SUBJECTS
    assert airflow.count("SELECT count(*) FROM slice_metric") > 0
    assert airflow.count("SELECT count(*) FROM qc_result WHERE manual_label_id IS NULL") == SUBJECTS
    assert airflow.count("SELECT count(*) FROM pipeline_event WHERE run_id = :r", r=segment["run_id"]) > 0
    again = airflow.run("sciatic_segment")  # nothing pending any more: nothing mapped
    assert states(again)["segment_chunk"] in (["skipped"], [])
    assert airflow.count("SELECT count(*) FROM segmentation") == SUBJECTS

    # labels: the hand labels arrive; each becomes a manual_label row, each segmentation gets a Dice row
    for label in staged_labels.iterdir():
        shutil.copy(label, settings.dir("labels") / label.name)
    labels = airflow.run("sciatic_labels")
    assert states(labels)["announce_labels"] == ["success"]
    assert states(labels)["label_qc"] == ["success"] * SUBJECTS
    assert airflow.count("SELECT count(*) FROM manual_label") == SUBJECTS
    assert airflow.count("SELECT count(*) FROM qc_result WHERE manual_label_id IS NOT NULL AND dice IS NOT NULL") == (
        SUBJECTS
    )
    labels_again = airflow.run("sciatic_labels")  # nothing new: no Asset event, no QC to do
    assert states(labels_again)["announce_labels"] == ["skipped"]

    # retrain: enough new labels -> a frozen split, a challenger, and a decision against production
    retrain = airflow.run("sciatic_retrain")
    assert states(retrain)["evaluate_and_decide"] == ["success"]
    assert airflow.count("SELECT count(*) FROM training_run WHERE decision IN ('promoted', 'kept')") == 1
    assert airflow.count("SELECT count(*) FROM model_version") == 2
    assert airflow.count("SELECT count(*) FROM model_version WHERE status = 'production'") == 1
    not_due = airflow.run("sciatic_retrain")  # no new labels since that run
    assert states(not_due)["start_training_run"] == ["skipped"]
    assert airflow.count("SELECT count(*) FROM training_run") == 1
