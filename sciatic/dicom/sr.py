"""DICOM SR measurement report (TID 1500) of a segmentation's nerve metrics.

``export_sr`` writes a Comprehensive SR with one measurement group (TID 1411,
volumetric ROI) per nerve: volume, mean / median / maximum cross-sectional
area, covered length and mean signal, the QC status (coded) and the QC flags
(text), the model as the algorithm identification. Each group references its
segment of the DICOM SEG written by ``sciatic.dicom.seg.export_seg`` for the
same segmentation, and the source images. ``read_sr`` reads the numbers back.

Pure functions: no database; values, the SEG file and the source files in.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from sciatic import __version__
from sciatic.db.enums import QcStatus
from sciatic.dicom.seg import ANATOMICAL_STRUCTURE, MANUFACTURER, SCIATIC_NERVE, SEGMENT_LABEL, SEGMENTATION_STORAGE
from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.storage import atomic_write

__all__ = ["NerveMeasurements", "SrExport", "SrReport", "export_sr", "read_sr"]

COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
DEFAULT_SERIES_NUMBER = 9902
DEFAULT_DESCRIPTION = "sciatic nerve measurements (research, not for diagnosis)"

# concept names and units (pydicom's code dictionary, the one highdicom uses)
VOLUME, AREA, LENGTH = codes.SCT.Volume, codes.SCT.Area, codes.SCT.Length
SIGNAL = codes.DCM.MRSignalIntensity
MEAN, MEDIAN, MAXIMUM = codes.SCT.Mean, codes.SCT.Median, codes.SCT.Maximum
MM3, MM2, MM, ARBITRARY = (
    codes.UCUM.CubicMillimeter,
    codes.UCUM.SquareMillimeter,
    codes.UCUM.Millimeter,
    codes.UCUM.ArbitraryUnit,
)
QUALITY = codes.DCM.QualityAssessment
# the QC status as the quality codes of CID 6044
QC_CODES = {
    QcStatus.PASS: codes.DCM.UsableMeetsTheQualityControlStandard,
    QcStatus.REVIEW: codes.DCM.UsableDoesNotMeetTheQualityControlStandard,
    QcStatus.FAIL: codes.DCM.UnusableQualityRendersImageUnusable,
}
# free-text qualitative evaluations of TID 1501 / 1411 (a QC flag each)
QUALITATIVE_TEXT = Code("C00034375", "UMLS", "Qualitative Evaluations")
SIDES = {"left": codes.SCT.Left, "right": codes.SCT.Right}


@dataclass(frozen=True, slots=True)
class NerveMeasurements:
    """One measurement group: one nerve (one ``nerve_metric`` row) and the SEG segment that outlines it."""

    volume_mm3: float
    covered_length_mm: float
    csa_mean_mm2: float | None = None  # None: no slice with nerve
    csa_median_mm2: float | None = None
    csa_max_mm2: float | None = None
    signal_mean: float | None = None
    qc_status: QcStatus | None = None  # None: not assessed
    qc_flags: tuple[tuple[str, str], ...] = ()  # (flag, detail)
    segment_number: int = 1
    side: str | None = None  # "left" / "right": the thigh's laterality, when known

    @property
    def label(self) -> str:
        return SEGMENT_LABEL if self.side is None else f"{SEGMENT_LABEL} ({self.side})"


@dataclass(frozen=True, slots=True)
class SrExport:
    """What ``export_sr`` wrote."""

    path: Path
    sha256: str
    sop_instance_uid: str
    series_instance_uid: str
    referenced_seg_uid: str


@dataclass(frozen=True, slots=True)
class SrReport:
    """What ``read_sr`` found in a report."""

    groups: tuple[NerveMeasurements, ...]
    model_name: str | None
    model_version: str | None
    referenced_seg_uids: tuple[str, ...]  # per group
    source_sop_instance_uids: tuple[str, ...]  # of the first group
    study_instance_uid: str
    series_description: str


# --------------------------------------------------------------------------- export


def export_sr(
    groups: Sequence[NerveMeasurements],
    seg_path: str | os.PathLike[str],
    source_files: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    *,
    model_name: str,
    model_version: str,
    sop_instance_uid: str | None = None,
    series_number: int = DEFAULT_SERIES_NUMBER,
    series_description: str = DEFAULT_DESCRIPTION,
) -> SrExport:
    """Write a TID 1500 measurement report of ``groups`` that references the SEG at ``seg_path``.

    ``source_files`` are the series' images (the SEG's source images); the
    report joins their study. Raises ``InputRefusedError(UNUSABLE_SEG)`` when
    ``seg_path`` is not a DICOM SEG with the groups' segments.
    """
    if not groups:
        raise ValueError("a measurement report needs at least one measurement group")
    seg = _seg_header(Path(seg_path), [g.segment_number for g in groups])
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in source_files]
    if not sources:
        raise ValueError("a measurement report needs the source images")
    algorithm = hd.sr.AlgorithmIdentification(
        name=model_name, version=model_version, family=codes.DCM.ArtificialIntelligence
    )
    source_items = [hd.sr.SourceImageForSegmentation(str(s.SOPClassUID), str(s.SOPInstanceUID)) for s in sources]
    measurement_groups = [_group(g, seg, source_items, algorithm) for g in groups]
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[MANUFACTURER, model_name, model_version]),
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=f"{model_name} {model_version}"[:64],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device, observer_identifying_attributes=device
            )
        ),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=measurement_groups,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's notes on optional attributes
        sr = hd.sr.ComprehensiveSR(
            evidence=[*sources, seg],
            content=report[0],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=sop_instance_uid or hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
            is_final=False,
            is_verified=False,
            series_description=series_description[:64],
            manufacturer_model_name=f"{model_name} {model_version}"[:64],
            software_versions=f"sciatic {__version__}",
        )
    target = Path(out_path)

    def write(handle: BinaryIO) -> None:
        sr.save_as(handle, enforce_file_format=True)

    digest = atomic_write(target, write)
    return SrExport(target, digest, str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID), str(seg.SOPInstanceUID))


def _seg_header(path: Path, segment_numbers: Sequence[int]) -> Dataset:
    try:
        seg = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types on a broken file
        raise InputRefusedError(ReasonCode.UNUSABLE_SEG, f"{path.name} is not a readable DICOM file: {exc}") from exc
    if str(seg.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
        raise InputRefusedError(ReasonCode.UNUSABLE_SEG, f"{path.name} is not a DICOM Segmentation")
    numbers = {int(s.SegmentNumber) for s in seg.get("SegmentSequence", [])}
    missing = sorted(set(segment_numbers) - numbers)
    if missing:
        raise InputRefusedError(ReasonCode.UNUSABLE_SEG, f"{path.name} has no segment {missing[0]}")
    return seg


def _group(
    nerve: NerveMeasurements,
    seg: Dataset,
    source_items: list[hd.sr.SourceImageForSegmentation],
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """The TID 1411 group of one nerve."""
    site = hd.sr.FindingSite(anatomic_location=codes.SCT.Thigh, laterality=SIDES[nerve.side] if nerve.side else None)
    values: list[tuple[Code, float | None, Code, Code | None]] = [
        (VOLUME, nerve.volume_mm3, MM3, None),
        (AREA, nerve.csa_mean_mm2, MM2, MEAN),
        (AREA, nerve.csa_median_mm2, MM2, MEDIAN),
        (AREA, nerve.csa_max_mm2, MM2, MAXIMUM),
        (LENGTH, nerve.covered_length_mm, MM, None),
        (SIGNAL, nerve.signal_mean, ARBITRARY, MEAN),
    ]
    measurements = [
        hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation)
        for name, value, unit, derivation in values
        if value is not None  # an empty mask has no CSA and no signal
    ]
    evaluations = (
        [hd.sr.QualitativeEvaluation(QUALITY, QC_CODES[nerve.qc_status])] if nerve.qc_status is not None else []
    )
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=nerve.label),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=SEGMENTATION_STORAGE,
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=nerve.segment_number,
            source_images=source_items,
        ),
        finding_category=ANATOMICAL_STRUCTURE,
        finding_type=SCIATIC_NERVE,
        finding_sites=[site],
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )
    for flag, detail in nerve.qc_flags:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=QUALITATIVE_TEXT,
                value=f"{flag}: {detail}" if detail else flag,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


# --------------------------------------------------------------------------- import


def read_sr(path: str | os.PathLike[str]) -> SrReport:
    """The measurement groups of a report written by ``export_sr`` (or any TID 1500 with volumetric groups)."""
    name = Path(path).name
    try:
        sr = hd.sr.srread(path)
    except Exception as exc:  # pydicom / highdicom raise many types on a file that is no SR
        raise InputRefusedError(ReasonCode.UNREADABLE_FILE, f"{name} is not a readable DICOM SR: {exc}") from exc
    report: Any = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise InputRefusedError(ReasonCode.UNREADABLE_FILE, f"{name} is not a TID 1500 measurement report")
    groups: list[NerveMeasurements] = []
    seg_uids: list[str] = []
    sources: list[str] = []
    model_name = model_version = None
    for group in report.get_volumetric_roi_measurement_groups():
        groups.append(_read_group(group))
        segment = group.referenced_segment
        seg_uids.append(str(segment.referenced_sop_instance_uid) if segment is not None else "")
        if segment is not None and not sources:
            sources = [str(i.referenced_sop_instance_uid) for i in segment.source_images_for_segmentation]
        model_name, model_version = _algorithm(group[0]) if model_name is None else (model_name, model_version)
    return SrReport(
        groups=tuple(groups),
        model_name=model_name,
        model_version=model_version,
        referenced_seg_uids=tuple(seg_uids),
        source_sop_instance_uids=tuple(sources),
        study_instance_uid=str(sr.StudyInstanceUID),
        series_description=str(sr.get("SeriesDescription", "")),
    )


def _read_group(group: Any) -> NerveMeasurements:
    found: dict[tuple[str, str | None], float] = {}
    for measurement in group.get_measurements():
        derivation = measurement.derivation
        found[(measurement.name.value, derivation.value if derivation is not None else None)] = float(measurement.value)
    status = None
    for evaluation in group.get_qualitative_evaluations(name=QUALITY):
        status = next((s for s, code in QC_CODES.items() if evaluation.value == code), None)
    flags = tuple(
        _flag(str(item.TextValue))
        for item in group[0].ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == QUALITATIVE_TEXT.value
    )
    segment = group.referenced_segment
    numbers = segment.referenced_segment_numbers if segment is not None else None
    side = next(
        (
            name
            for site in group.finding_sites
            for name, code in SIDES.items()
            if site.laterality is not None and site.laterality == code
        ),
        None,
    )
    return NerveMeasurements(
        volume_mm3=found.get((VOLUME.value, None), 0.0),
        covered_length_mm=found.get((LENGTH.value, None), 0.0),
        csa_mean_mm2=found.get((AREA.value, MEAN.value)),
        csa_median_mm2=found.get((AREA.value, MEDIAN.value)),
        csa_max_mm2=found.get((AREA.value, MAXIMUM.value)),
        signal_mean=found.get((SIGNAL.value, MEAN.value)),
        qc_status=status,
        qc_flags=flags,
        segment_number=int(numbers[0]) if numbers else 1,
        side=side,
    )


def _flag(text: str) -> tuple[str, str]:
    flag, _, detail = text.partition(": ")
    return flag, detail


def _algorithm(item: Dataset) -> tuple[str | None, str | None]:
    """Algorithm name and version from a measurement group's TID 4019 items."""
    values = {
        str(i.ConceptNameCodeSequence[0].CodeValue): str(i.TextValue)
        for i in item.ContentSequence
        if i.ValueType == "TEXT"
    }
    return values.get("111001"), values.get("111003")
