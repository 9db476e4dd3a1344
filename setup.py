"""Package layout that pyproject.toml cannot say alone: the top-level `migrations/` ships as `sciatic.migrations`.

Everything else about the project is declared in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["sciatic", "sciatic.*"]), "sciatic.migrations", "sciatic.migrations.versions"],
    package_dir={"sciatic.migrations": "migrations"},
)
