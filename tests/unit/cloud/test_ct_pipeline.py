"""A training run from its trigger to a registered challenger and its decision, on SQLite, on the CPU.

Small on purpose: a 500-row digits training split, two epochs, no pruning or TFLite and a short
latency plan, so each run takes seconds. Champions are linear ONNX models registered as
``digits-mlp`` (their recipe read from the name): one that answers 0 every time (any challenger
beats it) and a least-squares fit no two-epoch MLP reaches.
"""

from __future__ import annotations

import os
import re
import threading
from functools import cache

import numpy as np
import pytest
from sqlmodel import select

from cloud.artifacts import ArtifactStore
from cloud.context import HubContext
from cloud.models import Experiment, ModelVersion, Rollout
from cloud.services import bundles
from cloud.training.continuous import datasets, policy, service, triggers
from cloud.training.continuous.child import LOG_NAME
from cloud.training.continuous.pipeline import (
    PipelineConfig,
    TrainingWorker,
    execute_run,
    run_pending,
    work_dir,
)
from cloud.training.continuous.service import TrainingRunRecord
from cloud.training.continuous.tables import TrainingRun
from model_tools.data import DigitsSplits, load_digits_splits
from model_tools.evaluate import LatencyPlan
from model_tools.hashing import array_digest
from model_tools.pipeline import OptimizeOptions
from tests.unit.cloud.ct_helpers import (
    FLEET,
    FakeAlertChange,
    npz_bytes,
    register,
    serve,
    strong_champion,
    weak_champion,
)
from tests.unit.cloud.helpers import T0, tiny_onnx

OWNER = "hub-a"


@cache
def small_digits(seed: int) -> DigitsSplits:
    full = load_digits_splits(seed=seed)
    x_train, y_train = full.x_train[:500], full.y_train[:500]
    arrays = (x_train, y_train, full.x_val, full.y_val, full.x_test, full.y_test)
    return DigitsSplits(*arrays, content_hash=array_digest(*arrays), seed=seed)


CONFIG = PipelineConfig(
    epochs=2,
    optimize=OptimizeOptions(
        prune_amount=0.0, tflite=False, latency=LatencyPlan(warmup=1, repeats={1: 3, 32: 3})
    ),
    base_data=small_digits,
)


class Kicks:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def kicks(ctx: HubContext) -> Kicks:
    counter = Kicks()
    ctx.kick_rollouts = counter
    return counter


def _champion(ctx: HubContext, onnx_bytes: bytes) -> ModelVersion:
    with ctx.sessions() as s:
        version = register(s, ctx.store, onnx_bytes, clock=ctx.clock)
        serve(s, version, ["d1", "d2", "d3"], ctx.clock())
        return version


def _upload(ctx: HubContext, rows: slice) -> str:
    """Field samples for the model: held-out digits the base training split never saw."""
    split = load_digits_splits(seed=0)
    store = datasets.labelled_store(ctx.settings)
    info = store.put_bytes(npz_bytes(split.x_val[rows], split.y_val[rows]))
    with ctx.sessions() as s:
        row, _ = datasets.add_labelled(s, store, info, fleet=FLEET, model_name="digits-mlp", clock=ctx.clock)
    return row.sha256


def _run_claimed(ctx: HubContext, run_id: str) -> TrainingRunRecord:
    claimed = run_pending(ctx.sessions, fleet=FLEET, now=ctx.clock(), owner=OWNER)
    assert claimed is not None and claimed.id == run_id and claimed.state == "running"
    return execute_run(ctx, run_id, owner=OWNER, config=CONFIG)


def _versions(ctx: HubContext) -> list[str]:
    with ctx.sessions() as s:
        return sorted(s.exec(select(ModelVersion.version)).all())


