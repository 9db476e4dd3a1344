"""Where each series of a v2 study lies: field of view, matrix, slices, orientation."""

from __future__ import annotations

import math

import numpy as np

from sciatic.phantom.acquisition import PhaseEncoding
from sciatic.phantom.geometry import PatientPosition
from sciatic.phantom.v2.paint import Body
from sciatic.phantom.v2.plan import FieldOfView, SubjectPlanV2
from sciatic.phantom.v2.planes import Orientation, Stack, directions
from sciatic.phantom.v2.sites import DEFAULT_SITE, SiteProfile

SLICES_2D, SLICES_3D = DEFAULT_SITE.slices_2d, DEFAULT_SITE.slices_3d
THICKNESS_2D_MM = DEFAULT_SITE.thickness_2d_mm


def _ceil16(value: float) -> int:
    return math.ceil(value / 16.0) * 16


def xy_extent(body: Body, z_low: float, z_high: float) -> tuple[float, float, float, float]:
    """LPS (x0, x1, y0, y1) that holds every thigh between ``z_low`` and ``z_high``."""
    rows = body.grid.rows(z_low, z_high)
    boxes = []
    for leg in body.legs:
        x0, x1 = leg.axis_x.bounds(rows)
        y0, y1 = leg.axis_y.bounds(rows)
        lateral = leg.radius_lateral.bounds(rows)[1] * 1.1
        boxes.append(
            (
                x0 - lateral,
                x1 + lateral,
                y0 - leg.radius_anterior.bounds(rows)[1] * 1.1,
                y1 + leg.radius_posterior.bounds(rows)[1] * 1.1,
            )
        )
    return min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes)


def _obliquity(rng: np.random.Generator, spread: float) -> tuple[float, float, float]:
    tilt = np.clip(rng.normal(0.0, spread, 3), -2.5 * spread, 2.5 * spread)
    return float(tilt[0]), float(tilt[1]), float(tilt[2])


def pd_stack(
    rng: np.random.Generator,
    plan: SubjectPlanV2,
    body: Body,
    position: PatientPosition,
    slab: tuple[float, int, float, float],
    site: SiteProfile = DEFAULT_SITE,
) -> tuple[Stack, PhaseEncoding]:
    """The PD axial stack: one thigh at 0.6-0.8 mm, or both at 0.85-1.1 mm (rectangular field of view);
    the pixel ranges are the ``site``'s."""
    z_centre, slices, spacing, thickness = slab
    half = (slices - 1) * spacing / 2 + 20
    x0, x1, y0, y1 = xy_extent(body, z_centre - half, z_centre + half)
    r, c = directions(Orientation.AXIAL, position, _obliquity(rng, 2.5))
    if plan.field_of_view is FieldOfView.UNILATERAL:
        pixel = round(float(rng.uniform(*site.unilateral_pixel_mm)), 4)
        side = max(x1 - x0, y1 - y0) + rng.uniform(15, 35)
        rows = columns = _ceil16(side / pixel)
        phase = PhaseEncoding.ROW if rng.uniform() < 0.5 else PhaseEncoding.COL
    else:
        pixel = round(float(rng.uniform(*site.bilateral_pixel_mm)), 4)
        columns = _ceil16((x1 - x0 + rng.uniform(20, 45)) / pixel)
        rows = _ceil16((y1 - y0 + rng.uniform(20, 45)) / pixel)
        phase = PhaseEncoding.COL
    centre = ((x0 + x1) / 2 + rng.uniform(-5, 5), (y0 + y1) / 2 + rng.uniform(-5, 5), z_centre)
    stack = Stack(rows, columns, slices, pixel, pixel, spacing, thickness, r, c, centre, bool(rng.uniform() < 0.5))
    return stack, phase


def slab(
    rng: np.random.Generator, plan: SubjectPlanV2, slices: int | None, site: SiteProfile = DEFAULT_SITE
) -> tuple[int, float, float]:
    """PD slices, spacing and thickness (mm), within the ``site``'s ranges."""
    if plan.three_d:
        thickness = round(float(rng.uniform(*site.thickness_3d_mm)), 2)
        return slices or int(rng.integers(site.slices_3d[0], site.slices_3d[1] + 1)), thickness, thickness
    thickness = float(rng.choice(site.thickness_2d_mm))
    spacing = round(thickness * float(rng.choice([1.0, 1.1, 1.2])), 2)
    return slices or int(rng.integers(site.slices_2d[0], site.slices_2d[1] + 1)), spacing, thickness


def t1_stack(rng: np.random.Generator, body: Body, position: PatientPosition, pd: Stack) -> Stack:
    """Coronal T1 from knee to hip, through the femur and the nerve."""
    leg = body.legs[0]
    z_low, z_high = leg.z_knee - 10, leg.z_knee + leg.length + 10
    x0, x1, _, _ = xy_extent(body, z_low, z_high)
    pixel = round(float(rng.uniform(1.25, 1.45)), 4)
    columns = min(384, _ceil16((x1 - x0 + rng.uniform(30, 60)) / pixel))
    rows = min(384, _ceil16((z_high - z_low) / pixel))
    r, c = directions(Orientation.CORONAL, position, _obliquity(rng, 1.5))
    y = float(np.mean([leg.axis_y.value[body.grid.rows(pd.centre[2], pd.centre[2]).start] for leg in body.legs]))
    centre = ((x0 + x1) / 2, y + rng.uniform(0, 10), (z_low + z_high) / 2)
    slices = int(rng.integers(13, 18))
    return Stack(rows, columns, slices, pixel, pixel, 4.4, 4.0, r, c, centre, bool(rng.uniform() < 0.5))


def localizer_stacks(rng: np.random.Generator, body: Body, position: PatientPosition, pd: Stack) -> list[Stack]:
    """Three slices in each plane: sagittal through a thigh, coronal through the femurs, axial at the slab."""
    row = body.grid.rows(pd.centre[2], pd.centre[2]).start
    leg = body.legs[0]
    x, y = float(leg.axis_x.value[row]), float(leg.axis_y.value[row])
    mid = leg.z_knee + leg.length / 2
    pixel = round(float(rng.uniform(1.7, 1.9)), 4)
    plan = [
        (Orientation.SAGITTAL, (x, y, mid), 20.0),
        (Orientation.CORONAL, (pd.centre[0], y, mid), 20.0),
        (Orientation.AXIAL, pd.centre, 30.0),
    ]
    stacks = []
    for orientation, centre, spacing in plan:
        r, c = directions(orientation, position, (0.0, 0.0, 0.0))
        stacks.append(Stack(256, 256, 3, pixel, pixel, spacing, 8.0, r, c, centre, True))
    return stacks
