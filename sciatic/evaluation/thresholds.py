"""QC thresholds and the seed's failure definition: the one home of their defaults.

Deliberately free of numpy so that ``sciatic.config`` can take its defaults
from here without importing the numeric libraries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["FAILURE_DICE", "QcThresholds"]

#: Seed's failure definition: Dice below this against a manual label.
FAILURE_DICE = 0.05


@dataclass(frozen=True, slots=True)
class QcThresholds:
    """Thresholds of the label-free flags. Defaults and why:

    csa_min_mm2 = 10.0
        A quarter of the control median mid-thigh sciatic CSA (about 43 mm²):
        a nerve slice smaller than that (a disc under 3.6 mm across) is a
        fragment or partial-volume speck, not a sciatic cross-section.
    csa_max_mm2 = 400.0
        About three times the CMT1A median (about 136 mm²; nerves count as
        enlarged above about 64 mm²), so that hypertrophic nerves pass and a
        ROI leaking into muscle or vessels does not.
    max_components_per_slice = 2
        Per thigh. The sciatic nerve is one cross-section per slice in the
        thigh, and two below its bifurcation, where the tibial and common
        peroneal nerves part; a third 8-connected island in one thigh's slice
        is a false positive. (3D components are not counted separately:
        islands outside the nerve's slices show up as a gap or a centroid
        jump instead.)
    max_centroid_jump_mm = 10.0
        The nerve runs nearly along the slice normal, so its centroid moves by
        a few mm per slice at most; a jump larger than the diameter of a large
        nerve (136 mm² is about 13 mm across, 43 mm² about 7.4 mm) means the
        ROI moved to another structure. Measured in the slice plane, between
        adjacent slices that both contain nerve.
    max_gap_slices = 0
        The nerve is continuous, so every slice between the first and the
        last nerve slice should contain nerve.
    min_volume_mm3 = 200.0
        A control-size nerve (43 mm²) over less than about 5 mm, i.e. a
        fleck; any real segmentation of a thigh slab is far larger.
    max_volume_mm3 = 80_000.0
        csa_max_mm2 over 200 mm (for instance 40 slices of 5 mm): beyond it
        the ROI cannot be a nerve in a thigh slab.
    failure_dice = 0.05
        The seed's failure definition, used when a manual label exists.
    min_nerve_slice_fraction = 0.5
        The sciatic nerve runs the whole length of a thigh series: a nerve
        found on fewer than half of the slices is a fragment or a wrong object.
    max_nerve_anterior_mm = 0.0
        The sciatic nerve lies in the posterior compartment, behind the femur:
        its centroid lies posterior to the centre of its thigh's
        cross-section. A nerve further forward is in an implausible place.
    max_uncertainty = 0.2
        The network's own doubt (``sciatic.model.infer.uncertainty``): on
        held-out phantom v1 studies it stayed below 0.16 and ranked with Dice
        (Spearman -0.91); on held-out v2 studies it runs 0.05 to 0.16 and
        ranks with Dice at -0.75; corrupted images and forced brain series
        score 0.2 to 1 (benchmarks/uncertainty.py, quality.py, qc.py;
        docs/benchmarks.md).
    min_image_snr = 4.0
        The image's own signal-to-noise ratio (``sciatic.imaging.noise``):
        held-out phantom v2 studies estimate at 7.5 (fat-sat) to 29, real
        scanner series at 32 to 99, the phantoms buried in noise of the
        series' own SD at 2.0 to 2.4 (benchmarks/qc.py). An image below 4 is
        too noisy to measure a nerve in, however plausible its mask looks.
    """

    csa_min_mm2: float = 10.0
    csa_max_mm2: float = 400.0
    max_components_per_slice: int = 2
    max_centroid_jump_mm: float = 10.0
    max_gap_slices: int = 0
    min_volume_mm3: float = 200.0
    max_volume_mm3: float = 80_000.0
    failure_dice: float = FAILURE_DICE
    min_nerve_slice_fraction: float = 0.5
    max_nerve_anterior_mm: float = 0.0
    max_uncertainty: float = 0.2
    min_image_snr: float = 4.0

    def __post_init__(self) -> None:
        if not 0 <= self.csa_min_mm2 < self.csa_max_mm2:
            raise ValueError("need 0 <= csa_min_mm2 < csa_max_mm2")
        if not 0 <= self.min_volume_mm3 < self.max_volume_mm3:
            raise ValueError("need 0 <= min_volume_mm3 < max_volume_mm3")
        if self.max_components_per_slice < 1 or self.max_gap_slices < 0:
            raise ValueError("max_components_per_slice >= 1 and max_gap_slices >= 0 required")
        if self.max_centroid_jump_mm <= 0:
            raise ValueError("max_centroid_jump_mm must be positive")

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}
