"""A segmentation exported as DICOM SEG, sent to a PACS (dcmtk's storescp), and imported back as a label."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa

from sciatic import pipeline
from sciatic.cli import main
from sciatic.config import get_settings
from sciatic.db.enums import LabelFormat
from sciatic.db.models import ManualLabel
from sciatic.db.session import default_engine, session_scope
from sciatic.imaging.volume import read_volume
from tests.pipeline_helpers import configure, drop_phantoms, register_tiny_model, segmentation_from_mask


def test_seg_round_trip_through_pacs_and_label_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storescp: tuple[int, Path]
) -> None:
    port, pacs_folder = storescp
    monkeypatch.setenv("SCIATIC_PACS_HOST", "127.0.0.1")
    monkeypatch.setenv("SCIATIC_PACS_PORT", str(port))
    configure(monkeypatch)
    drop_phantoms(tmp_path / "ph", subjects=1, seed=21)
    pipeline.ingest()
    model_id = register_tiny_model()
    (label_id,) = pipeline.import_labels()
    with session_scope(default_engine()) as session:
        label = session.get(ManualLabel, label_id)
        assert label is not None
        series_id, label_mask = label.series_id, label.mask_path
    segmentation_id = segmentation_from_mask(series_id, model_id, label_mask)

    out = tmp_path / "nerve-seg.dcm"
    assert main(["export", "seg", str(segmentation_id), "-o", str(out), "--send"]) == 0
    (stored,) = list(pacs_folder.iterdir())
    assert pydicom.dcmread(stored).SOPInstanceUID == pydicom.dcmread(out).SOPInstanceUID

    labels = get_settings().labels_dir
    shutil.rmtree(labels)
    labels.mkdir()
    shutil.copy(out, labels / "from-viewer.dcm")
    (seg_label_id,) = pipeline.import_labels()
    with session_scope(default_engine()) as session:
        imported = session.get(ManualLabel, seg_label_id)
        assert imported is not None and imported.format is LabelFormat.DICOM_SEG
        seg_mask = imported.mask_path
    original, back = read_volume(label_mask), read_volume(seg_mask)
    np.testing.assert_array_equal(back.data, original.data)
    np.testing.assert_array_equal(back.affine, original.affine)
    with session_scope(default_engine()) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ManualLabel)) == 2
