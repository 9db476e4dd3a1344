"""Training data: subjects, orientation, montages, 2.5D stacks, crops, augmentation, datasets.

Arrays follow the geometry contract: a volume is ``(X, Y, Z)`` and slice ``k``
is ``volume[:, :, k]`` of shape ``(X, Y)``. Network inputs are tensors
``(N, C, X, Y)``: the network's "height" is X and its "width" is Y.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import Dataset

from sciatic.errors import InputRefusedError
from sciatic.imaging.montage import MontageLayout, montage, unmontage
from sciatic.imaging.normalize import normalize
from sciatic.imaging.volume import check_same_grid, read_volume
from sciatic.model.configs import AugmentConfig, ModelConfig

FloatArray: TypeAlias = npt.NDArray[np.float32]
MaskArray: TypeAlias = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class TrainingCase:
    """One labelled volume: ``(X, Y, Z)`` intensities, a 0/1 mask of the same shape, its affine."""

    volume: npt.NDArray[Any]
    mask: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    name: str = ""
    #: samples per training epoch, in multiples of the configuration's (fine-tuning weighs the new site's up)
    weight: int = 1
    #: drawn only in the epochs where ``epoch % every == phase`` (a larger replay pool, a share of it each epoch)
    every: int = 1
    phase: int = 0


Item: TypeAlias = (
    TrainingCase | tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]] | tuple[str | Path, str | Path]
)


def as_case(item: Item, name: str = "") -> TrainingCase:
    """A :class:`TrainingCase` from one, from ``(volume, mask, affine)`` arrays, or from NIfTI paths.

    Paths are ``(volume.nii.gz, mask.nii.gz)``; the mask must be on the volume's grid.
    """
    if isinstance(item, TrainingCase):
        case = item
    elif len(item) == 2:
        image, label = read_volume(item[0]), read_volume(item[1])
        try:
            check_same_grid(label.shape, label.affine, image.shape, image.affine, names=("mask", "volume"))
        except InputRefusedError as exc:
            raise ValueError(f"{item[1]}: mask affine differs from the volume's ({exc.detail})") from exc
        case = TrainingCase(image.data, label.data, image.affine, name or Path(item[0]).name)
    else:
        volume, mask, affine = item
        case = TrainingCase(np.asarray(volume), np.asarray(mask), np.asarray(affine, dtype=np.float64), name)
    if case.weight < 1:
        raise ValueError(f"case {case.name!r}: weight {case.weight} must be >= 1")
    if case.every < 1 or not 0 <= case.phase < case.every:
        raise ValueError(f"case {case.name!r}: phase {case.phase} must be in [0, every={case.every})")
    if case.volume.ndim != 3 or case.volume.shape != case.mask.shape:
        raise ValueError(
            f"case {case.name!r}: volume {case.volume.shape} and mask {case.mask.shape} must be the same 3D shape"
        )
    return case


# ---------------------------------------------------------------- in-plane orientation


@dataclass(frozen=True)
class Orientation:
    """Transpose and flips that bring a volume's in-plane axes to patient left (X) and posterior (Y).

    Exact and invertible: ``from_canonical(to_canonical(v)) == v``. Supine and
    prone, head-first and feet-first series then look alike to the network.
    """

    transpose: bool = False
    flip_x: bool = False
    flip_y: bool = False

    @classmethod
    def from_affine(cls, affine: npt.NDArray[Any]) -> Orientation:
        a = np.asarray(affine, dtype=np.float64)
        d0, d1 = a[:3, 0], a[:3, 1]  # RAS+ directions of array axes 0 and 1
        transpose = abs(d0[1]) + abs(d1[0]) > abs(d0[0]) + abs(d1[1])
        if transpose:
            d0, d1 = d1, d0
        # RAS+: -x is patient left, -y is posterior.
        return cls(transpose=bool(transpose), flip_x=bool(d0[0] > 0), flip_y=bool(d1[1] > 0))

    def to_canonical(self, volume: npt.NDArray[Any]) -> npt.NDArray[Any]:
        out = volume.transpose(1, 0, 2) if self.transpose else volume
        if self.flip_x:
            out = out[::-1]
        if self.flip_y:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def from_canonical(self, volume: npt.NDArray[Any]) -> npt.NDArray[Any]:
        out = volume
        if self.flip_y:
            out = out[:, ::-1]
        if self.flip_x:
            out = out[::-1]
        if self.transpose:
            out = out.transpose(1, 0, 2)
        return np.ascontiguousarray(out)


def orientation(config: ModelConfig, affine: npt.NDArray[Any]) -> Orientation:
    """The configuration's in-plane reorientation for a volume with ``affine`` (identity when off)."""
    return Orientation.from_affine(affine) if config.canonical_orientation else Orientation()


