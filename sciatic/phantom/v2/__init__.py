"""Phantom v2: realistic synthetic thigh studies (localizer, T1 coronal, PD axial with its ground truth).

Opt-in beside v1 (``sciatic phantom --version 2``); see docs/phantom.md.
"""

from sciatic.phantom.v2.generate import PhantomV2Options, generate_v2
from sciatic.phantom.v2.manifest import ManifestV2, SeriesRecord, SideRecord, SubjectRecordV2
from sciatic.phantom.v2.plan import FieldOfView, Side

__all__ = [
    "FieldOfView",
    "ManifestV2",
    "PhantomV2Options",
    "SeriesRecord",
    "Side",
    "SideRecord",
    "SubjectRecordV2",
    "generate_v2",
]
