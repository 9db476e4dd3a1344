"""Two nightly jobs at once (an overlapping schedule, a manual run during the night) do every piece of work once.

Ingest skips while another pass holds its lock; segmentation, metrics, QC and
label import take turns on named locks, so the second job finds the first
one's results instead of colliding with them (no IntegrityError, no traceback).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from sciatic import pipeline
from sciatic.config import get_settings
from sciatic.db.models import ManualLabel, NerveMetric, QcResult, Segmentation, Series
from sciatic.db.session import default_engine
from tests.pipeline_helpers import configure, drop_phantoms, register_tiny_model

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.db)]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_runs_at_once_do_each_thing_once(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    configure(monkeypatch, request.getfixturevalue("pg_database") if backend == "postgres" else None)
    manifest = drop_phantoms(tmp_path / "phantoms", subjects=4)
    pipeline.ingest()  # converted already: both runs find the same pending series and the same labels
    register_tiny_model()
    settings = get_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIATIC_")}
    env |= {
        "SCIATIC_DATA_DIR": str(settings.data_dir),
        "SCIATIC_DATABASE_URL": settings.effective_database_url,
        "SCIATIC_SERIES_QUIET_SECONDS": "0",
        "SCIATIC_FILE_SETTLE_SECONDS": "0",
        "SCIATIC_DEVICE": "cpu",
    }
    command = [sys.executable, "-m", "sciatic.cli", "run"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out + err
        assert "Traceback" not in err and "IntegrityError" not in err and "UniqueViolation" not in err, err

    engine = default_engine()
    with engine.connect() as connection:
        series = connection.execute(sa.select(Series.id)).scalars().all()
        per_series = Counter(connection.execute(sa.select(Segmentation.series_id)).scalars())
        labels = connection.execute(sa.select(ManualLabel.series_id)).scalars().all()
        metrics = Counter(
            connection.execute(sa.select(NerveMetric.segmentation_id).where(NerveMetric.side == "all")).scalars()
        )
        label_free_qc = Counter(
            connection.execute(sa.select(QcResult.segmentation_id).where(QcResult.manual_label_id.is_(None))).scalars()
        )
    assert len(series) == len(manifest.subjects)
    assert per_series == dict.fromkeys(series, 1)  # each series segmented once
    assert sorted(labels) == sorted(series)  # each label imported once
    assert set(metrics.values()) == {1} and set(label_free_qc.values()) == {1}
    assert len(metrics) == len(label_free_qc) == len(series)