# ---------------------------------------------------------------- in-plane pixel size


def network_shape(
    config: ModelConfig, affine: npt.NDArray[Any], turn: Orientation, shape: tuple[int, ...]
) -> tuple[int, int]:
    """The in-plane size ``(X, Y)`` the networks see for a canonical slice of ``shape``.

    With ``config.pixel_mm`` set, each in-plane axis is scaled from the volume's
    pixel size to that one; otherwise the slice keeps its own size.
    """
    size = (int(shape[0]), int(shape[1]))
    if config.pixel_mm is None:
        return size
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :2], axis=0)
    if turn.transpose:
        spacing = spacing[::-1]
    scaled = [max(1, round(n * float(mm) / config.pixel_mm)) for n, mm in zip(size, spacing, strict=True)]
    return scaled[0], scaled[1]


def resample_slices(slices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, C, X, Y)`` resampled in-plane to ``size`` (bilinear, anti-aliased when shrinking); same when equal."""
    if tuple(slices.shape[-2:]) == size:
        return slices
    return F.interpolate(slices, size=size, mode="bilinear", align_corners=False, antialias=True)


def resample_volume(volume: npt.NDArray[Any], size: tuple[int, int]) -> FloatArray:
    """An ``(X, Y, Z)`` array resampled in-plane to ``size`` (see :func:`resample_slices`), float32."""
    slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, 2, 0), dtype=np.float32))[:, None]
    out: FloatArray = np.ascontiguousarray(np.moveaxis(resample_slices(slices, size)[:, 0].numpy(), 0, 2))
    return out


# ---------------------------------------------------------------- montages


def to_montages(volume: npt.NDArray[Any], config: ModelConfig) -> tuple[npt.NDArray[Any], MontageLayout]:
    """Montages ``(N, tile, tile * slices)`` of contiguous slices, and the layout that inverts them."""
    layout = MontageLayout.for_shape(volume.shape, tile=config.montage_tile, slices_per_montage=config.montage_slices)
    return montage(volume, layout), layout


def from_montages(montages: npt.NDArray[Any], layout: MontageLayout) -> npt.NDArray[Any]:
    """The ``(X, Y, Z)`` array on the grid of the volume that ``to_montages`` split."""
    return unmontage(montages, layout)


# ---------------------------------------------------------------- 2.5D stacks and crops


def slice_stack(volume: npt.NDArray[Any], index: int, context: int) -> FloatArray:
    """Slice ``index`` and ``context`` neighbours on each side as channels ``(2c+1, X, Y)``; edges repeat."""
    z = volume.shape[2]
    ks = np.clip(np.arange(index - context, index + context + 1), 0, z - 1)
    return np.ascontiguousarray(np.moveaxis(volume[:, :, ks], 2, 0), dtype=np.float32)


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Area down-sampling of ``(N, C, X, Y)`` by ``factor``; the end is zero-padded to a multiple."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, [0, -w % factor, 0, -h % factor])
    return F.avg_pool2d(x, factor)


def crop(x: torch.Tensor, cx: int, cy: int, size: int) -> torch.Tensor:
    """The ``size`` x ``size`` window of ``(..., X, Y)`` starting at ``(cx - size//2, cy - size//2)``; zeros outside."""
    h, w = x.shape[-2:]
    x0, y0 = cx - size // 2, cy - size // 2
    pad = [max(0, -y0), max(0, y0 + size - w), max(0, -x0), max(0, x0 + size - h)]
    if any(pad):
        x = F.pad(x, pad)
    x0, y0 = x0 + pad[2], y0 + pad[0]
    return x[..., x0 : x0 + size, y0 : y0 + size]


def paste(target: torch.Tensor, window: torch.Tensor, cx: int, cy: int) -> None:
    """Put ``window`` (``size`` x ``size``) into ``target`` ``(X, Y)`` where ``crop`` took it; clipped at edges.

    Where the target already holds values (an overlapping crop), the larger wins.
    """
    size = window.shape[-1]
    h, w = target.shape[-2:]
    x0, y0 = cx - size // 2, cy - size // 2
    a0, a1 = max(0, x0), min(h, x0 + size)
    b0, b1 = max(0, y0), min(w, y0 + size)
    if a0 < a1 and b0 < b1:
        region = target[..., a0:a1, b0:b1]
        torch.maximum(region, window[..., a0 - x0 : a1 - x0, b0 - y0 : b1 - y0], out=region)


def piece_centre(mask: npt.NDArray[Any], rng: np.random.Generator) -> tuple[float, float] | None:
    """Centre of mass of one 8-connected piece of a 2D mask, drawn at random; None when it is empty.

    A slice may hold several nerves (two legs) or branches: each gets its turn as a crop centre.
    """
    labels, count = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3), bool))
    if count == 0:
        return None
    idx = np.nonzero(labels == int(rng.integers(1, count + 1)))
    return float(idx[0].mean()), float(idx[1].mean())


