"""Which converted series are proton-density axial thigh series: the only ones the model segments.

A study holds localizers, T1, T2, Dixon and fat-suppressed series beside the
PD axial one; only that one may be segmented. :func:`assess` applies the
rules below in order and names the first that fails (``docs/eligibility.md``):

1. a SeriesInstanceUID the site listed to exclude is out (``forced_out``); one
   it listed to include is in, whatever the rules say;
2. not a localizer or scout (ImageType, or a series of fewer than 4 slices);
3. magnitude images (ImageType: not phase, real, imaginary, a derived map or
   functional data);
4. enough slices (``min_slices``);
5. axial: the slice normal within ``max_tilt_deg`` of the patient's
   head-foot axis, the leg's long axis;
6. BodyPartExamined, when present, names the thigh or leg;
7. PD-weighted: when RepetitionTime and EchoTime are known, a spin-echo
   sequence (no echo-planar, inversion-recovery or gradient-echo-only
   readout) with TR >= ``pd_min_tr_ms`` and TE <= ``pd_max_te_ms``
   (fat suppression is allowed); without timing, a SeriesDescription that
   matches the site's ``pd_pattern``.

Pure: header facts in, a verdict out. Free of numpy so that the settings can
take their defaults from :class:`EligibilityRules`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sciatic.db.enums import EligibilityReason

__all__ = ["EligibilityRules", "SeriesFacts", "Verdict", "assess"]

LOCALIZER_TYPES = frozenset({"LOCALIZER", "SCOUT"})
NOT_MAGNITUDE_TYPES = frozenset(
    {"P", "PHASE", "R", "REAL", "I", "IMAGINARY", "MAP", "ADC", "FA", "TRACEW", "FMRI", "DIFFUSION", "PERFUSION"}
)
SCOUT_SLICES = 4  # fewer slices than this: a scout, whatever its ImageType says


@dataclass(frozen=True, slots=True)
class EligibilityRules:
    """The site's rules (``SCIATIC_ELIGIBILITY_*``); the defaults fit PD axial thigh protocols."""

    min_slices: int = 10
    max_tilt_deg: float = 30.0
    pd_min_tr_ms: float = 1000.0
    pd_max_te_ms: float = 50.0
    pd_pattern: str = r"\b(pd|proton[ _-]?density)\b"
    body_parts: tuple[str, ...] = ("THIGH", "LEG", "UPPERLEG", "LOWERLIMB", "LOWEREXTREMITY", "EXTREMITY", "FEMUR")
    include_uids: frozenset[str] = frozenset()
    exclude_uids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    """What the rules look at, from the series' headers and its converted volume."""

    series_instance_uid: str
    description: str
    image_types: frozenset[str]  # every value of ImageType over the series' images
    n_slices: int
    slice_normal: tuple[float, float, float]  # unit normal in patient coordinates (RAS or LPS: only z matters)
    repetition_time_ms: float | None
    echo_time_ms: float | None
    scanning_sequence: tuple[str, ...]
    scan_options: tuple[str, ...]
    body_part: str


@dataclass(frozen=True, slots=True)
class Verdict:
    eligible: bool
    reason: EligibilityReason | None
    detail: str


def _out(reason: EligibilityReason, detail: str) -> Verdict:
    return Verdict(False, reason, detail)


def assess(facts: SeriesFacts, rules: EligibilityRules) -> Verdict:
    """The first rule the series fails, or eligible (with what made it so)."""
    uid = facts.series_instance_uid
    if uid in rules.exclude_uids:
        return _out(EligibilityReason.FORCED_OUT, "listed in SCIATIC_ELIGIBILITY_EXCLUDE")
    if uid in rules.include_uids:
        return Verdict(True, None, "listed in SCIATIC_ELIGIBILITY_INCLUDE")
    scout = sorted(facts.image_types & LOCALIZER_TYPES)
    if scout or facts.n_slices < SCOUT_SLICES:
        why = f"ImageType {scout[0]}" if scout else f"only {facts.n_slices} slice(s)"
        return _out(EligibilityReason.LOCALIZER, f"a localizer or scout ({why})")
    derived = sorted(facts.image_types & NOT_MAGNITUDE_TYPES)
    if derived:
        return _out(EligibilityReason.NOT_MAGNITUDE, f"ImageType {'/'.join(derived)}: not magnitude images")
    if facts.n_slices < rules.min_slices:
        return _out(
            EligibilityReason.TOO_FEW_SLICES,
            f"{facts.n_slices} slices, fewer than {rules.min_slices} (SCIATIC_ELIGIBILITY_MIN_SLICES)",
        )
    tilt = _tilt_deg(facts.slice_normal)
    if tilt > rules.max_tilt_deg:
        plane = "sagittal" if abs(facts.slice_normal[0]) > abs(facts.slice_normal[1]) else "coronal"
        return _out(
            EligibilityReason.NOT_AXIAL,
            f"slices {tilt:.0f} degrees off axial (mostly {plane}); at most {rules.max_tilt_deg:g} "
            "(SCIATIC_ELIGIBILITY_MAX_TILT_DEG)",
        )
    body = facts.body_part.replace(" ", "").replace("_", "").upper()
    if body and body not in rules.body_parts:
        return _out(EligibilityReason.BODY_PART, f"BodyPartExamined is {facts.body_part}, not the thigh or leg")
    return _weighting(facts, rules)


def _tilt_deg(normal: Sequence[float]) -> float:
    length = math.sqrt(sum(v * v for v in normal))
    if length == 0:
        return 90.0
    return math.degrees(math.acos(min(1.0, abs(normal[2]) / length)))


def _weighting(facts: SeriesFacts, rules: EligibilityRules) -> Verdict:
    tr, te = facts.repetition_time_ms, facts.echo_time_ms
    if tr is None or te is None:
        if re.search(rules.pd_pattern, facts.description, re.IGNORECASE):
            return Verdict(True, None, f"no TR/TE; the description {facts.description!r} says PD")
        return _out(
            EligibilityReason.NOT_PD,
            f"no TR/TE and the description {facts.description!r} does not match SCIATIC_ELIGIBILITY_PD_PATTERN",
        )
    sequence = set(facts.scanning_sequence)
    if "EP" in sequence:
        return _out(EligibilityReason.NOT_PD, "echo-planar (EPI) readout")
    if "IR" in sequence:
        return _out(EligibilityReason.NOT_PD, "inversion recovery (STIR, FLAIR or T1-IR contrast)")
    if "GR" in sequence and "SE" not in sequence:
        return _out(EligibilityReason.NOT_PD, f"gradient echo (TR {tr:g} ms, TE {te:g} ms): not a PD spin echo")
    if tr < rules.pd_min_tr_ms:
        kind = "T1-weighted" if te <= rules.pd_max_te_ms else "mixed"
        return _out(
            EligibilityReason.NOT_PD,
            f"TR {tr:g} ms < {rules.pd_min_tr_ms:g} (SCIATIC_ELIGIBILITY_PD_MIN_TR_MS): {kind}",
        )
    if te > rules.pd_max_te_ms:
        return _out(
            EligibilityReason.NOT_PD,
            f"TE {te:g} ms > {rules.pd_max_te_ms:g} (SCIATIC_ELIGIBILITY_PD_MAX_TE_MS): T2-weighted",
        )
    fat = " with fat suppression" if {"FS", "FAT_SAT", "FSS", "SFS"} & set(facts.scan_options) else ""
    return Verdict(True, None, f"PD{fat}: TR {tr:g} ms, TE {te:g} ms")
