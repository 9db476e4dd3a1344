"""Nerve metrics of one segmentation: pure functions on a mask and its affine.

Geometry follows ``docs/conventions.md``: arrays are ``(X, Y, Z)`` =
(columns, rows, slices), the affine maps voxel indices to RAS+ millimetres, and
slices are stacked along axis 2. All lengths are in mm, areas in mm², volumes
in mm³, and every quantity is computed from the affine's columns, so oblique
and non-square acquisitions are measured correctly.

Empty-mask policy: counts, areas, volumes and lengths are ``0``; quantities
that do not exist for an empty region (centroid, signal statistics, CSA
summaries) are ``None`` (JSON ``null``). Nothing is ever NaN.

Definitions are documented for users in ``docs/qc.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from sciatic.db.enums import Side
from sciatic.imaging.volume import (
    as_mask,
    pixel_area_mm2,
    slice_normal,
    slice_spacing_mm,
    validate_affine,
    voxel_volume_mm3,
)

__all__ = [
    "NerveMetrics",
    "SeriesMetrics",
    "SliceMetrics",
    "bifurcation_z_mm",
    "nerve_metrics",
    "nerve_metrics_by_side",
    "series_metrics",
    "slice_metrics",
    "split_sides",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: 2D connectivity used to count components in a slice: 8-connectivity
#: (pixels touching at an edge or a corner belong to the same component).
SLICE_CONNECTIVITY = np.ones((3, 3), dtype=bool)
#: 3D connectivity used to count components of the whole mask: 26-connectivity.
VOLUME_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def _signal(image: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[Any] | None:
    """The source image as an array of the mask's shape (converted to float64 only where it is used)."""
    if image is None:
        return None
    img = np.asanyarray(image)
    if img.shape != shape:
        raise ValueError(f"image shape {img.shape} differs from mask shape {shape}")
    return img


