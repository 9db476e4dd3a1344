"""Paint a v2 body on one slice: tissue signal and each nerve's partial-volume fraction.

A slice is sampled ``factor x factor`` times per pixel on several planes through
its thickness. Skin, fat and muscle, which run along the limb, are drawn once on
the slice's centre plane (the muscle signal, with its septa anti-aliased, on the
pixel grid); the femur, vessels, the nerve's fat and the nerve are drawn on every
sub-plane. The pixel is the mean of its samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sciatic.phantom.v2.contrast import Levels
from sciatic.phantom.v2.layers import (
    COARSE_STRIDE,
    Frame,
    Front,
    Window,
    extent,
    find_windows,
    muscle_signal,
    paint_body,
)
from sciatic.phantom.v2.leg import Leg
from sciatic.phantom.v2.plan import Side
from sciatic.phantom.v2.profiles import F32, FloatArray, ZGrid


@dataclass(frozen=True)
class Plane:
    """Sample points ``origin + i * du + j * dv`` (LPS mm) for row ``j`` and column ``i``."""

    origin: FloatArray
    du: FloatArray  # step along a row (increasing column index)
    dv: FloatArray  # step down a column (increasing row index)
    shape: tuple[int, int]  # (rows, columns)

    def coords(self, window: Window) -> tuple[F32, F32, F32]:
        rows, cols = window
        j = np.arange(rows.start, rows.stop, rows.step or 1, dtype=np.float64)[:, None]
        i = np.arange(cols.start, cols.stop, cols.step or 1, dtype=np.float64)[None, :]
        x, y, z = (np.asarray(self.origin[c] + i * self.du[c] + j * self.dv[c], np.float32) for c in range(3))
        return x, y, z

    def z_range(self) -> tuple[float, float]:
        h, w = self.shape
        corners = [self.origin[2] + a * (w - 1) * self.du[2] + b * (h - 1) * self.dv[2] for a in (0, 1) for b in (0, 1)]
        return min(corners), max(corners)

    @property
    def pixel(self) -> float:
        return float(np.sqrt(np.linalg.norm(self.du) * np.linalg.norm(self.dv)))


@dataclass(frozen=True)
class Body:
    """A subject's thighs on one z grid."""

    grid: ZGrid
    legs: tuple[Leg, ...]


@dataclass(frozen=True)
class Textures:
    """Unit-variance noise on a slice's pixel grid."""

    grain: F32  # graininess of muscle and marrow
    streaks: F32  # where fat infiltrates muscle, at the finest scale
    strands: F32  # the fibrous strands of subcutaneous fat follow its zero crossings

    def part(self, window: Window) -> Textures:
        return Textures(self.grain[window], self.streaks[window], self.strands[window])


@dataclass(frozen=True)
class SliceImage:
    """One painted slice on the pixel grid: signal and, per thigh, the nerve's fraction of each pixel."""

    signal: F32
    nerve: dict[Side, F32]


def plane_window(plane: Plane, box: tuple[float, float, float, float]) -> Window | None:
    """The rows and columns of ``plane`` whose points may fall in the LPS box (x0, x1, y0, y1)."""
    s = COARSE_STRIDE
    x, y, _ = plane.coords((slice(0, plane.shape[0] + s, s), slice(0, plane.shape[1] + s, s)))
    return extent((x >= box[0]) & (x <= box[1]) & (y >= box[2]) & (y <= box[3]), s, plane.shape)


