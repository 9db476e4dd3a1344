"""The in-process job segments each series while its ingest pass converts the next ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from sciatic import nightly, pipeline
from sciatic.config import get_settings
from sciatic.db.enums import SeriesStatus
from sciatic.db.models import Series
from sciatic.db.session import default_engine, session_scope
from sciatic.phantom import PhantomOptions, generate
from tests.pipeline_helpers import configure, register_tiny_model

STUDIES = 6


def _converted() -> int:
    with session_scope(default_engine()) as session:
        query = select(func.count()).select_from(Series).where(Series.status == SeriesStatus.CONVERTED)
        return int(session.scalar(query) or 0)


def _drop_studies(folder: Path) -> None:
    generate(folder, STUDIES, 5, options=PhantomOptions(matrix=(96, 96), slices=10, hard_fraction=0.0))
    (folder / "manifest.json").unlink()
    shutil.copytree(folder, get_settings().drop_dir, dirs_exist_ok=True)


def test_segmentation_starts_while_conversion_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch)
    register_tiny_model()
    _drop_studies(tmp_path / "studies")

    converted_when_segmenting: list[int] = []
    segment_chunk = pipeline.segment_chunk

    def watched(series_ids: list[int], run_id: str | None = None) -> pipeline.ChunkReport:
        converted_when_segmenting.append(_converted())
        return segment_chunk(series_ids, run_id)

    monkeypatch.setattr(pipeline, "segment_chunk", watched)
    summary = nightly.run_nightly(progress=False)

    assert len(summary.segmented) == STUDIES and not summary.failed_series and not summary.no_model
    # The first series was being segmented before the pass had converted them all, and the pass
    # never ran further ahead than its queue allows (the series in hand, the queue, one waiting).
    first = converted_when_segmenting[0]
    assert 1 <= first <= nightly.CONVERSION_AHEAD + 2 < STUDIES
    assert converted_when_segmenting == sorted(converted_when_segmenting)
    assert pipeline.pending_series() == []  # nothing left behind


def test_an_error_while_segmenting_lets_the_ingest_pass_finish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch)
    register_tiny_model()
    _drop_studies(tmp_path / "studies")

    def broken(series_ids: list[int], run_id: str | None = None) -> pipeline.ChunkReport:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(pipeline, "segment_chunk", broken)
    with pytest.raises(RuntimeError, match="went away"):
        nightly.run_nightly(progress=False)
    assert _converted() == STUDIES  # the pass was not left blocked on its queue: every series is on record
    assert not any(get_settings().drop_dir.rglob("*.dcm"))  # and every file archived
