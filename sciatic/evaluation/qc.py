"""Quality control of a segmentation: overlap with a manual label, and label-free flags.

Pure functions on numpy arrays and affines (geometry as in
``docs/conventions.md``). User documentation: ``docs/qc.md``.

Overlap and distances (with a label)
    Dice, HD95, mean symmetric surface distance (ASSD) and volume similarity.
    Surface voxels are mask voxels with at least one 6-neighbour outside the
    mask or outside the array (binary erosion with a cross, border = 0).
    Distances are Euclidean between surface-voxel centres in mm, with the
    affine's column norms as the voxel spacing (exact for the orthogonal
    affines that DICOM geometry gives). HD95 is the larger of the two directed
    95th percentiles (linear interpolation); ASSD is the mean of both directed
    distance sets pooled together.

    These are the definitions of MONAI 1.x ``compute_hausdorff_distance``
    (``percentile=95``) and ``compute_average_surface_distance``
    (``symmetric=True``); the test suite checks agreement. They differ from
    DeepMind's surface-distance package, which weights each surface element by
    its area and computes the percentile over that weighted distribution.

Empty-mask policy (explicit, JSON-safe)
    Both masks empty: Dice 1, volume similarity 1, all distances 0.
    Exactly one empty: Dice 0, volume similarity 0, distances ``math.inf``
    (the distance to an empty set is unbounded); ``to_dict()`` writes
    non-finite numbers as ``null``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from sciatic.db.enums import QcStatus
from sciatic.evaluation.metrics import NerveMetrics
from sciatic.evaluation.thresholds import FAILURE_DICE, QcThresholds
from sciatic.imaging.volume import (
    as_mask,
    check_same_grid,
    read_mask,
    validate_affine,
    voxel_spacing_mm,
    voxel_volume_mm3,
)

__all__ = [
    "FAIL_FLAGS",
    "InterRaterSummary",
    "LegFacts",
    "MaskComparison",
    "QcFinding",
    "QcFlag",
    "QcStatus",
    "QcThresholds",
    "QcVerdict",
    "assess",
    "assess_legs",
    "compare_files",
    "compare_masks",
    "dice",
    "inter_rater_summary",
    "snr_findings",
    "status_of",
    "surface_distances_mm",
    "uncertainty_findings",
    "volume_similarity",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Two grids are the same when no corner of the voxel grid moves more than
#: this fraction of the smallest voxel spacing between the two affines.
GRID_TOLERANCE_VOXELS = 0.01


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- overlap


def dice(pred: ArrayLike, label: ArrayLike) -> float:
    """Dice coefficient ``2|P∩L| / (|P| + |L|)``; both empty: 1, one empty: 0."""
    p, lab = as_mask(pred), as_mask(label)
    if p.shape != lab.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {lab.shape}")
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(lab))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & lab)) / total


def volume_similarity(volume_a: float, volume_b: float) -> float:
    """``1 - |Va - Vb| / (Va + Vb)`` (Taha & Hanbury 2015); both zero: 1."""
    total = volume_a + volume_b
    if total <= 0:
        return 1.0
    return 1.0 - abs(volume_a - volume_b) / total


def _surface(mask: BoolArray) -> BoolArray:
    # Voxels with a face neighbour outside the mask; outside the array counts as outside.
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))
    return np.asarray(mask & ~eroded, dtype=bool)


def surface_distances_mm(
    a: BoolArray, b: BoolArray, spacing: tuple[float, float, float]
) -> tuple[FloatArray, FloatArray]:
    """Directed surface distances in mm: (surface of ``a`` -> surface of ``b``, and back).

    Both masks must be non-empty, 3D, and of the same shape.
    """
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    # Crop to the union's bounding box plus one voxel: same surfaces, smaller transforms.
    idx = np.argwhere(a | b)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = np.minimum(idx.max(axis=0) + 2, a.shape)
    box = tuple(slice(int(s), int(e)) for s, e in zip(lo, hi, strict=True))
    # Cropping keeps at least one background voxel beside each surface, except at
    # the array border, where erosion's border value of 0 gives the same result.
    sa, sb = _surface(a[box]), _surface(b[box])
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return np.asarray(to_b[sa], dtype=np.float64), np.asarray(to_a[sb], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class MaskComparison:
    """Agreement of a segmentation (``pred``) with a manual label on the same grid.

    Distances in mm (``inf`` when exactly one mask is empty; ``to_dict`` gives
    ``null``). ``failed`` is the seed's failure criterion, Dice < 0.05.
    """

    dice: float
    hd95_mm: float
    hausdorff_mm: float
    assd_mm: float
    volume_similarity: float
    pred_voxels: int
    label_voxels: int
    pred_volume_mm3: float
    label_volume_mm3: float
    failed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``json.dumps(..., allow_nan=False)`` works)."""
        return {
            "dice": self.dice,
            "hd95_mm": _json_float(self.hd95_mm),
            "hausdorff_mm": _json_float(self.hausdorff_mm),
            "assd_mm": _json_float(self.assd_mm),
            "volume_similarity": self.volume_similarity,
            "pred_voxels": self.pred_voxels,
            "label_voxels": self.label_voxels,
            "pred_volume_mm3": self.pred_volume_mm3,
            "label_volume_mm3": self.label_volume_mm3,
            "failed": self.failed,
        }


