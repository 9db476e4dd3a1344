"""Overlay pictures and the HTML report, on databases filled by the pipeline from phantom studies.

The report is opened in headless Chromium (Debian package ``chromium``), as a
reader would open it: no server, no network.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from numpy.typing import NDArray
from PIL import Image

from sciatic import pipeline
from sciatic.config import get_settings
from sciatic.db.enums import QcStatus
from sciatic.db.models import ManualLabel, Segmentation
from sciatic.db.session import default_engine, make_engine, session_scope
from sciatic.evaluation.cases import STATUS_ORDER
from sciatic.evaluation.overlay import OverlayLayout, zoom_box
from sciatic.imaging.picture import LABEL_COLOUR, montage_picture
from sciatic.imaging.volume import read_volume
from sciatic.phantom.manifest import Manifest
from sciatic.steps.report import collect_cases, overlay_png, write_html_report
from tests.pipeline_helpers import configure, drop_phantoms, register_tiny_model, segmentation_from_mask

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class Filled:
    """A database filled by the pipeline: two phantom series, only the first with a manual label."""

    url: str
    manifest: Manifest
    tiny: tuple[int, int]  # segmentations by the untrained model (meaningless masks)
    truth_labelled: int  # mask = the manual label of series 1
    truth_unlabelled: int  # mask = the phantom's ground truth of series 2 (no manual label)
    truth_model: int


def _segmentation_from_mask(series_id: int, model_id: int, mask_path: str) -> int:
    segmentation_id = segmentation_from_mask(series_id, model_id, mask_path)
    pipeline.measure(segmentation_id)
    pipeline.quality_control(segmentation_id)
    return segmentation_id


def _fill(source: Path) -> Filled:
    """Run the pipeline steps on the configured database; label only the first phantom."""
    manifest = drop_phantoms(source, subjects=2)
    unlabelled_uid = manifest.subjects[1].series_instance_uid
    (get_settings().dir("labels") / f"{unlabelled_uid}.nii.gz").unlink()
    assert len(pipeline.ingest().converted) == 2
    register_tiny_model()
    truth_model = register_tiny_model(seed=1, promote=False)
    tiny = []
    for series_id in pipeline.pending_series():
        segmentation_id = pipeline.segment(series_id)
        pipeline.measure(segmentation_id)
        pipeline.quality_control(segmentation_id)
        tiny.append(segmentation_id)
    (label_id,) = pipeline.import_labels()
    for segmentation_id in pipeline.segmentations_needing_label_qc():
        pipeline.quality_control(segmentation_id)
    with session_scope(default_engine()) as session:
        label = session.get(ManualLabel, label_id)
        assert label is not None
        labelled_series, label_mask = label.series_id, label.mask_path
        segs = session.scalars(sa.select(Segmentation.series_id).where(Segmentation.id.in_(tiny)))
        (unlabelled_series,) = set(segs) - {labelled_series}
    truth_labelled = _segmentation_from_mask(labelled_series, truth_model, label_mask)
    truth_unlabelled = _segmentation_from_mask(
        unlabelled_series, truth_model, str(source / "labels" / f"{unlabelled_uid}.nii.gz")
    )
    return Filled(
        get_settings().effective_database_url,
        manifest,
        (tiny[0], tiny[1]),
        truth_labelled,
        truth_unlabelled,
        truth_model,
    )


@pytest.fixture(scope="module")
def phantom_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("phantoms")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, phantom_source: Path) -> Iterator[Filled]:
    """One SQLite database for the module (file paths in it are absolute, so it outlives the env)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("SCIATIC_") and name != "SCIATIC_TEST_DATABASE_URL":
                mp.delenv(name)
        mp.setenv("SCIATIC_DATA_DIR", str(tmp_path_factory.mktemp("filled") / "sciatic-data"))
        configure(mp)
        try:
            yield _fill(phantom_source)
        finally:
            get_settings.cache_clear()


def _pixels(png: Path) -> NDArray[np.int16]:
    return np.asarray(Image.open(png).convert("RGB"), np.int16)


