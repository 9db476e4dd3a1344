"""Only PD axial thigh series are segmented; every other converted series is kept and named with its reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from sciatic import pipeline
from sciatic.cli import main
from sciatic.config import get_settings
from sciatic.db.enums import EligibilityReason, SeriesStatus
from sciatic.db.models import Segmentation, Series
from sciatic.db.session import default_engine
from sciatic.dicom.eligibility import EligibilityRules, SeriesFacts, assess
from sciatic.nightly import run_nightly
from tests.conftest import REAL_DICOM
from tests.pipeline_helpers import configure, drop_phantoms, register_tiny_model

AXIAL = (0.0, 0.0, 1.0)
SAGITTAL = (1.0, 0.0, 0.0)


def _facts(**changes: object) -> SeriesFacts:
    values: dict[str, object] = {
        "series_instance_uid": "1.2.3",
        "description": "PD TSE AX THIGH",
        "image_types": frozenset({"ORIGINAL", "PRIMARY", "M", "ND"}),
        "n_slices": 40,
        "slice_normal": AXIAL,
        "repetition_time_ms": 3000.0,
        "echo_time_ms": 30.0,
        "scanning_sequence": ("SE",),
        "scan_options": (),
        "body_part": "THIGH",
    }
    values.update(changes)
    return SeriesFacts(**values)  # type: ignore[arg-type]


RULES = EligibilityRules()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"image_types": frozenset({"ORIGINAL", "PRIMARY", "LOCALIZER"})}, EligibilityReason.LOCALIZER),
        ({"n_slices": 3}, EligibilityReason.LOCALIZER),
        ({"image_types": frozenset({"ORIGINAL", "PRIMARY", "P", "ND"})}, EligibilityReason.NOT_MAGNITUDE),
        ({"n_slices": 8}, EligibilityReason.TOO_FEW_SLICES),
        ({"slice_normal": SAGITTAL}, EligibilityReason.NOT_AXIAL),
        ({"slice_normal": (0.0, 0.7071, 0.7071)}, EligibilityReason.NOT_AXIAL),  # 45 degrees: coronal-oblique
        ({"body_part": "BRAIN"}, EligibilityReason.BODY_PART),
        ({"repetition_time_ms": 550.0, "echo_time_ms": 12.0}, EligibilityReason.NOT_PD),  # T1 TSE
        ({"echo_time_ms": 90.0}, EligibilityReason.NOT_PD),  # T2 TSE
        ({"scanning_sequence": ("SE", "IR")}, EligibilityReason.NOT_PD),  # STIR
        ({"scanning_sequence": ("GR",)}, EligibilityReason.NOT_PD),  # Dixon / gradient echo
        ({"scanning_sequence": ("GR", "EP")}, EligibilityReason.NOT_PD),  # EPI with PD-like timing
        ({"repetition_time_ms": None, "description": "T1 COR"}, EligibilityReason.NOT_PD),
    ],
)
def test_each_rule_names_its_reason(changes: dict[str, object], reason: EligibilityReason) -> None:
    verdict = assess(_facts(**changes), RULES)
    assert not verdict.eligible and verdict.reason is reason and verdict.detail


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"scan_options": ("FS",), "description": "PD FS AX"},  # fat-suppressed PD
        {"slice_normal": (0.0, 0.2588, 0.9659)},  # 15 degrees oblique
        {"body_part": ""},  # no BodyPartExamined: no objection
        {"body_part": "LOWER LIMB"},
        {"repetition_time_ms": None, "echo_time_ms": None, "description": "proton density ax"},
        {"scanning_sequence": ()},  # ScanningSequence absent: the timing decides
    ],
)
def test_pd_axial_thigh_series_are_eligible(changes: dict[str, object]) -> None:
    assert assess(_facts(**changes), RULES).eligible


def test_a_site_forces_series_in_and_out() -> None:
    t1 = _facts(repetition_time_ms=500.0, echo_time_ms=10.0)
    assert not assess(t1, RULES).eligible
    assert assess(t1, EligibilityRules(include_uids=frozenset({"1.2.3"}))).eligible
    out = assess(_facts(), EligibilityRules(exclude_uids=frozenset({"1.2.3"})))
    assert not out.eligible and out.reason is EligibilityReason.FORCED_OUT
    relaxed = EligibilityRules(pd_min_tr_ms=400.0)
    assert assess(t1, relaxed).eligible  # thresholds are the site's


def test_settings_build_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIATIC_ELIGIBILITY_INCLUDE", " 1.2.3 , 4.5.6,")
    monkeypatch.setenv("SCIATIC_ELIGIBILITY_BODY_PARTS", "thigh, upper leg")
    get_settings.cache_clear()
    rules = get_settings().eligibility_rules()
    assert rules.include_uids == {"1.2.3", "4.5.6"} and rules.body_parts == ("THIGH", "UPPERLEG")
    monkeypatch.setenv("SCIATIC_ELIGIBILITY_PD_PATTERN", "(unclosed")
    get_settings.cache_clear()
    with pytest.raises(Exception, match="not a regular expression"):
        get_settings()


@pytest.mark.slow
def test_real_brain_and_fieldmap_series_are_never_segmented(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(monkeypatch)
    drop = get_settings().dir("drop")
    for folder in sorted(REAL_DICOM.iterdir()):
        if folder.is_dir() and folder.name != "reference":
            shutil.copytree(folder, drop / folder.name)
    manifest = drop_phantoms(tmp_path / "phantoms", subjects=2, with_labels=False)
    register_tiny_model()
    summary = run_nightly(progress=False)
    engine = default_engine()
    with engine.connect() as connection:
        series = connection.execute(sa.select(Series).where(Series.status == SeriesStatus.CONVERTED)).all()
        segmented = set(connection.execute(sa.select(Segmentation.series_id)).scalars())
    phantom_uids = {s.series_instance_uid for s in manifest.subjects}
    real = [s for s in series if s.series_instance_uid not in phantom_uids]
    assert len(real) >= 8  # every real series that is one volume
    for row in real:
        assert row.eligible is False and row.eligibility_reason is not None and row.eligibility_detail, row
        assert row.id not in segmented
    phantoms = [s for s in series if s.series_instance_uid in phantom_uids]
    assert len(phantoms) == 2 and all(s.eligible for s in phantoms)
    assert {s.id for s in phantoms} == segmented
    assert {sid for sid, _, _ in summary.not_segmented} == {s.id for s in real}

    # the run's table names them, and the report lists them with their reasons
    report = tmp_path / "report.html"
    assert main(["report", "-o", str(report)]) == 0
    html = report.read_text("utf-8")
    assert "Series not segmented" in html
    for row in real:
        assert row.eligibility_reason.value in html


def test_the_site_lists_apply_without_converting_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    configure(monkeypatch)
    manifest = drop_phantoms(tmp_path / "phantoms", subjects=2, with_labels=False)
    pipeline.ingest()
    register_tiny_model()
    assert len(pipeline.pending_series()) == 2
    first, second = (s.series_instance_uid for s in manifest.subjects)
    monkeypatch.setenv("SCIATIC_ELIGIBILITY_EXCLUDE", first)
    get_settings.cache_clear()
    pending = pipeline.pending_series()
    with default_engine().connect() as connection:
        uids = set(connection.execute(sa.select(Series.series_instance_uid).where(Series.id.in_(pending))).scalars())
    assert uids == {second}
