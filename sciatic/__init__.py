"""sciatic: sciatic nerve segmentation in proton-density MR of the upper leg.

Layers, top to bottom (``docs/architecture.md``):

- entry points: ``cli`` (the ``sciatic`` command) and the Airflow DAGs in ``dags/``;
- orchestration: ``pipeline`` (what a DAG task calls), ``nightly`` (``sciatic run``), ``demo``;
- ``steps``: one module per pipeline step, touching the database and the data folder;
- shared services: ``db`` (ORM, sessions, migrations, queries, model registry),
  ``layout`` (data-folder paths), ``storage`` (atomic writes), ``config``, ``errors``;
- pure libraries: ``dicom``, ``imaging``, ``model``, ``evaluation``, ``phantom``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sciatic")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
