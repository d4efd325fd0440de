"""Training the demo models on the digits splits (torch on the CPU, real data)."""

from __future__ import annotations

import itertools

import pytest
import torch

from model_tools.data import DigitsSplits, load_digits_splits
from model_tools.errors import ConfigError, TrainingError
from model_tools.train import EpochProgress, train_classifier
from model_tools.zoo import RECIPES, build_model

ACCURACY_TARGET = 0.95


@pytest.fixture(scope="module")
def splits() -> DigitsSplits:
    return load_digits_splits(seed=0)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_recipe_reaches_accuracy_target(kind: str, splits: DigitsSplits) -> None:
    recipe = RECIPES[kind]
    seen: list[EpochProgress] = []
    result = train_classifier(
        build_model(kind, seed=0),
        splits,
        epochs=recipe.epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        seed=0,
        device="cpu",
        progress=seen.append,
    )
    assert result.metrics["test_accuracy"] >= ACCURACY_TARGET
    assert result.metrics["val_accuracy"] >= ACCURACY_TARGET
    assert result.metrics["train_loss"] < 0.2
    assert result.device == "cpu" and result.epochs == recipe.epochs
    assert [p.epoch for p in seen] == list(range(1, recipe.epochs + 1))
    assert all(p.epochs == recipe.epochs for p in seen)
    assert seen[-1].val_accuracy == result.metrics["val_accuracy"]
    assert not result.model.training
    assert all(p.device.type == "cpu" for p in result.model.parameters())


def test_same_seed_trains_the_same_weights_on_cpu(splits: DigitsSplits) -> None:
    def run(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        result = train_classifier(
            build_model("mlp", seed=seed), splits, epochs=3, lr=1e-3, batch_size=64, seed=seed, device="cpu"
        )
        return result.model.state_dict(), result.metrics

    weights_a, metrics_a = run(0)
    weights_b, metrics_b = run(0)
    weights_c, _ = run(1)
    assert metrics_a == metrics_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)


def test_duration_is_read_from_the_injected_clock(splits: DigitsSplits) -> None:
    ticks = itertools.count(start=100.0, step=2.5)
    result = train_classifier(
        build_model("mlp", seed=0),
        splits,
        epochs=1,
        lr=1e-3,
        batch_size=256,
        seed=0,
        device="cpu",
        clock=lambda: next(ticks),
    )
    assert result.duration_s == 2.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs must be at least 1, got 0"),
        ({"lr": 0.0}, "lr must be positive, got 0.0"),
        ({"lr": float("nan")}, "lr must be positive"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"device": "no-such-device"}, "torch device name"),
    ],
)
def test_bad_arguments_are_refused(splits: DigitsSplits, kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"epochs": 1, "lr": 1e-3, "batch_size": 32, "seed": 0, "device": "cpu"}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        train_classifier(build_model("mlp"), splits, **args)  # type: ignore[arg-type]


def test_asking_for_cuda_without_one_is_a_training_error(
    splits: DigitsSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend no GPU is present so the test means the same on every machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match="no CUDA device"):
        train_classifier(build_model("mlp"), splits, epochs=1, lr=1e-3, batch_size=32, seed=0, device="cuda")


def test_divergence_is_reported(splits: DigitsSplits) -> None:
    with pytest.raises(TrainingError, match="diverged at epoch 1"):
        train_classifier(build_model("mlp", seed=0), splits, epochs=2, lr=1e30, batch_size=32, seed=0)
