"""Draw one thigh on sample points: the base (skin, fat, muscle) and the structures in front.

Edges are anti-aliased from signed distances over the sample spacing, so each
sample already holds a partial-volume mixture; structures are painted back to
front with ``image += alpha * (value - image)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtri

from sciatic.phantom.v2.contrast import Levels
from sciatic.phantom.v2.leg import Leg, Vessel
from sciatic.phantom.v2.nerve import FASCICLE_TABLE
from sciatic.phantom.v2.profiles import F32, Loc, Tube, ZGrid

Window = tuple[slice, slice]
Coords = Callable[[Window], tuple[F32, F32, F32]]  # LPS x, y, z of a window's sample points
COARSE_STRIDE = 4  # step (samples) of the search for a structure's window


@dataclass(frozen=True)
class Frame:
    """Leg-frame coordinates (lateral, posterior mm; t along the thigh) of a block of sample points."""

    z: F32
    loc: Loc
    lateral: F32
    posterior: F32
    t: F32

    @classmethod
    def of(cls, leg: Leg, grid: ZGrid, x: F32, y: F32, z: F32) -> Frame:
        loc = grid.locate(z)
        dx = (x - leg.axis_x.at(loc)) * np.float32(leg.sign)
        dy = y - leg.axis_y.at(loc)
        turn = leg.rotation.at(loc)
        cos, sin = np.cos(turn), np.sin(turn)
        t = np.asarray((z - np.float32(leg.z_knee)) / np.float32(leg.length), np.float32)
        return cls(z, loc, np.asarray(dx * cos + dy * sin, np.float32), np.asarray(dy * cos - dx * sin, np.float32), t)

    def sub(self, window: Window | NDArray[np.bool_]) -> Frame:
        """The part of this frame in ``window`` (indices relative to the frame) or where a mask is set."""

        loc = Loc(self.loc.index[window], self.loc.frac[window])
        return Frame(self.z[window], loc, self.lateral[window], self.posterior[window], self.t[window])


def extent(hit: NDArray[np.bool_], stride: int, limits: tuple[int, int]) -> Window | None:
    """Rows and columns around the hits of a grid sampled every ``stride`` points (one step of margin)."""
    rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    if rows.size == 0:
        return None
    r0, r1 = max(0, (rows[0] - 1) * stride), min(limits[0], (rows[-1] + 2) * stride)
    c0, c1 = max(0, (cols[0] - 1) * stride), min(limits[1], (cols[-1] + 2) * stride)
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))


def inside(distance: F32, pixel: float) -> F32:
    """Fraction of a sample inside a region, from the signed distance (mm, negative inside)."""
    return np.asarray(np.clip(np.float32(0.5) - distance / np.float32(pixel), 0.0, 1.0), np.float32)


def blend(target: F32, alpha: F32, value: F32 | float) -> None:
    target += alpha * (np.asarray(value, np.float32) - target)


def ellipse(tube: Tube, frame: Frame) -> tuple[F32, F32, F32]:
    """Signed distance (mm, negative inside) and normalised coordinates (u along radius_1, v)."""
    lateral, posterior, r1, r2, angle = tube.at(frame.loc)
    dl, dp = frame.lateral - lateral, frame.posterior - posterior
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dl * cos + dp * sin) / r1
    v = (dp * cos - dl * sin) / r2
    f2 = u * u + v * v
    gradient = np.sqrt(((u / r1) ** 2 + (v / r2) ** 2) / np.maximum(f2, np.float32(1e-12)))
    gradient = np.clip(gradient, 1 / np.maximum(r1, r2), 1 / np.minimum(r1, r2))
    return np.asarray((np.sqrt(f2) - 1) / gradient, np.float32), np.asarray(u, np.float32), np.asarray(v, np.float32)


def muscle_signal(leg: Leg, levels: Levels, frame: Frame, fields: dict[str, F32], pixel: float) -> F32:
    """Muscle signal: weighted Voronoi cells, fat septa (wider between compartments), fatty infiltration."""
    m = leg.muscles
    radius = m.radius.at(frame.loc)
    u = (frame.lateral + fields["warp_lateral"]) / radius
    v = (frame.posterior + fields["warp_posterior"]) / radius
    t = frame.t - np.float32(0.5)
    d1 = np.full(u.shape, np.inf, np.float32)
    d2 = np.full(u.shape, np.inf, np.float32)
    n1 = np.zeros(u.shape, np.intp)
    n2 = np.zeros(u.shape, np.intp)
    for k, ((su, sv, du, dv), (w0, w1)) in enumerate(zip(m.seeds, m.weights, strict=True)):
        weight = np.maximum(np.float32(w0) * (1 + np.float32(w1) * t), np.float32(0.05 * w0))
        off_u, off_v = u - (np.float32(su) + np.float32(du) * t), v - (np.float32(sv) + np.float32(dv) * t)
        distance = (off_u * off_u + off_v * off_v) / (weight * weight)
        closer = distance < d1
        second = ~closer & (distance < d2)
        d2 = np.where(closer, d1, np.where(second, distance, d2))
        n2 = np.where(closer, n1, np.where(second, k, n2))
        d1 = np.where(closer, distance, d1)
        n1 = np.where(closer, k, n1)
    w0s, w1s = m.weights[:, 0].astype(np.float32), m.weights[:, 1].astype(np.float32)
    w_near = np.maximum(w0s[n1] * (1 + w1s[n1] * t), np.float32(0.05) * w0s[n1])
    half_gap = (np.sqrt(d2) - np.sqrt(d1)) * w_near * radius / 2
    within_mm, within, between_mm, between = m.septum
    apart = m.compartment[n1] != m.compartment[n2]
    width = np.where(apart, np.float32(between_mm), np.float32(within_mm))
    strength = np.where(apart, np.float32(between), np.float32(within))
    fat = np.float32(levels.fat)
    level = np.float32(levels.muscle) * m.level.astype(np.float32)[n1] * (1 + np.float32(0.05) * fields["grain"])
    # A share ``severity`` of each muscle lies above its threshold; more toward the knee.
    threshold = ndtri(1 - m.severity).astype(np.float32)[n1] + np.float32(0.6) * t

    infiltration = np.clip((fields["patches"] - threshold) / np.float32(0.8) + np.float32(0.5), 0, 1)

    level += infiltration * np.float32(0.85) * (fat - level)
    level += inside(half_gap - width / 2, pixel) * strength * (fat - level)
    return np.asarray(level, np.float32)


def paint_body(leg: Leg, levels: Levels, frame: Frame, target: F32, pixel: float, strands: F32) -> F32:
    """Skin and subcutaneous fat (with fibrous strands where ``strands`` crosses zero) into ``target``;
    returns the depth (mm) below the muscle fascia."""
    loc = frame.loc
    lat, post = frame.lateral, frame.posterior
    r_ap = np.where(post < 0, leg.radius_anterior.at(loc), leg.radius_posterior.at(loc))
    r_lat = leg.radius_lateral.at(loc)
    a, b = lat / r_lat, post / r_ap
    rho = np.maximum(np.sqrt(a * a + b * b), np.float32(1e-6))
    cos, sin = a / rho, b / rho
    lobes = np.ones_like(rho)
    cos_m, sin_m = cos, sin
    for _, amplitude, phase in leg.harmonics:  # m = 2, 3, 4
        cos_m, sin_m = cos_m * cos - sin_m * sin, sin_m * cos + cos_m * sin
        lobes += np.float32(amplitude) * (cos_m * np.float32(np.cos(phase)) - sin_m * np.float32(np.sin(phase)))
    depth = np.asarray((1 - rho / lobes) * np.sqrt(r_lat * r_ap) * lobes, np.float32)
    a1, p1, a2, p2 = (np.float32(v) for v in leg.fat_shape)
    shape = 1 + a1 * (cos * np.cos(p1) + sin * np.sin(p1))
    shape += a2 * ((cos * cos - sin * sin) * np.cos(p2) + 2 * sin * cos * np.sin(p2))
    fat = leg.fat.at(loc) * shape
    blend(target, inside(-depth, pixel), levels.skin)
    fat_signal = np.float32(levels.fat) * (1 - np.float32(0.4) * np.exp(-((strands / np.float32(0.12)) ** 2)))
    blend(target, inside(np.float32(leg.skin_mm) - depth, pixel), fat_signal)
    return np.asarray(depth - np.float32(leg.skin_mm) - fat, np.float32)


@dataclass(frozen=True)
class Windows:
    """Where each structure in front of the muscles may appear (sample indices of the whole plane)."""

    pad: Window | None
    femur: Window | None
    vessels: tuple[Window | None, ...]
    touching: tuple[Window | None, ...]
    nerve: Window | None

    def all(self) -> list[Window | None]:
        return [self.pad, self.femur, *self.vessels, *self.touching, self.nerve]


def find_windows(
    leg: Leg, grid: ZGrid, frame: Frame, origin: tuple[int, int], shape: tuple[int, int], margin: float
) -> Windows:
    """Windows found on ``frame`` (a block of the base plane starting at ``origin``) by testing every
    ``COARSE_STRIDE``-th point against each structure at that point's level; ``margin`` (mm) covers the
    sub-planes' offsets."""
    s = COARSE_STRIDE
    coarse = frame.sub((slice(None, None, s), slice(None, None, s)))
    limits = frame.z.shape

    def find(tube: Tube, grow: float, present: bool = True) -> Window | None:
        if not present:
            return None
        lateral, posterior, r1, r2, _ = tube.at(coarse.loc)
        reach = np.maximum(r1, r2) + np.float32(grow + margin)
        hit = (np.abs(coarse.lateral - lateral) <= reach) & (np.abs(coarse.posterior - posterior) <= reach)
        found = extent(hit, s, limits)
        if found is None:
            return None
        return (
            slice(found[0].start + origin[0], min(shape[0], found[0].stop + origin[0])),
            slice(found[1].start + origin[1], min(shape[1], found[1].stop + origin[1])),
        )

    def shown(vessel: Vessel) -> bool:
        return vessel.presence is None or bool(vessel.presence.at(coarse.loc).max() > 0.01)

    rim = float(leg.nerve.rim.at(coarse.loc).max()) * 1.7
    divisions = [w for w in (find(d.tube, rim + 1.0) for d in leg.nerve.divisions) if w is not None]
    nerve = None
    for window in divisions:
        nerve = window if nerve is None else _union(nerve, window)
    return Windows(
        pad=find(leg.pad, 1.0 + 2 * leg.pad_outline[1]),
        femur=find(leg.femur, 8.0),
        vessels=tuple(find(v.tube, v.rim_mm + 1.0, shown(v)) for v in leg.vessels),
        touching=tuple(find(v.tube, 1.0, shown(v)) for v in leg.touching),
        nerve=nerve,
    )


