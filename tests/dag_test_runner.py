"""Run one DAG once with ``dag.test()`` and print the outcome as JSON (used by tests/test_dags_e2e.py).

    python tests/dag_test_runner.py DAGS_DIR DAG_ID [CONF_JSON]

Runs in its own process so that Airflow configures itself from the environment
the test prepared (AIRFLOW_HOME, metadata database, SCIATIC_*). Retries are
turned off so that a failing task fails the run at once instead of waiting
for its retry delay.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def run(dags_dir: Path, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(str(dags_dir), bundle_path=dags_dir)
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(run_conf=conf)
    instances = run.get_task_instances()
    return {
        "run_id": run.run_id,
        "state": str(run.state),
        "tasks": [
            {"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state)}
            for ti in sorted(instances, key=lambda ti: (ti.task_id, ti.map_index))
        ],
    }


if __name__ == "__main__":
    outcome = run(Path(sys.argv[1]).resolve(), sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
    sys.stdout.write("\nDAG-TEST " + json.dumps(outcome, default=str) + "\n")
