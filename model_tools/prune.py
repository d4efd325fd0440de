"""Structured pruning: remove whole neurons and channels by L1 norm, then fine-tune (hub only: torch).

Zeroing single weights (unstructured pruning) leaves every tensor its full size,
so the ONNX file and its run time do not change. Removing a neuron or a
convolution channel makes the layer, and the next layer's input, smaller: the
exported model is smaller and faster for real.

The model must be a straight chain of ``Conv2d`` and ``Linear`` layers in
registration order (ReLU, pooling, upsampling and one ``Flatten`` between them
are fine) that can say its widths and rebuild itself with others
(``widths()``/``with_widths()``, as the zoo's models do). Every layer but the
classifier loses the same share of its outputs; the ones with the smallest L1
norm of their incoming weights go.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from model_tools.data import DigitsSplits
from model_tools.errors import ConfigError, PruneError
from model_tools.train import ProgressCallback, TrainResult, evaluate_accuracy, train_classifier
from model_tools.zoo import NUM_FEATURES

__all__ = ["Prunable", "PruneResult", "count_parameters", "finetune_pruned", "prune_structured"]

# Layers without weights that may sit between the weighted ones.
_PASSTHROUGH = (nn.ReLU, nn.MaxPool2d, nn.Upsample, nn.Identity, nn.Flatten)


@runtime_checkable
class Prunable(Protocol):
    """A model that can state and change the widths of its prunable layers."""

    def widths(self) -> tuple[int, ...]: ...

    def with_widths(self, widths: Sequence[int]) -> nn.Module: ...


@dataclass(frozen=True, eq=False)
class PruneResult:
    """The smaller model and what was removed."""

    model: nn.Module
    amount: float
    widths_before: tuple[int, ...]
    widths_after: tuple[int, ...]
    params_before: int
    params_after: int

    def to_dict(self) -> dict[str, object]:
        return {
            "method": "structured-l1",
            "amount": self.amount,
            "widths_before": list(self.widths_before),
            "widths_after": list(self.widths_after),
            "params_before": self.params_before,
            "params_after": self.params_after,
        }


def count_parameters(model: nn.Module) -> int:
    return sum(int(p.numel()) for p in model.parameters())


@torch.no_grad()
def prune_structured(model: nn.Module, amount: float) -> PruneResult:
    """Remove ``amount`` (0 < amount < 1) of the outputs of every layer but the classifier.

    Returns a new model (the one passed in is not changed) whose kept weights are
    copied from the original: it computes what the original computes minus the
    removed units, and usually needs a few epochs of fine-tuning to recover.
    """
    if not 0.0 < amount < 1.0:
        raise ConfigError(f"amount must be between 0 and 1 (exclusive), got {amount}")
    if not isinstance(model, Prunable):
        raise PruneError(
            f"{type(model).__name__} cannot be pruned: expected a model with widths() and with_widths()"
        )
    source = model.to("cpu").eval()
    names = {module: name for name, module in source.named_modules()}
    weighted = _weighted_chain(source)
    widths = tuple(source.widths())
    prunable = weighted[:-1]
    if tuple(_out_width(m) for m in prunable) != widths:
        raise PruneError(
            f"{type(model).__name__} reports widths {widths} but its layers have "
            f"{tuple(_out_width(m) for m in prunable)}: expected a straight chain of Conv2d/Linear layers"
        )
    spatial = _flatten_spatial(source)

    keep: list[torch.Tensor] = []
    for layer in prunable:
        norms = layer.weight.abs().flatten(1).sum(dim=1)
        count = max(1, round(_out_width(layer) * (1.0 - amount)))
        keep.append(torch.sort(torch.topk(norms, count).indices).values)

    state = source.state_dict()
    sliced: dict[str, torch.Tensor] = dict(state)
    previous: torch.Tensor | None = None
    for index, layer in enumerate(weighted):
        prefix = names[layer]
        weight, bias = state[f"{prefix}.weight"], state.get(f"{prefix}.bias")
        if previous is not None:
            columns = previous
            if isinstance(layer, nn.Linear) and _follows_flatten(source, weighted, index):
                # A Flatten turned channel c into the block of columns [c*HW, (c+1)*HW).
                columns = (previous[:, None] * spatial + torch.arange(spatial)[None, :]).reshape(-1)
            weight = weight.index_select(1, columns)
        if index < len(prunable):
            weight = weight.index_select(0, keep[index])
            if bias is not None:
                bias = bias.index_select(0, keep[index])
            previous = keep[index]
        sliced[f"{prefix}.weight"] = weight.clone()
        if bias is not None:
            sliced[f"{prefix}.bias"] = bias.clone()

    new_widths = tuple(int(k.numel()) for k in keep)
    smaller = source.with_widths(new_widths)
    try:
        smaller.load_state_dict(sliced, strict=True)
    except RuntimeError as e:
        raise PruneError(f"the pruned weights do not fit a {type(model).__name__}{new_widths}: {e}") from e
    smaller.eval()
    return PruneResult(
        model=smaller,
        amount=amount,
        widths_before=widths,
        widths_after=new_widths,
        params_before=count_parameters(source),
        params_after=count_parameters(smaller),
    )


def finetune_pruned(
    pruned: PruneResult,
    splits: DigitsSplits,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: str | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[TrainResult, float]:
    """Fine-tune a pruned model; returns the result and the test accuracy it had before fine-tuning."""
    before = evaluate_accuracy(pruned.model, splits.x_test, splits.y_test)
    result = train_classifier(
        pruned.model,
        splits,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        progress=progress,
    )
    return result, before


def _weighted_chain(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    chain: list[nn.Conv2d | nn.Linear] = []
    for name, module in model.named_modules():
        if any(True for _ in module.children()):
            continue
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise PruneError(f"layer {name!r} is a grouped convolution: expected groups=1")
            chain.append(module)
        elif isinstance(module, nn.Linear):
            chain.append(module)
        elif not isinstance(module, _PASSTHROUGH):
            raise PruneError(
                f"layer {name!r} ({type(module).__name__}) cannot be pruned through: expected only "
                "Conv2d, Linear, ReLU, MaxPool2d, Upsample and Flatten"
            )
    if len(chain) < 2:
        raise PruneError(f"expected at least two weighted layers to prune between, found {len(chain)}")
    return chain


def _out_width(layer: nn.Conv2d | nn.Linear) -> int:
    return int(layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features)


def _follows_flatten(model: nn.Module, chain: list[nn.Conv2d | nn.Linear], index: int) -> bool:
    return index > 0 and isinstance(chain[index - 1], nn.Conv2d)


def _flatten_spatial(model: nn.Module) -> int:
    """H*W of the feature map a Flatten sees (1 when the model has none)."""
    flattens = [m for m in model.modules() if isinstance(m, nn.Flatten)]
    if not flattens:
        return 1
    seen: list[tuple[int, ...]] = []
    handle = flattens[0].register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    try:
        model(torch.zeros(1, NUM_FEATURES))
    finally:
        handle.remove()
    if not seen or len(seen[0]) != 4:
        raise PruneError(f"expected a (N, C, H, W) map before Flatten, got {seen[:1]}")
    return math.prod(seen[0][2:])
