"""Demo model shapes and construction (torch on the CPU)."""

from __future__ import annotations

import pytest
import torch

from model_tools.errors import ConfigError
from model_tools.zoo import (
    MODEL_KINDS,
    NUM_CLASSES,
    NUM_FEATURES,
    DigitsCNN,
    DigitsMLP,
    architecture,
    build_model,
)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("batch", [1, 5])
def test_every_kind_maps_flat_input_to_logits(kind: str, batch: int) -> None:
    model = build_model(kind, seed=0).eval()
    with torch.no_grad():
        out = model(torch.rand(batch, NUM_FEATURES))
    assert out.shape == (batch, NUM_CLASSES)
    assert out.dtype == torch.float32


def test_kinds_build_their_classes_with_keyword_arguments() -> None:
    mlp = build_model("mlp", hidden=(32,))
    cnn = build_model("cnn", channels=8)
    assert isinstance(mlp, DigitsMLP) and mlp.hidden == (32,)
    # One int means (c, 2c, 2c): the deeper layers see the upsampled map and carry more channels.
    assert isinstance(cnn, DigitsCNN) and cnn.channels == (8, 16, 16)


def test_default_cnn_is_wide_enough_for_int8_to_matter() -> None:
    cnn = build_model("cnn")
    assert isinstance(cnn, DigitsCNN)
    assert min(cnn.channels) >= 32
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(cnn.channels)
    # The 8x8 digits are upsampled inside the model: the first convolution sees 16x16 maps.
    seen: list[tuple[int, ...]] = []
    convs[0].register_forward_hook(lambda _m, args, _o: seen.append(tuple(args[0].shape)))
    cnn(torch.zeros(2, NUM_FEATURES))
    assert seen == [(2, 1, 16, 16)]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_architecture_rebuilds_the_same_shapes_and_widths_can_change(kind: str) -> None:
    model = build_model(kind, seed=0)
    again = build_model(kind, **architecture(model))
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]
    smaller = model.with_widths([max(1, w // 2) for w in model.widths()])  # type: ignore[operator]
    assert smaller.widths() == tuple(max(1, w // 2) for w in model.widths())  # type: ignore[operator]
    with torch.no_grad():
        assert smaller(torch.rand(3, NUM_FEATURES)).shape == (3, NUM_CLASSES)


def test_seed_fixes_initial_weights_without_touching_global_rng() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("cnn", seed=7)
    b = build_model("cnn", seed=7)
    c = build_model("cnn", seed=8)
    assert torch.rand(1).item() == expected_next.item()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_unknown_kind_and_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigError, match="one of mlp, cnn, got 'resnet'"):
        build_model("resnet")
    with pytest.raises(ConfigError, match="bad arguments for model kind 'mlp'"):
        build_model("mlp", channels=3)
    with pytest.raises(ConfigError, match="positive"):
        DigitsMLP(hidden=(0,))
    with pytest.raises(ConfigError, match="positive"):
        DigitsCNN(channels=0)
    with pytest.raises(ConfigError, match="3 positive ints"):
        DigitsCNN(channels=(8, 8))
    with pytest.raises(ConfigError, match="4 prunable widths"):
        DigitsCNN().with_widths((8, 8))
