"""Every example query of docs/research-sql.md, run as a member of sciatic_research on pipeline data."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sciatic import pipeline
from sciatic.db.models import ManualLabel, Segmentation
from sciatic.db.session import default_engine, session_scope
from tests.pipeline_helpers import configure, drop_phantoms, register_tiny_model, segmentation_from_mask

DOC = Path(__file__).resolve().parents[1] / "docs" / "research-sql.md"


def example_queries() -> list[str]:
    queries = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(queries) >= 5, "docs/research-sql.md lost its example queries"
    return queries


def _fill(tmp_path: Path) -> None:
    """Six phantom subjects: the labels stand in for an earlier model, a tiny model is the newer one."""
    drop_phantoms(tmp_path / "phantoms", subjects=6, seed=11)
    pipeline.ingest()
    pipeline.import_labels()
    engine = default_engine()
    earlier = register_tiny_model(seed=1)
    with session_scope(engine) as session:
        labels = [(label.series_id, label.mask_path) for label in session.scalars(sa.select(ManualLabel))]
    for series_id, mask_path in labels:
        segmentation_from_mask(series_id, earlier, mask_path)
    register_tiny_model(seed=2)  # promoted: the current production model
    for series_id in pipeline.pending_series():
        pipeline.segment(series_id)
    with session_scope(engine) as session:
        segmentations = list(session.scalars(sa.select(Segmentation.id)))
    for segmentation_id in segmentations:
        pipeline.measure(segmentation_id)
        pipeline.quality_control(segmentation_id)
    # measure the ground-truth segmentations as production, as research staff would see a good model
    with session_scope(engine) as session:
        session.execute(sa.text("UPDATE model_version SET status = 'retired' WHERE name = 'tiny-2'"))
        session.execute(sa.text("UPDATE model_version SET status = 'production' WHERE name = 'tiny-1'"))


@pytest.mark.db
@pytest.mark.slow
def test_example_queries_answer_sensibly_as_a_research_member(
    pg_server: str, pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, pg_database)
    _fill(tmp_path)
    login = f"sciatic_test_analyst_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE ROLE {login} LOGIN"))
        connection.execute(sa.text(f"GRANT sciatic_research TO {login}"))
    analyst = sa.create_engine(make_url(pg_database).set(username=login))
    results: list[list[dict[str, Any]]] = []
    try:
        with analyst.connect() as connection:
            pseudonym = connection.execute(sa.text("SELECT min(pseudonym) FROM research.nerve_measurements")).scalar()
            for query in example_queries():
                params = {"pseudonym": pseudonym} if ":pseudonym" in query else {}
                results.append([dict(r) for r in connection.execute(sa.text(query), params).mappings()])
    finally:
        analyst.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP ROLE {login}"))
        admin.dispose()

    by_cohort, review, history, models, paired, along, image_quality, not_segmented, asymmetry = results[:9]
    assert not_segmented == []  # phantom PD axial series are all eligible
    assert asymmetry == []  # each phantom study holds one thigh
    sizes = {row["cohort"]: float(row["mean_of_median_csa_mm2"]) for row in by_cohort}
    assert set(sizes) == {"control", "patient"}
    assert sizes["patient"] > 1.5 * sizes["control"], sizes  # CMT1A-like nerves are enlarged
    assert 20 < sizes["control"] < 80 and 70 < sizes["patient"] < 250, sizes
    assert all(row["qc_status"] in ("review", "fail") for row in review)
    assert history and all(row["csa_median_mm2"] is not None for row in history if row["model_name"] == "tiny-1")
    assert [row["model_name"] for row in models] == ["tiny-2", "tiny-1"]
    assert models[1]["labelled_cases"] == 6 and float(models[1]["mean_dice"]) == 1.0
    assert len(paired) == 6
    assert along and [row["slice_index"] for row in along] == sorted(row["slice_index"] for row in along)
    snrs = [float(row["image_snr"]) for row in image_quality]  # the newer model's segmentations store both numbers
    assert len(snrs) == 6 and snrs == sorted(snrs) and all(snr > 4 for snr in snrs), snrs
    assert all(0 <= float(row["uncertainty"]) <= 1 for row in image_quality)
