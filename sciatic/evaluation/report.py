"""Pictures and a self-contained HTML report of stored segmentations.

:func:`overlay_png` writes the overlay picture of one segmentation (see
``sciatic.evaluation.overlay``). :func:`write_report` writes one HTML page for
the segmentations created in a date range (and/or by one model): a table of
cases, worst QC status first; a cohort summary of nerve CSA; and per case a
CSA-along-the-nerve plot and a small overlay. The page needs no server and
loads nothing from elsewhere: CSS is inline and pictures are base64 PNG data
URIs. Subjects appear by pseudonym only. Database access is read-only.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import jinja2
import numpy as np
from matplotlib.figure import Figure
from sqlalchemy import Engine, select
from tqdm import tqdm

from sciatic import __version__
from sciatic.db.enums import Cohort, QcStatus
from sciatic.db.models import NerveMetric, Segmentation, SliceMetric
from sciatic.db.session import session_scope
from sciatic.errors import SciaticError
from sciatic.evaluation.metrics import slice_spacing_mm
from sciatic.evaluation.overlay import (
    STATUS_ORDER,
    CaseImages,
    CaseInfo,
    case_infos,
    load_case,
    overlay_png,
    overlay_png_bytes,
)
from sciatic.imaging.picture import LABEL_COLOUR, MASK_COLOUR
from sciatic.storage import atomic_write

__all__ = ["Case", "CohortRow", "collect_cases", "overlay_png", "render_report", "write_report"]

log = logging.getLogger(__name__)

REPORT_OVERLAY_WIDTH = 480  # px of each embedded overlay
PROGRESS_MIN_CASES = 10  # show a progress bar from this many cases on (on a terminal)
COHORT_ORDER = (Cohort.CONTROL, Cohort.PATIENT, Cohort.UNKNOWN)
STATUS_COLOURS = {"fail": "#c62828", "review": "#ef6c00", "pass": "#2e7d32", "none": "#757575"}

DateLike = dt.date | dt.datetime | str


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Case:
    """One row of the report: a segmentation, its metrics and its pictures (data URIs)."""

    info: CaseInfo
    volume_mm3: float | None
    csa_mean_mm2: float | None
    csa_median_mm2: float | None
    csa_max_mm2: float | None
    csa_by_slice: tuple[tuple[int, float], ...]  # (slice index, CSA mm²) from slice_metric rows
    csa_plot: str | None = None
    overlay: str | None = None
    problem: str | None = None  # why a picture is missing

    @property
    def status(self) -> str:
        return self.info.qc_status.value if self.info.qc_status else "none"

    @property
    def sort_key(self) -> tuple[int, dt.date, str, int]:
        return (
            STATUS_ORDER[self.info.qc_status],
            self.info.study_date or dt.date.min,
            self.info.pseudonym,
            self.info.segmentation_id,
        )


@dataclass(frozen=True, slots=True)
class CohortRow:
    """Per-case median CSA of one cohort (failed cases excluded)."""

    cohort: str
    values: tuple[float, ...]
    excluded: int

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


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
    infos = case_infos(engine, where=tuple(where))
    ids = [i.segmentation_id for i in infos]
    with session_scope(engine) as session:
        nerve = {
            m.segmentation_id: m
            for m in session.scalars(select(NerveMetric).where(NerveMetric.segmentation_id.in_(ids)))
        }
        slices: dict[int, list[tuple[int, float]]] = {}
        for row in session.execute(
            select(SliceMetric.segmentation_id, SliceMetric.slice_index, SliceMetric.csa_mm2)
            .where(SliceMetric.segmentation_id.in_(ids))
            .order_by(SliceMetric.segmentation_id, SliceMetric.slice_index)
        ):
            slices.setdefault(row[0], []).append((row[1], row[2]))
    cases = []
    for info in infos:
        m = nerve.get(info.segmentation_id)
        cases.append(
            Case(
                info=info,
                volume_mm3=m.volume_mm3 if m else None,
                csa_mean_mm2=m.csa_mean_mm2 if m else None,
                csa_median_mm2=m.csa_median_mm2 if m else None,
                csa_max_mm2=m.csa_max_mm2 if m else None,
                csa_by_slice=tuple(slices.get(info.segmentation_id, [])),
            )
        )
    return sorted(cases, key=lambda c: c.sort_key)


def cohort_rows(cases: list[Case]) -> list[CohortRow]:
    """One value per series (its most recent segmentation in the report), failed cases excluded."""
    latest: dict[int, Case] = {}
    for case in sorted(cases, key=lambda c: (c.info.created_at, c.info.segmentation_id)):
        latest[case.info.series_id] = case
    rows = []
    for cohort in COHORT_ORDER:
        members = [c for c in latest.values() if c.info.cohort is cohort]
        if not members:
            continue
        kept = [c for c in members if c.info.qc_status is not QcStatus.FAIL and c.csa_median_mm2 is not None]
        rows.append(CohortRow(cohort.value, tuple(c.csa_median_mm2 or 0.0 for c in kept), len(members) - len(kept)))
    return rows


# --------------------------------------------------------------------------- pictures


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def csa_plot_png(case: Case, images: CaseImages | None) -> bytes | None:
    """CSA (mm²) against position along the slice normal (mm from slice 0): predicted, and manual if any."""
    affine = images.affine if images is not None else case.info.affine
    if not case.csa_by_slice or affine is None:
        return None
    ds = slice_spacing_mm(affine)
    fig = Figure(figsize=(4.4, 2.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    k = np.array([s for s, _ in case.csa_by_slice])
    ax.plot(k * ds, [a for _, a in case.csa_by_slice], color=MASK_COLOUR, marker=".", lw=1.2, label="predicted")
    if images is not None and images.label is not None:
        label_csa = images.label.sum(axis=(0, 1)) * images.pixel_area_mm2
        ax.plot(np.arange(label_csa.size) * ds, label_csa, color=LABEL_COLOUR, lw=1.2, ls="--", label="manual")
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel("position along the nerve (mm)", fontsize=8)
    ax.set_ylabel("CSA (mm²)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    return _figure_png(fig)


def cohort_plot_png(rows: list[CohortRow]) -> bytes | None:
    """Box plot with the individual cases (jittered strip) of per-case median CSA by cohort."""
    rows = [r for r in rows if r.values]
    if not rows:
        return None
    fig = Figure(figsize=(4.8, 3.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.boxplot([r.values for r in rows], showfliers=False, widths=0.5)
    ax.set_xticks(range(1, len(rows) + 1), [f"{r.cohort}\n(n={r.n})" for r in rows])
    jitter = np.random.default_rng(0)  # fixed: the same data gives the same picture
    for i, r in enumerate(rows, start=1):
        x = i + jitter.uniform(-0.12, 0.12, r.n)
        ax.scatter(x, r.values, s=14, color="#37474f", alpha=0.8, zorder=3)
    ax.set_ylabel("median CSA per case (mm²)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(fig)


def _with_pictures(case: Case) -> Case:
    """``case`` with its CSA plot and small overlay; a case whose files cannot be read keeps a reason."""
    images: CaseImages | None = None
    overlay = problem = None
    try:
        images = load_case(case.info)
        overlay = _data_uri(overlay_png_bytes(case.info, images, True, REPORT_OVERLAY_WIDTH, compact=True))
    except (SciaticError, OSError, ValueError) as exc:
        problem = f"overlay unavailable: {exc}"
        log.warning("segmentation %s: %s", case.info.segmentation_id, problem)
    plot = csa_plot_png(case, images)
    return Case(
        case.info,
        case.volume_mm3,
        case.csa_mean_mm2,
        case.csa_median_mm2,
        case.csa_max_mm2,
        case.csa_by_slice,
        _data_uri(plot) if plot else None,
        overlay,
        problem,
    )


# --------------------------------------------------------------------------- page

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #212121; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
.meta { color: #616161; margin: 0 0 12px; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; position: sticky; top: 0; }
td.nowrap { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { color: #fff; border-radius: 3px; padding: 1px 6px; font-weight: 600; white-space: nowrap; }
{% for name, colour in status_colours.items() %}.status-{{ name }} { background: {{ colour }}; }
{% endfor %}
.flag { display: inline-block; background: #eceff1; border-radius: 3px; padding: 0 4px; margin: 1px; font-size: 12px; }
.case { border-top: 2px solid #e0e0e0; padding-top: 8px; margin-top: 16px; }
.case h3 { font-size: 15px; margin: 0 0 6px; }
.pictures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.pictures img { border: 1px solid #e0e0e0; }
.problem { color: #c62828; }
.summary { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.findings { font-size: 12px; color: #424242; margin: 4px 0; padding-left: 18px; }
footer { margin-top: 32px; color: #757575; font-size: 12px; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">{{ selection }} &middot; generated {{ generated }} by sciatic {{ version }}
&middot; {{ cases|length }} case(s):
{% for name, n in counts %}<span class="status status-{{ name }}">{{ name }} {{ n }}</span> {% endfor %}</p>

<section id="cases">
<h2>Cases</h2>
{% if cases %}
<table>
<thead><tr><th>QC</th><th>pseudonym</th><th>cohort</th><th>study date</th><th>series</th><th>model</th>
<th>flags</th><th>volume (mm³)</th><th>mean CSA (mm²)</th><th>median CSA (mm²)</th><th>max CSA (mm²)</th>
<th>Dice</th></tr></thead>
<tbody>
{% for c in cases %}
<tr>
<td><span class="status status-{{ c.status }}">{{ c.status if c.status != "none" else "not assessed" }}</span></td>
<td class="nowrap"><a href="#case-{{ c.info.segmentation_id }}">{{ c.info.pseudonym }}</a></td>
<td>{{ c.info.cohort.value }}</td>
<td class="nowrap">{{ c.info.study_date or "–" }}</td>
<td>{{ c.info.series_id }}{% if c.info.series_number is not none %} (#{{ c.info.series_number }}){% endif %}
{%- if c.info.series_description %} {{ c.info.series_description }}{% endif %}</td>
<td>{{ c.info.model_name }}</td>
<td>{% for flag, detail in c.info.flags %}<span class="flag" title="{{ detail }}">{{ flag }}</span>{% endfor %}</td>
<td class="num">{{ num(c.volume_mm3, 0) }}</td>
<td class="num">{{ num(c.csa_mean_mm2) }}</td>
<td class="num">{{ num(c.csa_median_mm2) }}</td>
<td class="num">{{ num(c.csa_max_mm2) }}</td>
<td class="num">{% for d in c.info.dice %}{{ num(d, 2) }}{% if not loop.last %}, {% endif %}{% else %}–{% endfor %}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p>No segmentation in this selection.</p>
{% endif %}
</section>

<section id="cohort-summary">
<h2>Cohort summary</h2>
<p class="meta">Median CSA per case; one case per series (its most recent segmentation here);
cases with QC status fail are left out.</p>
<div class="summary">
<table>
<thead><tr><th>cohort</th><th>n</th><th>mean (mm²)</th><th>median (mm²)</th><th>left out (fail)</th></tr></thead>
<tbody>
{% for r in cohorts %}
<tr><td>{{ r.cohort }}</td><td class="num">{{ r.n }}</td><td class="num">{{ num(r.mean) }}</td>
<td class="num">{{ num(r.median) }}</td><td class="num">{{ r.excluded }}</td></tr>
{% else %}
<tr><td colspan="5">no cases</td></tr>
{% endfor %}
</tbody>
</table>
{% if cohort_plot %}<img src="{{ cohort_plot }}" alt="CSA by cohort">{% endif %}
</div>
</section>

<section id="case-details">
<h2>Case details</h2>
{% for c in cases %}
<div class="case" id="case-{{ c.info.segmentation_id }}">
<h3><span class="status status-{{ c.status }}">{{ c.status if c.status != "none" else "not assessed" }}</span>
{{ c.info.title }}</h3>
{% if c.info.flags %}<ul class="findings">
{% for flag, detail in c.info.flags %}<li><b>{{ flag }}</b>{% if detail %}: {{ detail }}{% endif %}</li>{% endfor %}
</ul>{% endif %}
{% if c.problem %}<p class="problem">{{ c.problem }}</p>{% endif %}
<div class="pictures">
{% if c.csa_plot %}<img src="{{ c.csa_plot }}" alt="CSA along the nerve">{% else %}<p>No slice metrics.</p>{% endif %}
{% if c.overlay %}<img src="{{ c.overlay }}" width="{{ overlay_width }}" alt="overlay">{% endif %}
</div>
</div>
{% endfor %}
</section>

<footer>Predicted ROI in blue, manual ROI in red. CSA position is measured along the slice
normal from the first slice. Not for clinical use.</footer>
</body>
</html>
"""


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def render_report(
    cases: list[Case], selection: str, generated: dt.datetime | None = None, progress: bool | None = None
) -> str:
    """The HTML page for ``cases`` (pictures are rendered here); ``selection`` describes the range."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(TEMPLATE)
    show = progress if progress is not None else len(cases) >= PROGRESS_MIN_CASES
    rendered = [
        _with_pictures(c) for c in tqdm(cases, desc="report", unit="case", disable=None if show else True, leave=False)
    ]
    cohorts = cohort_rows(rendered)
    plot = cohort_plot_png(cohorts)
    counts: dict[str, int] = {}
    for c in rendered:
        counts[c.status] = counts.get(c.status, 0) + 1
    return template.render(
        title="sciatic nerve segmentation report",
        selection=selection,
        generated=(generated or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        cases=rendered,
        counts=sorted(counts.items(), key=lambda kv: list(STATUS_COLOURS).index(kv[0])),
        cohorts=cohorts,
        cohort_plot=_data_uri(plot) if plot else None,
        status_colours=STATUS_COLOURS,
        overlay_width=REPORT_OVERLAY_WIDTH,
        num=_num,
    )


def _selection_text(since: DateLike | None, until: DateLike | None, model_id: int | None) -> str:
    text = "all segmentations"
    if since or until:
        text = "segmentations created" + (f" from {since}" if since else "") + (f" until {until}" if until else "")
    return text + (f", model id {model_id}" if model_id is not None else "")


def write_report(
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
    html = render_report(cases, _selection_text(since, until, model_id), progress=progress).encode("utf-8")
    out = Path(out_html)

    def write(fp: BinaryIO) -> None:
        fp.write(html)

    atomic_write(out, write)
    log.info("report of %d case(s) written to %s", len(cases), out)
    return out
