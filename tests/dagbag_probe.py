"""Parse the DAG folder the way Airflow's dag-processor does and print what was found as JSON.

Run as a script in a fresh process (``python tests/dagbag_probe.py DAGS_DIR``)
by tests/test_dags.py. Every TCP/UDP connect is recorded and refused before
Airflow is even imported, so a DAG file that touches the network or a
database at parse time shows up as a connect attempt and an import error.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

attempts: list[str] = []
_real_connect = socket.socket.connect


def _refuse(self: socket.socket, address: Any) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        attempts.append(repr(address))
        raise ConnectionRefusedError(f"parse-time connect to {address!r} refused by the test")
    _real_connect(self, address)


socket.socket.connect = _refuse  # type: ignore[method-assign]


def describe(dags_dir: Path) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.sdk.definitions.mappedoperator import MappedOperator
    from airflow.serialization.serialized_objects import DagSerialization

    bag = BundleDagBag(str(dags_dir), bundle_path=dags_dir, known_pools={"default_pool", "gpu"})
    dags: dict[str, Any] = {}
    for dag_id, dag in bag.dags.items():
        DagSerialization.to_dict(dag)  # what the dag-processor stores must serialise
        timetable = dag.timetable
        inner = getattr(timetable, "timetable", timetable)
        condition = getattr(timetable, "asset_condition", None)
        dags[dag_id] = {
            "file": Path(dag.fileloc).name,
            "tags": sorted(dag.tags),
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "start_date": dag.start_date.isoformat() if dag.start_date else None,
            "doc_md": bool(dag.doc_md and dag.doc_md.strip()),
            "default_args": sorted(dag.default_args),
            "timetable": type(timetable).__name__,
            "cron": getattr(inner, "expression", None),
            "delta_seconds": inner.delta.total_seconds() if hasattr(inner, "delta") else None,
            "timezone": str(getattr(inner, "timezone", "")),
            "schedule_assets": sorted(getattr(a, "uri", "") for a in getattr(condition, "objects", [condition]) if a)
            if condition is not None
            else [],
            "tasks": {
                task.task_id: {
                    "queue": task.queue,
                    "pool": task.pool,
                    "retries": task.retries,
                    "retry_exponential_backoff": bool(task.retry_exponential_backoff),
                    # an Asset by its URI, an AssetAlias as alias:<name>
                    "outlets": sorted(getattr(o, "uri", None) or f"alias:{o.name}" for o in task.outlets),
                    # mapped itself, or inside a mapped task group: one instance per input item
                    "mapped": isinstance(task, MappedOperator) or task.get_closest_mapped_task_group() is not None,
                    "downstream": sorted(task.downstream_task_ids),
                }
                for task in dag.tasks
            },
        }
    assets = {}
    if (dags_dir / "sciatic_common.py").exists():
        import sciatic_common  # importable now: the bundle path is on sys.path, as in Airflow

        assets = {
            "volumes": sciatic_common.VOLUMES.uri,
            "labels": sciatic_common.LABELS.uri,
            "new_volumes": f"alias:{sciatic_common.NEW_VOLUMES.name}",
        }
    return {
        "assets": assets,
        "import_errors": bag.import_errors,
        "durations": {Path(stat.file).name: stat.duration.total_seconds() for stat in bag.dagbag_stats},
        "dags": dags,
        "connect_attempts": attempts,
    }


if __name__ == "__main__":
    result = describe(Path(sys.argv[1]).resolve())
    sys.stdout.write("\nDAGBAG-PROBE " + json.dumps(result, default=str) + "\n")
