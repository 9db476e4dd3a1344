"""The ``manifest.json`` of a v2 phantom: the truth about every subject and series."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sciatic.phantom.manifest import MANIFEST_NAME

MANIFEST_VERSION = 2


@dataclass(frozen=True)
class SeriesRecord:
    """One series of a study."""

    kind: str  # localizer, t1_coronal or pd_axial
    series_instance_uid: str
    series_number: int
    description: str
    dicom_dir: str  # relative to the output directory
    images: int


@dataclass(frozen=True)
class SideRecord:
    """One thigh's nerve in the PD axial series."""

    side: str  # R or L: the patient's side
    designed_csa_mm2: float  # trunk area drawn for this nerve (mid-thigh)
    true_csa_mm2: float  # mean over the slices of the nerve's partial-volume area in the image plane
    mask_csa_mm2: float  # mean area of the truth mask over the slices where it is not empty
    nerve_slices_in_view: int
    split_z_mm: float  # patient z (superior, LPS = RAS) where the divisions part
    bifurcation_z_mm: float | None  # split_z_mm when the slab shows the split, else null
    perineural_fat_gap: bool  # a sector of the nerve's outline without fat
    centroid_ras_mm: list[float]  # mean RAS position of the truth mask


@dataclass(frozen=True)
class SubjectRecordV2:
    """Truth about one subject: who, which series, how the PD axial series was acquired."""

    patient_id: str
    cohort: str
    study_instance_uid: str
    frame_of_reference_uid: str
    dicom_dir: str  # the subject's folder, relative to the output directory
    series: list[SeriesRecord]
    series_instance_uid: str  # the PD axial series (the one with a label)
    label_file: str | None
    rows: int
    columns: int
    slices: int
    pixel_spacing_mm: list[float]  # [between rows, between columns], as PixelSpacing
    slice_spacing_mm: float
    slice_thickness_mm: float
    acquisition: str  # 2D or 3D
    fat_sat: bool
    repetition_time_ms: float
    echo_time_ms: float
    patient_position: str
    phase_encoding: str
    snr: float
    field_of_view: str  # unilateral or bilateral
    laterality: str  # R or L (unilateral), B (bilateral; no Laterality attribute in the files)
    bifurcation: bool  # at least one nerve splits inside the slab
    fatty_infiltration_grade: int  # 0 none, 1 mild, 2 moderate, 3 severe
    sides: list[SideRecord]
    affine: list[list[float]]  # RAS+ affine of the converted PD volume (docs/conventions.md)


@dataclass(frozen=True)
class ManifestV2:
    """All subjects of one ``generate_v2`` call."""

    seed: int
    options: dict[str, Any]
    subjects: list[SubjectRecordV2]
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> ManifestV2:
        """Load a manifest from a file or from the directory that holds ``manifest.json``."""
        if path.is_dir():
            path = path / MANIFEST_NAME
        data = json.loads(path.read_text(encoding="utf-8"))
        subjects = []
        for record in data.pop("subjects"):
            record["series"] = [SeriesRecord(**s) for s in record["series"]]
            record["sides"] = [SideRecord(**s) for s in record["sides"]]
            subjects.append(SubjectRecordV2(**record))
        return cls(subjects=subjects, **data)
