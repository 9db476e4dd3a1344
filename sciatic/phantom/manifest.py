"""The sidecar ``manifest.json`` that describes a generated phantom study set."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SubjectRecord:
    """Truth about one synthetic subject and its single series."""

    patient_id: str
    cohort: str
    hard_cases: list[str]
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    dicom_dir: str  # relative to the output directory
    label_file: str | None  # file name in the labels directory, when labels were written
    rows: int
    columns: int
    slices: int
    pixel_spacing_mm: list[float]  # [between rows, between columns], as PixelSpacing
    slice_spacing_mm: float
    patient_position: str
    laterality: str
    phase_encoding: str
    snr: float
    nerve_csa_mm2: float  # median designed cross-sectional area over the slices
    mask_csa_mm2: float  # median area of the label over slices where it is not empty
    nerve_slices_in_view: int  # slices whose label is not empty
    affine: list[list[float]]  # RAS+ affine of the converted volume (docs/conventions.md)


@dataclass(frozen=True)
class Manifest:
    """All subjects of one ``generate`` call."""

    seed: int
    options: dict[str, Any]
    subjects: list[SubjectRecord]
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Load a manifest from a file or from the directory that holds ``manifest.json``."""
        if path.is_dir():
            path = path / MANIFEST_NAME
        data = json.loads(path.read_text(encoding="utf-8"))
        subjects = [SubjectRecord(**record) for record in data.pop("subjects")]
        return cls(subjects=subjects, **data)