def compare_masks(
    pred: ArrayLike,
    pred_affine: ArrayLike,
    label: ArrayLike,
    label_affine: ArrayLike,
    *,
    failure_dice: float = FAILURE_DICE,
    names: tuple[str, str] = ("prediction", "label"),
) -> MaskComparison:
    """Compare two masks on the same grid (refused with ``GEOMETRY_MISMATCH`` otherwise)."""
    p, lab = as_mask(pred), as_mask(label)
    check_same_grid(p.shape, pred_affine, lab.shape, label_affine, names=names)
    a = validate_affine(pred_affine)
    vox = voxel_volume_mm3(a)
    n_p, n_l = int(np.count_nonzero(p)), int(np.count_nonzero(lab))
    d = dice(p, lab)
    if n_p == 0 and n_l == 0:
        hd95 = hd = assd = 0.0
    elif n_p == 0 or n_l == 0:
        hd95 = hd = assd = math.inf
    else:
        d_pl, d_lp = surface_distances_mm(p, lab, voxel_spacing_mm(a))
        hd95 = max(float(np.percentile(d_pl, 95)), float(np.percentile(d_lp, 95)))
        hd = max(float(d_pl.max()), float(d_lp.max()))
        assd = float(np.concatenate([d_pl, d_lp]).mean())
    return MaskComparison(
        dice=d,
        hd95_mm=hd95,
        hausdorff_mm=hd,
        assd_mm=assd,
        volume_similarity=volume_similarity(n_p * vox, n_l * vox),
        pred_voxels=n_p,
        label_voxels=n_l,
        pred_volume_mm3=n_p * vox,
        label_volume_mm3=n_l * vox,
        failed=d < failure_dice,
    )


def compare_files(
    pred_path: str | Path, label_path: str | Path, *, failure_dice: float = FAILURE_DICE
) -> MaskComparison:
    """Load two NIfTI masks and :func:`compare_masks` them (``sciatic qc compare``)."""
    pred, label = read_mask(pred_path), read_mask(label_path)
    return compare_masks(
        pred.data,
        pred.affine,
        label.data,
        label.affine,
        failure_dice=failure_dice,
        names=(Path(pred_path).name, Path(label_path).name),
    )


# --------------------------------------------------------------------------- inter-rater


@dataclass(frozen=True, slots=True)
class InterRaterSummary:
    """Pairwise Dice between the raters' masks of one series."""

    raters: tuple[str, ...]
    pairwise_dice: tuple[tuple[str, str, float], ...]
    mean_dice: float
    min_dice: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "raters": list(self.raters),
            "pairwise_dice": [{"a": a, "b": b, "dice": d} for a, b, d in self.pairwise_dice],
            "mean_dice": self.mean_dice,
            "min_dice": self.min_dice,
        }


def inter_rater_summary(masks: Mapping[str, tuple[ArrayLike, ArrayLike]]) -> InterRaterSummary:
    """Pairwise and mean Dice of several raters' ``(mask, affine)`` for one series.

    Raters are sorted by name; every mask must be on the first rater's grid.
    """
    if len(masks) < 2:
        raise ValueError("an inter-rater summary needs at least two masks")
    raters = tuple(sorted(masks))
    loaded = {r: (as_mask(masks[r][0]), validate_affine(masks[r][1])) for r in raters}
    ref_mask, ref_affine = loaded[raters[0]]
    for r in raters[1:]:
        m, aff = loaded[r]
        check_same_grid(ref_mask.shape, ref_affine, m.shape, aff, names=(f"rater {raters[0]}", f"rater {r}"))
    pairs = tuple((a, b, dice(loaded[a][0], loaded[b][0])) for a, b in itertools.combinations(raters, 2))
    values = [d for _, _, d in pairs]
    return InterRaterSummary(raters, pairs, float(np.mean(values)), float(min(values)))


# --------------------------------------------------------------------------- label-free QC