def _nerve_box(
    m: BoolArray, a: FloatArray, img: NDArray[Any] | None
) -> tuple[BoolArray, FloatArray, NDArray[Any] | None]:
    """Mask, affine and image cut to the in-plane bounding box of the nerve over all slices (all slices kept)."""
    columns, rows = np.flatnonzero(m.any(axis=(1, 2))), np.flatnonzero(m.any(axis=(0, 2)))
    if columns.size == 0:
        columns = rows = np.array([0])
    i0, i1, j0, j1 = int(columns[0]), int(columns[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    box_a = a.copy()
    box_a[:3, 3] = a[:3, :3] @ np.array([i0, j0, 0.0]) + a[:3, 3]
    return m[i0:i1, j0:j1, :], box_a, None if img is None else img[i0:i1, j0:j1, :]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class SliceMetrics:
    """Metrics of the nerve ROI in one slice (array index ``k`` along axis 2).

    ``centroid_ras_mm`` is in the affine's RAS+ patient coordinates (DICOM LPS
    is ``(-x, -y, z)``). ``signal_sd`` is the population SD (ddof=0) of the
    source image inside the ROI. Empty slice: zeros and ``None``.
    """

    slice_index: int
    voxel_count: int
    area_mm2: float
    centroid_ras_mm: tuple[float, float, float] | None
    signal_mean: float | None
    signal_sd: float | None
    n_components: int

    @property
    def has_nerve(self) -> bool:
        return self.voxel_count > 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.centroid_ras_mm is not None:
            d["centroid_ras_mm"] = list(self.centroid_ras_mm)
        return d


@dataclass(frozen=True, slots=True)
class SeriesMetrics:
    """Metrics of the nerve ROI over the whole series.

    - ``volume_mm3`` = voxel count x ``|det(affine[:3, :3])|``.
    - ``csa_*_mm2`` over the slices that contain nerve (``None`` if none do).
    - ``first_slice``/``last_slice``: lowest/highest slice index with nerve.
    - ``covered_length_mm`` = ``(last_slice - first_slice + 1) x slice spacing``:
      the extent along the slice normal of the slab from the first to the last
      nerve slice, each slice counted as one spacing thick (a single nerve
      slice covers one spacing; empty gaps inside the range are included).
    - ``gap_slices``: slices without nerve between first and last.
    - ``signal_mean``: mean source signal over all ROI voxels (voxel-weighted).
    - ``n_components_3d``: 26-connected components of the 3D mask.
    - ``max_pieces``: the most separate pieces (8-connected) in one slice: 2
      where the sciatic nerve has split into its tibial and peroneal branches.
    - ``bifurcation_z_mm``: for one leg's nerve (see :func:`nerve_metrics_by_side`),
      the head-foot position (RAS z, mm) of the most proximal slice from which
      the nerve stays in two or more pieces down to its distal end (at least
      two such slices); ``None`` when the bifurcation is not in the field of view.
    """

    n_slices: int
    n_nerve_slices: int
    first_slice: int | None
    last_slice: int | None
    gap_slices: int
    voxel_count: int
    volume_mm3: float
    csa_mean_mm2: float | None
    csa_median_mm2: float | None
    csa_max_mm2: float | None
    covered_length_mm: float
    signal_mean: float | None
    n_components_3d: int
    max_pieces: int = 0
    bifurcation_z_mm: float | None = None

    @property
    def is_empty(self) -> bool:
        return self.voxel_count == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class NerveMetrics:
    """Per-series metrics plus one :class:`SliceMetrics` per slice (all slices)."""

    series: SeriesMetrics
    slices: tuple[SliceMetrics, ...]
    pixel_area_mm2: float
    slice_spacing_mm: float
    #: unit slice normal in RAS+ (direction of increasing slice index)
    slice_normal: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "series": self.series.to_dict(),
            "slices": [s.to_dict() for s in self.slices],
            "pixel_area_mm2": self.pixel_area_mm2,
            "slice_spacing_mm": self.slice_spacing_mm,
            "slice_normal": list(self.slice_normal),
        }


# --------------------------------------------------------------------------- functions


def slice_metrics(mask: ArrayLike, affine: ArrayLike, image: ArrayLike | None = None) -> tuple[SliceMetrics, ...]:
    """Per-slice CSA, centroid, signal statistics and 2D component count (all slices).

    ``image`` is the source volume on the same grid; without it the signal
    fields are ``None``. Components use 8-connectivity in the slice plane.
    """
    m = as_mask(mask)
    a = validate_affine(affine)
    img = _signal(image, m.shape)
    area = pixel_area_mm2(a)
    out: list[SliceMetrics] = []
    for k in range(m.shape[2]):
        sl = m[:, :, k]
        count = int(np.count_nonzero(sl))
        if count == 0:
            out.append(SliceMetrics(k, 0, 0.0, None, None, None, 0))
            continue
        ij = np.argwhere(sl).mean(axis=0)
        c = a[:3, :3] @ np.array([ij[0], ij[1], float(k)]) + a[:3, 3]
        mean: float | None = None
        sd: float | None = None
        if img is not None:
            values = img[:, :, k][sl].astype(np.float64)
            mean, sd = float(values.mean()), float(values.std())
        _, n_comp = ndimage.label(sl, structure=SLICE_CONNECTIVITY)
        out.append(
            SliceMetrics(
                slice_index=k,
                voxel_count=count,
                area_mm2=count * area,
                centroid_ras_mm=(float(c[0]), float(c[1]), float(c[2])),
                signal_mean=mean,
                signal_sd=sd,
                n_components=int(n_comp),
            )
        )
    return tuple(out)


def series_metrics(
    mask: ArrayLike,
    affine: ArrayLike,
    image: ArrayLike | None = None,
    slices: Sequence[SliceMetrics] | None = None,
) -> SeriesMetrics:
    """Volume, CSA summary, covered length and mean signal of the whole ROI.

    ``slices`` may pass already computed :func:`slice_metrics` to avoid
    recomputing them.
    """
    m = as_mask(mask)
    a = validate_affine(affine)
    if slices is None:
        slices = slice_metrics(m, a, image)
    if len(slices) != m.shape[2]:
        raise ValueError(f"{len(slices)} slice metrics for {m.shape[2]} slices")
    img = _signal(image, m.shape)
    count = int(np.count_nonzero(m))
    nerve = [s for s in slices if s.has_nerve]
    if not nerve:
        return SeriesMetrics(
            n_slices=m.shape[2],
            n_nerve_slices=0,
            first_slice=None,
            last_slice=None,
            gap_slices=0,
            voxel_count=0,
            volume_mm3=0.0,
            csa_mean_mm2=None,
            csa_median_mm2=None,
            csa_max_mm2=None,
            covered_length_mm=0.0,
            signal_mean=None,
            n_components_3d=0,
        )
    csa = np.array([s.area_mm2 for s in nerve])
    first, last = nerve[0].slice_index, nerve[-1].slice_index
    _, n3d = ndimage.label(m, structure=VOLUME_CONNECTIVITY)
    return SeriesMetrics(
        n_slices=m.shape[2],
        n_nerve_slices=len(nerve),
        first_slice=first,
        last_slice=last,
        gap_slices=(last - first + 1) - len(nerve),
        voxel_count=count,
        volume_mm3=count * voxel_volume_mm3(a),
        csa_mean_mm2=float(csa.mean()),
        csa_median_mm2=float(np.median(csa)),
        csa_max_mm2=float(csa.max()),
        covered_length_mm=(last - first + 1) * slice_spacing_mm(a),
        signal_mean=None if img is None else float(img[m].astype(np.float64).mean()),
        n_components_3d=int(n3d),
        max_pieces=max(s.n_components for s in nerve),
        bifurcation_z_mm=bifurcation_z_mm(slices),
    )


def bifurcation_z_mm(slices: Sequence[SliceMetrics], min_split_slices: int = 2) -> float | None:
    """Head-foot position (RAS z) where the nerve splits for good: see :class:`SeriesMetrics`."""
    nerve = sorted((s for s in slices if s.has_nerve and s.centroid_ras_mm), key=lambda s: -s.centroid_ras_mm[2])  # type: ignore[index]
    split = 0  # nerve slices in two or more pieces, counted from the distal end
    for piece in reversed(nerve):
        if piece.n_components < 2:
            break
        split += 1
    if split < min_split_slices or split == len(nerve):
        return None  # never split, or split over the whole field of view (no trunk seen)
    first = nerve[len(nerve) - split]
    assert first.centroid_ras_mm is not None
    return first.centroid_ras_mm[2]


def split_sides(mask: ArrayLike, affine: ArrayLike, laterality: str = "") -> dict[Side, BoolArray]:
    """The mask's nerves by leg: each 26-connected 3D piece goes to the patient's left or right.

    RAS: ``+x`` is the patient's right (DICOM LPS ``+x`` is the left). A piece goes by the side of its centroid
    relative to the midline ``x = 0`` (the scanner's isocentre, on the patient's
    midline when both thighs are in the field of view). A unilateral study's
    ``laterality`` (the Laterality tag: ``L`` or ``R``) puts every piece on that
    side. Sides without nerve are left out.
    """
    m = as_mask(mask)
    a = validate_affine(affine)
    forced = {"L": Side.LEFT, "R": Side.RIGHT}.get(laterality.upper()[:1])
    if forced is not None:
        return {forced: m} if m.any() else {}
    labels, count = ndimage.label(m, structure=VOLUME_CONNECTIVITY)
    sides: dict[Side, BoolArray] = {}
    for index, centre in enumerate(ndimage.center_of_mass(m, labels, range(1, count + 1)), start=1):
        x = float(a[0, :3] @ np.asarray(centre) + a[0, 3])
        side = Side.RIGHT if x > 0 else Side.LEFT
        sides[side] = sides.get(side, np.zeros_like(m)) | (labels == index)
    return dict(sorted(sides.items()))


def nerve_metrics_by_side(
    mask: ArrayLike, affine: ArrayLike, image: ArrayLike | None = None, laterality: str = ""
) -> dict[Side, NerveMetrics]:
    """:func:`nerve_metrics` of each leg's nerve (see :func:`split_sides`); both branches stay in."""
    return {side: nerve_metrics(part, affine, image) for side, part in split_sides(mask, affine, laterality).items()}


def nerve_metrics(mask: ArrayLike, affine: ArrayLike, image: ArrayLike | None = None) -> NerveMetrics:
    """All metrics of one segmentation: per slice and per series.

    Computed on the in-plane box around the nerve (every slice kept), with the
    affine moved to the box's corner: the same numbers for a fraction of the work.
    """
    m = as_mask(mask)
    a = validate_affine(affine)
    img = _signal(image, m.shape)
    box_m, box_a, box_img = _nerve_box(m, a, img)
    slices = slice_metrics(box_m, box_a, box_img)
    n = slice_normal(a)
    return NerveMetrics(
        series=series_metrics(box_m, box_a, box_img, slices),
        slices=slices,
        pixel_area_mm2=pixel_area_mm2(a),
        slice_spacing_mm=slice_spacing_mm(a),
        slice_normal=(float(n[0]), float(n[1]), float(n[2])),
    )
