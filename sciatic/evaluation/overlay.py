"""Overlay pictures of one segmentation, after the seed's Fig. 1.

Top: every 5-slice montage of the series volume (``sciatic.imaging.picture``),
with the predicted ROI filled in blue and, where a manual label exists, the
manual ROI outlined in red. Bottom (``zoom=True``): the slice with the largest
predicted CSA, cropped around the nerve, three times: without overlay, with
the manual ROI (red) and with the predicted ROI (blue).

The title names the subject by pseudonym only. Pure rendering: the case's facts
come in as a :class:`~sciatic.evaluation.cases.CaseInfo`, the arrays from its files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray
from PIL import Image

from sciatic.errors import SciaticError
from sciatic.evaluation.cases import CaseInfo
from sciatic.imaging.montage import TILE, MontageLayout
from sciatic.imaging.normalize import normalize
from sciatic.imaging.picture import LABEL_COLOUR, MASK_COLOUR, montage_picture, tint
from sciatic.imaging.volume import check_same_grid, pixel_area_mm2, read_volume, voxel_spacing_mm

__all__ = [
    "MONTAGE_WIDTH",
    "CaseImages",
    "OverlayLayout",
    "load_case",
    "overlay_figure",
    "overlay_png_bytes",
    "zoom_box",
]

DPI = 100
MONTAGE_WIDTH = TILE * 5  # px of one montage row at full size
ZOOM_OPACITY = 0.45
ZOOM_MARGIN_MIN_PX = 12  # at least this many pixels of context on each side of the nerve


# --------------------------------------------------------------------------- what a case is


@dataclass(frozen=True, slots=True, eq=False)
class CaseImages:
    """The arrays of one case, all on the volume's grid (checked)."""

    volume: NDArray[Any]
    mask: NDArray[np.bool_]
    label: NDArray[np.bool_] | None
    affine: NDArray[np.float64]

    @property
    def pixel_area_mm2(self) -> float:
        return pixel_area_mm2(self.affine)

    def zoom_slice(self) -> int:
        """Slice with the largest predicted CSA (else largest label CSA, else the middle slice)."""
        for roi in (self.mask, self.label):
            if roi is not None and roi.any():
                return int(np.argmax(roi.sum(axis=(0, 1))))
        return int(self.volume.shape[2]) // 2


def load_case(info: CaseInfo) -> CaseImages:
    """Read the volume, the predicted mask and the manual label; refuse masks on another grid."""
    if info.volume_path is None:
        raise SciaticError(f"series {info.series_id} has no converted volume")
    volume = read_volume(info.volume_path)
    mask = read_volume(info.mask_path)
    check_same_grid(mask.shape, mask.affine, volume.shape, volume.affine, names=("prediction", "volume"))
    label = None
    if info.label_path is not None:
        manual = read_volume(info.label_path)
        check_same_grid(manual.shape, manual.affine, volume.shape, volume.affine, names=("label", "volume"))
        label = np.asarray(manual.data) != 0
    return CaseImages(np.asarray(volume.data), np.asarray(mask.data) != 0, label, volume.affine)


# --------------------------------------------------------------------------- layout and drawing