def _blue(rgb: NDArray[np.int16]) -> int:
    return int(np.count_nonzero((rgb[..., 2] - rgb[..., 0] > 60) & (rgb[..., 2] - rgb[..., 1] > 30)))


def _red(rgb: NDArray[np.int16]) -> int:
    return int(np.count_nonzero((rgb[..., 0] - rgb[..., 1] > 60) & (rgb[..., 0] - rgb[..., 2] > 60)))


def _chromium(*args: str, profile: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install the Debian package with `apt-get install -y chromium` "
            "(or `make system-deps`); the report test needs a real browser",
            pytrace=False,
        )
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)


# --------------------------------------------------------------------------- pictures without a database


def test_montage_picture_outlines_the_label_in_red_over_the_blue_prediction() -> None:
    volume = np.full((64, 64, 5), 100, np.int16)
    roi = np.zeros(volume.shape, np.uint8)
    roi[20:30, 20:30, 2] = 1
    rgb = montage_picture(volume, roi, roi)
    # slice 2 is the third tile; content (64 x 64) is centred in its 256 x 256 tile
    oy = ox = (256 - 64) // 2
    edge, inside = rgb[oy + 20, 2 * 256 + ox + 25], rgb[oy + 25, 2 * 256 + ox + 25]
    assert tuple(edge) == pytest.approx(LABEL_COLOUR)  # outline: opaque red
    assert inside[2] > inside[0]  # interior: blue fill
    assert np.array_equal(montage_picture(volume, roi)[oy + 20], montage_picture(volume, roi, None)[oy + 20])
    with pytest.raises(ValueError):
        montage_picture(volume, None, roi[:, :, :4])


def test_zoom_box_is_a_square_around_the_roi_inside_the_image() -> None:
    roi = np.zeros((100, 80), bool)
    roi[10:20, 70:75] = True
    rows, cols = zoom_box([roi], roi.shape)
    assert rows.stop - rows.start == cols.stop - cols.start == 10 + 2 * 12
    assert cols.start >= 0 and cols.stop == 80 and rows.start <= 10 and rows.stop >= 20
    assert zoom_box([np.zeros((50, 40), bool)], (50, 40)) == (slice(0, 50), slice(0, 40))


# --------------------------------------------------------------------------- overlays from the database


def test_overlay_shows_the_prediction_in_blue_and_the_manual_label_in_red(filled: Filled, tmp_path: Path) -> None:
    engine = make_engine(filled.url)
    out = overlay_png(engine, filled.truth_labelled, tmp_path / "qc" / "overlay.png")
    assert out.exists()
    with session_scope(engine) as session:
        segmentation = session.get(Segmentation, filled.truth_labelled)
        assert segmentation is not None
        shape = read_volume(segmentation.mask_path).shape
    layout = OverlayLayout(shape)
    rgb = _pixels(out)
    assert (rgb.shape[1], rgb.shape[0]) == layout.size == (1280, layout.title_px + 8 * 256 + 426 + layout.caption_px)
    montage = rgb[layout.title_px : layout.title_px + layout.montage_px]
    zoom = rgb[layout.title_px + layout.montage_px :]
    assert _blue(montage) > 100 and _red(montage) > 100  # filled prediction, outlined label
    assert _blue(zoom) > 100 and _red(zoom) > 100  # the seed's red and blue zoom panels

    flat = _pixels(overlay_png(engine, filled.truth_labelled, tmp_path / "flat.png", zoom=False, width=640))
    assert (flat.shape[1], flat.shape[0]) == OverlayLayout(shape, 640, zoom=False).size


def test_overlay_without_a_manual_label_has_no_red(filled: Filled, tmp_path: Path) -> None:
    rgb = _pixels(overlay_png(make_engine(filled.url), filled.truth_unlabelled, tmp_path / "o.png", width=640))
    assert _blue(rgb) > 100 and _red(rgb) == 0


