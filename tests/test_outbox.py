"""The PACS outbox against dcmtk's storescp: down then up, refusing, never twice, the QC policy, `sciatic run`."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa

from sciatic import pipeline
from sciatic.cli import main
from sciatic.config import get_settings
from sciatic.db.enums import OutboxKind, OutboxStatus, QcStatus
from sciatic.db.models import ManualLabel, NerveMetric, Outbox, QcResult, utcnow
from sciatic.db.session import default_engine, session_scope
from sciatic.dicom.sr import read_sr
from sciatic.steps import export, outbox
from tests.conftest import storescp_running
from tests.pipeline_helpers import configure, drop_phantoms, register_tiny_model, segmentation_from_mask
from tests.postgres import free_port
from tests.test_seg import _dciodvfy

LATER = dt.timedelta(hours=2)  # past any back-off of the first tries


def measured_segmentation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: int, database_url: str | None = None
) -> int:
    """A phantom series with a segmentation (its manual label), measured and QC'd; the PACS at ``port``."""
    monkeypatch.setenv("SCIATIC_PACS_HOST", "127.0.0.1")
    monkeypatch.setenv("SCIATIC_PACS_PORT", str(port))
    configure(monkeypatch, database_url)
    drop_phantoms(tmp_path / "ph", subjects=1, seed=21)
    pipeline.ingest()
    model_id = register_tiny_model()
    (label_id,) = pipeline.import_labels()
    with session_scope(default_engine()) as session:
        label = session.get(ManualLabel, label_id)
        assert label is not None
        series_id, mask = label.series_id, label.mask_path
    segmentation_id = segmentation_from_mask(series_id, model_id, mask)
    pipeline.measure(segmentation_id)
    pipeline.quality_control(segmentation_id)
    return segmentation_id


def _set_qc(segmentation_id: int, status: QcStatus) -> None:
    with session_scope(default_engine()) as session:
        session.execute(sa.update(QcResult).where(QcResult.segmentation_id == segmentation_id).values(status=status))


def _received(folder: Path) -> list[str]:
    """SOP Instance UIDs of every object the stand-in PACS stored (one file per C-STORE)."""
    return sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.iterdir())


def _drain(now: dt.datetime | None = None) -> outbox.DrainReport:
    return outbox.drain(get_settings(), default_engine(), now=now)


def test_pacs_down_then_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port, folder = free_port(), tmp_path / "pacs"
    monkeypatch.setenv("SCIATIC_PACS_SEND_QC", "all")
    segmentation_id = measured_segmentation(tmp_path, monkeypatch, port)
    assert pipeline.queue_results(segmentation_id) == 3
    assert pipeline.queue_results(segmentation_id) == 3  # queued once: the same rows
    rows = outbox.entries(default_engine())
    assert [(r.kind, r.status, r.attempts) for r in rows] == [
        (kind, OutboxStatus.PENDING, 0) for kind in (OutboxKind.SEG, OutboxKind.SR, OutboxKind.SC)
    ]
    for row in rows:
        assert _dciodvfy(Path(row.file_path))[0] == [], row.kind

    down = pipeline.drain_outbox()  # nothing listens on the port
    assert not down.sent and [i for i, _ in down.retrying] == [r.id for r in rows]
    before = utcnow()
    for row in outbox.entries(default_engine()):
        assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
        assert row.last_error and "no association" in row.last_error
        wait = row.next_attempt_at.replace(tzinfo=dt.UTC) - before
        assert dt.timedelta(seconds=50) < wait <= dt.timedelta(seconds=60)
    assert pipeline.drain_outbox().retrying == []  # not due yet: not tried again

    with storescp_running(port, folder, "+uf"):
        up = _drain(utcnow() + LATER)
        assert sorted(up.sent) == [r.id for r in rows] and not up.retrying
        assert _received(folder) == sorted(r.sop_instance_uid for r in rows)
        assert not _drain(utcnow() + 10 * LATER).sent  # acknowledged: never again
        assert outbox.retry(default_engine(), [r.id for r in rows]) == []
        assert not _drain(utcnow() + 10 * LATER).sent
    assert len(_received(folder)) == 3
    sent = {r.kind: r for r in outbox.entries(default_engine())}
    assert all(r.status is OutboxStatus.SENT and r.sent_at and r.attempts == 2 for r in sent.values())
    # the SR in the PACS references the SEG in the PACS; all three in the source study
    stored = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in folder.iterdir()}
    report = read_sr(stored[sent[OutboxKind.SR].sop_instance_uid])
    assert set(report.referenced_seg_uids) == {sent[OutboxKind.SEG].sop_instance_uid}
    # one measurement group per nerve_metric row, with the stored numbers
    with session_scope(default_engine()) as session:
        metrics = session.scalars(
            sa.select(NerveMetric).where(NerveMetric.segmentation_id == segmentation_id).order_by(NerveMetric.id)
        ).all()
        stored_values = [(m.volume_mm3, m.csa_median_mm2, m.covered_length_mm, m.signal_mean) for m in metrics]
    assert [(g.volume_mm3, g.csa_median_mm2, g.covered_length_mm, g.signal_mean) for g in report.groups] == (
        stored_values
    )
    assert report.groups[0].side is None and report.groups[0].volume_mm3 > 0
    studies = {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in stored.values()}
    assert studies == {report.study_instance_uid}