class QcFlag(StrEnum):
    """Why a segmentation is not ``pass``."""

    EMPTY_MASK = "empty_mask"
    MULTIPLE_COMPONENTS = "multiple_components"
    CSA_OUT_OF_RANGE = "csa_out_of_range"
    CENTROID_JUMP = "centroid_jump"
    SLICE_GAP = "slice_gap"
    VOLUME_TOO_SMALL = "volume_too_small"
    VOLUME_TOO_LARGE = "volume_too_large"
    NERVE_TOO_SHORT = "nerve_too_short"  # on too few of the slices: a fragment, or another structure
    LEG_WITHOUT_NERVE = "leg_without_nerve"  # a thigh in the field of view without any nerve found in it
    NERVE_NOT_POSTERIOR = "nerve_not_posterior"  # in front of the thigh's centre: not where the sciatic nerve runs
    HIGH_UNCERTAINTY = "high_uncertainty"  # the network itself was unsure
    LOW_SNR = "low_snr"  # the image is too noisy to measure a nerve in
    LABEL_DICE_FAILED = "label_dice_failed"


#: Flags that make the status ``fail``; every other flag makes it ``review``.
FAIL_FLAGS = frozenset({QcFlag.EMPTY_MASK, QcFlag.LABEL_DICE_FAILED})


@dataclass(frozen=True, slots=True)
class QcFinding:
    """One raised flag and a human-readable detail (which slices, which values)."""

    flag: QcFlag
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"flag": self.flag.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class QcVerdict:
    """QC verdict of one segmentation: status and the findings that set it."""

    status: QcStatus
    findings: tuple[QcFinding, ...] = field(default=())

    @property
    def flags(self) -> tuple[QcFlag, ...]:
        return tuple(f.flag for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "flags": [f.value for f in self.flags],
            "findings": [f.to_dict() for f in self.findings],
        }


def _slices_text(ks: list[int], limit: int = 8) -> str:
    head = ", ".join(str(k) for k in ks[:limit])
    return head + (f" and {len(ks) - limit} more" if len(ks) > limit else "")


def assess(
    metrics: NerveMetrics,
    thresholds: QcThresholds | None = None,
    comparison: MaskComparison | None = None,
) -> QcVerdict:
    """Label-free QC flags (plus the Dice failure when a label comparison is given).

    Status: ``fail`` if any flag in :data:`FAIL_FLAGS` is raised (empty mask;
    Dice < ``failure_dice`` against a label), else ``review`` if any flag is
    raised, else ``pass``. An empty mask raises only ``empty_mask``.
    """
    t = thresholds or QcThresholds()
    s = metrics.series
    found: list[QcFinding] = []
    if s.is_empty:
        found.append(QcFinding(QcFlag.EMPTY_MASK, "the mask has no nerve voxel"))
    else:
        found.extend(_label_free(metrics, t))
    if comparison is not None and comparison.dice < t.failure_dice:
        found.append(
            QcFinding(
                QcFlag.LABEL_DICE_FAILED,
                f"Dice {comparison.dice:.3f} < {t.failure_dice} against the manual label",
            )
        )
    if any(f.flag in FAIL_FLAGS for f in found):
        status = QcStatus.FAIL
    elif found:
        status = QcStatus.REVIEW
    else:
        status = QcStatus.PASS
    return QcVerdict(status, tuple(found))


