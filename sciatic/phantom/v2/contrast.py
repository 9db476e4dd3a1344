"""Relative signal of each tissue for the contrasts a v2 study holds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Contrast(StrEnum):
    PD = "pd"  # proton density TSE: fat bright, muscle grey, nerve between
    PD_FS = "pd_fs"  # proton density with fat saturation: fat and marrow dark, nerve bright
    T1 = "t1"  # T1 TSE: fat and marrow bright, muscle dark
    LOCALIZER = "localizer"  # fast gradient echo: flowing blood bright


@dataclass(frozen=True)
class Levels:
    """Tissue signals (subcutaneous fat of a PD image is about 1)."""

    skin: float
    fat: float
    muscle: float
    cortex: float
    marrow: float
    fast_flow: float  # a vessel of ``flow`` 0 (arterial)
    slow_flow: float  # a vessel of ``flow`` 1 (slow venous)
    fascicle: float
    interfascicular: float

    def vessel(self, flow: float) -> float:
        return self.fast_flow + flow * (self.slow_flow - self.fast_flow)


_NOMINAL: dict[Contrast, Levels] = {
    Contrast.PD: Levels(0.6, 1.0, 0.43, 0.05, 0.9, 0.08, 0.55, 0.56, 0.8),
    Contrast.PD_FS: Levels(0.5, 0.1, 0.42, 0.04, 0.14, 0.06, 0.75, 0.72, 0.34),
    Contrast.T1: Levels(0.45, 1.0, 0.3, 0.03, 0.95, 0.04, 0.22, 0.36, 0.72),
    Contrast.LOCALIZER: Levels(0.5, 0.85, 0.45, 0.05, 0.8, 0.95, 0.6, 0.48, 0.7),
}


def draw_levels(rng: np.random.Generator, contrast: Contrast, patient: bool, nominal: Levels | None = None) -> Levels:
    """The nominal levels of ``contrast`` (or ``nominal``: a site's own), each varied by a few per cent;
    patients' nerves a little brighter."""
    nominal = nominal or _NOMINAL[contrast]
    values = {name: value * float(rng.uniform(0.94, 1.06)) for name, value in vars(nominal).items()}
    if patient:
        values["fascicle"] *= 1.08
    return Levels(**values)
