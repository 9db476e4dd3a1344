"""`sciatic demo` end to end in a temporary folder (with a tiny model, to stay fast)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sciatic.cli import main
from sciatic.model.checkpoint import save_checkpoint
from sciatic.model.unet import build_model
from tests._model_synthetic import TINY_CASCADE


def test_demo_runs_the_whole_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "tiny.pt"
    save_checkpoint(model, build_model(TINY_CASCADE), TINY_CASCADE)
    folder = tmp_path / "demo"
    assert main(["demo", "--dir", str(folder), "--subjects", "2", "--model", str(model)]) == 0
    out = capsys.readouterr().out
    # each study: a 3-plane localizer (refused), a T1 coronal (converted, not segmented) and the PD axial
    assert "converted 4 series" in out and "refused 2" in out and "report (open in a browser)" in out
    assert out.count("(T1 TSE COR THIGH) not segmented: slices") == out.count("off axial (mostly coronal)") == 2
    data = folder / "data"
    assert (data / "results" / "report.html").stat().st_size > 10_000
    assert len(list((data / "results" / "overlays").glob("*.png"))) == 2
    with sqlite3.connect(data / "sciatic.db") as db:
        assert db.execute("SELECT count(*) FROM segmentation").fetchone() == (2,)
        assert db.execute("SELECT count(*) FROM manual_label").fetchone() == (2,)
        assert db.execute("SELECT count(*) FROM qc_result WHERE dice IS NOT NULL").fetchone() == (2,)
        # the 3-plane localizers: refused by the converter, and recorded as ineligible localizers
        refused = "SELECT eligible, eligibility_reason, refusal_reason FROM series WHERE status = 'refused'"
        assert db.execute(refused).fetchall() == [(0, "localizer", "mixed_orientation")] * 2

    # running it again replaces the earlier demo, and never a folder that is not one
    assert main(["demo", "--dir", str(folder), "--subjects", "1", "--model", str(model)]) == 0
    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not a sciatic demo folder"):
        main(["demo", "--dir", str(other), "--model", str(model)])
    assert (other / "keep.txt").exists()
