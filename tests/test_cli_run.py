"""The CLI over the pipeline: phantom -> drop folder -> `sciatic run`, and the registry commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sciatic.cli import main
from sciatic.config import get_settings
from tests.pipeline_helpers import configure, register_tiny_model


def test_run_segments_measures_and_summarises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(monkeypatch)
    assert (
        main(
            [
                "phantom",
                "-o",
                str(tmp_path / "ph"),
                "--subjects",
                "2",
                "--seed",
                "3",
                "--labels",
                str(get_settings().dir("labels")),
                "--slices",
                "12",
            ]
        )
        == 0
    )
    for subject in (tmp_path / "ph").iterdir():
        if subject.is_dir():
            shutil.copytree(subject, get_settings().drop_dir / subject.name)

    assert main(["run"]) == 0
    out = capsys.readouterr().out
    # two v2 studies: a localizer (refused: three planes), a T1 coronal (not segmented) and the PD axial each
    assert "converted 4 series" in out and "refused 2" in out and "no production model" in out
    assert "labels imported: 2" in out and out.count("(T1 TSE COR THIGH) not segmented") == 2

    register_tiny_model()
    assert main(["models", "list"]) == 0
    assert "production" in capsys.readouterr().out
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert "labels imported: 0" in out and out.count("sub-") == 2, out
    assert out.count("review") + out.count("fail") + out.count("pass") >= 2
    assert main(["segment"]) == 0
    assert "nothing to segment" in capsys.readouterr().out


def test_montage_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sciatic.dicom.convert import convert_directory
    from sciatic.phantom import PhantomOptions, generate

    manifest = generate(tmp_path / "ph", 1, 5, labels_dir=tmp_path / "labels", options=PhantomOptions(slices=10))
    report = convert_directory(tmp_path / "ph", tmp_path / "nii")
    (outcome,) = [s for s in report.series if s.output]
    label = tmp_path / "labels" / manifest.subjects[0].label_file
    assert main(["montage", str(outcome.output), "-o", str(tmp_path / "m.png"), "--mask", str(label)]) == 0
    assert (tmp_path / "m.png").stat().st_size > 10_000
