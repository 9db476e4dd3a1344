"""Generate v2 thigh studies: a localizer, a T1 coronal and a PD axial series with its ground truth."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sciatic.db.enums import Cohort
from sciatic.imaging.volume import Volume, write_volume
from sciatic.phantom.geometry import PatientPosition
from sciatic.phantom.uids import derive_uid
from sciatic.phantom.v2.body import draw_body, draw_frame, place_slab, split_levels
from sciatic.phantom.v2.contrast import Levels, draw_levels
from sciatic.phantom.v2.manifest import ManifestV2, SeriesRecord, SubjectRecordV2
from sciatic.phantom.v2.paint import Body
from sciatic.phantom.v2.plan import FieldOfView, SubjectPlanV2, plan_subjects_v2
from sciatic.phantom.v2.planes import Stack
from sciatic.phantom.v2.render import Rendered, Sampling, render_stack
from sciatic.phantom.v2.scanner import (
    Coil,
    Protocol,
    Storage,
    acquire,
    draw_coil,
    draw_storage,
    localizer_protocol,
    pd_protocol,
    t1_protocol,
)
from sciatic.phantom.v2.sites import DEFAULT_SITE, SiteProfile, site_profile
from sciatic.phantom.v2.stacks import localizer_stacks, pd_stack, slab, t1_stack
from sciatic.phantom.v2.truth import label_volume, side_records
from sciatic.phantom.v2.writer import Image, StudyIdentity, write_series

FIRST_STUDY_DATE = dt.date(2024, 1, 8)
PD_SAMPLING = {False: Sampling(2, 3), True: Sampling(2, 2)}  # 2D (3-5 mm slices), 3D (about 1 mm)


@dataclass(frozen=True)
class PhantomV2Options:
    """Knobs of :func:`generate_v2`; fractions give exact counts, shuffled by the seed."""

    slices: int | None = None  # PD slices; None draws 28-40 (2D) or 56-72 (3D)
    patient_fraction: float = 0.5
    bilateral_fraction: float = 0.5
    bifurcation_fraction: float = 0.5
    fat_sat_fraction: float = 0.25
    three_d_fraction: float = 0.25
    other_series: bool = True  # also write the localizer and the T1 coronal series
    site: str = DEFAULT_SITE.name  # the PD axial protocol (sciatic.phantom.v2.sites): default or site_b

    def __post_init__(self) -> None:
        if self.slices is not None and self.slices < 6:
            raise ValueError(f"slices must be >= 6, got {self.slices}")
        site_profile(self.site)  # refuses an unknown site

    @property
    def site_profile(self) -> SiteProfile:
        return site_profile(self.site)

    def as_record(self) -> dict[str, object]:
        """The options for the manifest; the default site is left out, so default manifests stay as they were."""
        record = asdict(self)
        if self.site == DEFAULT_SITE.name:
            del record["site"]
        return record


def generate_v2(
    out_dir: Path | str,
    subjects: int,
    seed: int,
    labels_dir: Path | str | None = None,
    options: PhantomV2Options | None = None,
) -> ManifestV2:
    """Write ``subjects`` v2 studies under ``out_dir`` and return their manifest (same arguments, same bytes)."""
    options = options or PhantomV2Options()
    out = Path(out_dir)
    labels = Path(labels_dir) if labels_dir is not None else None
    out.mkdir(parents=True, exist_ok=True)
    if labels is not None:
        labels.mkdir(parents=True, exist_ok=True)
    plans = plan_subjects_v2(
        subjects,
        seed,
        patient_fraction=options.patient_fraction,
        bilateral_fraction=options.bilateral_fraction,
        bifurcation_fraction=options.bifurcation_fraction,
        fat_sat_fraction=options.fat_sat_fraction,
        three_d_fraction=options.three_d_fraction,
    )
    records = [generate_subject_v2(plan, seed, out, labels, options) for plan in plans]
    manifest = ManifestV2(seed=seed, options=options.as_record(), subjects=records)
    manifest.write(out)
    return manifest


def _coil(
    rng: np.random.Generator, body: Body, z: float, rings: tuple[float, ...], site: SiteProfile = DEFAULT_SITE
) -> Coil:
    row = body.grid.rows(z, z).start
    centres = [(float(leg.axis_x.value[row]), float(leg.axis_y.value[row])) for leg in body.legs]
    radius = max(float(leg.radius_lateral.value[row]) for leg in body.legs)
    return draw_coil(rng, centres, radius, tuple(z + dz for dz in rings), site.coil)


def _acquire(
    rng: np.random.Generator, rendered: Rendered, sensitivity: NDArray[np.float32], levels: Levels, protocol: Protocol
) -> tuple[NDArray[np.uint16], Storage]:
    body = rendered.signal > 0.2
    mean = float(sensitivity[body].mean()) if body.any() else 1.0
    storage = draw_storage(rng)
    return acquire(rng, rendered.signal, sensitivity, levels.muscle * mean / protocol.snr, storage), storage


def content_key(plan: SubjectPlanV2, options: PhantomV2Options) -> str:
    """What a subject's images follow from besides the seed: its plan and the slice count.

    It goes into every UID, so that one UID never names two different
    images: the same seed with another subject count or other fractions
    draws other subjects, and they get other UIDs. Another site images the
    same plan differently, so its name joins the key (the default site's key
    is what it always was).
    """
    content = (plan, options.slices) if options.site == DEFAULT_SITE.name else (plan, options.slices, options.site)
    return hashlib.sha256(repr(content).encode()).hexdigest()[:16]


def _identity(
    rng: np.random.Generator, seed: int, key: str, plan: SubjectPlanV2, position: PatientPosition
) -> StudyIdentity:
    number = f"{plan.index + 1:04d}"
    study_date = FIRST_STUDY_DATE + dt.timedelta(days=int(rng.integers(0, 365)))
    age = int(rng.integers(18, 71))
    birth = study_date - dt.timedelta(days=int(age * 365.25 + rng.integers(1, 360)))
    digest = hashlib.sha256(f"v2/{seed}/{plan.index}".encode()).hexdigest()
    unilateral = plan.field_of_view is FieldOfView.UNILATERAL
    return StudyIdentity(
        patient_id=f"PH2-{seed}-{number}",
        patient_name=f"PHANTOM2^S{seed}^{number}",
        birth_date=birth.strftime("%Y%m%d"),
        sex="F" if rng.uniform() < 0.5 else "M",
        age=f"{age:03d}Y",
        weight_kg=round(float(rng.uniform(50, 105)), 1),
        comments=f"cohort={plan.cohort.value}",
        study_uid=derive_uid(seed, "v2", key, plan.index, "study"),
        frame_of_reference_uid=derive_uid(seed, "v2", key, plan.index, "frame"),
        study_date=study_date.strftime("%Y%m%d"),
        study_seconds=int(rng.integers(7 * 3600, 18 * 3600)),
        accession_number=f"B{int(digest[:12], 16) % 10**12:012d}",
        position=position,
        laterality=plan.sides[0].value if unilateral else "",
    )


def _series_dir(patient_id: str, protocol: Protocol) -> str:
    return f"{patient_id}/{protocol.series_number:02d}_{protocol.kind.value}"


def _other_series(
    rng: np.random.Generator,
    seed: int,
    key: str,
    plan: SubjectPlanV2,
    body: Body,
    study: StudyIdentity,
    pd: Stack,
    out: Path,
) -> list[SeriesRecord]:
    """The localizer and the T1 coronal series (no ground truth)."""
    patient = plan.cohort is Cohort.PATIENT
    records = []
    t1 = t1_protocol(rng)
    coronal = t1_stack(rng, body, study.position, pd)
    levels = draw_levels(rng, t1.contrast, patient)
    rendered = render_stack(rng, body, levels, coronal, Sampling(1, 1))
    coil = _coil(rng, body, float(coronal.centre[2]), (-120.0, 0.0, 120.0))
    pixels, storage = _acquire(rng, rendered, coil.sensitivity(coronal), levels, t1)
    images = [Image(coronal, k, pixels[k]) for k in range(coronal.slices)]
    records.append(_write(seed, key, plan, study, t1, storage, images, out))

    localizer = localizer_protocol(rng)
    levels = draw_levels(rng, localizer.contrast, patient)
    stacks = localizer_stacks(rng, body, study.position, pd)
    parts = [render_stack(rng, body, levels, stack, Sampling(1, 1)) for stack in stacks]
    signal = np.concatenate([part.signal for part in parts])
    joined = Rendered(signal, {})
    pixels, storage = _acquire(rng, joined, np.ones_like(signal), levels, localizer)  # body coil: uniform
    images = [Image(stack, k, pixels[3 * n + k]) for n, stack in enumerate(stacks) for k in range(stack.slices)]
    records.append(_write(seed, key, plan, study, localizer, storage, images, out))
    return records[::-1]


def _write(
    seed: int,
    key: str,
    plan: SubjectPlanV2,
    study: StudyIdentity,
    protocol: Protocol,
    storage: Storage,
    images: list[Image],
    out: Path,
) -> SeriesRecord:
    kind = protocol.kind.value
    series_uid = derive_uid(seed, "v2", key, plan.index, kind, "series")
    sop_uids = [derive_uid(seed, "v2", key, plan.index, kind, "instance", n) for n in range(len(images))]
    directory = _series_dir(study.patient_id, protocol)
    write_series(out / directory, study, series_uid, sop_uids, protocol, storage, images)
    return SeriesRecord(kind, series_uid, protocol.series_number, protocol.description, directory, len(images))


@dataclass(frozen=True)
class PdDraw:
    """Everything drawn for a subject before its PD series is painted; ``rng`` continues from there."""

    rng: np.random.Generator
    body: Body
    designed_csa_mm2: dict[str, float]
    position: PatientPosition
    stack: Stack
    protocol: Protocol
    levels: Levels


def draw_pd(plan: SubjectPlanV2, seed: int, options: PhantomV2Options) -> PdDraw:
    """The subject's body and its PD axial series' geometry, protocol and tissue signals (at ``options.site``)."""
    site = options.site_profile
    rng = np.random.default_rng([seed, plan.index, 2])
    frame = draw_frame(rng)
    slices, spacing, thickness = slab(rng, plan, options.slices, site)
    extent = (slices - 1) * spacing
    z_centre = place_slab(rng, plan, frame, extent)
    splits = split_levels(rng, plan, frame, (z_centre - extent / 2, z_centre + extent / 2))
    body, designed = draw_body(rng, plan, frame, splits)
    position = PatientPosition.HFS if rng.uniform() < 0.5 else PatientPosition.FFS
    stack, phase = pd_stack(rng, plan, body, position, (z_centre, slices, spacing, thickness), site)
    protocol = pd_protocol(rng, plan.fat_sat, plan.three_d, phase, site)
    levels = draw_levels(rng, protocol.contrast, plan.cohort is Cohort.PATIENT, site.levels.get(protocol.contrast))
    return PdDraw(rng, body, designed, position, stack, protocol, levels)


def render_pd(draw: PdDraw) -> Rendered:
    """The PD series without noise or coil shading (consumes ``draw.rng`` as the generator does)."""
    return render_stack(
        draw.rng, draw.body, draw.levels, draw.stack, PD_SAMPLING[draw.protocol.acquisition_type == "3D"]
    )


def generate_subject_v2(
    plan: SubjectPlanV2, seed: int, out: Path, labels: Path | None, options: PhantomV2Options
) -> SubjectRecordV2:
    """Draw, render, acquire and write one subject's study; return its manifest record."""
    draw = draw_pd(plan, seed, options)
    rng, body, stack, protocol = draw.rng, draw.body, draw.stack, draw.protocol
    rendered = render_pd(draw)
    coil = _coil(rng, body, stack.centre[2], (-45.0, 45.0), options.site_profile)
    pixels, storage = _acquire(rng, rendered, coil.sensitivity(stack), draw.levels, protocol)
    key = content_key(plan, options)
    study = _identity(rng, seed, key, plan, draw.position)
    series = _other_series(rng, seed, key, plan, body, study, stack, out) if options.other_series else []
    images = [Image(stack, k, pixels[k]) for k in range(stack.slices)]
    pd_record = _write(seed, key, plan, study, protocol, storage, images, out)
    sides, truth = side_records(body, stack, rendered, draw.designed_csa_mm2)
    label_file = None
    if labels is not None:
        label_file = f"{pd_record.series_instance_uid}.nii.gz"
        write_volume(Volume(label_volume(truth, stack), stack.affine()), labels / label_file)
    return SubjectRecordV2(
        patient_id=study.patient_id,
        cohort=plan.cohort.value,
        study_instance_uid=study.study_uid,
        frame_of_reference_uid=study.frame_of_reference_uid,
        dicom_dir=study.patient_id,
        series=[*series, pd_record],
        series_instance_uid=pd_record.series_instance_uid,
        label_file=label_file,
        rows=stack.rows,
        columns=stack.columns,
        slices=stack.slices,
        pixel_spacing_mm=[stack.row_spacing, stack.column_spacing],
        slice_spacing_mm=stack.slice_spacing,
        slice_thickness_mm=stack.thickness,
        acquisition=protocol.acquisition_type,
        fat_sat=plan.fat_sat,
        repetition_time_ms=protocol.repetition_time_ms,
        echo_time_ms=protocol.echo_time_ms,
        patient_position=draw.position.value,
        phase_encoding=protocol.phase_encoding.value,
        snr=round(protocol.snr, 2),
        field_of_view=plan.field_of_view.value,
        laterality=study.laterality or "B",
        bifurcation=any(side.bifurcation_z_mm is not None for side in sides),
        fatty_infiltration_grade=plan.infiltration_grade,
        sides=sides,
        affine=np.round(stack.affine(), 6).tolist(),
    )
