"""The pipeline steps end to end on phantom studies: ingest, segment, metrics, QC, labels, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from sciatic import pipeline
from sciatic.db import registry
from sciatic.db.enums import ModelStatus, QcStatus
from sciatic.db.models import (
    ManualLabel,
    ModelVersion,
    NerveMetric,
    PipelineEvent,
    QcResult,
    Segmentation,
    Series,
    SliceMetric,
)
from sciatic.db.session import default_engine, session_scope
from sciatic.errors import ModelIntegrityError, NoProductionModelError
from sciatic.imaging.volume import read_volume
from tests.pipeline_helpers import configure, drop_phantoms, register_tiny_model, segmentation_from_mask

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.db)]


@pytest.fixture(scope="module")
def phantom_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("phantoms")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    url = request.getfixturevalue("pg_database") if request.param == "postgres" else None
    configure(monkeypatch, url)
    return str(request.param)


def _rows(model: type, *where: object) -> list[object]:
    with session_scope(default_engine()) as session:
        return list(session.scalars(sa.select(model).where(*where)))  # type: ignore[arg-type]


def test_steps_leave_the_rows_they_promise(backend: str, phantom_source: Path) -> None:
    drop_phantoms(phantom_source)
    assert len(pipeline.ingest().converted) == 2
    with pytest.raises(NoProductionModelError):
        pipeline.pending_series()
    model_id = register_tiny_model()
    pending = pipeline.pending_series()
    assert len(pending) == 2
    segmentation_ids = [pipeline.segment(series_id) for series_id in pending]
    assert pipeline.pending_series() == []
    assert [pipeline.segment(series_id) for series_id in pending] == segmentation_ids  # no-op
    for segmentation_id in segmentation_ids:
        pipeline.measure(segmentation_id)
        pipeline.measure(segmentation_id)  # replaces, never duplicates
        assert pipeline.quality_control(segmentation_id) in {s.value for s in QcStatus}
    (segmentation,) = _rows(Segmentation, Segmentation.id == segmentation_ids[0])
    assert isinstance(segmentation, Segmentation)
    (series,) = _rows(Series, Series.id == segmentation.series_id)
    assert isinstance(series, Series)
    mask, volume = read_volume(segmentation.mask_path), read_volume(series.volume_path or "")
    assert mask.shape == volume.shape and np.array_equal(mask.affine, volume.affine)
    assert segmentation.model_version_id == model_id and segmentation.device == "cpu"
    assert segmentation.image_snr is not None and segmentation.image_snr > 4  # a phantom at SNR 12-35
    whole = SliceMetric.side == "all"  # the whole mask; each leg has rows of its own too
    assert len(_rows(SliceMetric, SliceMetric.segmentation_id == segmentation.id, whole)) == series.n_slices
    assert len(_rows(NerveMetric, NerveMetric.side == "all")) == 2 and len(_rows(QcResult)) == 2

    labels = pipeline.import_labels()
    assert len(labels) == 2 and pipeline.import_labels() == []
    needing = pipeline.segmentations_needing_label_qc()
    assert sorted(needing) == sorted(segmentation_ids)
    for segmentation_id in needing:
        pipeline.quality_control(segmentation_id)
    assert pipeline.segmentations_needing_label_qc() == []
    with_labels = [r for r in _rows(QcResult) if isinstance(r, QcResult) and r.manual_label_id is not None]
    assert len(with_labels) == 2 and all(r.dice is not None for r in with_labels)
    actions = {e.action for e in _rows(PipelineEvent) if isinstance(e, PipelineEvent)}
    assert {"converted", "registered", "promoted", "segmented", "measured", "qc", "imported"} <= actions


def test_ground_truth_mask_measures_like_the_phantom(backend: str, phantom_source: Path) -> None:
    """A segmentation equal to the label must give Dice 1 and the phantom's own nerve CSA."""
    manifest = drop_phantoms(phantom_source)
    pipeline.ingest()
    model_id = register_tiny_model()
    (label_id,) = pipeline.import_labels()[:1]
    with session_scope(default_engine()) as session:
        label = session.get(ManualLabel, label_id)
        assert label is not None
        series_uid = session.get(Series, label.series_id).series_instance_uid  # type: ignore[union-attr]
        segmentation_id = segmentation_from_mask(label.series_id, model_id, label.mask_path)
    pipeline.measure(segmentation_id)
    pipeline.quality_control(segmentation_id)
    (truth,) = [s for s in manifest.subjects if s.series_instance_uid == series_uid]
    (metric,) = _rows(NerveMetric, NerveMetric.segmentation_id == segmentation_id, NerveMetric.side == "all")
    assert isinstance(metric, NerveMetric) and metric.csa_median_mm2 is not None
    assert metric.csa_median_mm2 == pytest.approx(truth.mask_csa_mm2, rel=0.05)
    (agreement,) = _rows(QcResult, QcResult.manual_label_id == label_id)
    assert isinstance(agreement, QcResult) and agreement.dice == 1.0 and agreement.failed is False


