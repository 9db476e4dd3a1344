"""The package's layers, checked on the source: who may import whom (docs/architecture.md).

entry points (cli, dags/)  ->  pipeline, nightly, demo  ->  steps/*  ->  db, layout, config
                                                                    ->  pure libraries
Pure libraries (dicom, imaging, model, evaluation, phantom) work on arrays and
files: they never reach the database, the settings or the steps above them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sciatic"
LIBRARIES = ("dicom", "imaging", "model", "evaluation", "phantom")
# what a pure library may import from the rest of sciatic
LIBRARY_MAY_IMPORT = ("sciatic.errors", "sciatic.storage", "sciatic.db.enums")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sciatic_imports(path: Path) -> set[str]:
    """Every sciatic module a file imports (at any depth: inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "sciatic"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sciatic":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from sciatic.db import queries`
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("steps"), ids=lambda p: p.name)
def test_a_step_never_imports_another_step(path: Path) -> None:
    own = _module_name(path)
    others = {
        name
        for name in _sciatic_imports(path)
        if _within(name, "sciatic.steps") and name not in {"sciatic.steps", own} and not name.startswith(own + ".")
    }
    # `from sciatic.steps import x` shows up as sciatic.steps.x: a sibling all the same
    assert not others, f"{own} imports sibling step(s) {sorted(others)}: move what they share below the steps"


@pytest.mark.parametrize("path", _modules(*LIBRARIES), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_libraries_stay_below_the_database_and_the_steps(path: Path) -> None:
    allowed = (*LIBRARY_MAY_IMPORT, *(f"sciatic.{lib}" for lib in LIBRARIES))
    bad = {
        name
        for name in _sciatic_imports(path)
        if name not in {"sciatic", "sciatic.__version__"} and not any(_within(name, a) for a in allowed)
    }
    assert not bad, f"{_module_name(path)} (a pure library) imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((ROOT / "dags").glob("*.py")), ids=lambda p: p.name)
def test_dag_files_reach_sciatic_only_through_the_pipeline(path: Path) -> None:
    allowed = ("sciatic.pipeline", "sciatic.airflow_setup", "sciatic.config.get_settings", "sciatic.config")
    imported = {n for n in _sciatic_imports(path) if n != "sciatic"}
    bad = {n for n in imported if not any(_within(n, a) for a in allowed)}
    assert not bad, f"{path.name} imports {sorted(bad)}; a task calls one sciatic.pipeline function"


@pytest.mark.parametrize("init", sorted(PACKAGE.rglob("__init__.py")), ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_every_package_declares_its_face(init: Path) -> None:
    tree = ast.parse(init.read_text())
    names = [
        t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)
    ]
    assert "__all__" in names, f"{init.relative_to(ROOT)} has no __all__"
    assert ast.get_docstring(tree), f"{init.relative_to(ROOT)} has no docstring saying what the package is"


def test_the_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").is_file()
