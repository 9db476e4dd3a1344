"""Synthetic proton-density thigh MR studies written as real DICOM, with ground-truth nerve masks."""

from sciatic.db.enums import Cohort
from sciatic.phantom.cohort import HardCase
from sciatic.phantom.generate import PhantomOptions, generate
from sciatic.phantom.manifest import MANIFEST_NAME, Manifest, SubjectRecord
from sciatic.phantom.v2 import ManifestV2, PhantomV2Options, generate_v2

__all__ = [
    "MANIFEST_NAME",
    "Cohort",
    "HardCase",
    "Manifest",
    "ManifestV2",
    "PhantomOptions",
    "PhantomV2Options",
    "SubjectRecord",
    "generate",
    "generate_v2",
]