def test_a_drift_alert_trains_a_challenger_registered_with_lineage_that_waits_for_approval(
    ctx: HubContext, kicks: Kicks
) -> None:
    champion = _champion(ctx, weak_champion())
    upload = _upload(ctx, slice(0, 100))
    drift = [FakeAlertChange("drift-north", "drift_score", "firing", cohort_id=4)]
    (queued,) = triggers.check(
        ctx.sessions, fleet=FLEET, now=ctx.clock(), changes=drift, settings=ctx.settings
    )

    run = _run_claimed(ctx, queued.id)

    assert (run.state, run.decision, run.error) == ("awaiting_approval", "promote", "")
    assert run.champion_version == champion.version and run.challenger_version is not None
    assert run.challenger_version.endswith(run.id[:8])
    assert run.challenger_metrics["accuracy"] > run.champion_metrics["accuracy"]
    # Both judged on the same rows: the base held-out split plus a fifth of the upload.
    for figures in (run.champion_metrics, run.challenger_metrics):
        assert (figures["holdout_samples"], figures["labelled_samples"]) == (len(small_digits(0).y_test), 20)
    assert "it beats the champion by" in run.decision_reason
    assert [(d["role"], d["hash"]) for d in run.datasets] == [
        ("base", small_digits(0).content_hash),
        ("labelled", upload),
    ]
    assert run.datasets[1]["trained_on"] == 80
    assert [t["to"] for t in run.transitions] == ["queued", "running", "awaiting_approval"]
    assert run.finished_at is None and (run.owner, run.lease_until) == ("", None)  # waiting, not ended

    with ctx.sessions() as s:
        bundle = bundles.get_bundle(s, "digits-mlp", run.challenger_version)
        experiment = s.exec(select(Experiment).where(Experiment.run_id == bundle.experiment_run_id)).one()
    lineage = bundle.lineage
    assert lineage["parent"] == {"name": "digits-mlp", "version": "1", "sha256": champion.sha256}
    assert lineage["continuous_training"]["run_id"] == run.id
    assert lineage["continuous_training"]["trigger"] == "drift"
    assert lineage["continuous_training"]["trigger_detail"]["rule"] == "drift-north"
    assert [d["hash"] for d in lineage["datasets"]] == [d["hash"] for d in run.datasets]
    assert lineage["dataset"]["hash"] == run.dataset_hash == experiment.dataset_hash
    assert experiment.name == "digits-mlp" and experiment.kind == "mlp"
    assert kicks.count == 0  # nothing rolls out before an operator approves

    with ctx.sessions() as s:
        approved = policy.approve(
            s, FLEET, run.id[:10], actor="ops", reason="figures look right", clock=ctx.clock
        )
        rollout = s.get(Rollout, approved.rollout_id)
    assert approved.state == "rolled_out" and approved.finished_at is not None
    assert [(t["to"], t["actor"]) for t in approved.transitions][-2:] == [
        ("approved", "ops"),
        ("rolled_out", "ops"),
    ]
    assert rollout is not None
    assert (rollout.target_name, rollout.target_version, rollout.state) == (
        "digits-mlp",
        run.challenger_version,
        "draft",
    )
    assert [(st["name"], st["percent"]) for st in rollout.plan["stages"]] == [
        ("canary", 5.0),
        ("rest", 100.0),
    ]


def test_policy_canary_rolls_the_challenger_out_from_the_training_process(
    ctx: HubContext, kicks: Kicks
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"ct_policy": "canary"})
    _champion(ctx, weak_champion())
    with ctx.sessions() as s:
        queued = service.start_manual(
            s, FLEET, "digits-mlp", actor="ops", reason="new field data", clock=ctx.clock
        )
    worker = TrainingWorker(ctx, config=CONFIG, owner=OWNER)
    started = worker.start_pending()
    assert started is not None and started.id == queued.id
    assert worker.start_pending() is None  # one run at a time
    assert worker.wait_idle(timeout=300)
    (run,) = worker.finished
    # Trained, registered and rolled out by another process, which says so first in the run's log.
    log_text = (work_dir(ctx, run.id) / LOG_NAME).read_text("utf-8")
    (pid,) = re.findall(rf"training run {run.id} runs in process (\d+)", log_text)
    assert int(pid) != os.getpid()
    assert (run.state, run.trigger, run.created_by, run.error) == ("rolled_out", "manual", "ops", "")
    assert [t["event"] for t in run.transitions[1:]] == ["start", "promote", "rollout_started"]
    with ctx.sessions() as s:
        rollout = s.get(Rollout, run.rollout_id)
    assert rollout is not None and rollout.target_version == run.challenger_version
    assert rollout.created_by == f"training-run-{run.id[:8]}"
    assert kicks.count == 1  # the hub's engine starts the canary now, not at its next tick


