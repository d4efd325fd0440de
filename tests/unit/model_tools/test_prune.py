"""Structured L1 pruning (torch on the CPU): smaller layers that keep what the kept units compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model_tools.errors import ConfigError, PruneError
from model_tools.prune import count_parameters, prune_structured
from model_tools.zoo import NUM_CLASSES, NUM_FEATURES, DigitsCNN, DigitsMLP, build_model


@torch.no_grad()
def _silence(layer: nn.Conv2d | nn.Linear, count: int) -> None:
    """Zero the last ``count`` output units: the smallest L1 norms, and they contribute nothing."""
    layer.weight[-count:] = 0
    assert layer.bias is not None
    layer.bias[-count:] = 0


@torch.no_grad()
def test_removing_silent_channels_keeps_the_cnn_s_outputs() -> None:
    model = build_model("cnn", seed=0).eval()
    assert isinstance(model, DigitsCNN)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    for layer in [*convs, model.head[1]]:
        _silence(layer, layer.weight.shape[0] // 4)
    result = prune_structured(model, 0.25)
    assert result.widths_before == (32, 64, 64, 64)
    assert result.widths_after == (24, 48, 48, 48)
    x = torch.rand(5, NUM_FEATURES)
    torch.testing.assert_close(result.model(x), model(x), atol=1e-5, rtol=1e-5)
    assert result.params_after < 0.6 * result.params_before
    assert result.params_after == count_parameters(result.model)


@torch.no_grad()
def test_removing_silent_neurons_keeps_the_mlp_s_outputs() -> None:
    model = build_model("mlp", seed=0).eval()
    assert isinstance(model, DigitsMLP)
    _silence(model.layers[0], 64)
    _silence(model.layers[2], 32)
    result = prune_structured(model, 0.5)
    assert result.widths_after == (64, 32)
    x = torch.rand(5, NUM_FEATURES)
    torch.testing.assert_close(result.model(x), model(x), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_the_original_is_untouched_and_the_classifier_keeps_its_width() -> None:
    model = build_model("mlp", seed=1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune_structured(model, 0.75)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.model(torch.rand(2, NUM_FEATURES)).shape == (2, NUM_CLASSES)
    assert result.to_dict()["method"] == "structured-l1"


def test_amount_and_layouts_are_checked() -> None:
    with pytest.raises(ConfigError, match="between 0 and 1"):
        prune_structured(build_model("mlp"), 1.0)

    class NotPrunable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(PruneError, match="expected a model with widths"):
        prune_structured(NotPrunable(), 0.5)

    class WithNorm(DigitsMLP):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(4)

    with pytest.raises(PruneError, match=r"'norm' \(BatchNorm1d\) cannot be pruned through"):
        prune_structured(WithNorm(), 0.5)
