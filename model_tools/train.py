"""Supervised training of the demo classifiers (hub only: imports torch).

Runs on the GPU when one is present and on the CPU otherwise. On the CPU a run
is reproducible: the same model weights, splits and seed give the same result.

Under ``torchrun`` (``WORLD_SIZE`` > 1) training is data-parallel: pass
``distributed=DistributedContext.from_env()`` and each process trains on its
shard of every epoch's shuffled order inside DistributedDataParallel (gloo on
the CPU, NCCL on GPUs); gradients are averaged, so every rank ends with the same
weights. Only rank 0 should write files or talk to the hub.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model_tools.data import DigitsSplits
from model_tools.errors import ConfigError, TrainingError

__all__ = [
    "DistributedContext",
    "EpochProgress",
    "ProgressCallback",
    "TrainResult",
    "evaluate_accuracy",
    "pick_device",
    "shard_indices",
    "train_classifier",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a data-parallel job (what torchrun puts in the environment)."""

    rank: int
    world_size: int
    local_rank: int = 0
    # None: torch's default "env://" (MASTER_ADDR/MASTER_PORT, as torchrun sets them).
    init_method: str | None = None

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(
                f"expected 0 <= rank < world_size, got rank {self.rank} of world size {self.world_size}"
            )

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and reports (rank 0)."""
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DistributedContext | None:
        """The context torchrun describes, or None outside a multi-process job."""
        values = os.environ if env is None else env
        try:
            world = int(values.get("WORLD_SIZE", "1"))
            rank = int(values.get("RANK", "0"))
            local = int(values.get("LOCAL_RANK", str(rank)))
        except ValueError as e:
            raise ConfigError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers: {e}") from e
        if world <= 1:
            return None
        return cls(rank=rank, world_size=world, local_rank=local)


def shard_indices(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of one epoch's order; every rank gets the same count.

    DistributedDataParallel needs the same number of steps on every rank (each
    step is a collective), so the order is padded by wrapping around, the way
    torch's DistributedSampler does.
    """
    n = int(order.numel())
    per_rank = math.ceil(n / world_size)
    if n == 0:
        raise ConfigError("cannot shard an empty epoch order")
    padded = order[torch.arange(per_rank * world_size) % n]
    return padded[rank::world_size]


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
    world_size: int = 1


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
    distributed: DistributedContext | None = None,
) -> TrainResult:
    """Train ``model`` with Adam and cross-entropy on ``splits.x_train``; report val and test accuracy.

    The model is trained in place and returned on the CPU in eval mode. With
    ``distributed``, ``batch_size`` stays the global batch: each rank takes its
    share of it, so a recipe means the same at any world size.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if distributed is not None:
        return _train_distributed(
            model,
            splits,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            device=device,
            progress=progress,
            clock=clock,
            ctx=distributed,
        )
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


def _train_distributed(
    model: nn.Module,
    splits: DigitsSplits,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: str | None,
    progress: ProgressCallback | None,
    clock: Callable[[], float],
    ctx: DistributedContext,
) -> TrainResult:
    target = pick_device(device)
    if target.type == "cuda":
        target = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(target)
    created = not dist.is_initialized()
    if created:
        try:
            dist.init_process_group(
                backend="nccl" if target.type == "cuda" else "gloo",
                init_method=ctx.init_method,
                rank=ctx.rank,
                world_size=ctx.world_size,
            )
        except (RuntimeError, ValueError) as e:
            raise TrainingError(
                f"could not join the process group as rank {ctx.rank} of {ctx.world_size}: {e}"
            ) from e
    elif dist.get_world_size() != ctx.world_size:
        raise TrainingError(
            f"expected a process group of {ctx.world_size} ranks, the running one has {dist.get_world_size()}"
        )
    try:
        started = clock()
        x_train, y_train = _tensors(splits.x_train, splits.y_train, target)
        x_val, y_val = _tensors(splits.x_val, splits.y_val, target)
        # The same generator seed on every rank gives every rank the same epoch order to shard.
        shuffler = torch.Generator(device="cpu").manual_seed(seed)
        model.to(target)
        wrapped = DistributedDataParallel(model, device_ids=[target.index] if target.type == "cuda" else None)
        optimizer = torch.optim.Adam(wrapped.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        n = x_train.shape[0]
        local_batch = max(1, batch_size // ctx.world_size)
        train_loss = val_accuracy = float("nan")
        for epoch in range(1, epochs + 1):
            wrapped.train()  # type: ignore[no-untyped-call]  # DDP.train has no annotations
            mine = shard_indices(torch.randperm(n, generator=shuffler), ctx.rank, ctx.world_size).to(target)
            sums = torch.zeros(2, device=target)  # loss sum, sample count
            for start in range(0, mine.numel(), local_batch):
                idx = mine[start : start + local_batch]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(wrapped(x_train[idx]), y_train[idx])
                loss.backward()
                optimizer.step()
                sums[0] += loss.detach() * idx.numel()
                sums[1] += idx.numel()
            dist.all_reduce(sums)
            train_loss = float(sums[0].item() / sums[1].item())
            if not np.isfinite(train_loss):
                raise TrainingError(
                    f"training diverged at epoch {epoch}: loss is {train_loss}; lower lr (was {lr})"
                )
            # Every rank holds the same weights after the averaged step: evaluate locally.
            val_accuracy = _accuracy(model, x_val, y_val)
            if progress is not None and ctx.is_main:
                progress(EpochProgress(epoch, epochs, train_loss, val_accuracy))
        x_test, y_test = _tensors(splits.x_test, splits.y_test, target)
        test_accuracy = _accuracy(model, x_test, y_test)
    finally:
        if created:
            dist.destroy_process_group()
    model.to("cpu").eval()
    return TrainResult(
        model=model,
        metrics={"train_loss": train_loss, "val_accuracy": val_accuracy, "test_accuracy": test_accuracy},
        epochs=epochs,
        duration_s=clock() - started,
        device=str(target),
        world_size=ctx.world_size,
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
