"""``sciatic demo``: the whole nightly job on synthetic studies, in a fresh folder, on embedded SQLite.

It shows a new user, in a few minutes and without any patient data, what the
service does: studies arrive in the drop folder, are converted, segmented by
the shipped phantom-trained model, measured and checked, manual labels are
imported and compared, and a report is written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sciatic import __version__
from sciatic.model.shipped import SHIPPED_MODEL

__all__ = ["prepare", "run_demo"]

MARKER = ".sciatic-demo"
DEMO_SEED = 2026


def prepare(directory: Path) -> Path:
    """A fresh demo folder (only a previous demo folder is ever deleted); returns its data directory."""
    from sciatic.db.session import forget_engines

    forget_engines()  # no connection may outlive the database file it was opened on
    if directory.exists():
        if not (directory / MARKER).exists() and any(directory.iterdir()):
            raise SystemExit(f"{directory} exists and is not a sciatic demo folder: choose another --dir")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text(f"sciatic {__version__} demo\n")
    data = directory / "data"
    os.environ.update(
        {
            "SCIATIC_DATA_DIR": str(data),
            "SCIATIC_SERIES_QUIET_SECONDS": "0",  # the studies are complete the moment they land
            "SCIATIC_FILE_SETTLE_SECONDS": "0",
        }
    )
    os.environ.pop("SCIATIC_DATABASE_URL", None)  # the embedded default database
    from sciatic.config import get_settings

    get_settings.cache_clear()
    return data


def run_demo(directory: Path, subjects: int = 6, model: Path = SHIPPED_MODEL) -> int:
    data = prepare(directory)
    from sciatic.config import get_settings
    from sciatic.db import migrate
    from sciatic.db.session import default_engine
    from sciatic.layout import DataLayout
    from sciatic.nightly import run_nightly
    from sciatic.phantom import generate_v2
    from sciatic.steps.models import add_model
    from sciatic.steps.report import overlay_png, write_html_report

    settings = get_settings()
    layout = DataLayout.of(settings)
    if not model.is_file():
        raise SystemExit(f"model {model} not found (`make model` rebuilds the shipped phantom model)")
    print(
        f"1. {subjects} synthetic thigh studies (seed {DEMO_SEED}, phantom v2: one or both thighs, the "
        "bifurcation, fatty infiltration, fat-sat; a localizer and a T1 coronal beside each PD axial) "
        "with ground-truth labels"
    )
    incoming = directory / "incoming"
    manifest = generate_v2(incoming, subjects, DEMO_SEED, labels_dir=layout.labels)
    for record in manifest.subjects:  # the study folders arrive in the drop folder, as from a scanner
        shutil.move(str(incoming / record.dicom_dir), layout.drop / record.dicom_dir)
    print(f"2. database {settings.effective_database_url}")
    migrate.upgrade(settings.effective_database_url)
    engine = default_engine()
    installed = add_model(settings, engine, model, promote=True)
    print(f"   model {installed.name} in production, as by `sciatic models add {model} --promote`")
    print("3. the nightly job: ingest, segment, measure, QC, labels")
    summary = run_nightly(run_id="demo")
    print(f"   ingest: {summary.ingest}")
    print(summary.table())
    for line in summary.problems():
        print(f"   {line}")
    results = layout.results
    for case in summary.cases:
        overlay_png(engine, case.info.segmentation_id, layout.overlay(case.info.segmentation_id))
    report = write_html_report(engine, layout.report())
    print(
        "\nWhere things are:\n"
        f"  report (open in a browser)  {report}\n"
        f"  overlay pictures            {results / 'overlays'}\n"
        f"  nerve masks (NIfTI)         {results}/<SeriesInstanceUID>/v1/{installed.name}/mask.nii.gz\n"
        f"  model card                  {installed.card}\n"
        f"  converted volumes           {layout.volumes}\n"
        f"  archived DICOM              {layout.archive}\n"
        f"  database (SQLite)           {settings.effective_database_url.removeprefix('sqlite:///')}\n"
        f"  phantom truth (cohorts)     {incoming / 'manifest.json'}\n"
        f"Try: SCIATIC_DATA_DIR={data} .venv/bin/sciatic models list"
    )
    return 1 if summary.failed_series else 0
