"""The ground truth of a PD series: the mask on the converted grid and what the manifest says per thigh."""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from sciatic.phantom.v2.leg import Leg
from sciatic.phantom.v2.manifest import SideRecord
from sciatic.phantom.v2.paint import Body
from sciatic.phantom.v2.planes import Stack
from sciatic.phantom.v2.render import Rendered

ArrayType = TypeVar("ArrayType", bound=np.generic)


def converted_order(array: NDArray[ArrayType], stack: Stack) -> NDArray[ArrayType]:
    """A (slices, rows, columns) acquisition-order array in the converted (X, Y, Z) order."""
    return np.ascontiguousarray(array[stack.sorted_order()].transpose(2, 1, 0))


def label_volume(mask: NDArray[np.bool_], stack: Stack) -> NDArray[np.uint8]:
    """A mask as the uint8 array of the converted volume's grid."""
    return converted_order(mask, stack).astype(np.uint8)


def _to_lps(leg: Leg, row: int, lateral: float, posterior: float) -> tuple[float, float]:
    turn = float(leg.rotation.value[row])
    dx = lateral * math.cos(turn) - posterior * math.sin(turn)
    dy = lateral * math.sin(turn) + posterior * math.cos(turn)
    return float(leg.axis_x.value[row]) + leg.sign * dx, float(leg.axis_y.value[row]) + dy


def _split_in_view(body: Body, leg: Leg, stack: Stack) -> bool:
    """Whether the divisions part between the first and last slice planes, at the nerve."""
    z = leg.nerve.split_z
    row = body.grid.rows(z, z).start
    tibial, peroneal = (d.tube for d in leg.nerve.divisions)
    lateral = (float(tibial.lateral.value[row]) + float(peroneal.lateral.value[row])) / 2
    posterior = (float(tibial.posterior.value[row]) + float(peroneal.posterior.value[row])) / 2
    x, y = _to_lps(leg, row, lateral, posterior)
    n = stack.normal
    levels = []
    for k in (0, stack.slices - 1):
        p = stack.image_position(k) + (stack.columns - 1) / 2 * stack.column_spacing * np.array(stack.row_direction)
        p = p + (stack.rows - 1) / 2 * stack.row_spacing * np.array(stack.column_direction)
        levels.append(p[2] - (n[0] * (x - p[0]) + n[1] * (y - p[1])) / n[2])
    return bool(min(levels) + stack.slice_spacing <= z <= max(levels) - stack.slice_spacing)


def side_records(
    body: Body, stack: Stack, rendered: Rendered, designed: dict[str, float]
) -> tuple[list[SideRecord], NDArray[np.bool_]]:
    """Per thigh, the manifest's record; and the truth (fraction >= 0.5, either thigh) in acquisition order."""
    pixel_area = stack.row_spacing * stack.column_spacing

    affine = stack.affine()
    truth = np.zeros(rendered.signal.shape, np.bool_)
    records = []
    for leg in body.legs:
        fraction = rendered.nerve[leg.side]
        mask = fraction >= 0.5
        truth |= mask
        areas = mask.sum(axis=(1, 2)) * pixel_area
        in_view = areas > 0
        volume = label_volume(mask, stack)
        centroid = affine[:3, :3] @ np.argwhere(volume).mean(axis=0) + affine[:3, 3] if volume.any() else np.zeros(3)
        shown = _split_in_view(body, leg, stack)
        records.append(
            SideRecord(
                side=leg.side.value,
                designed_csa_mm2=round(designed[leg.side.value], 2),
                true_csa_mm2=round(float(fraction.sum(axis=(1, 2)).mean() * pixel_area), 2),
                mask_csa_mm2=round(float(areas[in_view].mean()), 2) if in_view.any() else 0.0,
                nerve_slices_in_view=int(in_view.sum()),
                split_z_mm=round(leg.nerve.split_z, 3),
                bifurcation_z_mm=round(leg.nerve.split_z, 3) if shown else None,
                perineural_fat_gap=leg.nerve.rim_gap is not None,
                centroid_ras_mm=[round(float(v), 3) for v in centroid],
            )
        )
    return records, truth
