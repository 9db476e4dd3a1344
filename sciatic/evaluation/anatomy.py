"""Where the legs are in an image: the context label-free QC needs (a leg without a nerve, a nerve in front).

Pure functions on a volume and its affine. A leg is a large connected region of
signal (Otsu threshold of the slab's mean image, holes filled): one region per
thigh in the field of view. Sides follow the convention of
``sciatic.evaluation.metrics.split_sides`` (RAS ``+x`` is the patient's right;
the midline is ``x = 0``, or the Laterality tag of a unilateral study).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from sciatic.db.enums import Side
from sciatic.imaging.volume import validate_affine

__all__ = ["Leg", "legs_in_view", "otsu_threshold"]

MIN_LEG_FRACTION = 0.05  # a leg covers at least this share of the slice
LEG_SIZE_RATIO = 0.3  # a second region is a leg when at least this share of the largest one


@dataclass(frozen=True, slots=True)
class Leg:
    """One thigh in the field of view: its side and the centroid of its cross-section (RAS mm)."""

    side: Side
    centroid_ras_mm: tuple[float, float, float]
    area_fraction: float  # of the slice


def otsu_threshold(values: NDArray[np.float64], bins: int = 256) -> float:
    """The intensity that best separates two classes (Otsu's between-class variance maximum)."""
    histogram, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weights = histogram.astype(np.float64)
    w0 = np.cumsum(weights)
    w1 = w0[-1] - w0
    m0 = np.cumsum(weights * centres) / np.maximum(w0, 1)
    m1 = (np.sum(weights * centres) - np.cumsum(weights * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def legs_in_view(volume: ArrayLike, affine: ArrayLike, laterality: str = "") -> tuple[Leg, ...]:
    """The thighs in the field of view (one or two), by side; none when the image shows no body."""
    image = np.asarray(np.asanyarray(volume), dtype=np.float64)
    a = validate_affine(affine)
    mean = image.mean(axis=2)
    if not np.isfinite(mean).all() or mean.max() <= mean.min():
        return ()
    body = ndimage.binary_fill_holes(mean > otsu_threshold(mean.ravel()))
    labels, count = ndimage.label(body)
    if count == 0:
        return ()
    sizes = ndimage.sum(body, labels, range(1, count + 1))
    order = np.argsort(sizes)[::-1]
    largest = float(sizes[order[0]])
    regions = [int(i) + 1 for i in order[:2] if sizes[i] >= max(LEG_SIZE_RATIO * largest, MIN_LEG_FRACTION * body.size)]
    forced = {"L": Side.LEFT, "R": Side.RIGHT}.get(laterality.upper()[:1])
    middle = (image.shape[2] - 1) / 2
    legs = []
    for region in regions:
        ci, cj = ndimage.center_of_mass(body, labels, region)
        centre = a[:3, :3] @ np.array([ci, cj, middle]) + a[:3, 3]
        side = forced if forced is not None and len(regions) == 1 else Side.RIGHT if centre[0] > 0 else Side.LEFT
        legs.append(
            Leg(side, (float(centre[0]), float(centre[1]), float(centre[2])), float(sizes[region - 1] / body.size))
        )
    return tuple(sorted(legs, key=lambda leg: leg.side.value))
