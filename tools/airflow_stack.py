"""A local, distributed Airflow for sciatic: the same stack the tests run, for watching it in the UI.

Airflow's own components run as separate processes: api-server (UI, REST API
and the execution API the workers talk to), scheduler, dag-processor, and two
Celery workers, one serving the queue ``default`` and one serving ``gpu``. The
broker is Redis, the metadata database and Celery result backend PostgreSQL.
Everything Airflow writes lives in one ``AIRFLOW_HOME``.

    python -m tools.airflow_stack up     # start, wait until healthy, print the UI address
    python -m tools.airflow_stack down   # stop what ``up`` started
    python -m tools.airflow_stack status

The UI runs without login (``simple_auth_manager_all_admins``) and listens on
127.0.0.1 only: a development stack, not a deployment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sciatic.airflow_setup import airflow_executable, setup_airflow
from sciatic.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO_ROOT / "airflow-home"
DEFAULT_METADATA_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/sciatic_airflow"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/7"
STATE_FILE = "stack.json"
SECRETS_FILE = "stack-secrets.json"
WORKER_NAME_ENV = "SCIATIC_AIRFLOW_WORKER_NAME"
QUEUES = ("default", "gpu")


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the local workers: ``<queue>@<host>``.

    Two workers on one machine would otherwise record the same
    ``task_instance.hostname``; on real machines the plain FQDN is used.
    """
    name = os.environ.get(WORKER_NAME_ENV)
    host = socket.getfqdn()
    return f"{name}@{host}" if name else host


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and which servers it uses."""

    home: Path = DEFAULT_HOME
    metadata_url: str = DEFAULT_METADATA_URL  # Airflow metadata DB and Celery result backend
    broker_url: str = DEFAULT_BROKER_URL
    dags_folder: Path = REPO_ROOT / "dags"
    port: int = 8080
    gpu_slots: int = 1
    key_prefix: str = "sciatic-airflow:"  # Redis keys of this stack, apart from any other user of the db
    env: Mapping[str, str] = field(default_factory=dict)  # extra variables for every component (SCIATIC_*)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _load_or_create_secrets(home: Path) -> dict[str, str]:
    """Keys every component must share (JWT signing, session, Fernet), kept in AIRFLOW_HOME."""
    from cryptography.fernet import Fernet

    path = home / SECRETS_FILE
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    values = {
        "jwt_secret": secrets.token_urlsafe(32),
        "secret_key": secrets.token_urlsafe(32),
        "fernet_key": Fernet.generate_key().decode(),
    }
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle)
    return values


def airflow_environment(config: StackConfig) -> dict[str, str]:
    """The environment of every component and of CLI calls against this stack."""
    keys = _load_or_create_secrets(config.home)
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    env.update(config.env)
    env.update(
        {
            "AIRFLOW_HOME": str(config.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(config.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": os.environ.get("AIRFLOW__CORE__DEFAULT_TIMEZONE", "system"),
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{config.base_url}/execution/",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__API__BASE_URL": config.base_url,
            "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": config.metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": config.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{config.metadata_url}",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": config.key_prefix,
            # Longer than any training run, else Redis hands a running task to a second worker.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(3 * 24 * 3600),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
            # A small machine: one parsing process, new files noticed within seconds.
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
            # A task's supervisor polls its process between heartbeats: 1 s instead of 5 s
            # takes seconds off every short task (docs/airflow.md, "Throughput").
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(config.home / "logs"),
        }
    )
    return env


def check_celery_executor(env: Mapping[str, str]) -> None:
    """Fail early, with the reason, when Airflow's CeleryExecutor cannot be imported here."""
    probe = "import celery, airflow.providers.celery.executors.celery_executor_utils as u; print(celery.__version__)"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=dict(env), capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        error = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "unknown error"
        raise ConfigurationError(
            f"Airflow's CeleryExecutor does not import in this environment ({error}); "
            "the installed celery and apache-airflow-providers-celery versions do not fit together"
        )


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named by ``url`` when it does not exist."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    target = make_url(url)
    if not target.drivername.startswith("postgresql"):
        return
    name = target.database
    server = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            exists = connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
            if not exists:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        server.dispose()


