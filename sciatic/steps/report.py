"""The report step: overlay pictures and the HTML report of stored segmentations.

Reads the cases from the database (``sciatic.db.queries``) and hands them to
the renderers of ``sciatic.evaluation`` (pictures and the page); writes files
atomically. Database access is read-only.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Engine

from sciatic.db import queries
from sciatic.db.models import Segmentation, Series
from sciatic.db.session import session_scope
from sciatic.errors import SciaticError
from sciatic.evaluation.cases import Case
from sciatic.evaluation.overlay import MONTAGE_WIDTH, load_case, overlay_png_bytes
from sciatic.evaluation.report import render_report
from sciatic.storage import atomic_write

__all__ = ["collect_cases", "overlay_png", "write_html_report"]

log = logging.getLogger(__name__)

DateLike = dt.date | dt.datetime | str


def overlay_png(
    engine: Engine,
    segmentation_id: int,
    out_png: Path | str,
    zoom: bool = True,
    *,
    width: int = MONTAGE_WIDTH,
    compact: bool = False,
) -> Path:
    """Write the overlay picture of one segmentation to ``out_png`` (atomically) and return its path.

    ``width`` is the picture width in pixels; at the default (1280) each montage
    pixel is one PNG pixel. ``compact`` writes a 256-colour PNG (about a fifth of
    the size, grey levels slightly posterised). Raises ``SciaticError`` for an unknown segmentation
    and ``InputRefusedError(GEOMETRY_MISMATCH)`` when a mask is on another grid.
    """
    with session_scope(engine) as session:
        infos = queries.case_infos(session, [segmentation_id])
    if not infos:
        raise SciaticError(f"no segmentation with id {segmentation_id}")
    (info,) = infos
    data = overlay_png_bytes(info, load_case(info), zoom, width, compact)
    out = Path(out_png)

    def write(fp: BinaryIO) -> None:
        fp.write(data)

    atomic_write(out, write)
    return out


def _bound(value: DateLike | None, end: bool) -> dt.datetime | None:
    """UTC instant of a bound; a date (no time) covers its whole day, so ``until`` is inclusive."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value) if "T" in value or " " in value else dt.date.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    day = value + dt.timedelta(days=1) if end else value
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def collect_cases(
    engine: Engine,
    since: DateLike | None = None,
    until: DateLike | None = None,
    model_id: int | None = None,
) -> list[Case]:
    """Cases whose segmentation was created in [since, until] (by ``model_id``), worst QC first."""
    where: list[Any] = []
    start, stop = _bound(since, end=False), _bound(until, end=True)
    if start is not None:
        where.append(Segmentation.created_at >= start)
    if stop is not None:
        where.append(Segmentation.created_at < stop)
    if model_id is not None:
        where.append(Segmentation.model_version_id == model_id)
    with session_scope(engine) as session:
        return queries.cases(session, where=tuple(where))


def _selection_text(since: DateLike | None, until: DateLike | None, model_id: int | None) -> str:
    text = "all segmentations"
    if since or until:
        text = "segmentations created" + (f" from {since}" if since else "") + (f" until {until}" if until else "")
    return text + (f", model id {model_id}" if model_id is not None else "")


def write_html_report(
    engine: Engine,
    out_html: Path | str,
    since: DateLike | None = None,
    until: DateLike | None = None,
    model_id: int | None = None,
    *,
    progress: bool | None = None,
) -> Path:
    """Write the self-contained HTML report of the segmentations created in [since, until].

    ``since`` and ``until`` are dates (``until`` includes its whole day) or
    datetimes (UTC when naive), or ISO strings of either; ``model_id`` keeps one
    model's segmentations. A case whose image files cannot be read is listed
    with the reason instead of its pictures. ``progress`` shows a progress bar
    (default: from ``PROGRESS_MIN_CASES`` cases on, on a terminal).
    """
    cases = collect_cases(engine, since, until, model_id)
    where: list[Any] = []
    start, stop = _bound(since, end=False), _bound(until, end=True)
    if start is not None:
        where.append(Series.converted_at >= start)
    if stop is not None:
        where.append(Series.converted_at < stop)
    with session_scope(engine) as session:
        skipped = queries.not_segmented(session, tuple(where))
    selection = _selection_text(since, until, model_id)
    html = render_report(cases, selection, progress=progress, not_segmented=skipped).encode("utf-8")
    out = Path(out_html)

    def write(fp: BinaryIO) -> None:
        fp.write(html)

    atomic_write(out, write)
    log.info("report of %d case(s) written to %s", len(cases), out)
    return out
