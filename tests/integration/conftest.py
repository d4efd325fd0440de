"""Fixtures shared by the integration suites: one trained run and its optimized bundle per session.

Training and optimizing the digits MLP takes seconds, so the run and its bundle are
built once, read-only; a test that changes files copies the bundle first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud.training.optimize import optimize_run
from cloud.training.runs import ExperimentRecord, train_run
from model_tools.evaluate import LatencyPlan
from model_tools.pipeline import OptimizeOptions, PipelineResult

# Short timing runs: the tests check that latency is measured and gated, not its exact value.
QUICK_LATENCY = LatencyPlan(warmup=3, repeats={1: 30, 32: 10})


@dataclass(frozen=True)
class TrainedRun:
    record: ExperimentRecord
    folder: Path


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    record, folder = train_run("mlp", tmp_path_factory.mktemp("runs"), seed=0, device="cpu")
    assert folder is not None
    return TrainedRun(record, folder)


@pytest.fixture(scope="session")
def mlp_bundle(mlp_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> PipelineResult:
    """The MLP's bundle with every step (pruning, int8, TFLite); latency gates off, so the set is stable."""
    from model_tools.gates import GatePolicy

    options = OptimizeOptions(latency=QUICK_LATENCY, policy=GatePolicy(max_latency_increase_pct=1e6))
    return optimize_run(
        mlp_run.folder, version="1.0.0", out_dir=tmp_path_factory.mktemp("bundles") / "b", options=options
    )