# ---------------------------------------------------------------- augmentation


def random_spatial(
    image: torch.Tensor, mask: torch.Tensor, aug: AugmentConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip, rotation and zoom about the centre for ``(C, X, Y)`` image and ``(1, X, Y)`` mask."""
    angle = math.radians(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
    zoom = rng.uniform(1.0 - aug.scale, 1.0 + aug.scale)
    flip_x = -1.0 if rng.random() < aug.flip_x else 1.0
    flip_y = -1.0 if rng.random() < aug.flip_y else 1.0
    h, w = image.shape[-2:]
    # Rotation in pixel units, expressed in grid_sample's normalised coordinates
    # (grid[..., 0] runs along Y, the last axis; grid[..., 1] along X).
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor(
        [
            [cos * flip_y, -sin * h / w * flip_x, 0.0],
            [sin * w / h * flip_y, cos * flip_x, 0.0],
        ],
        dtype=torch.float32,
    )
    both = torch.cat([image, mask.to(image.dtype)], dim=0)[None]
    grid = F.affine_grid(theta[None], list(both.shape), align_corners=False)
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return out[:-1], (out[-1:] > 0.5).to(mask.dtype)


def random_intensity(image: torch.Tensor, aug: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Gamma, contrast, a smooth multiplicative bias field and Gaussian noise on ``(C, X, Y)``."""
    h, w = image.shape[-2:]
    x = image.clamp(min=0.0) ** math.exp(rng.uniform(-aug.gamma, aug.gamma))
    x = x * rng.uniform(1.0 - aug.contrast, 1.0 + aug.contrast)
    if aug.bias > 0:
        coarse = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(1, 1, 3, 3)).astype(np.float32))
        field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0]
        x = x * torch.exp(aug.bias * field.clamp(-1.0, 1.0))
    if aug.noise_std > 0:
        noise = rng.normal(0.0, rng.uniform(0.0, aug.noise_std), size=image.shape).astype(np.float32)
        x = x + torch.from_numpy(noise)
    return x


def augment(
    image: torch.Tensor, mask: torch.Tensor, aug: AugmentConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial then intensity transforms, each with its probability; a no-op when disabled."""
    if not aug.enabled:
        return image, mask
    if rng.random() < aug.p_spatial:
        image, mask = random_spatial(image, mask, aug, rng)
    if rng.random() < aug.p_intensity:
        image = random_intensity(image, aug, rng)
    return image, mask


# ---------------------------------------------------------------- datasets


def _prepared(subjects: Sequence[TrainingCase], config: ModelConfig) -> list[tuple[FloatArray, MaskArray]]:
    """Normalised volumes and 0/1 masks, in the configuration's in-plane orientation and pixel size."""
    out = []
    for s in subjects:
        turn = orientation(config, s.affine)
        volume = turn.to_canonical(normalize(s.volume))
        mask = turn.to_canonical((np.asarray(s.mask) > 0).astype(np.uint8))
        size = network_shape(config, s.affine, turn, volume.shape)
        if size != volume.shape[:2]:
            volume = resample_volume(volume, size)
            mask = (resample_volume(mask, size) >= 0.5).astype(np.uint8)
        out.append((volume, mask))
    return out


class EpochDataset(Dataset[dict[str, torch.Tensor]]):
    """Base of the training datasets: a deterministic plan of samples per epoch.

    Every sample draws its random transforms from a generator seeded by
    ``(seed, epoch, index)``, so that results do not depend on worker count
    or order of access.
    """

    def __init__(self, subjects: Sequence[TrainingCase], config: ModelConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.epoch = 0
        self.plan: list[tuple[int, int]] = []
        self.weights = [s.weight for s in subjects]
        self.rotation = [(s.every, s.phase) for s in subjects]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.plan = self.make_plan(np.random.default_rng([self.seed, epoch, 0]))

    def draws(self, s: int) -> int:
        """How many times subject ``s`` is drawn in the current epoch (its weight, or 0 outside its epochs)."""
        every, phase = self.rotation[s]
        return self.weights[s] if self.epoch % every == phase else 0

    def make_plan(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.plan)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, 1, index])


