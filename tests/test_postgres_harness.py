"""The fallback of the test harness: a throwaway PostgreSQL cluster made with initdb."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.postgres import ThrowawayCluster


@pytest.mark.db
@pytest.mark.slow
def test_throwaway_cluster_starts_answers_and_goes_away() -> None:
    cluster = ThrowawayCluster()
    try:
        engine = sa.create_engine(cluster.url)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()
    finally:
        cluster.stop()
    assert not cluster.root.exists()