@dataclass(frozen=True, slots=True)
class OverlayLayout:
    """Pixel sizes of an overlay picture ``width`` px wide for a volume of ``shape``."""

    shape: tuple[int, int, int]
    width: int = MONTAGE_WIDTH
    zoom: bool = True

    @property
    def scale(self) -> float:
        return self.width / MONTAGE_WIDTH

    @property
    def title_px(self) -> int:
        return max(28, round(44 * self.scale))

    @property
    def montage_px(self) -> int:
        return round(MontageLayout.for_shape(self.shape).montages * TILE * self.scale)

    @property
    def panel_px(self) -> int:
        return self.width // 3

    @property
    def caption_px(self) -> int:
        return max(18, round(30 * self.scale))

    @property
    def zoom_px(self) -> int:
        return self.panel_px + self.caption_px if self.zoom else 0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the PNG in pixels."""
        return self.width, self.title_px + self.montage_px + self.zoom_px

    @property
    def font_size(self) -> float:
        return max(6.5, 13.0 * self.scale)


def zoom_box(rois: list[NDArray[np.bool_]], shape: tuple[int, int]) -> tuple[slice, slice]:
    """Square (rows, columns) crop of an image of ``shape`` around the union of 2D ``rois``, with margin.

    The margin on each side is the larger side of the ROI's bounding box (at least
    ``ZOOM_MARGIN_MIN_PX``); the crop is shifted inside the image where it would leave it.
    Without any ROI pixel the whole image is returned.
    """
    union = np.zeros(shape, bool)
    for roi in rois:
        union |= roi
    if not union.any():
        return slice(0, shape[0]), slice(0, shape[1])
    rows, cols = np.nonzero(union)
    extent = max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) + 1
    side = min(extent + 2 * max(ZOOM_MARGIN_MIN_PX, extent), *shape)

    def span(lo: int, hi: int, n: int) -> slice:
        start = min(max(0, (lo + hi + 1 - side) // 2), n - side)
        return slice(start, start + side)

    return span(int(rows.min()), int(rows.max()), shape[0]), span(int(cols.min()), int(cols.max()), shape[1])


def overlay_figure(info: CaseInfo, images: CaseImages, zoom: bool = True, width: int = MONTAGE_WIDTH) -> Figure:
    """The overlay picture as a matplotlib figure of exactly :class:`OverlayLayout` ``.size`` pixels."""
    layout = OverlayLayout(images.volume.shape, width, zoom)
    w, h = layout.size
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI, facecolor="white")

    def axes(left: float, top: float, width_px: float, height_px: float) -> Any:
        ax = fig.add_axes((left / w, 1 - (top + height_px) / h, width_px / w, height_px / h))
        ax.set_axis_off()
        return ax

    fig.text(0.5, 1 - layout.title_px / 2 / h, info.title, ha="center", va="center", fontsize=layout.font_size)
    picture = _as_bytes(montage_picture(images.volume, images.mask, images.label))
    axes(0, layout.title_px, w, layout.montage_px).imshow(
        picture, interpolation="antialiased" if width < MONTAGE_WIDTH else "nearest", aspect="auto"
    )
    if zoom:
        _draw_zoom(fig, axes, images, layout)
    return fig


def _as_bytes(rgb: NDArray[np.float32]) -> NDArray[np.uint8]:
    """8-bit RGB of a [0, 1] picture: what the PNG stores, and much faster for matplotlib to draw."""
    return np.asarray(np.rint(rgb * 255), np.uint8)


def _draw_zoom(fig: Figure, axes: Any, images: CaseImages, layout: OverlayLayout) -> None:
    k = images.zoom_slice()
    image = normalize(images.volume)[:, :, k].T  # rows x columns, as in the montage
    mask = images.mask[:, :, k].T
    label = images.label[:, :, k].T if images.label is not None else None
    rows, cols = zoom_box([mask] + ([label] if label is not None else []), image.shape)
    grey = np.repeat(image[rows, cols][:, :, None], 3, axis=2)
    sx, sy, _ = voxel_spacing_mm(images.affine)
    area = images.pixel_area_mm2
    csa = f"{mask.sum() * area:.0f} mm²"
    panels: list[tuple[str, NDArray[np.float32] | None]] = [(f"slice {k}, zoomed", grey)]
    if label is None:
        panels.append(("no manual label", None))
    else:
        panels.append(
            (f"manual ROI, {label.sum() * area:.0f} mm²", tint(grey, label[rows, cols], LABEL_COLOUR, ZOOM_OPACITY))
        )
    panels.append((f"predicted ROI, {csa}", tint(grey, mask[rows, cols], MASK_COLOUR, ZOOM_OPACITY)))
    top = layout.title_px + layout.montage_px
    for i, (caption, rgb) in enumerate(panels):
        left = i * layout.panel_px
        fig.text(
            (left + layout.panel_px / 2) / layout.size[0],
            1 - (top + layout.caption_px / 2) / layout.size[1],
            caption,
            ha="center",
            va="center",
            fontsize=layout.font_size * 0.85,
        )
        ax = axes(left + 2, top + layout.caption_px, layout.panel_px - 4, layout.panel_px - 4)
        if rgb is not None:
            ax.imshow(_as_bytes(rgb), interpolation="nearest", aspect=sy / sx)


def _png_bytes(fig: Figure, compact: bool = False) -> bytes:
    """RGB PNG of ``fig`` (no alpha channel: a third smaller than matplotlib's RGBA).

    ``compact`` stores a 256-colour palette instead (about a fifth of the size for
    noisy MR; grey levels are slightly posterised), for pictures embedded in pages.
    """
    raw = io.BytesIO()
    fig.savefig(raw, format="rgba", dpi=DPI)
    w, h = (round(v) for v in fig.get_size_inches() * DPI)
    rgba = np.frombuffer(raw.getvalue(), np.uint8).reshape(h, w, 4)
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(rgba[:, :, :3]))
    if compact:
        image = image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    image.save(buffer, format="png", compress_level=3)  # "optimize" is ten times slower for a few % less
    return buffer.getvalue()


def overlay_png_bytes(
    info: CaseInfo, images: CaseImages, zoom: bool = True, width: int = MONTAGE_WIDTH, compact: bool = False
) -> bytes:
    """PNG bytes of :func:`overlay_figure` (``compact``: 256-colour palette)."""
    return _png_bytes(overlay_figure(info, images, zoom, width), compact)
