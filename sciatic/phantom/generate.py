"""Generate synthetic proton-density thigh studies as DICOM series, with NIfTI ground truth."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sciatic.db.enums import Cohort
from sciatic.imaging.volume import Volume, write_volume
from sciatic.phantom.acquisition import acquire, draw_acquisition
from sciatic.phantom.anatomy import draw_anatomy
from sciatic.phantom.cohort import HardCase, SubjectPlan, draw_nerve_csa, plan_subjects
from sciatic.phantom.dicom_writer import SeriesIdentity, write_series
from sciatic.phantom.geometry import PatientPosition, SeriesGeometry
from sciatic.phantom.manifest import Manifest, SubjectRecord
from sciatic.phantom.render import render
from sciatic.phantom.uids import derive_uid

# Matrices (rows, columns) drawn when PhantomOptions.matrix is None.
MATRICES: tuple[tuple[int, int], ...] = ((256, 256), (320, 320), (224, 256), (256, 224), (288, 288))
SLICE_RANGE = (36, 44)
SLICE_SPACINGS_MM = (3.0, 3.5, 4.0, 4.5, 5.0)
POSITIONS = (PatientPosition.HFS, PatientPosition.FFS, PatientPosition.HFP, PatientPosition.FFP)
POSITION_WEIGHTS = (0.4, 0.4, 0.1, 0.1)
FIRST_STUDY_DATE = dt.date(2024, 1, 8)


@dataclass(frozen=True)
class PhantomOptions:
    """Knobs of :func:`generate`; ``None`` means "draw at random per subject"."""

    matrix: tuple[int, int] | None = (256, 256)  # (rows, columns)
    slices: int | None = 40
    patient_fraction: float = 0.5
    hard_fraction: float = 0.2
    hard_kinds: tuple[HardCase, ...] = tuple(HardCase)

    def __post_init__(self) -> None:
        if self.matrix is not None and min(self.matrix) < 64:
            raise ValueError(f"matrix must be at least 64x64, got {self.matrix}")
        if self.slices is not None and self.slices < 2:
            raise ValueError(f"slices must be >= 2, got {self.slices}")


def generate(
    out_dir: Path | str,
    subjects: int,
    seed: int,
    labels_dir: Path | str | None = None,
    options: PhantomOptions | None = None,
) -> Manifest:
    """Write ``subjects`` synthetic studies under ``out_dir`` and return their manifest.

    Each subject gets one series in ``out_dir/<PatientID>/IM00001.dcm ...`` and, when
    ``labels_dir`` is given, its nerve mask as ``labels_dir/<SeriesInstanceUID>.nii.gz``.
    ``out_dir/manifest.json`` records the truth about every subject. The same
    arguments always produce the same bytes.
    """
    options = options or PhantomOptions()
    out = Path(out_dir)
    labels = Path(labels_dir) if labels_dir is not None else None
    out.mkdir(parents=True, exist_ok=True)
    if labels is not None:
        labels.mkdir(parents=True, exist_ok=True)
    plans = plan_subjects(subjects, seed, options.patient_fraction, options.hard_fraction, options.hard_kinds)
    records = [generate_subject(plan, seed, out, labels, options) for plan in plans]
    options_record = asdict(options)
    options_record["hard_kinds"] = [kind.value for kind in options.hard_kinds]
    options_record["matrix"] = list(options.matrix) if options.matrix else None
    manifest = Manifest(seed=seed, options=options_record, subjects=records)
    manifest.write(out)
    return manifest


def draw_geometry(rng: np.random.Generator, options: PhantomOptions, right_thigh: bool) -> SeriesGeometry:
    """Draw matrix, spacing, patient position, obliquity and table position of one series."""
    rows, columns = options.matrix or MATRICES[int(rng.integers(len(MATRICES)))]
    slices = options.slices or int(rng.integers(SLICE_RANGE[0], SLICE_RANGE[1] + 1))
    spacing = round(float(rng.uniform(0.6, min(0.8, 230.0 / max(rows, columns)))), 4)
    position = POSITIONS[int(rng.choice(len(POSITIONS), p=POSITION_WEIGHTS))]
    side = -1.0 if right_thigh else 1.0  # LPS x grows toward patient left
    obliquity = np.clip(rng.normal(0.0, 3.0, 3), -8.0, 8.0)
    return SeriesGeometry(
        rows=rows,
        columns=columns,
        slices=slices,
        row_spacing=spacing,
        column_spacing=spacing,
        slice_spacing=float(rng.choice(SLICE_SPACINGS_MM)),
        position=position,
        obliquity_deg=(float(obliquity[0]), float(obliquity[1]), float(obliquity[2])),
        centre=(side * float(rng.uniform(75, 105)), float(rng.uniform(-10, 40)), float(rng.uniform(-420, -250))),
        ascending=bool(rng.uniform() < 0.5),
    )


def generate_subject(
    plan: SubjectPlan, seed: int, out: Path, labels: Path | None, options: PhantomOptions
) -> SubjectRecord:
    """Draw, render, acquire and write one subject; return its manifest record."""
    rng = np.random.default_rng([seed, plan.index, 1])
    right_thigh = bool(rng.uniform() < 0.7)
    geometry = draw_geometry(rng, options, right_thigh)
    csa = draw_nerve_csa(rng, plan.cohort)
    anatomy = draw_anatomy(rng, geometry, plan.cohort, plan.hard_cases, csa, right_thigh)
    acquisition = draw_acquisition(rng, geometry, plan.hard_cases)
    signal, mask = render(anatomy, geometry)
    pixels = acquire(rng, signal, geometry, acquisition, anatomy.levels["muscle"])
    identity = _identity(rng, seed, plan, geometry, right_thigh)
    write_series(out / identity.patient_id, identity, geometry, acquisition, pixels)

    label_file = None
    if labels is not None:
        label_file = f"{identity.series_uid}.nii.gz"
        write_label(labels / label_file, mask, geometry)
    areas = mask.sum(axis=(1, 2)) * geometry.row_spacing * geometry.column_spacing
    in_view = areas[areas > 0]
    return SubjectRecord(
        patient_id=identity.patient_id,
        cohort=plan.cohort.value,
        hard_cases=[kind.value for kind in plan.hard_cases],
        study_instance_uid=identity.study_uid,
        series_instance_uid=identity.series_uid,
        frame_of_reference_uid=identity.frame_of_reference_uid,
        dicom_dir=identity.patient_id,
        label_file=label_file,
        rows=geometry.rows,
        columns=geometry.columns,
        slices=geometry.slices,
        pixel_spacing_mm=[geometry.row_spacing, geometry.column_spacing],
        slice_spacing_mm=geometry.slice_spacing,
        patient_position=geometry.position.value,
        laterality=identity.laterality,
        phase_encoding=acquisition.phase_encoding.value,
        snr=round(acquisition.snr, 2),
        nerve_csa_mm2=round(float(np.median(anatomy.nerve.area())), 2),
        mask_csa_mm2=round(float(np.median(in_view)), 2) if in_view.size else 0.0,
        nerve_slices_in_view=int(in_view.size),
        affine=np.round(geometry.affine(), 6).tolist(),
    )


def label_volume(mask: NDArray[np.bool_], geometry: SeriesGeometry) -> NDArray[np.uint8]:
    """Reorder a (slices, rows, columns) acquisition-order mask to the converted (X, Y, Z) array."""
    ordered = mask[geometry.sorted_order()]
    return np.ascontiguousarray(ordered.transpose(2, 1, 0)).astype(np.uint8)


def write_label(path: Path, mask: NDArray[np.bool_], geometry: SeriesGeometry) -> None:
    """Write the nerve mask as uint8 NIfTI with the converted volume's affine (reproducible bytes)."""
    write_volume(Volume(label_volume(mask, geometry), geometry.affine()), path)


