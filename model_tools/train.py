"""Supervised training of the demo classifiers (hub only: imports torch).

Runs on the GPU when one is present and on the CPU otherwise. On the CPU a run
is reproducible: the same model weights, splits and seed give the same result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from model_tools.data import DigitsSplits
from model_tools.errors import ConfigError, TrainingError

__all__ = [
    "EpochProgress",
    "ProgressCallback",
    "TrainResult",
    "evaluate_accuracy",
    "pick_device",
    "train_classifier",
]

# Batches for evaluation only bound memory; they do not change results.
_EVAL_BATCH = 1024


@dataclass(frozen=True)
class EpochProgress:
    """What one finished epoch reports to a progress callback."""

    epoch: int
    epochs: int
    train_loss: float
    val_accuracy: float


ProgressCallback = Callable[[EpochProgress], None]


@dataclass(frozen=True, eq=False)
class TrainResult:
    """A trained model (on the CPU, in eval mode) and how it was obtained."""

    model: nn.Module
    metrics: dict[str, float]
    epochs: int
    duration_s: float
    device: str


def pick_device(device: str | None = None) -> torch.device:
    """The device to train on: ``device`` if given and usable, else CUDA when present, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(
            f"device must be a torch device name such as 'cpu' or 'cuda', got {device!r}"
        ) from e
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {device!r} was asked for but torch sees no CUDA device")
    return chosen


def train_classifier(
    model: nn.Module,
    splits: DigitsSplits,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: str | None = None,
    progress: ProgressCallback | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainResult:
    """Train ``model`` with Adam and cross-entropy on ``splits.x_train``; report val and test accuracy.

    The model is trained in place and returned on the CPU in eval mode.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    target = pick_device(device)
    started = clock()

    x_train, y_train = _tensors(splits.x_train, splits.y_train, target)
    x_val, y_val = _tensors(splits.x_val, splits.y_val, target)
    # The split is a few hundred KiB, so it sits on the device whole and batches are index
    # slices of it: no DataLoader workers or host-to-device copies per step.
    shuffler = torch.Generator(device="cpu").manual_seed(seed)
    model.to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    n = x_train.shape[0]
    train_loss = float("nan")
    val_accuracy = float("nan")
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=shuffler).to(target)
        total = torch.zeros((), device=target)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.detach() * idx.numel()
        # One device sync per epoch instead of one per step.
        train_loss = float(total.item()) / n
        if not np.isfinite(train_loss):
            raise TrainingError(
                f"training diverged at epoch {epoch}: loss is {train_loss}; lower lr (was {lr})"
            )
        val_accuracy = _accuracy(model, x_val, y_val)
        if progress is not None:
            progress(EpochProgress(epoch, epochs, train_loss, val_accuracy))

    x_test, y_test = _tensors(splits.x_test, splits.y_test, target)
    test_accuracy = _accuracy(model, x_test, y_test)
    model.to("cpu").eval()
    return TrainResult(
        model=model,
        metrics={"train_loss": train_loss, "val_accuracy": val_accuracy, "test_accuracy": test_accuracy},
        epochs=epochs,
        duration_s=clock() - started,
        device=str(target),
    )


def evaluate_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``x`` that ``model`` (on the CPU) labels as ``y``."""
    xt, yt = _tensors(x, y, torch.device("cpu"))
    return _accuracy(model, xt, yt)


def _tensors(x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # np.array copies: the splits are read-only and torch warns on non-writable buffers.
    return torch.from_numpy(np.array(x, dtype=np.float32)).to(device), torch.from_numpy(
        np.array(y, dtype=np.int64)
    ).to(device)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for start in range(0, x.shape[0], _EVAL_BATCH):
        logits = model(x[start : start + _EVAL_BATCH])
        correct += int((logits.argmax(dim=1) == y[start : start + _EVAL_BATCH]).sum().item())
    return correct / max(x.shape[0], 1)