def _label_free(m: NerveMetrics, t: QcThresholds) -> list[QcFinding]:
    s = m.series
    nerve = [x for x in m.slices if x.has_nerve]
    out: list[QcFinding] = []

    multi = [x.slice_index for x in nerve if x.n_components > t.max_components_per_slice]
    if multi:
        most = max(x.n_components for x in nerve)
        out.append(
            QcFinding(
                QcFlag.MULTIPLE_COMPONENTS,
                f"more than {t.max_components_per_slice} component(s) (up to {most}) in slices"
                f" {_slices_text(multi)}; {s.n_components_3d} component(s) in 3D",
            )
        )

    bad = [x for x in nerve if not t.csa_min_mm2 <= x.area_mm2 <= t.csa_max_mm2]
    if bad:
        vals = ", ".join(f"{x.slice_index}: {x.area_mm2:.1f}" for x in bad[:8])
        out.append(
            QcFinding(
                QcFlag.CSA_OUT_OF_RANGE,
                f"CSA outside [{t.csa_min_mm2:g}, {t.csa_max_mm2:g}] mm² in {len(bad)} slice(s)"
                f" (slice: mm² {vals}{' ...' if len(bad) > 8 else ''})",
            )
        )

    normal = np.asarray(m.slice_normal)
    jumps: list[str] = []
    for prev, cur in itertools.pairwise(nerve):
        if cur.slice_index != prev.slice_index + 1 or prev.centroid_ras_mm is None or cur.centroid_ras_mm is None:
            continue
        d = np.subtract(cur.centroid_ras_mm, prev.centroid_ras_mm)
        in_plane = float(np.linalg.norm(d - (d @ normal) * normal))
        if in_plane > t.max_centroid_jump_mm:
            jumps.append(f"{prev.slice_index}->{cur.slice_index}: {in_plane:.1f} mm")
    if jumps:
        out.append(
            QcFinding(
                QcFlag.CENTROID_JUMP,
                f"centroid moves more than {t.max_centroid_jump_mm:g} mm in-plane between"
                f" adjacent slices ({'; '.join(jumps[:8])}{' ...' if len(jumps) > 8 else ''})",
            )
        )

    if s.gap_slices > t.max_gap_slices:
        present = [x.slice_index for x in nerve]
        gaps = sorted(set(range(present[0], present[-1] + 1)) - set(present))
        out.append(
            QcFinding(
                QcFlag.SLICE_GAP,
                f"{len(gaps)} slice(s) without nerve between slices {s.first_slice} and"
                f" {s.last_slice}: {_slices_text(gaps)}",
            )
        )

    if s.volume_mm3 < t.min_volume_mm3:
        out.append(
            QcFinding(
                QcFlag.VOLUME_TOO_SMALL,
                f"volume {s.volume_mm3:.0f} mm³ < {t.min_volume_mm3:g} mm³",
            )
        )
    elif s.volume_mm3 > t.max_volume_mm3:
        out.append(
            QcFinding(
                QcFlag.VOLUME_TOO_LARGE,
                f"volume {s.volume_mm3:.0f} mm³ > {t.max_volume_mm3:g} mm³",
            )
        )

    if s.n_slices and s.n_nerve_slices < t.min_nerve_slice_fraction * s.n_slices:
        out.append(
            QcFinding(
                QcFlag.NERVE_TOO_SHORT,
                f"nerve on {s.n_nerve_slices} of {s.n_slices} slices (< {t.min_nerve_slice_fraction:.0%})",
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class LegFacts:
    """One thigh of the field of view: its nerve's metrics (None: no nerve found) and position."""

    side: str
    metrics: NerveMetrics | None
    anterior_offset_mm: float | None  # nerve centroid minus thigh centre along RAS +y (anterior); None: unknown


def assess_legs(legs: Sequence[LegFacts], thresholds: QcThresholds | None = None) -> QcVerdict:
    """Label-free flags per thigh: a thigh without nerve, a nerve in front, and each nerve's own flags.

    With two thighs in view the whole mask holds two nerves, so the flags that
    assume one nerve (components per slice, centroid jumps) are judged per
    thigh here; :func:`assess` of the whole mask stays right for one thigh.
    """
    t = thresholds or QcThresholds()
    found: list[QcFinding] = []
    for leg in legs:
        if leg.metrics is None or leg.metrics.series.is_empty:
            found.append(QcFinding(QcFlag.LEG_WITHOUT_NERVE, f"the {leg.side} thigh is in view but has no nerve"))
            continue
        if leg.anterior_offset_mm is not None and leg.anterior_offset_mm > t.max_nerve_anterior_mm:
            found.append(
                QcFinding(
                    QcFlag.NERVE_NOT_POSTERIOR,
                    f"the {leg.side} nerve lies {leg.anterior_offset_mm:.0f} mm anterior to its thigh's centre",
                )
            )
        found.extend(QcFinding(f.flag, f"{leg.side}: {f.detail}") for f in _label_free(leg.metrics, t))
    return QcVerdict(status_of(found), tuple(found))


def uncertainty_findings(value: float | None, thresholds: QcThresholds | None = None) -> list[QcFinding]:
    """A finding when the network's uncertainty of the segmentation is above the threshold."""
    t = thresholds or QcThresholds()
    if value is None or value <= t.max_uncertainty:
        return []
    return [QcFinding(QcFlag.HIGH_UNCERTAINTY, f"the network's uncertainty {value:.2f} > {t.max_uncertainty:g}")]


def snr_findings(value: float | None, thresholds: QcThresholds | None = None) -> list[QcFinding]:
    """A finding when the image's estimated signal-to-noise ratio is below the threshold."""
    t = thresholds or QcThresholds()
    if value is None or value >= t.min_image_snr:
        return []
    return [QcFinding(QcFlag.LOW_SNR, f"the image's signal-to-noise ratio {value:.1f} < {t.min_image_snr:g}")]


def status_of(found: Sequence[QcFinding]) -> QcStatus:
    """``fail`` when a finding is in :data:`FAIL_FLAGS`, else ``review`` when there is any, else ``pass``."""
    if any(f.flag in FAIL_FLAGS for f in found):
        return QcStatus.FAIL
    return QcStatus.REVIEW if found else QcStatus.PASS
