"""Phantom v2: realistic synthetic thigh studies (localizer, T1 coronal, PD axial with its ground truth).

The default generator (``sciatic phantom``; v1 stays available with ``--version 1``); see docs/phantom.md.
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
