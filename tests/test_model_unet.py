"""U-Net shapes and the named configurations."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sciatic.model.configs import (
    CASCADE,
    CONFIGS,
    SEED,
    UNetConfig,
    config_from_dict,
    config_to_dict,
    get_config,
)
from sciatic.model.unet import Cascade, UNet, build_model, count_parameters

torch.set_num_threads(2)


# Instance norm needs more than one value per channel at the bottom: no (1, 1) input for it.
SHAPES = [
    (norm, size)
    for norm in ("batch", "group", "instance", "none")
    for size in ((16, 16), (17, 23), (5, 40), (1, 1))
    if not (norm == "instance" and size == (1, 1))
]


@pytest.mark.parametrize(("norm", "size"), SHAPES)
@pytest.mark.parametrize("bilinear", [True, False])
def test_unet_output_matches_input_size(norm: str, bilinear: bool, size: tuple[int, int]) -> None:
    net = UNet(UNetConfig(in_channels=3, width=8, depth=3, norm=norm, bilinear=bilinear))  # type: ignore[arg-type]
    net.eval()
    with torch.inference_mode():
        out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()


def test_seed_configuration_is_the_abstracts() -> None:
    assert SEED.mode == "montage" and SEED.montage_slices == 5
    assert (SEED.net.width, SEED.net.depth, SEED.net.norm) == (64, 4, "none")
    assert (SEED.optimizer, SEED.lr, SEED.momentum, SEED.loss) == ("sgd", 1e-4, 0.99, "bce")
    assert not SEED.augment.enabled and not SEED.amp and SEED.infer_batch_size == 1


def test_cascade_is_much_smaller_than_seed() -> None:
    seed_params = count_parameters(build_model(SEED))
    cascade = build_model(CASCADE)
    assert isinstance(cascade, Cascade)
    assert count_parameters(cascade) * 20 < seed_params


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_dict_round_trip(name: str) -> None:
    config = get_config(name)
    data = config_to_dict(config)
    assert config_from_dict(data) == config
    assert isinstance(data["net"], dict)


def test_get_config_overrides_and_unknown_name() -> None:
    assert get_config("seed", lr=0.5).lr == 0.5
    with pytest.raises(KeyError, match="unknown model configuration"):
        get_config("nope")


def test_invalid_configurations_are_refused() -> None:
    with pytest.raises(ValueError, match="input channels"):
        dataclasses.replace(CASCADE, context=2)
    with pytest.raises(ValueError, match="multiple"):
        dataclasses.replace(CASCADE, crop_size=60)
    with pytest.raises(ValueError, match="localizer"):
        dataclasses.replace(CASCADE, localizer=None)
    with pytest.raises(ValueError, match="groups"):
        UNetConfig(width=12, norm="group", groups=8)