class AirflowStack:
    """Start, watch and stop the components; a context manager that always stops them."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.env = airflow_environment(config)
        self.airflow = airflow_executable()
        self.log_dir = config.home / "logs" / "stack"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- components -------------------------------------------------------
    def commands(self) -> dict[str, list[str]]:
        host = socket.getfqdn()
        commands = {
            "api-server": [self.airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.config.port)],
            "scheduler": [self.airflow, "scheduler"],
            "dag-processor": [self.airflow, "dag-processor"],
        }
        for queue in QUEUES:
            commands[f"worker-{queue}"] = [
                self.airflow, "celery", "worker", "--queues", queue, "--concurrency", "1",
                "--celery-hostname", f"{queue}@{host}", "--skip-serve-logs", "--without-gossip", "--without-mingle",
            ]  # fmt: skip
        return commands

    def run_cli(self, *args: str, timeout: float = 300) -> str:
        """Run one ``airflow`` CLI command against this stack; its output, or an error with it."""
        result = subprocess.run(
            [self.airflow, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        return result.stdout

    def prepare(self) -> None:
        """Metadata database at Airflow's schema and the pools the DAGs use."""
        self.config.home.mkdir(parents=True, exist_ok=True)
        check_celery_executor(self.env)
        ensure_database(self.config.metadata_url)
        self.run_cli("db", "migrate")
        setup_airflow(self.config.gpu_slots, env=self.env)

    def start(self) -> None:
        """Start every component in its own process group, logging to ``AIRFLOW_HOME/logs/stack``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, command in self.commands().items():
            env = dict(self.env)
            if name.startswith("worker-"):
                env[WORKER_NAME_ENV] = name.removeprefix("worker-")
                env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "tools.airflow_stack.worker_hostname"
                # this development tool lives beside the package, not in it: the workers import it from here
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
            with open(self.log_dir / f"{name}.log", "ab") as log:
                self.processes[name] = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )  # fmt: skip
        self._write_state()

    def _write_state(self) -> None:
        pids = {name: p.pid for name, p in self.processes.items()}
        started = {name: _start_time(pid) for name, pid in pids.items()}
        state = {"port": self.config.port, "pids": pids, "started": started}
        (self.config.home / STATE_FILE).write_text(json.dumps(state, indent=1))

    def check_alive(self) -> None:
        """Raise with the tail of its log when a component has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM each process group, SIGKILL what is left after ``grace`` seconds."""
        _stop_groups({name: p.pid for name, p in self.processes.items()}, grace)
        for process in self.processes.values():
            process.wait(timeout=5)
        self.processes.clear()
        (self.config.home / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- REST API ----------------------------------------------------------
    def api(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """Call the public REST API (``/api/v2``...); the decoded JSON answer."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.config.base_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def wait_healthy(self, timeout: float = 180) -> None:
        """Until the API answers and reports scheduler and dag-processor healthy."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                health = self.api("GET", "/api/v2/monitor/health")
                states = {part: (health.get(part) or {}).get("status") for part in ("scheduler", "dag_processor")}
                if all(state == "healthy" for state in states.values()):
                    return
                last = str(states)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last = str(exc)
            time.sleep(2)
        raise TimeoutError(f"Airflow not healthy after {timeout:.0f} s ({last})")

    def wait_for_dags(self, dag_ids: Sequence[str], timeout: float = 120) -> None:
        """Until the dag-processor has parsed and stored each DAG; fails on DAG import errors."""
        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while time.monotonic() < deadline:
            self.check_alive()
            errors = self.api("GET", "/api/v2/importErrors")
            if errors.get("import_errors"):
                raise RuntimeError(f"DAG import errors: {errors['import_errors']}")
            missing = [d for d in dag_ids if not self._dag_known(d)]
            if not missing:
                return
            time.sleep(2)
        raise TimeoutError(f"DAGs not parsed after {timeout:.0f} s: {missing}")

    def _dag_known(self, dag_id: str) -> bool:
        try:
            self.api("GET", f"/api/v2/dags/{dag_id}")
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Start a manual run; its run id."""
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": dict(conf or {})})
        return str(run["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """Until the run finishes (``success`` or ``failed``); its final state."""
        deadline = time.monotonic() + timeout
        state = "unknown"
        while time.monotonic() < deadline:
            self.check_alive()
            state = str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        found: list[dict[str, Any]] = answer["task_instances"]
        return found


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (identifies it across pid reuse)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _same_process(pid: int, started: str | None) -> bool:
    """The recorded process still runs (its pid was not reused by another one)."""
    return started is not None and _start_time(pid) == started


def _stop_groups(pids: Mapping[str, int], grace: float) -> None:
    for pid in pids.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(pid) for pid in pids.values()):
        time.sleep(0.5)
    for pid in pids.values():
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_recorded(home: Path, grace: float = 20.0) -> list[str]:
    """Stop the components a previous ``up`` recorded in ``home``; their names."""
    path = home / STATE_FILE
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    running = {name: pid for name, pid in state["pids"].items() if _same_process(pid, state["started"].get(name))}
    _stop_groups(running, grace)
    path.unlink()
    return sorted(running)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.airflow_stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("SCIATIC_AIRFLOW_HOME", DEFAULT_HOME)))
    parser.add_argument("--metadata-url", default=os.environ.get("SCIATIC_AIRFLOW_METADATA_URL", DEFAULT_METADATA_URL))
    parser.add_argument("--broker-url", default=os.environ.get("SCIATIC_AIRFLOW_BROKER_URL", DEFAULT_BROKER_URL))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SCIATIC_AIRFLOW_PORT", "8080")))
    parser.add_argument("--gpu-slots", type=int, default=1)
    args = parser.parse_args(argv)
    home = args.home.resolve()
    if args.action == "down":
        stopped = stop_recorded(home)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    if args.action == "status":
        state = home / STATE_FILE
        if not state.exists():
            print("not running")
            return 1
        recorded = json.loads(state.read_text())
        for name, pid in recorded["pids"].items():
            alive = _same_process(pid, recorded["started"].get(name)) and _group_alive(pid)
            print(f"{name:<15} pid {pid:<8} {'running' if alive else 'exited'}")
        return 0
    if (home / STATE_FILE).exists() and stop_recorded(home):
        print("stopped the stack left from an earlier `up`")
    config = StackConfig(home=home, metadata_url=args.metadata_url, broker_url=args.broker_url, port=args.port,
                         gpu_slots=args.gpu_slots)  # fmt: skip
    stack = AirflowStack(config)
    try:
        stack.prepare()
        stack.start()
        stack.wait_healthy()
    except (RuntimeError, TimeoutError, ConfigurationError, OSError) as exc:
        stack.stop()
        print(f"sciatic airflow stack: {exc}", file=sys.stderr)
        return 1
    print(f"Airflow UI: {config.base_url}  (AIRFLOW_HOME={home}; logs in {stack.log_dir})")
    print("DAGs start paused: unpause them in the UI. Stop with: python -m tools.airflow_stack down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