def test_a_challenger_that_trails_the_champion_is_registered_but_not_promoted(
    ctx: HubContext, kicks: Kicks
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"ct_policy": "canary"})
    full = load_digits_splits(seed=0)
    _champion(ctx, strong_champion(np.asarray(full.x_train), np.asarray(full.y_train)))
    with ctx.sessions() as s:
        queued = service.start_manual(s, FLEET, "digits-mlp", actor="ops", clock=ctx.clock)

    run = _run_claimed(ctx, queued.id)

    assert (run.state, run.decision, run.rollout_id) == ("succeeded", "keep_champion", None)
    gap = run.champion_metrics["accuracy"] - run.challenger_metrics["accuracy"]
    assert gap > CONFIG.tolerance
    assert f"it trails by {gap:.4f}, more than the 0.005 tolerance; the champion stays" in run.decision_reason
    assert _versions(ctx) == sorted(["1", str(run.challenger_version)])  # kept, for the record
    assert kicks.count == 0
    with ctx.sessions() as s:
        assert s.exec(select(Rollout)).all() == []


def test_a_damaged_labelled_file_fails_the_run_and_says_why(ctx: HubContext) -> None:
    _champion(ctx, weak_champion())
    upload = _upload(ctx, slice(0, 30))
    datasets.labelled_store(ctx.settings).path(upload).write_bytes(b"not the uploaded bytes")
    with ctx.sessions() as s:
        queued = service.start_manual(s, FLEET, "digits-mlp", actor="ops", clock=ctx.clock)

    run = _run_claimed(ctx, queued.id)

    assert (run.state, run.step, run.owner) == ("failed", "", "")
    assert run.error == (
        f"reading the data failed: labelled data {upload[:12]} (uploaded {T0:%Y-%m-%d %H:%M} UTC) was "
        f"damaged on disk: its file no longer hashes to {upload}"
    )
    assert run.transitions[-1]["reason"] == run.error and run.finished_at == T0
    assert _versions(ctx) == ["1"]  # nothing trained, nothing registered


def test_a_champion_without_a_recipe_fails_the_run_before_training(
    ctx: HubContext, store: ArtifactStore
) -> None:
    with ctx.sessions() as s:
        register(s, store, tiny_onnx(), name="tiny", clock=ctx.clock)
        queued = service.start_manual(s, FLEET, "tiny", actor="ops", clock=ctx.clock)
    run = _run_claimed(ctx, queued.id)
    assert run.state == "failed"
    assert run.error.startswith(
        "preparing failed: cannot tell how model tiny 1 was trained: its lineage names no"
    )


def test_a_hub_that_stops_fails_the_run_under_way_with_the_reason(ctx: HubContext) -> None:
    _champion(ctx, weak_champion())
    with ctx.sessions() as s:
        queued = service.start_manual(s, FLEET, "digits-mlp", actor="ops", clock=ctx.clock)
    assert run_pending(ctx.sessions, fleet=FLEET, now=ctx.clock(), owner=OWNER) is not None
    stopping = threading.Event()
    stopping.set()  # the hub began to stop before the run's first heartbeat

    run = execute_run(ctx, queued.id, owner=OWNER, config=CONFIG, stopping=stopping)

    assert (run.state, run.error) == ("failed", "the hub stopped while the run was preparing; start it again")


def test_a_stopping_worker_claims_nothing(ctx: HubContext) -> None:
    _champion(ctx, weak_champion())
    with ctx.sessions() as s:
        service.start_manual(s, FLEET, "digits-mlp", actor="ops", clock=ctx.clock)
    worker = TrainingWorker(ctx, config=CONFIG, owner=OWNER)
    worker.stop(timeout=1)
    assert worker.start_pending() is None
    with ctx.sessions() as s:
        assert [r.state for r in s.exec(select(TrainingRun)).all()] == ["queued"]