def block_mean(image: F32, factor: int) -> F32:
    """Mean over ``factor x factor`` blocks."""
    if factor == 1:
        return image
    out = np.zeros((image.shape[0] // factor, image.shape[1] // factor), np.float32)
    for a in range(factor):
        for b in range(factor):
            out += image[a::factor, b::factor]
    return np.asarray(out / np.float32(factor * factor), np.float32)


def _repeat(image: NDArray[np.float32], factor: int) -> F32:
    return np.asarray(np.repeat(np.repeat(image, factor, 0), factor, 1), np.float32)


def _leg_box(leg: Leg, grid: ZGrid, z_range: tuple[float, float]) -> tuple[float, float, float, float]:
    rows = grid.rows(*z_range)
    reach = max(leg.radius_lateral.bounds(rows)[1], leg.radius_anterior.bounds(rows)[1]) * 1.15 + 2
    x0, x1 = leg.axis_x.bounds(rows)
    y0, y1 = leg.axis_y.bounds(rows)
    return x0 - reach, x1 + reach, y0 - reach, y1 + reach


def _fields(leg: Leg, frame: Frame, textures: Textures) -> dict[str, F32]:
    """Smooth fields on the pixel grid: grain, where fat gathers, and the bending of muscle borders."""
    m = leg.muscles
    grain = textures.grain
    patches = m.patches.at(frame.lateral, frame.posterior, frame.z)
    patches = np.float32(0.45) * patches + np.float32(0.9) * textures.streaks

    warp_l, warp_p, amplitude = m.warp
    return {
        "grain": grain,
        "patches": np.asarray(patches, np.float32),
        "warp_lateral": np.float32(amplitude) * warp_l.at(frame.lateral, frame.posterior, frame.z),
        "warp_posterior": np.float32(amplitude) * warp_p.at(frame.lateral, frame.posterior, frame.z),
    }


def paint_slice(
    body: Body,
    levels: Levels,
    centre: Plane,
    base: Plane,
    samples: Sequence[Plane],
    factor: int,
    textures: Textures,
) -> SliceImage:
    """Paint one slice: ``centre`` is its pixel grid, ``base`` the same plane ``factor`` times finer,
    ``samples`` the sub-planes through the thickness."""
    h, w = centre.shape
    fine_shape = (h * factor, w * factor)
    background = np.zeros(fine_shape, np.float32)
    z_range = (min(p.z_range()[0] for p in samples), max(p.z_range()[1] for p in samples))
    jobs = []
    for leg in body.legs:
        window = plane_window(centre, _leg_box(leg, body.grid, z_range))
        if window is None:
            continue
        frame = Frame.of(leg, body.grid, *centre.coords(window))
        local = textures.part(window)
        # Muscle only where the pixel grid finds muscle (or nearly): the fields cost most there.
        scratch = np.zeros(frame.z.shape, np.float32)
        where = paint_body(leg, levels, frame, scratch, centre.pixel, local.strands) > -2 * centre.pixel
        muscle = np.zeros(frame.z.shape, np.float32)
        masked = Textures(local.grain[where], local.streaks[where], local.strands[where])

        muscle[where] = muscle_signal(
            leg, levels, frame.sub(where), _fields(leg, frame.sub(where), masked), centre.pixel
        )
        muscle = _repeat(muscle, factor)
        fine = tuple(slice(part.start * factor, part.stop * factor) for part in window)

        fine_frame = Frame.of(leg, body.grid, *base.coords((fine[0], fine[1])))
        target = background[fine]
        strands = _repeat(textures.strands[window], factor)
        depth = paint_body(leg, levels, fine_frame, target, base.pixel, strands)
        target += np.clip(0.5 + depth / np.float32(base.pixel), 0, 1) * (muscle - target)
        origin = (fine[0].start, fine[1].start)
        margin = float(np.max(np.abs([p.origin - base.origin for p in samples]))) + 1.0
        jobs.append((leg, find_windows(leg, body.grid, fine_frame, origin, fine_shape, margin)))
    grain = _repeat(textures.grain, factor)
    signal = np.zeros(fine_shape, np.float32)
    nerve = {leg.side: np.zeros(fine_shape, np.float32) for leg in body.legs}
    for plane in samples:
        image = background.copy()
        for leg, windows in jobs:
            front = Front(leg, levels, body.grid, plane.coords, image, plane.pixel, windows)
            front.paint(grain, nerve[leg.side])
        signal += image
    n = np.float32(len(samples))
    return SliceImage(block_mean(signal / n, factor), {side: block_mean(f / n, factor) for side, f in nerve.items()})


__all__ = ["Body", "Plane", "SliceImage", "Textures", "block_mean", "paint_slice", "plane_window"]