def test_label_on_another_grid_is_refused_not_resampled(backend: str, phantom_source: Path) -> None:
    import nibabel as nib

    from sciatic.config import get_settings

    drop_phantoms(phantom_source, with_labels=False)
    pipeline.ingest()
    (series,) = _rows(Series)[:1]
    assert isinstance(series, Series)
    shifted = np.array(series.affine)
    shifted[:3, 3] += 5.0
    image = nib.Nifti1Image(np.zeros((series.n_columns, series.n_rows, series.n_slices), np.uint8), shifted)
    nib.save(image, get_settings().dir("labels") / f"{series.series_instance_uid}__bob.nii.gz")
    assert pipeline.import_labels() == []
    assert _rows(ManualLabel) == []


def test_registry_keeps_one_production_model_and_checks_checkpoints(backend: str) -> None:
    first = register_tiny_model(seed=1)
    second = register_tiny_model(seed=2, promote=False)
    with session_scope(default_engine()) as session:
        registry.promote(session, second)
    statuses = {m.id: m.status for m in _rows(ModelVersion) if isinstance(m, ModelVersion)}
    assert statuses == {first: ModelStatus.RETIRED, second: ModelStatus.PRODUCTION}
    with session_scope(default_engine()) as session:
        model = registry.get(session, second)
        Path(model.checkpoint_path).write_bytes(Path(model.checkpoint_path).read_bytes() + b"tampered")
    with pytest.raises(ModelIntegrityError):
        from sciatic.model.infer import cached_model

        with session_scope(default_engine()) as session:
            model = registry.get(session, second)
            cached_model(model.checkpoint_path, model.checkpoint_sha256, "cpu")