def test_overlay_of_an_unknown_segmentation_is_refused(filled: Filled, tmp_path: Path) -> None:
    from sciatic.errors import SciaticError

    with pytest.raises(SciaticError, match="no segmentation"):
        overlay_png(make_engine(filled.url), 10_000, tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()


# --------------------------------------------------------------------------- the report


def test_cases_are_selected_by_date_and_model_and_sorted_worst_first(filled: Filled) -> None:
    engine = make_engine(filled.url)
    cases = collect_cases(engine)
    assert len(cases) == 4
    ranks = [STATUS_ORDER[c.info.qc_status] for c in cases]
    assert ranks == sorted(ranks)
    truth = {c.info.segmentation_id: c for c in cases if c.info.model_id == filled.truth_model}
    assert set(truth) == {filled.truth_labelled, filled.truth_unlabelled}
    assert truth[filled.truth_labelled].info.qc_status is QcStatus.PASS
    assert truth[filled.truth_labelled].info.dice == (1.0,) and truth[filled.truth_unlabelled].info.dice == ()
    assert len(truth[filled.truth_labelled].csa_by_slice) == 40
    days = {c.info.created_at.date() for c in cases}
    assert len(days) == 1  # stored in UTC
    (day,) = days
    assert len(collect_cases(engine, since=day, until=day)) == 4  # until includes its whole day
    assert collect_cases(engine, since=day + dt.timedelta(days=1)) == []
    assert collect_cases(engine, until=str(day - dt.timedelta(days=1))) == []
    assert len(collect_cases(engine, model_id=filled.truth_model)) == 2


def test_an_empty_selection_still_gives_a_page(filled: Filled, tmp_path: Path) -> None:
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    html = write_html_report(make_engine(filled.url), tmp_path / "r.html", since=tomorrow).read_text("utf-8")
    assert "No segmentation in this selection." in html and f"from {tomorrow}" in html
    assert 'id="cohort-summary"' in html and "data:image" not in html


def test_report_renders_in_headless_chromium(filled: Filled, tmp_path: Path) -> None:
    engine = make_engine(filled.url)
    out = write_html_report(engine, tmp_path / "out" / "report.html")
    html = out.read_text("utf-8")
    assert "http://" not in html and "https://" not in html  # nothing loaded from elsewhere
    assert html.count('src="data:image/png;base64,') == 1 + 2 * 4  # cohort plot, CSA plot + overlay per case
    for subject in filled.manifest.subjects:
        assert subject.patient_id not in html

    dom = _chromium("--dump-dom", out.as_uri(), profile=tmp_path / "profile").stdout
    cases = collect_cases(engine)
    for case in cases:
        assert case.info.pseudonym in dom
        assert f'id="case-{case.info.segmentation_id}"' in dom
    assert 'id="cohort-summary"' in dom and "Cohort summary" in dom
    assert "control" in dom and "patient" in dom
    table = dom[dom.index('id="cases"') : dom.index('id="cohort-summary"')]
    shown = re.findall(r'<tr>\s*<td><span class="status status-(\w+)"', table)
    assert shown == [c.status for c in cases] and shown[-1] == "pass"  # fail and review first

    shot = tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1280,1600", out.as_uri(), profile=tmp_path / "profile")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1280)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # not blank


@pytest.mark.db
def test_report_on_postgres_lists_a_case_with_missing_files(
    pg_database: str, monkeypatch: pytest.MonkeyPatch, phantom_source: Path, tmp_path: Path
) -> None:
    configure(monkeypatch, pg_database)
    filled = _fill(phantom_source)
    engine = make_engine(pg_database)
    with session_scope(engine) as session:
        broken = session.get(Segmentation, filled.tiny[0])
        assert broken is not None
        Path(broken.mask_path).rename(tmp_path / "moved.nii.gz")
    html = write_html_report(engine, tmp_path / "report.html", progress=True).read_text("utf-8")
    assert "overlay unavailable" in html
    assert html.count('alt="overlay"') == 3
    assert all(c.info.pseudonym in html for c in collect_cases(engine))
    png = overlay_png(engine, filled.truth_labelled, tmp_path / "o.png")
    rgb = _pixels(png)
    assert _blue(rgb) > 100 and _red(rgb) > 100