def _area(window: Window) -> int:
    return int((window[0].stop - window[0].start) * (window[1].stop - window[1].start))


def _union(a: Window, b: Window) -> Window:
    return slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)), slice(
        min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)
    )


def _contains(outer: Window, inner: Window) -> bool:
    return all(o.start <= i.start and i.stop <= o.stop for o, i in zip(outer, inner, strict=True))


class Front:
    """Paints the structures in front of the muscles on one sample plane, each in its own window.

    Leg-frame coordinates are computed once for a region holding the windows that lie
    close together (most of them, around the femur and the nerve) and cut from it.
    """

    def __init__(
        self, leg: Leg, levels: Levels, grid: ZGrid, coords: Coords, image: F32, pixel: float, windows: Windows
    ) -> None:
        self.leg, self.levels, self.grid, self.image, self.pixel = leg, levels, grid, image, pixel
        self.coords, self.windows = coords, windows
        found = sorted((w for w in windows.all() if w is not None), key=_area, reverse=True)
        self.region: Window | None = found[0] if found else None
        for window in found[1:]:
            assert self.region is not None
            joined = _union(self.region, window)
            if _area(joined) <= 2 * (_area(self.region) + _area(window)):
                self.region = joined
        self.region_frame = Frame.of(leg, grid, *coords(self.region)) if self.region is not None else None

    def frame(self, window: Window) -> Frame:
        region = self.region
        if region is not None and self.region_frame is not None and _contains(region, window):
            rows = slice(window[0].start - region[0].start, window[0].stop - region[0].start)
            cols = slice(window[1].start - region[1].start, window[1].stop - region[1].start)
            return self.region_frame.sub((rows, cols))
        return Frame.of(self.leg, self.grid, *self.coords(window))

    def tube(self, window: Window | None, vessel: Vessel | Tube, value: float, rim_mm: float = 0.0) -> None:
        if window is None:
            return
        tube = vessel.tube if isinstance(vessel, Vessel) else vessel
        frame = self.frame(window)
        distance, _, _ = ellipse(tube, frame)
        target = self.image[window]
        if rim_mm > 0:
            blend(target, inside(distance - np.float32(rim_mm), self.pixel), self.levels.fat)
        alpha = inside(distance, self.pixel)
        if isinstance(vessel, Vessel) and vessel.presence is not None:
            alpha *= vessel.presence.at(frame.loc)
        blend(target, alpha, value)

    def pad(self, window: Window | None) -> None:
        """Fat around the neurovascular bundle, with an irregular outline."""
        if window is None:
            return
        frame = self.frame(window)
        distance, _, _ = ellipse(self.leg.pad, frame)
        wobble, amplitude = self.leg.pad_outline
        distance = distance + np.float32(amplitude) * wobble.at(frame.lateral, frame.posterior, frame.z)
        blend(self.image[window], inside(distance, self.pixel), self.levels.fat)

    def femur(self, window: Window | None, grain: F32) -> None:

        if window is None:
            return
        leg, levels = self.leg, self.levels
        frame = self.frame(window)
        distance, u, v = ellipse(leg.femur, frame)
        loc, target = frame.loc, self.image[window]
        blend(target, inside(distance, self.pixel), levels.cortex)
        ridge = leg.ridge.at(loc)  # linea aspera, a ridge on the posterior surface
        r2 = leg.femur.radius_2.at(loc)
        ridge_distance = np.sqrt((u * leg.femur.radius_1.at(loc)) ** 2 + (v * r2 - r2) ** 2) - ridge
        blend(target, inside(ridge_distance, self.pixel) * (ridge > 0.3), levels.cortex)
        marrow = np.float32(levels.marrow) * (1 + np.float32(0.05) * grain[window])
        blend(target, inside(distance + leg.cortex.at(loc), self.pixel), marrow)

    def nerve(self, windows: Windows, fraction: F32) -> None:
        """The perineural fat, the small vessels against the nerve, then both divisions."""
        window = windows.nerve
        if window is None:
            return
        leg, levels = self.leg, self.levels
        nerve = leg.nerve
        frame = self.frame(window)
        rim = nerve.rim.at(frame.loc)
        amplitude, phase = nerve.rim_shape
        shapes = []
        rim_alpha = np.zeros(rim.shape, np.float32)
        for division in nerve.divisions:
            distance, u, v = ellipse(division.tube, frame)
            rho = np.maximum(np.sqrt(u * u + v * v), np.float32(1e-6))
            cos, sin = u / rho, v / rho
            thickness = rim * (1 + np.float32(amplitude) * (cos * np.cos(phase) + sin * np.sin(phase)))
            if nerve.rim_gap is not None:  # a sector where muscle meets the nerve
                gap_angle, half_width = nerve.rim_gap
                toward = cos * np.float32(np.cos(gap_angle)) + sin * np.float32(np.sin(gap_angle))
                closed = np.clip((toward - np.cos(half_width)) / (1 - np.cos(half_width)) * 3, 0, 1)
                thickness = thickness * (1 - closed)
            rim_alpha = np.maximum(rim_alpha, inside(distance - thickness, self.pixel))
            shapes.append((distance, u, v, division))
        blend(self.image[window], rim_alpha, levels.fat * 0.97)
        for touching, vessel in zip(windows.touching, leg.touching, strict=True):
            self.tube(touching, vessel, levels.vessel(vessel.flow))
        alphas, values = [], []
        fascicle, between = np.float32(levels.fascicle), np.float32(levels.interfascicular)
        scale = np.float32((FASCICLE_TABLE - 1) / 2)
        for distance, u, v, division in shapes:
            twist = division.twist.at(frame.loc)
            cos, sin = np.cos(twist), np.sin(twist)
            iu = np.clip(np.rint((u * cos - v * sin + 1) * scale), 0, FASCICLE_TABLE - 1).astype(np.intp)
            iv = np.clip(np.rint((u * sin + v * cos + 1) * scale), 0, FASCICLE_TABLE - 1).astype(np.intp)
            values.append(between + (fascicle - between) * division.fascicles[iu, iv])
            alphas.append(inside(distance, self.pixel))
        alpha = np.maximum(alphas[0], alphas[1])
        blend(self.image[window], alpha, np.where(shapes[0][0] <= shapes[1][0], values[0], values[1]))
        fraction[window] += alpha

    def paint(self, grain: F32, fraction: F32) -> None:
        leg, levels, windows = self.leg, self.levels, self.windows
        self.pad(windows.pad)

        self.femur(windows.femur, grain)
        for window, vessel in zip(windows.vessels, leg.vessels, strict=True):
            self.tube(window, vessel, levels.vessel(vessel.flow), vessel.rim_mm)
        self.nerve(windows, fraction)


__all__ = ["Frame", "Front", "Windows", "extent", "find_windows", "muscle_signal", "paint_body"]
