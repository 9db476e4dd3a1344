"""Named model configurations as frozen dataclasses.

A configuration fully describes a model: the network(s), how a volume is fed
to them, the loss, the optimiser and the augmentation. Trainers and inference
read every hyper-parameter from here; a checkpoint stores the configuration as
a plain dict (``config_to_dict``) and rebuilds it with ``config_from_dict``.

Two configurations are named:

``seed``
    The method of the seed abstract: one 2D U-Net (width 64, depth 4, no
    normalisation layers, transposed-convolution up-sampling) on montages of
    5 contiguous slices (256x1280), plain per-pixel BCE, SGD lr 1e-4 momentum
    0.99, no augmentation, fp32, batch 1.
``cascade``
    The production default: a small 2.5D localiser U-Net on 4x down-sampled
    slices finds the nerve, then a small 2.5D U-Net segments a full-resolution
    crop around it on every slice. Dice+BCE, AdamW, BatchNorm, augmentation,
    AMP on CUDA.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

NormKind = Literal["batch", "group", "instance", "none"]
InputMode = Literal["montage", "cascade"]
LossKind = Literal["bce", "dice_bce"]
OptimizerKind = Literal["sgd", "adamw"]
ScheduleKind = Literal["constant", "cosine"]
#: What runs the U-Net on the CPU (``sciatic.model.onnx_cpu``, or PyTorch in channels_last order).
CpuRuntime = Literal["onnxruntime", "torch"]


@dataclass(frozen=True)
class UNetConfig:
    """One 2D U-Net: ``depth`` down-samplings, ``width`` channels at full resolution."""

    in_channels: int = 1
    out_channels: int = 1
    width: int = 64
    depth: int = 4
    norm: NormKind = "batch"
    groups: int = 8  # GroupNorm groups (when norm == "group")
    bilinear: bool = False  # bilinear up-sampling + 1x1 conv instead of transposed conv

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 1 or self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(f"invalid U-Net size: {self}")
        if self.norm == "group" and self.width % self.groups:
            raise ValueError(f"width {self.width} is not divisible by {self.groups} groups")


@dataclass(frozen=True)
class AugmentConfig:
    """Random training transforms; each is applied with its own probability."""

    enabled: bool = True
    flip_x: float = 0.5  # mirror columns (left/right thigh)
    flip_y: float = 0.0  # mirror rows (anterior/posterior): off, anatomy is not symmetric
    rotate_deg: float = 10.0  # uniform in [-rotate_deg, rotate_deg]
    scale: float = 0.1  # isotropic zoom uniform in [1 - scale, 1 + scale]
    p_spatial: float = 0.8
    gamma: float = 0.3  # intensity ** exp(uniform(-gamma, gamma))
    contrast: float = 0.15  # multiplicative, uniform in [1 - contrast, 1 + contrast]
    bias: float = 0.3  # smooth multiplicative field, peak amplitude
    noise_std: float = 0.05  # Gaussian noise, max std (on normalised intensities)
    p_intensity: float = 0.8


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model and how it is trained and applied."""

    name: str
    mode: InputMode
    net: UNetConfig  # montage mode: the U-Net; cascade mode: the fine segmenter
    localizer: UNetConfig | None = None  # cascade mode only
    canonical_orientation: bool = True  # flip/transpose slices to a fixed patient orientation
    # montage mode
    montage_slices: int = 5
    montage_tile: int = 256  # each slice is centred (shrunk when larger) in a tile x tile square
    # cascade mode
    context: int = 1  # neighbouring slices on each side given as channels (2.5D)
    localizer_factor: int = 4  # in-plane down-sampling of the localiser input
    crop_size: int = 64  # fine crop, pixels at full resolution (a multiple of 2**net.depth)
    #: in-plane pixel size (mm) both networks see: slices are resampled to it and the
    #: probabilities back to the volume's grid; None keeps each volume's own pixels
    pixel_mm: float | None = None
    crop_jitter: int = 8  # training: max offset of the crop centre from the nerve, pixels
    p_random_crop: float = 0.1  # training: crops centred anywhere (teaches "no nerve here")
    # loss and optimisation
    loss: LossKind = "dice_bce"
    optimizer: OptimizerKind = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    schedule: ScheduleKind = "cosine"
    batch_size: int = 16
    samples_per_subject: int = 0  # training samples drawn per subject per epoch; 0 = all
    patience: int = 0  # early stopping: epochs without validation improvement; 0 = never stop
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # inference
    threshold: float = 0.5
    amp: bool = True  # CUDA only: autocast fp16 + GradScaler
    infer_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.mode == "cascade":
            if self.localizer is None:
                raise ValueError("a cascade configuration needs a localizer")
            channels = 2 * self.context + 1
            if self.net.in_channels != channels or self.localizer.in_channels != channels:
                raise ValueError(f"context {self.context} needs {channels} input channels")
            if self.crop_size % (2**self.net.depth):
                raise ValueError(f"crop_size {self.crop_size} is not a multiple of 2**{self.net.depth}")
            if self.pixel_mm is not None and not 0.05 <= self.pixel_mm <= 10:
                raise ValueError(f"pixel_mm {self.pixel_mm} is not a plausible in-plane pixel size")
        else:
            if self.net.in_channels != 1:
                raise ValueError("montage mode takes one input channel")
            if self.pixel_mm is not None:
                raise ValueError("pixel_mm applies to the cascade only (the seed's montages keep their pixels)")
        if self.net.out_channels != 1:
            raise ValueError("the nerve is one foreground class: out_channels must be 1")


SEED = ModelConfig(
    name="seed",
    mode="montage",
    net=UNetConfig(in_channels=1, width=64, depth=4, norm="none", bilinear=False),
    canonical_orientation=False,
    montage_slices=5,
    loss="bce",
    optimizer="sgd",
    lr=1e-4,
    momentum=0.99,
    weight_decay=0.0,
    schedule="constant",
    batch_size=1,
    augment=AugmentConfig(enabled=False),
    amp=False,
    infer_batch_size=1,
)

CASCADE = ModelConfig(
    name="cascade",
    mode="cascade",
    net=UNetConfig(in_channels=3, width=16, depth=3, norm="batch", bilinear=True),
    localizer=UNetConfig(in_channels=3, width=8, depth=3, norm="batch", bilinear=True),
    context=1,
    localizer_factor=4,
    crop_size=96,
    pixel_mm=0.7,
    crop_jitter=12,
    loss="dice_bce",
    optimizer="adamw",
    lr=3e-3,
    weight_decay=1e-4,
    schedule="cosine",
    batch_size=16,
    samples_per_subject=12,
    patience=0,
    amp=True,
    infer_batch_size=64,
)

CONFIGS: dict[str, ModelConfig] = {c.name: c for c in (SEED, CASCADE)}
DEFAULT_CONFIG = "cascade"


def get_config(name: str = DEFAULT_CONFIG, **overrides: Any) -> ModelConfig:
    """The named configuration, with top-level fields replaced by ``overrides``."""
    try:
        base = CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown model configuration {name!r}; known: {sorted(CONFIGS)}") from None
    return dataclasses.replace(base, **overrides) if overrides else base


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """A plain dict (str, int, float, bool, None, nested dicts) for checkpoints and the database."""
    return dataclasses.asdict(config)


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a configuration written by ``config_to_dict``; unknown keys are an error."""
    values = dict(data)
    values["net"] = UNetConfig(**values["net"])
    if values.get("localizer") is not None:
        values["localizer"] = UNetConfig(**values["localizer"])
    if "augment" in values:
        values["augment"] = AugmentConfig(**values["augment"])
    return ModelConfig(**values)