def test_qc_reads_the_metric_rows_and_raters_are_compared(
    backend: str, phantom_source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import shutil

    from sciatic.cli import main
    from sciatic.config import get_settings
    from sciatic.steps.qc import NotMeasuredError

    manifest = drop_phantoms(phantom_source, with_labels=False)
    pipeline.ingest()
    register_tiny_model()
    segmentation_id = pipeline.segment(pipeline.pending_series()[0])
    with pytest.raises(NotMeasuredError):  # QC reads what measure wrote
        pipeline.quality_control(segmentation_id)
    pipeline.measure(segmentation_id)
    first = pipeline.quality_control(segmentation_id)
    # the flags come from the rows, not the files: QC still answers with the mask file gone
    with session_scope(default_engine()) as session:
        segmentation = session.get(Segmentation, segmentation_id)
        assert segmentation is not None
        series = session.get(Series, segmentation.series_id)
        assert series is not None
        mask_path, uid = Path(segmentation.mask_path), series.series_instance_uid
    moved = mask_path.with_name("moved.nii.gz")
    mask_path.rename(moved)
    assert pipeline.quality_control(segmentation_id) == first
    moved.rename(mask_path)

    truth = phantom_source / "labels" / f"{uid}.nii.gz"
    assert uid in {s.series_instance_uid for s in manifest.subjects}
    labels = get_settings().dir("labels")
    shutil.copy(truth, labels / f"{uid}__alice.nii.gz")
    shutil.copy(truth, labels / f"{uid}__bob.nii.gz")
    assert len(pipeline.import_labels()) == 2
    assert main(["qc", "raters", uid]) == 0
    agreement = json.loads(capsys.readouterr().out)
    assert agreement["raters"] == ["alice", "bob"] and agreement["mean_dice"] == 1.0
    assert main(["qc", "raters", "1.2.3.4.5"]) == 2  # no such series: a clear error, not a traceback


def test_a_chunk_goes_on_past_a_failed_series_and_its_retry_redoes_only_that(
    backend: str, phantom_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sciatic.config import get_settings
    from sciatic.db.models import PipelineEvent

    drop_phantoms(phantom_source, with_labels=False)
    pipeline.ingest()
    register_tiny_model()
    monkeypatch.setenv("SCIATIC_SEGMENT_CHUNK_SIZE", "2")
    get_settings.cache_clear()
    pending = pipeline.pending_series()
    assert pipeline.chunks([*pending, 10_001, 10_002, 10_003]) == [pending, [10_001, 10_002], [10_003]]
    with session_scope(default_engine()) as session:
        bad = session.get(Series, pending[0])
        assert bad is not None and bad.volume_path is not None
        volume = Path(bad.volume_path)
    hidden = volume.with_name("elsewhere.nii.gz")
    volume.rename(hidden)  # the first series' volume is gone: it fails, the second goes on

    report = pipeline.segment_chunk(pending)
    assert [series for series, _ in report.failed] == [pending[0]]
    assert len(report.done) == 1 and report.left == []
    events = len(_rows(PipelineEvent))

    hidden.rename(volume)
    retry = pipeline.segment_chunk(pending)
    assert retry.failed == [] and len(retry.done) == 2 and report.done[0] in retry.done
    new = [e for e in _rows(PipelineEvent) if isinstance(e, PipelineEvent)][events:]
    actions = sorted(e.action for e in new if e.action in {"segmented", "measured", "qc"})
    assert actions == ["measured", "qc", "segmented"]  # once each: the finished series is left alone

    monkeypatch.setenv("SCIATIC_SEGMENT_CHUNK_MAX_MINUTES", "0.000001")
    get_settings.cache_clear()
    late = pipeline.segment_chunk(pending)
    assert late.left == pending and late.done == []  # past its time budget a chunk starts nothing


def test_metrics_are_stored_for_the_whole_mask_and_per_leg(backend: str, phantom_source: Path) -> None:
    from sciatic.db.enums import Side

    manifest = drop_phantoms(phantom_source, with_labels=False)
    pipeline.ingest()
    register_tiny_model()
    with session_scope(default_engine()) as session:
        series = {s.series_instance_uid: s for s in session.scalars(sa.select(Series))}
    for record in manifest.subjects:
        row = series[record.series_instance_uid]
        assert row.laterality == record.laterality  # the Laterality tag sides a unilateral study
        truth = phantom_source / "labels" / f"{record.series_instance_uid}.nii.gz"
        segmentation_id = segmentation_from_mask(row.id, register_tiny_model(promote=False, seed=5), str(truth))
        pipeline.measure(segmentation_id)
        assert pipeline.quality_control(segmentation_id) in {"pass", "review"}
        nerves = {m.side: m for m in _rows(NerveMetric, NerveMetric.segmentation_id == segmentation_id)}  # type: ignore[union-attr]
        leg = Side.RIGHT if record.laterality == "R" else Side.LEFT
        assert set(nerves) == {Side.ALL, leg}
        assert nerves[leg].volume_mm3 == nerves[Side.ALL].volume_mm3 > 0  # one leg: its nerve is the whole mask
        leg_slices = _rows(SliceMetric, SliceMetric.segmentation_id == segmentation_id, SliceMetric.side == leg)
        assert leg_slices and all(s.csa_mm2 > 0 for s in leg_slices)  # type: ignore[attr-defined]
