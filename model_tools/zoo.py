"""Demo classifiers for the digits data (hub only: imports torch).

Every model here keeps one input contract so that the rest of the system
(export, quantization, the device runtime) needs no per-model case: input
``"input"`` float32 ``[batch, 64]``, output ``"logits"`` float32 ``[batch, 10]``.

Both models are straight chains of layers whose widths can be read and changed
(:meth:`widths`, :meth:`with_widths`): structured pruning builds the smaller model
that way, and the TFLite rebuild walks the same chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal, get_args

import torch
from torch import nn

from model_tools.errors import ConfigError

__all__ = [
    "INPUT_NAME",
    "MODEL_KINDS",
    "NUM_CLASSES",
    "NUM_FEATURES",
    "OUTPUT_NAME",
    "RECIPES",
    "DigitsCNN",
    "DigitsMLP",
    "ModelKind",
    "TrainingRecipe",
    "architecture",
    "build_model",
    "model_kind",
]

ModelKind = Literal["mlp", "cnn"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
NUM_FEATURES = 64
NUM_CLASSES = 10
_SIDE = 8


@dataclass(frozen=True)
class TrainingRecipe:
    """Hyperparameters that train a kind of model to its accuracy target in seconds on a CPU."""

    epochs: int
    lr: float
    batch_size: int


# Measured on 2 CPU cores over seeds 0-5: MLP test accuracy 0.96-0.98 in ~1.5 s,
# CNN (upsampled to 16x16, 32/64/64 channels) 0.97-0.99 in ~4 s.
RECIPES: dict[str, TrainingRecipe] = {
    "mlp": TrainingRecipe(epochs=60, lr=1e-3, batch_size=64),
    "cnn": TrainingRecipe(epochs=8, lr=2e-3, batch_size=64),
}


class DigitsMLP(nn.Module):
    """Fully connected classifier: (N, 64) -> ReLU hidden layers -> (N, 10) logits."""

    # No image view: every pixel is a feature of its own (the data profile sketches each one).
    image_shape: tuple[int, int, int] | None = None

    def __init__(self, hidden: Sequence[int] = (128, 64)) -> None:
        super().__init__()
        if not hidden or any(w <= 0 for w in hidden):
            raise ConfigError(f"hidden layer widths must be positive, got {tuple(hidden)}")
        widths = [NUM_FEATURES, *hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], NUM_CLASSES))
        self.layers = nn.Sequential(*layers)
        self.hidden = tuple(int(w) for w in hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # type: ignore[no-any-return]

    def widths(self) -> tuple[int, ...]:
        """Output width of every prunable layer (all but the classifier), in forward order."""
        return self.hidden

    def with_widths(self, widths: Sequence[int]) -> DigitsMLP:
        """A fresh model of the same shape with these widths (weights newly initialised)."""
        return DigitsMLP(hidden=tuple(widths))

    def architecture(self) -> dict[str, Any]:
        return {"hidden": list(self.hidden)}


class DigitsCNN(nn.Module):
    """Convolutional classifier that views flat (N, 64) input as 8x8 images.

    The 8x8 digits are upsampled (nearest, x2) to 16x16 inside the model: with
    32-64 channels on 16x16 maps the convolutions dominate the run time, which
    is where int8 pays off; on 8x8 maps fixed per-call costs hide it.
    """

    image_shape: tuple[int, int, int] | None = (1, _SIDE, _SIDE)

    def __init__(
        self, channels: int | Sequence[int] = (32, 64, 64), hidden: int = 64, upsample: int = 2
    ) -> None:
        super().__init__()
        widths = (channels, channels * 2, channels * 2) if isinstance(channels, int) else tuple(channels)
        if len(widths) != 3 or any(c <= 0 for c in widths):
            raise ConfigError(f"channels must be a positive int or 3 positive ints, got {channels!r}")
        if hidden <= 0:
            raise ConfigError(f"hidden must be positive, got {hidden}")
        if upsample not in (1, 2):
            raise ConfigError(f"upsample must be 1 or 2, got {upsample}")
        c1, c2, c3 = (int(c) for c in widths)
        self.channels = (c1, c2, c3)
        self.hidden = int(hidden)
        self.upsample = upsample
        self.resize = nn.Upsample(scale_factor=upsample, mode="nearest") if upsample > 1 else nn.Identity()
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        pooled = _SIDE * upsample // 4
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * pooled * pooled, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reshape lives inside the model so that its exported input stays [batch, 64].
        images = x.reshape(-1, 1, _SIDE, _SIDE)
        return self.head(self.features(self.resize(images)))  # type: ignore[no-any-return]

    def widths(self) -> tuple[int, ...]:
        return (*self.channels, self.hidden)

    def with_widths(self, widths: Sequence[int]) -> DigitsCNN:
        if len(widths) != 4:
            raise ConfigError(f"a DigitsCNN has 4 prunable widths (3 convs, 1 hidden), got {tuple(widths)}")
        return DigitsCNN(channels=tuple(widths[:3]), hidden=widths[3], upsample=self.upsample)

    def architecture(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "hidden": self.hidden, "upsample": self.upsample}


def model_kind(model: nn.Module) -> str:
    """The zoo kind of a model ("mlp" or "cnn")."""
    if isinstance(model, DigitsMLP):
        return "mlp"
    if isinstance(model, DigitsCNN):
        return "cnn"
    raise ConfigError(f"expected a DigitsMLP or DigitsCNN, got {type(model).__name__}")


def architecture(model: nn.Module) -> dict[str, Any]:
    """Constructor arguments that rebuild ``model``'s shape: ``build_model(kind, **architecture(m))``."""
    model_kind(model)
    arch: dict[str, Any] = model.architecture()  # type: ignore[operator]
    return arch


def build_model(kind: str, *, seed: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a demo model by kind ("mlp" or "cnn"); keyword arguments go to its constructor.

    With ``seed`` the initial weights are the same on every call, without
    disturbing the caller's global random state.
    """
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    factory: type[nn.Module] = DigitsMLP if kind == "mlp" else DigitsCNN
    if seed is None:
        return _construct(factory, kind, kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(factory, kind, kwargs)


def _construct(factory: type[nn.Module], kind: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad arguments for model kind {kind!r}: {e}") from e
