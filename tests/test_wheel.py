"""The wheel is the deliverable: built here, installed into a fresh venv outside the checkout, it works.

The fresh venv borrows the third-party packages of the project's own
environment (a path entry, so no multi-GB download), but not sciatic itself:
``sciatic`` must come from the wheel, with its migrations and shipped model as
package data. ``sciatic db upgrade`` and a small ``sciatic demo`` then run from
a folder that is not the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a copy of the sources, so that no build/ folder is left in the checkout
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("sciatic", "migrations"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-w", str(out), str(source)], check=True, cwd=out)
    (built,) = out.glob("sciatic-*.whl")
    return built


def test_wheel_carries_migrations_model_and_types(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "sciatic/migrations/env.py" in names
    assert "sciatic/migrations/script.py.mako" in names
    assert {n for n in names if n.startswith("sciatic/migrations/versions/00")} == {
        f"sciatic/migrations/versions/{p.name}" for p in (ROOT / "migrations" / "versions").glob("00*.py")
    }
    assert "sciatic/model/phantom-cascade.pt" in names
    assert "sciatic/py.typed" in names
    assert not any(n.startswith(("tools/", "tests/", "dags/")) for n in names)


def test_installed_wheel_upgrades_a_database_and_runs_the_demo(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # third-party packages from the project's environment, not sciatic (its editable hook is a .pth there)
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCIATIC_", "PYTHON"))}
    env["SCIATIC_DATA_DIR"] = str(work / "data")
    sciatic = env_dir / "bin" / "sciatic"

    where = subprocess.run(
        [str(python), "-c", "import sciatic, sciatic.migrations; print(sciatic.__file__, sciatic.migrations.__file__)"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(ROOT) not in where and str(env_dir) in where, where

    upgraded = subprocess.run(
        [str(sciatic), "db", "upgrade"], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert "up to date" in upgraded.stdout

    demo = subprocess.run(
        [str(sciatic), "demo", "--dir", str(work / "demo"), "--subjects", "2"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert (work / "demo" / "data" / "results" / "report.html").is_file()
    assert "phantom-cascade" in demo.stdout