def test_refused_association_is_retried_then_failed_and_retried_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port, folder = free_port(), tmp_path / "pacs"
    monkeypatch.setenv("SCIATIC_PACS_SEND_QC", "all")
    monkeypatch.setenv("SCIATIC_PACS_MAX_ATTEMPTS", "2")
    segmentation_id = measured_segmentation(tmp_path, monkeypatch, port)
    assert pipeline.queue_results(segmentation_id) == 3
    with storescp_running(port, folder, "--refuse"):
        assert len(_drain().retrying) == 3
        assert len(_drain(utcnow() + LATER).failed) == 3
        assert not _drain(utcnow() + 10 * LATER).failed  # failed rows wait for a person
    assert list(folder.iterdir()) == []
    rows = outbox.entries(default_engine(), OutboxStatus.FAILED)
    assert len(rows) == 3 and all(r.attempts == 2 and "no association" in (r.last_error or "") for r in rows)
    assert main(["outbox", "list", "--status", "failed"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 3 and all("failed" in line and "no association" in line for line in listed)

    assert main(["outbox", "retry"]) == 0
    assert "3 object(s) queued again" in capsys.readouterr().out
    assert [(r.status, r.attempts) for r in outbox.entries(default_engine())] == [(OutboxStatus.PENDING, 0)] * 3
    with storescp_running(port, folder, "+uf"):
        assert main(["outbox", "send"]) == 0
        assert "3 sent, 0 to retry, 0 failed" in capsys.readouterr().out
    assert len(_received(folder)) == 3
    assert main(["outbox", "retry"]) == 0
    assert "nothing to retry" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.db)])
def test_an_acknowledged_object_is_never_sent_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, backend: str
) -> None:
    port, folder = free_port(), tmp_path / "pacs"
    monkeypatch.setenv("SCIATIC_PACS_SEND_QC", "all")
    url = request.getfixturevalue("pg_database") if backend == "postgres" else None
    segmentation_id = measured_segmentation(tmp_path, monkeypatch, port, url)
    assert pipeline.queue_results(segmentation_id) == 3
    with storescp_running(port, folder, "+uf", "--sleep-after", "1"):  # a slow PACS: a drain takes seconds
        first: list[outbox.DrainReport] = []
        worker = threading.Thread(target=lambda: first.append(_drain()))
        worker.start()
        time.sleep(0.5)
        second = _drain()  # another process (an Airflow task, `sciatic run`) at the same time
        worker.join(timeout=60)
        assert second.busy and not second.sent
        assert len(first[0].sent) == 3
        assert not _drain(utcnow() + LATER).sent
    assert len(_received(folder)) == len(set(_received(folder))) == 3
    with session_scope(default_engine()) as session:
        assert session.scalar(sa.select(sa.func.count()).where(Outbox.status == OutboxStatus.SENT)) == 3


def test_only_qc_pass_is_queued_unless_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    segmentation_id = measured_segmentation(tmp_path, monkeypatch, free_port())
    settings, engine = get_settings(), default_engine()
    _set_qc(segmentation_id, QcStatus.REVIEW)
    assert export.results_to_queue(settings, engine) == []
    assert pipeline.queue_results(segmentation_id) == 0 and outbox.entries(engine) == []
    _set_qc(segmentation_id, QcStatus.PASS)
    assert export.results_to_queue(settings, engine) == [segmentation_id]
    assert export.results_to_queue(settings, engine, now=utcnow() + dt.timedelta(days=8)) == []  # too old
    assert pipeline.queue_new_results() == 3
    assert pipeline.queue_new_results() == 0  # queued once

    monkeypatch.setenv("SCIATIC_PACS_HOST", "")
    get_settings.cache_clear()
    assert export.results_to_queue(get_settings(), engine) == []
    assert pipeline.queue_results(segmentation_id) == 0  # no PACS: nothing


def test_export_sr_and_sc_commands_send_to_the_pacs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    storescp: tuple[int, Path],
) -> None:
    port, folder = storescp
    segmentation_id = measured_segmentation(tmp_path, monkeypatch, port)
    seg, sr, sc = tmp_path / "nerve-seg.dcm", tmp_path / "nerve-sr.dcm", tmp_path / "nerve-sc.dcm"
    assert main(["export", "seg", str(segmentation_id), "-o", str(seg)]) == 0
    assert main(["export", "sr", str(segmentation_id), "-o", str(sr), "--seg", str(seg), "--send"]) == 0
    assert "given as" in capsys.readouterr().out
    assert main(["export", "sc", str(segmentation_id), "-o", str(sc), "--send"]) == 0
    for path in (seg, sr, sc):
        assert _dciodvfy(path)[0] == [], path.name
    assert _received(folder) == sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in (seg, sr, sc))
    assert set(read_sr(sr).referenced_seg_uids) == {str(pydicom.dcmread(seg).SOPInstanceUID)}

    alone = tmp_path / "alone.dcm"  # without --seg: a new SEG beside it
    assert main(["export", "sr", str(segmentation_id), "-o", str(alone)]) == 0
    assert set(read_sr(alone).referenced_seg_uids) == {str(pydicom.dcmread(tmp_path / "alone-seg.dcm").SOPInstanceUID)}
    assert outbox.entries(default_engine()) == []  # by hand: nothing queued


def test_sciatic_run_queues_sends_and_counts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    storescp: tuple[int, Path],
) -> None:
    port, folder = storescp
    monkeypatch.setenv("SCIATIC_PACS_HOST", "127.0.0.1")
    monkeypatch.setenv("SCIATIC_PACS_PORT", str(port))
    monkeypatch.setenv("SCIATIC_PACS_SEND_QC", "all")
    configure(monkeypatch)
    assert main(["phantom", "-o", str(tmp_path / "ph"), "--subjects", "1", "--seed", "3", "--slices", "12"]) == 0
    for subject in (tmp_path / "ph").iterdir():
        if subject.is_dir():
            shutil.copytree(subject, get_settings().drop_dir / subject.name)
    register_tiny_model()
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert "PACS outbox: 3 queued by this run; 0 pending, 3 sent, 0 failed" in out, out
    assert len(_received(folder)) == 3