def _identity(
    rng: np.random.Generator, seed: int, plan: SubjectPlan, geometry: SeriesGeometry, right_thigh: bool
) -> SeriesIdentity:
    number = f"{plan.index + 1:04d}"
    study_date = FIRST_STUDY_DATE + dt.timedelta(days=int(rng.integers(0, 365)))
    age = int(rng.integers(18, 71))
    birth = study_date - dt.timedelta(days=int(age * 365.25 + rng.integers(1, 360)))
    seconds = int(rng.integers(7 * 3600, 19 * 3600))
    digest = hashlib.sha256(f"{seed}/{plan.index}".encode()).hexdigest()
    return SeriesIdentity(
        patient_id=f"PH{seed}-{number}",
        patient_name=f"PHANTOM^S{seed}^{number}",
        birth_date=birth.strftime("%Y%m%d"),
        sex="F" if rng.uniform() < 0.5 else "M",
        age=f"{age:03d}Y",
        weight_kg=round(float(rng.uniform(50, 105)), 1),
        comments=f"cohort={plan.cohort.value}",
        study_uid=derive_uid(seed, plan.index, "study"),
        series_uid=derive_uid(seed, plan.index, "series"),
        frame_of_reference_uid=derive_uid(seed, plan.index, "frame"),
        sop_uids=tuple(derive_uid(seed, plan.index, "instance", k) for k in range(geometry.slices)),
        study_date=study_date.strftime("%Y%m%d"),
        study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        accession_number=f"A{int(digest[:12], 16) % 10**12:012d}",
        laterality="R" if right_thigh else "L",
    )


__all__ = ["Cohort", "HardCase", "PhantomOptions", "draw_geometry", "generate", "generate_subject"]
