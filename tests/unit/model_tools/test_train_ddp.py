"""The data-parallel training path: sharding, the torchrun environment, and a one-rank gloo group.

The two-rank run under torchrun is in tests/integration/model_tools/test_training_runs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from model_tools.data import load_digits_splits
from model_tools.errors import ConfigError
from model_tools.train import DistributedContext, shard_indices, train_classifier
from model_tools.zoo import build_model


@pytest.mark.parametrize(("n", "world"), [(10, 2), (11, 2), (7, 3), (3, 4)])
def test_shards_cover_every_index_with_equal_counts(n: int, world: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    shards = [shard_indices(order, rank, world) for rank in range(world)]
    assert len({int(s.numel()) for s in shards}) == 1  # every rank takes as many steps
    assert set(torch.cat(shards).tolist()) == set(range(n))
    if n % world == 0:
        assert sorted(torch.cat(shards).tolist()) == list(range(n))  # no padding needed, none added


def test_context_from_the_torchrun_environment() -> None:
    assert DistributedContext.from_env({}) is None
    assert DistributedContext.from_env({"WORLD_SIZE": "1"}) is None
    ctx = DistributedContext.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert ctx == DistributedContext(rank=2, world_size=4, local_rank=0)
    assert ctx is not None and not ctx.is_main
    with pytest.raises(ConfigError, match="integers"):
        DistributedContext.from_env({"WORLD_SIZE": "two"})
    with pytest.raises(ConfigError, match="0 <= rank < world_size"):
        DistributedContext(rank=3, world_size=2)


def test_one_rank_gloo_group_trains_what_plain_training_trains(tmp_path: Path) -> None:
    splits = load_digits_splits(seed=0)
    plain = train_classifier(
        build_model("mlp", seed=0), splits, epochs=2, lr=1e-3, batch_size=64, seed=0, device="cpu"
    )
    ctx = DistributedContext(rank=0, world_size=1, init_method=f"file://{tmp_path / 'store'}")
    ddp = train_classifier(
        build_model("mlp", seed=0),
        splits,
        epochs=2,
        lr=1e-3,
        batch_size=64,
        seed=0,
        device="cpu",
        distributed=ctx,
    )
    assert not dist.is_initialized()  # the group it made is gone again
    assert ddp.world_size == 1 and ddp.device == "cpu"
    assert not any(n.startswith("module.") for n in ddp.model.state_dict())  # unwrapped
    for key, value in plain.model.state_dict().items():
        torch.testing.assert_close(ddp.model.state_dict()[key], value, atol=1e-6, rtol=1e-5)
    assert ddp.metrics["test_accuracy"] == pytest.approx(plain.metrics["test_accuracy"])