class CascadeDataset(EpochDataset):
    """2.5D slices: a down-sampled whole slice for the localiser and a crop near the nerve for the segmenter."""

    def __init__(self, subjects: Sequence[TrainingCase], config: ModelConfig, seed: int) -> None:
        super().__init__(subjects, config, seed)
        self.data = _prepared(subjects, config)
        self.set_epoch(0)

    def make_plan(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        plan: list[tuple[int, int]] = []
        n = self.config.samples_per_subject
        for s, (volume, _) in enumerate(self.data):
            z = volume.shape[2]
            for _ in range(self.draws(s)):  # a case of weight w: w independent draws of its slices
                ks = rng.permutation(z)[:n] if 0 < n < z else np.arange(z)
                plan.extend((s, int(k)) for k in ks)
        order = rng.permutation(len(plan))
        return [plan[i] for i in order]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        s, k = self.plan[index]
        volume, mask = self.data[s]
        rng = self.rng(index)
        image = torch.from_numpy(slice_stack(volume, k, cfg.context))
        target = torch.from_numpy(mask[None, :, :, k].astype(np.float32))
        image, target = augment(image, target, cfg.augment, rng)
        loc_image = downsample(image[None], cfg.localizer_factor)[0]
        loc_target = downsample(target[None], cfg.localizer_factor)[0]
        centre = piece_centre(target[0].numpy(), rng)
        h, w = image.shape[-2:]
        if centre is None or rng.random() < cfg.p_random_crop:
            cx, cy = int(rng.integers(0, h)), int(rng.integers(0, w))
        else:
            j = cfg.crop_jitter
            cx = round(centre[0]) + int(rng.integers(-j, j + 1))
            cy = round(centre[1]) + int(rng.integers(-j, j + 1))
        return {
            "loc_image": loc_image,
            "loc_target": loc_target,
            "image": crop(image, cx, cy, cfg.crop_size),
            "target": crop(target, cx, cy, cfg.crop_size),
        }


class MontageDataset(EpochDataset):
    """Montages of contiguous slices (the seed's input); augmentation is applied to the volume's slices."""

    def __init__(self, subjects: Sequence[TrainingCase], config: ModelConfig, seed: int) -> None:
        super().__init__(subjects, config, seed)
        self.data = _prepared(subjects, config)
        self.cache: dict[int, tuple[npt.NDArray[Any], npt.NDArray[Any]]] = {}
        self.counts = [self._montages(s, None)[0].shape[0] for s in range(len(self.data))]
        self.set_epoch(0)

    def _montages(self, s: int, rng: np.random.Generator | None) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        volume, mask = self.data[s]
        if rng is None or not self.config.augment.enabled:
            if s not in self.cache:
                self.cache[s] = (to_montages(volume, self.config)[0], to_montages(mask, self.config)[0])
            return self.cache[s]
        # One transform for all slices of the volume (the montage keeps their relation).
        image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, 2, 0)))
        target = torch.from_numpy(np.ascontiguousarray(np.moveaxis(mask, 2, 0)).astype(np.float32))
        image, target = augment(image, target, self.config.augment, rng)
        vol_aug = np.moveaxis(image.numpy(), 0, 2)
        mask_aug = (np.moveaxis(target.numpy(), 0, 2) > 0.5).astype(np.uint8)
        return to_montages(vol_aug, self.config)[0], to_montages(mask_aug, self.config)[0]

    def make_plan(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        plan = [(s, m) for s, n in enumerate(self.counts) for _ in range(self.draws(s)) for m in range(n)]
        order = rng.permutation(len(plan))
        return [plan[i] for i in order]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s, m = self.plan[index]
        images, targets = self._montages(s, self.rng(index))
        return {
            "image": torch.from_numpy(np.asarray(images[m], dtype=np.float32))[None],
            "target": torch.from_numpy(np.asarray(targets[m], dtype=np.float32))[None],
        }


def pad_collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack samples, zero-padding each key's tensors to the largest height and width in the batch."""
    out: dict[str, torch.Tensor] = {}
    for key in batch[0]:
        tensors = [b[key] for b in batch]
        h = max(t.shape[-2] for t in tensors)
        w = max(t.shape[-1] for t in tensors)
        out[key] = torch.stack([F.pad(t, [0, w - t.shape[-1], 0, h - t.shape[-2]]) for t in tensors])
    return out


def make_dataset(subjects: Sequence[TrainingCase], config: ModelConfig, seed: int) -> EpochDataset:
    """The training dataset for a configuration's input mode."""
    if config.mode == "cascade":
        return CascadeDataset(subjects, config, seed)
    return MontageDataset(subjects, config, seed)
