"""Read queries that more than one step (or the command line) asks: one home for each.

Each function takes an open session and returns plain values or ORM rows;
none of them writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from sciatic.db.enums import OutboxStatus, QcStatus, SeriesStatus, Side
from sciatic.db.models import (
    DicomInstance,
    ManualLabel,
    ModelVersion,
    NerveMetric,
    Outbox,
    QcResult,
    Segmentation,
    Series,
    SliceMetric,
    Study,
    Subject,
)
from sciatic.errors import SciaticError
from sciatic.evaluation.cases import STATUS_ORDER, Case, CaseInfo, NotSegmented

__all__ = [
    "LabelledSeries",
    "case_infos",
    "cases",
    "current_series",
    "ineligible_series",
    "labelled_series",
    "not_segmented",
    "outbox_counts",
    "pending_series",
    "qc_summary",
    "segmentation_finished",
    "source_files",
]


# --------------------------------------------------------------------------- series


def current_series(session: Session, series_instance_uid: str) -> Series | None:
    """The newest converted version of a series, or None."""
    return session.scalars(
        select(Series)
        .where(Series.series_instance_uid == series_instance_uid, Series.status == SeriesStatus.CONVERTED)
        .order_by(Series.version.desc())
    ).first()


def pending_series(
    session: Session, model_id: int, include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> list[int]:
    """Converted, current, eligible series that model ``model_id`` has not segmented yet.

    ``include`` and ``exclude`` are the site's SeriesInstanceUID lists: they win over the
    verdict stored at conversion (so a change of the lists takes effect without converting again).
    """
    done = select(Segmentation.series_id).where(Segmentation.model_version_id == model_id)
    eligible = or_(Series.eligible.is_not(False), Series.series_instance_uid.in_(list(include)))
    return list(
        session.scalars(
            select(Series.id)
            .where(
                Series.status == SeriesStatus.CONVERTED,
                Series.id.not_in(done),
                eligible,
                Series.series_instance_uid.not_in(list(exclude)),
            )
            .order_by(Series.id)
        )
    )


def not_segmented(session: Session, where: tuple[Any, ...] = ()) -> list[NotSegmented]:
    """Converted, current series kept from segmentation by the eligibility rules (matching ``where``)."""
    rows = session.execute(
        select(Series, Study, Subject)
        .join(Study, Study.id == Series.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(Series.status == SeriesStatus.CONVERTED, Series.eligible.is_(False), *where)
        .order_by(Series.id)
    ).all()
    return [
        NotSegmented(
            series_id=series.id,
            pseudonym=subject.pseudonym,
            study_date=study.study_date,
            series_number=series.series_number,
            series_description=series.description,
            reason=series.eligibility_reason.value if series.eligibility_reason else "",
            detail=series.eligibility_detail or "",
        )
        for series, study, subject in rows
    ]


def segmentation_finished(session: Session, segmentation_id: int) -> bool:
    """True when a segmentation has its nerve metrics and its label-free QC row."""
    measured = session.scalars(select(NerveMetric.id).where(NerveMetric.segmentation_id == segmentation_id)).first()
    checked = session.scalars(
        select(QcResult.id).where(QcResult.segmentation_id == segmentation_id, QcResult.manual_label_id.is_(None))
    ).first()
    return measured is not None and checked is not None


def ineligible_series(session: Session, series_ids: Iterable[int] | None = None) -> list[Series]:
    """Converted, current series the eligibility rules keep from segmentation (all, or of ``series_ids``)."""
    query = select(Series).where(Series.status == SeriesStatus.CONVERTED, Series.eligible.is_(False))
    if series_ids is not None:
        query = query.where(Series.id.in_(list(series_ids)))
    return list(session.scalars(query.order_by(Series.id)))


def source_files(session: Session, series_id: int) -> list[Path]:
    """The archived DICOM files of a series (the instances its volume was made from)."""
    series = session.get(Series, series_id)
    if series is None:
        raise SciaticError(f"no series with id {series_id}")
    paths = session.scalars(
        select(DicomInstance.archive_path).where(DicomInstance.series_instance_uid == series.series_instance_uid)
    ).all()
    return [Path(p) for p in paths if p]


@dataclass(frozen=True)
class LabelledSeries:
    """A current series with a manual label (its first one, by id)."""

    series_id: int
    subject_id: int
    cohort: str
    volume_path: str
    label_path: str


def labelled_series(session: Session) -> dict[int, LabelledSeries]:
    """Current labelled series by id, with the first label of each."""
    rows = session.execute(
        select(Series.id, Subject.id, Subject.cohort, Series.volume_path, ManualLabel.mask_path)
        .join(Study, Study.id == Series.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .join(ManualLabel, ManualLabel.series_id == Series.id)
        .where(Series.status == SeriesStatus.CONVERTED)
        .order_by(Series.id, ManualLabel.id)
    ).all()
    out: dict[int, LabelledSeries] = {}
    for series_id, subject_id, cohort, volume, label in rows:
        out.setdefault(series_id, LabelledSeries(series_id, subject_id, str(cohort), str(volume), str(label)))
    return out


# --------------------------------------------------------------------------- cases


def qc_summary(rows: list[QcResult]) -> tuple[QcStatus | None, tuple[tuple[str, str], ...], tuple[float, ...]]:
    """Worst status over the QC rows of a segmentation, their flags (deduplicated) and Dice values."""
    if not rows:
        return None, (), ()
    status = min((r.status for r in rows), key=lambda s: STATUS_ORDER[s])
    flags: dict[str, str] = {}
    for row in rows:
        for item in row.flags:
            if isinstance(item, dict):
                flags.setdefault(str(item.get("flag", "")), str(item.get("detail", "")))
            else:
                flags.setdefault(str(item), "")
    dice = tuple(float(r.dice) for r in sorted(rows, key=lambda r: r.id) if r.dice is not None)
    return status, tuple(flags.items()), dice


def case_infos(
    session: Session, segmentation_ids: Iterable[int] | None = None, where: tuple[Any, ...] = ()
) -> list[CaseInfo]:
    """:class:`CaseInfo` of the given segmentations (or those matching ``where``), in id order."""
    query = (
        select(Segmentation, Series, Study, Subject, ModelVersion)
        .join(Series, Series.id == Segmentation.series_id)
        .join(Study, Study.id == Series.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .join(ModelVersion, ModelVersion.id == Segmentation.model_version_id)
        .where(*where)
        .order_by(Segmentation.id)
    )
    if segmentation_ids is not None:
        query = query.where(Segmentation.id.in_(list(segmentation_ids)))
    rows = session.execute(query).all()
    seg_ids = [r[0].id for r in rows]
    series_ids = {r[1].id for r in rows}
    qc_rows: dict[int, list[QcResult]] = {}
    for qc in session.scalars(select(QcResult).where(QcResult.segmentation_id.in_(seg_ids))):
        qc_rows.setdefault(qc.segmentation_id, []).append(qc)
    labels: dict[int, ManualLabel] = {}
    for manual in session.scalars(
        select(ManualLabel).where(ManualLabel.series_id.in_(series_ids)).order_by(ManualLabel.id)
    ):
        labels.setdefault(manual.series_id, manual)
    out = []
    for segmentation, series, study, subject, model in rows:
        status, flags, dice = qc_summary(qc_rows.get(segmentation.id, []))
        label = labels.get(series.id)
        out.append(
            CaseInfo(
                segmentation_id=segmentation.id,
                series_id=series.id,
                series_uid=series.series_instance_uid,
                series_number=series.series_number,
                series_description=series.description,
                pseudonym=subject.pseudonym,
                cohort=subject.cohort,
                study_date=study.study_date,
                model_id=model.id,
                model_name=model.name,
                created_at=segmentation.created_at,
                qc_status=status,
                flags=flags,
                dice=dice,
                mask_path=segmentation.mask_path,
                volume_path=series.volume_path,
                label_path=label.mask_path if label else None,
                label_rater=label.rater if label else None,
                affine=series.affine,
                n_slices=series.n_slices,
            )
        )
    return out


def cases(session: Session, segmentation_ids: Iterable[int] | None = None, where: tuple[Any, ...] = ()) -> list[Case]:
    """:class:`Case` (facts, nerve metrics, CSA by slice) of the given segmentations, worst QC first."""
    infos = case_infos(session, segmentation_ids, where)
    ids = [i.segmentation_id for i in infos]
    nerve = {
        m.segmentation_id: m
        for m in session.scalars(
            select(NerveMetric).where(NerveMetric.segmentation_id.in_(ids), NerveMetric.side == Side.ALL)
        )
    }
    slices: dict[int, list[tuple[int, float]]] = {}
    for row in session.execute(
        select(SliceMetric.segmentation_id, SliceMetric.slice_index, SliceMetric.csa_mm2)
        .where(SliceMetric.segmentation_id.in_(ids), SliceMetric.side == Side.ALL)
        .order_by(SliceMetric.segmentation_id, SliceMetric.slice_index)
    ):
        slices.setdefault(row[0], []).append((row[1], row[2]))
    out = []
    for info in infos:
        m = nerve.get(info.segmentation_id)
        out.append(
            Case(
                info=info,
                volume_mm3=m.volume_mm3 if m else None,
                csa_mean_mm2=m.csa_mean_mm2 if m else None,
                csa_median_mm2=m.csa_median_mm2 if m else None,
                csa_max_mm2=m.csa_max_mm2 if m else None,
                csa_by_slice=tuple(slices.get(info.segmentation_id, [])),
            )
        )
    return sorted(out, key=lambda c: c.sort_key)


# --------------------------------------------------------------------------- outbox


def outbox_counts(session: Session) -> dict[OutboxStatus, int]:
    """Rows of the PACS outbox by status (every status present, zero when none)."""
    counts = dict.fromkeys(OutboxStatus, 0)
    for status, count in session.execute(select(Outbox.status, func.count()).group_by(Outbox.status)):
        counts[OutboxStatus(status)] = int(count)
    return counts
