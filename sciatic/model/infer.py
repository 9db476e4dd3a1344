"""Inference: a checkpoint and a volume in, a 0/1 mask of the volume's exact shape out.

``load_model`` verifies the checkpoint's sha256 and builds the network;
``segment_volume`` runs it in batches (halving the batch on CUDA
out-of-memory), maps the result back to the volume's ``(X, Y, Z)`` grid and
optionally drops stray specks (every substantial component stays: one or
two legs, one or two branches each). The caller writes the
mask with the volume's own affine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage
from torch import nn

from sciatic.imaging.normalize import normalize
from sciatic.model.checkpoint import checkpoint_config, load_checkpoint
from sciatic.model.configs import CpuRuntime, ModelConfig
from sciatic.model.data import (
    crop,
    downsample,
    from_montages,
    network_shape,
    orientation,
    paste,
    resample_volume,
    to_montages,
)
from sciatic.model.onnx_cpu import OnnxRuntime
from sciatic.model.unet import Cascade, build_model


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class ModelBundle:
    """A network ready for inference with the configuration and provenance it was loaded with."""

    model: nn.Module
    config: ModelConfig
    device: torch.device
    sha256: str | None = None
    path: Path | None = None
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    sciatic_version: str = ""
    load_seconds: float = 0.0
    #: weights and inputs in NHWC order (``torch.channels_last``): on the CPU the convolutions run
    #: about 1.8x faster so, with probabilities equal to about 1e-5 (docs/benchmarks.md)
    channels_last: bool = False
    #: on the CPU, ONNX Runtime runs the networks (``sciatic.model.onnx_cpu``); None: PyTorch does
    onnx: OnnxRuntime | None = None


@dataclass(frozen=True)
class SegmentationResult:
    """A predicted mask (uint8 0/1, the source volume's shape) and how it was made."""

    mask: npt.NDArray[np.uint8]
    device: str
    batch_size: int  # the batch size finally used (after any out-of-memory halving)
    load_seconds: float  # loading the model (from the bundle)
    inference_seconds: float  # normalisation, network(s), unmontage / paste, clean-up
    uncertainty: float = 0.0  # of the whole volume, 0 (sure) to 1 (a coin toss): see uncertainty()
    slice_uncertainty: tuple[float | None, ...] = ()  # per slice; None where the network saw nothing


def load_model(
    path: str | Path,
    expected_sha256: str | None,
    device: str | torch.device = "auto",
    cpu_runtime: CpuRuntime = "onnxruntime",
) -> ModelBundle:
    """Verify and load a checkpoint into an eval-mode network on ``device``.

    On the CPU, ``cpu_runtime`` runs the networks: ONNX Runtime (default) or
    PyTorch in channels_last order. Raises ``ModelIntegrityError`` when the
    sha256 does not match (``expected_sha256=None`` skips the check: for ad-hoc use only).
    """
    start = time.perf_counter()
    target = resolve_device(device)
    state = load_checkpoint(path, expected_sha256, map_location="cpu")
    config = checkpoint_config(state)
    model = build_model(config)
    model.load_state_dict(state["model"])
    model.to(target).eval()
    channels_last = target.type == "cpu"
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # accepted, not in the stubs
    return ModelBundle(
        model=model,
        config=config,
        device=target,
        sha256=state["sha256"],
        path=Path(path),
        epoch=int(state["epoch"]),
        metrics=dict(state["metrics"]),
        sciatic_version=str(state["sciatic_version"]),
        load_seconds=time.perf_counter() - start,
        channels_last=channels_last,
        onnx=OnnxRuntime() if target.type == "cpu" and cpu_runtime == "onnxruntime" else None,
    )


_loaded: dict[tuple[str, str, str], ModelBundle] = {}


def cached_model(
    path: str | Path, sha256: str, device: str | torch.device = "auto", cpu_runtime: CpuRuntime = "onnxruntime"
) -> ModelBundle:
    """:func:`load_model`, once per process for each checkpoint (by sha256), device and CPU runtime."""
    key = (sha256, str(device), cpu_runtime)
    if key not in _loaded:
        _loaded[key] = load_model(path, sha256, device, cpu_runtime)
    return _loaded[key]


class BatchRunner:
    """Runs a network over ``(N, C, H, W)`` in batches; on CUDA out-of-memory halves the batch and retries.

    ``batch_size`` keeps the reduced value for later calls, so that a volume's
    second stage does not hit the same limit again.
    """

    def __init__(
        self,
        device: torch.device,
        batch_size: int,
        amp: bool,
        channels_last: bool = False,
        onnx: OnnxRuntime | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.device = device
        self.batch_size = batch_size
        self.amp = amp and device.type == "cuda"
        self.channels_last = channels_last  # the network's weights are NHWC: give it NHWC inputs
        self.onnx = onnx if device.type == "cpu" else None  # ONNX Runtime runs the networks instead of PyTorch

    def _forward(self, net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.onnx is not None and isinstance(net, nn.Module):
            return torch.sigmoid(self.onnx(net, x))
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = net(x)
        return torch.sigmoid(logits.float()).cpu()

    def run(self, net: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """Sigmoid probabilities ``(N, 1, H, W)`` on the CPU."""
        outputs: list[torch.Tensor] = []
        i = 0
        while i < inputs.shape[0]:
            size = self.batch_size
            try:
                outputs.append(self._forward(net, inputs[i : i + size]))
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                self.batch_size = size // 2
                # Retry outside the handler so that the failed batch's tensors can be freed.
            else:
                i += size
                continue
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return torch.cat(outputs) if outputs else inputs.new_zeros((0, 1, *inputs.shape[-2:]))


REGION_FRACTION = 0.1  # a localiser region (or a mask component) below this share of the largest is stray
MAX_REGIONS = 6  # at most this many localiser regions are followed through a volume
MAX_BLOBS = 3  # and at most this many separate blobs of one region in one slice


def crop_centres(
    prob: npt.NDArray[np.float32], threshold: float, factor: int, shape: tuple[int, int], crop_size: int
) -> npt.NDArray[np.int64]:
    """Where to crop: rows ``(slice, cx, cy)`` in full-resolution pixels, from coarse probabilities ``(Z, X', Y')``.

    Every substantial region of the thresholded localiser output is followed,
    not only the largest: both thighs of a bilateral field of view, and a
    branch that is a separate region because the slab starts below the
    bifurcation. Regions are 3D components bridging gaps of up to two slices;
    those with at least ``REGION_FRACTION`` of the largest one's summed
    probability count (at most ``MAX_REGIONS``). Each region gives one centre
    per slice (its probability-weighted centroid, interpolated along Z where
    it is absent), plus one per separate 2D blob of the region lying farther
    than a quarter crop from that centre (the branches below a wide
    bifurcation; the ``MAX_BLOBS`` heaviest, each with at least
    ``REGION_FRACTION`` of the slice's mass). With no detection at all, the threshold falls to half the
    maximum, then to the image centre.
    """
    z = prob.shape[0]
    binary = prob > threshold
    if not binary.any() and prob.max() > 0:
        binary = prob >= 0.5 * prob.max()
    ks = np.arange(z)
    if not binary.any():
        return np.stack([ks, np.full(z, shape[0] // 2), np.full(z, shape[1] // 2)], axis=1).astype(np.int64)
    # Components are joined across up to two missed slices (and one pixel in-plane).
    bridged = ndimage.binary_dilation(binary, structure=np.ones((5, 3, 3), bool))
    labels, count = ndimage.label(bridged, structure=np.ones((3, 3, 3), bool))
    labels[~binary] = 0
    sums = ndimage.sum_labels(prob, labels, index=np.arange(1, count + 1))
    order = np.argsort(-sums, kind="stable")
    kept = [int(i) + 1 for i in order[:MAX_REGIONS] if sums[i] >= REGION_FRACTION * sums[order[0]]]
    xs = np.arange(prob.shape[1], dtype=np.float64)
    ys = np.arange(prob.shape[2], dtype=np.float64)
    spread = crop_size / 4 / factor  # a quarter crop, in coarse pixels
    rows: list[tuple[float, float, float]] = []
    for label in kept:
        weights = np.where(labels == label, prob, 0.0)
        mass = weights.sum(axis=(1, 2))
        found = np.nonzero(mass > 0)[0]
        cx = (weights.sum(axis=2) @ xs)[found] / mass[found]
        cy = (weights.sum(axis=1) @ ys)[found] / mass[found]
        centre_x, centre_y = np.interp(ks, found, cx), np.interp(ks, found, cy)
        rows.extend((float(k), centre_x[k], centre_y[k]) for k in ks)
        for k in found:
            blobs, n = ndimage.label(weights[k] > 0, structure=np.ones((3, 3), bool))
            if n < 2:
                continue
            masses = ndimage.sum_labels(weights[k], blobs, index=np.arange(1, n + 1))
            biggest = np.argsort(-masses, kind="stable")[:MAX_BLOBS]
            for i in biggest[masses[biggest] >= REGION_FRACTION * mass[k]]:
                bx, by = ndimage.center_of_mass(weights[k], blobs, int(i) + 1)
                if np.hypot(bx - centre_x[k], by - centre_y[k]) > spread:
                    rows.append((float(k), bx, by))
    table = np.asarray(rows, dtype=np.float64)
    centres = np.empty(table.shape, dtype=np.int64)
    centres[:, 0] = table[:, 0].astype(np.int64)
    centres[:, 1:] = np.rint((table[:, 1:] + 0.5) * factor - 0.5).astype(np.int64)
    centres[:, 1] = np.clip(centres[:, 1], 0, shape[0] - 1)
    centres[:, 2] = np.clip(centres[:, 2], 0, shape[1] - 1)
    return centres


def _stacks(volume: torch.Tensor, context: int) -> torch.Tensor:
    """``(Z, 2c+1, X, Y)`` 2.5D inputs from an ``(X, Y, Z)`` tensor; edge slices repeat."""
    z = volume.shape[2]
    slices = volume.permute(2, 0, 1)
    index = (torch.arange(z)[:, None] + torch.arange(-context, context + 1)[None]).clamp(0, z - 1)
    return slices[index]


@dataclass(frozen=True)
class Probabilities:
    """Foreground probabilities of one volume, on its grid and as the networks gave them."""

    volume: npt.NDArray[np.float32]  # the volume's exact (X, Y, Z) grid and orientation
    network: npt.NDArray[np.float32]  # (X', Y', Z): canonical orientation, the networks' pixel size


def network_probabilities(
    model: nn.Module,
    config: ModelConfig,
    volume: npt.NDArray[Any],
    affine: npt.NDArray[Any],
    runner: BatchRunner,
) -> Probabilities:
    """The model's probabilities for one ``(X, Y, Z)`` volume (model in eval mode)."""
    turn = orientation(config, affine)
    normalized = turn.to_canonical(normalize(volume))
    with torch.inference_mode():
        if config.mode == "montage":
            montages, layout = to_montages(normalized, config)
            x = torch.from_numpy(np.ascontiguousarray(montages, dtype=np.float32))[:, None]
            prob = runner.run(model, x)[:, 0].numpy()
            out = np.asarray(from_montages(prob, layout), dtype=np.float32)
            network = out
        else:
            assert isinstance(model, Cascade)
            grid = network_shape(config, affine, turn, normalized.shape)
            stacks = _stacks(torch.from_numpy(resample_volume(normalized, grid)), config.context)
            loc = runner.run(model.localizer, downsample(stacks, config.localizer_factor))[:, 0]
            size = config.crop_size
            centres = crop_centres(loc.numpy(), config.threshold, config.localizer_factor, grid, size)
            crops = torch.stack([crop(stacks[k], int(cx), int(cy), size) for k, cx, cy in centres])
            fine = runner.run(model.segmenter, crops)[:, 0]
            full = torch.zeros(stacks.shape[0], *grid)
            for i, (k, cx, cy) in enumerate(centres):
                paste(full[k], fine[i], int(cx), int(cy))  # overlapping crops: the larger probability wins
            network = full.permute(1, 2, 0).numpy()
            # back to the volume's pixels; shrinking averages, so p >= 0.5 reads as a partial volume >= 0.5
            out = resample_volume(network, normalized.shape[:2])
    out = turn.from_canonical(out)
    if out.shape != volume.shape:
        raise RuntimeError(f"prediction shape {out.shape} differs from the volume's {volume.shape}")
    return Probabilities(volume=out, network=network)


CANDIDATE_PROBABILITY = 0.1  # voxels the network gives at least this much count towards uncertainty


def uncertainty(prob: npt.NDArray[np.float32]) -> tuple[float, tuple[float | None, ...]]:
    """How unsure the network was about its nerve: per volume and per slice, 0 (sure) to 1.

    Over the candidate voxels (probability >= 0.1), one minus the mean of
    ``|2p - 1|``: 0 when every candidate is near 0 or 1, 1 when all sit at 0.5.
    A volume where the network saw nothing at all scores 1 (nothing to go by).
    Cheap (no second pass); its use as a failure warning is measured against
    Dice in benchmarks/quality.py.
    """
    candidate = prob >= CANDIDATE_PROBABILITY
    confidence = np.abs(2.0 * prob.astype(np.float64) - 1.0)
    per_slice: list[float | None] = []
    for k in range(prob.shape[2]):
        here = candidate[:, :, k]
        per_slice.append(float(1.0 - confidence[:, :, k][here].mean()) if here.any() else None)
    whole = float(1.0 - confidence[candidate].mean()) if candidate.any() else 1.0
    return whole, tuple(per_slice)


def drop_stray_components(mask: npt.NDArray[Any], fraction: float = REGION_FRACTION) -> npt.NDArray[np.uint8]:
    """A 0/1 mask without its stray specks: 26-connected 3D components under ``fraction`` of the largest.

    Every substantial component stays: both legs, and both branches of a
    bifurcation wherever they show as separate pieces. Empty stays empty.
    """
    labels, count = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        whole: npt.NDArray[np.uint8] = (labels > 0).astype(np.uint8)
        return whole
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= fraction * sizes.max()
    keep[0] = False
    out: npt.NDArray[np.uint8] = keep[labels].astype(np.uint8)
    return out


def segment_volume(
    model_bundle: ModelBundle,
    volume: npt.NDArray[Any],
    affine: npt.NDArray[Any],
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    drop_stray: bool = True,
) -> SegmentationResult:
    """Segment one ``(X, Y, Z)`` volume; the mask has its exact shape (write it with ``affine``).

    ``device`` None keeps the bundle's device (another moves the model there);
    ``batch_size`` None takes the configuration's ``infer_batch_size``.
    """
    start = time.perf_counter()
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"expected a non-empty 3D (X, Y, Z) volume, got shape {volume.shape}")
    if np.asarray(affine).shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError("affine must be a finite 4x4 matrix")
    config = model_bundle.config
    target = model_bundle.device if device is None else resolve_device(device)
    if target != model_bundle.device:
        model_bundle.model.to(target)
        model_bundle.device = target
    model_bundle.model.eval()
    runner = BatchRunner(
        target, batch_size or config.infer_batch_size, config.amp, model_bundle.channels_last, model_bundle.onnx
    )
    prob = network_probabilities(model_bundle.model, config, volume, np.asarray(affine), runner)
    mask = (prob.volume > config.threshold).astype(np.uint8)
    if drop_stray:
        mask = drop_stray_components(mask)
    # the networks' own confidence, before resampling to the volume's pixels blurs every edge
    whole, per_slice = uncertainty(prob.network)
    return SegmentationResult(
        mask=mask,
        device=str(target),
        batch_size=runner.batch_size,
        load_seconds=model_bundle.load_seconds,
        inference_seconds=time.perf_counter() - start,
        uncertainty=whole,
        slice_uncertainty=per_slice,
    )
