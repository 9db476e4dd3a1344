"""Rasterise an :class:`Anatomy` on a series' pixel grid (noise-free PD and nerve mask).

Edges are anti-aliased from approximate signed distances, so tissue boundaries show
partial-volume mixing; the nerve mask is the set of pixels whose centre lies inside
the nerve's ellipse.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sciatic.phantom.anatomy import TEXTURE_SIZE, Anatomy, Track
from sciatic.phantom.geometry import SeriesGeometry

Array = NDArray[np.float64]
Window = tuple[slice, slice]


def render(anatomy: Anatomy, geometry: SeriesGeometry) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Return the noise-free image and the nerve mask, both shaped (slices, rows, columns).

    Slices are in acquisition order; rows and columns are DICOM pixel order.
    """
    left, posterior, w = geometry.body_coordinates()
    lateral = anatomy.lateral_sign * left
    pixel = (geometry.row_spacing + geometry.column_spacing) / 2
    image = np.empty((geometry.slices, geometry.rows, geometry.columns), np.float32)
    mask = np.zeros(image.shape, np.bool_)
    for k in range(geometry.slices):
        image[k] = _SliceDrawer(anatomy, k, float(w[k]), lateral, posterior, pixel).draw(mask[k])
    return image, mask


class _SliceDrawer:
    """Paints one slice, structure by structure, back to front."""

    def __init__(self, anatomy: Anatomy, k: int, w: float, lateral: Array, posterior: Array, pixel: float) -> None:
        self.an, self.k, self.pixel = anatomy, k, pixel
        self.lateral, self.posterior = lateral, posterior
        phase = w / 12.0
        self.texture = (np.cos(phase) * anatomy.textures[0] + np.sin(phase) * anatomy.textures[1]).astype(np.float32)
        self.image = np.zeros((posterior.size, lateral.size), np.float32)

    def inside(self, distance: NDArray[np.floating]) -> NDArray[np.float32]:
        """Fraction of a pixel inside a region, from the signed distance (mm, negative inside)."""
        return np.asarray(np.clip(0.5 - distance / self.pixel, 0.0, 1.0), np.float32)

    def blend(self, window: Window | None, alpha: NDArray[np.float32], value: NDArray[np.floating] | float) -> None:
        target = self.image if window is None else self.image[window]
        target += alpha * (np.asarray(value, np.float32) - target)

    def draw(self, mask: NDArray[np.bool_]) -> NDArray[np.float32]:
        """Draw the slice into a new image; set the nerve's pixels in ``mask``."""
        an = self.an
        muscle_depth = self._body()
        self.blend(None, self.inside(-muscle_depth), self._muscles())
        self._femur()
        for track, level, rim in an.vessels:
            self._tube(track, level, rim)
        nerve = self._ellipse(an.nerve, an.nerve_rim_mm + 2 * self.pixel)
        if nerve is not None:
            window, distance, u, v = nerve
            self.blend(window, self.inside(distance - an.nerve_rim_mm), an.levels["fat"] * 0.97)
        if an.contact_vessel is not None:
            self._tube(an.contact_vessel[0], an.contact_vessel[1], 0.0)
        if nerve is not None:
            window, distance, u, v = nerve
            iu = np.clip(np.rint((u + 1) * (TEXTURE_SIZE - 1) / 2), 0, TEXTURE_SIZE - 1).astype(np.intp)
            iv = np.clip(np.rint((v + 1) * (TEXTURE_SIZE - 1) / 2), 0, TEXTURE_SIZE - 1).astype(np.intp)
            fascicle, interfascicular = (np.float32(value) for value in an.nerve_levels)
            texture = interfascicular + (fascicle - interfascicular) * an.fascicles[iu, iv]
            self.blend(window, self.inside(distance), texture)
            mask[window] = distance <= 0
        return self.image

    def _body(self) -> NDArray[np.float32]:
        """Skin and subcutaneous fat; returns the depth (mm) below the fascia lata."""
        an, k = self.an, self.k
        thigh = an.thigh
        dl = ((self.lateral - thigh.lateral[k]) / thigh.radius_1[k]).astype(np.float32)[None, :]
        dp = ((self.posterior - thigh.posterior[k]) / thigh.radius_2[k]).astype(np.float32)[:, None]
        theta = np.arctan2(dp, dl)
        lobes = np.ones_like(theta)
        for m, amplitude, phase in an.thigh_harmonics:
            lobes += np.float32(amplitude) * np.cos(np.float32(m) * theta + np.float32(phase))
        scale = np.float32(np.sqrt(thigh.radius_1[k] * thigh.radius_2[k])) * lobes
        depth = (1 - np.hypot(dl, dp) / lobes) * scale
        amplitude, phase = an.fat_harmonic
        fat = an.fat_mm[k] * (1 + amplitude * np.cos(theta - phase))
        self.image = an.levels["skin"] * self.inside(-depth)
        self.blend(None, self.inside(an.skin_mm - depth), an.levels["fat"])
        return np.asarray(depth - an.skin_mm - fat, np.float32)

    def _muscles(self) -> NDArray[np.float32]:
        """Muscle groups (weighted Voronoi cells on a warped grid) with fat in the planes between."""
        an, k = self.an, self.k
        lat = self.lateral.astype(np.float32)[None, :] + an.warp[0]
        post = self.posterior.astype(np.float32)[:, None] + an.warp[1]
        seeds = an.muscle_seeds[k].astype(np.float32)
        # Two smallest weighted distances, seed by seed (cheaper than sorting a (K, rows, cols) stack).
        d1 = np.full(lat.shape, np.inf, np.float32)
        d2 = np.full(lat.shape, np.inf, np.float32)
        nearest = np.zeros(lat.shape, np.intp)
        for index, ((seed_lat, seed_post), weight) in enumerate(zip(seeds, an.muscle_weights, strict=True)):
            distance = ((lat - seed_lat) ** 2 + (post - seed_post) ** 2) * np.float32(1 / weight**2)
            closer = distance < d1
            d2 = np.where(closer, d1, np.minimum(d2, distance))
            d1 = np.where(closer, distance, d1)
            nearest[closer] = index
        weights = an.muscle_weights.astype(np.float32)
        half_gap = (np.sqrt(d2) - np.sqrt(d1)) * weights[nearest] / 2
        fat = np.float32(an.levels["fat"])
        level = an.muscle_levels.astype(np.float32)[nearest] * (1 + np.float32(0.04) * self.texture)
        streak = np.clip((self.texture - np.float32(an.streak_threshold)) / np.float32(0.4), 0, 1) * np.float32(0.7)
        level += streak * (fat - level)
        plane = self.inside(half_gap - an.plane_mm / 2) * np.float32(an.plane_strength)
        level += plane * (fat - level)
        return np.asarray(level, np.float32)

    def _femur(self) -> None:
        an = self.an
        found = self._ellipse(an.femur, 2 * self.pixel)
        if found is None:
            return
        window, distance, _, _ = found
        self.blend(window, self.inside(distance), an.levels["cortex"])
        ridge = Track(
            an.femur.lateral,
            an.femur.posterior + an.femur.radius_2 * 0.95,
            np.full_like(an.femur.radius_1, 4.0),
            np.full_like(an.femur.radius_1, 3.0),
            an.femur.angle * 0,
        )
        found_ridge = self._ellipse(ridge, 2 * self.pixel)
        if found_ridge is not None:
            self.blend(found_ridge[0], self.inside(found_ridge[1]), an.levels["cortex"])
        marrow = an.levels["marrow"] * (1 + np.float32(0.05) * self.texture[window])
        self.blend(window, self.inside(distance + an.cortex_mm), marrow)

    def _tube(self, track: Track, level: float, rim: float) -> None:
        found = self._ellipse(track, rim + 2 * self.pixel)
        if found is None:
            return
        window, distance, _, _ = found
        if rim > 0:
            self.blend(window, self.inside(distance - rim), self.an.levels["fat"])
        self.blend(window, self.inside(distance), level)

    def _ellipse(self, track: Track, margin: float) -> tuple[Window, Array, Array, Array] | None:
        """Signed distance (mm) and normalised coordinates of an ellipse within its bounding window."""
        k = self.k
        r1, r2, angle = float(track.radius_1[k]), float(track.radius_2[k]), float(track.angle[k])
        cl, cp = float(track.lateral[k]), float(track.posterior[k])
        reach = max(r1, r2) + margin
        cols = np.flatnonzero(np.abs(self.lateral - cl) <= reach)
        rows = np.flatnonzero(np.abs(self.posterior - cp) <= reach)
        if cols.size == 0 or rows.size == 0:
            return None
        window = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        dl = self.lateral[window[1]][None, :] - cl
        dp = self.posterior[window[0]][:, None] - cp
        cos, sin = np.cos(angle), np.sin(angle)
        u = (dl * cos + dp * sin) / r1
        v = (-dl * sin + dp * cos) / r2
        f2 = u**2 + v**2
        gradient = np.sqrt(((u / r1) ** 2 + (v / r2) ** 2) / np.maximum(f2, 1e-12))
        gradient = np.clip(gradient, 1 / max(r1, r2), 1 / min(r1, r2))
        return window, (np.sqrt(f2) - 1) / gradient, u, v
