"""The self-contained HTML report of a list of cases (rendering only).

:func:`render_report` makes one HTML page for the cases the report step
(``sciatic.steps.report``) selected from the database: a table of
cases, worst QC status first; a cohort summary of nerve CSA; and per case a
CSA-along-the-nerve plot and a small overlay. The page needs no server and
loads nothing from elsewhere: CSS is inline and pictures are base64 PNG data
URIs. Subjects appear by pseudonym only.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import jinja2
import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from sciatic import __version__
from sciatic.db.enums import Cohort, QcStatus
from sciatic.errors import SciaticError
from sciatic.evaluation.cases import Case, NotSegmented
from sciatic.evaluation.overlay import CaseImages, load_case, overlay_png_bytes
from sciatic.imaging.picture import LABEL_COLOUR, MASK_COLOUR
from sciatic.imaging.volume import slice_spacing_mm

__all__ = ["CohortRow", "cohort_rows", "render_report"]

log = logging.getLogger(__name__)

REPORT_OVERLAY_WIDTH = 480  # px of each embedded overlay
PROGRESS_MIN_CASES = 10  # show a progress bar from this many cases on (on a terminal)
COHORT_ORDER = (Cohort.CONTROL, Cohort.PATIENT, Cohort.UNKNOWN)
STATUS_COLOURS = {"fail": "#c62828", "review": "#ef6c00", "pass": "#2e7d32", "none": "#757575"}


# --------------------------------------------------------------------------- data


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

<section id="not-segmented">
<h2>Series not segmented</h2>
<p class="meta">Converted series that are not PD axial thigh series (docs/eligibility.md): kept, never segmented.</p>
<table>
<thead><tr><th>subject</th><th>study date</th><th>series</th><th>reason</th><th>why</th></tr></thead>
<tbody>
{% for s in not_segmented %}
<tr><td>{{ s.pseudonym }}</td><td>{{ s.study_date or "" }}</td>
<td>{{ s.series_number if s.series_number is not none else "" }} {{ s.series_description or "" }}</td>
<td>{{ s.reason }}</td><td>{{ s.detail }}</td></tr>
{% else %}
<tr><td colspan="5">none</td></tr>
{% endfor %}
</tbody>
</table>
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
    cases: list[Case],
    selection: str,
    generated: dt.datetime | None = None,
    progress: bool | None = None,
    not_segmented: Sequence[NotSegmented] = (),
) -> str:
    """The HTML page for ``cases`` (pictures are rendered here); ``selection`` describes the range.

    ``not_segmented`` lists the converted series the eligibility rules kept from segmentation.
    """
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
        not_segmented=not_segmented,
        counts=sorted(counts.items(), key=lambda kv: list(STATUS_COLOURS).index(kv[0])),
        cohorts=cohorts,
        cohort_plot=_data_uri(plot) if plot else None,
        status_colours=STATUS_COLOURS,
        overlay_width=REPORT_OVERLAY_WIDTH,
        num=_num,
    )
