"""The steps of one training run (imports torch: ``pipeline.execute_run`` loads it on demand, in the
training process that ``child.py`` runs, not in the hub's).

Each step names itself in ``step`` (stored on the run, so the API shows what a run is doing),
renews the run's claim, and turns the errors it expects into a :class:`StepError` whose message
is the sentence the run records: which step failed, and why.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import update
from sqlmodel import col

from cloud.context import HubContext
from cloud.db import transaction
from cloud.errors import HubError
from cloud.services.bundles import register_bundle_dir
from cloud.services.signing import publish_registered
from cloud.training.continuous.champion import Recipe, recipe_of, serving_champion
from cloud.training.continuous.datasets import (
    FEATURES,
    LabelledSamples,
    labelled_for,
    labelled_store,
    load_labelled,
    split_holdout,
)
from cloud.training.continuous.evaluate import Decision, EvaluationSet, decide, score
from cloud.training.continuous.machine import RunEvent, RunState
from cloud.training.continuous.pipeline import (
    LostClaimError,
    PipelineConfig,
    remove_bundle,
    renewed_lease,
    work_dir,
)
from cloud.training.continuous.policy import start_rollout
from cloud.training.continuous.service import SYSTEM, lock_run, record_transition
from cloud.training.continuous.tables import LabelledDataset, TrainingRun
from cloud.training.optimize import DIGITS_PREPROCESSING, lineage_of
from cloud.training.runs import RUN_FILE, ExperimentRecord, load_run, train_run
from model_tools.data import DigitsSplits, load_digits_splits
from model_tools.errors import ModelToolsError
from model_tools.evaluate import load_runner
from model_tools.hashing import array_digest
from model_tools.pipeline import PipelineResult, VersionInfo, optimize
from model_tools.zoo import RECIPES

__all__ = ["RunSteps", "StepError"]


class StepError(RuntimeError):
    """A step failed for a reason the run records as its error (a sentence naming the step)."""


@dataclass(frozen=True)
class _Plan:
    model_name: str
    fleet: str
    champion_version: str
    champion_sha256: str
    champion_format: str
    recipe: Recipe
    challenger_version: str
    trigger: str
    trigger_detail: dict[str, Any]
    uploads: tuple[LabelledDataset, ...]


@dataclass(frozen=True)
class _Data:
    splits: DigitsSplits
    evaluation: EvaluationSet
    datasets: list[dict[str, Any]]


class RunSteps:
    """The state one run shares between its steps."""

    def __init__(
        self,
        ctx: HubContext,
        run_id: str,
        *,
        owner: str,
        config: PipelineConfig,
        stopping: threading.Event | None = None,
    ) -> None:
        self.ctx = ctx
        self.run_id = run_id
        self.owner = owner
        self.config = config
        self.stopping = stopping or threading.Event()
        self.step = "preparing"
        self.folder = work_dir(ctx, run_id)
        self._last_beat: datetime | None = None

    # --- the claim ----------------------------------------------------------------------------

    def _beat(self, *, force: bool = False) -> None:
        """Renew the claim (at most every quarter lease unless ``force``); LostClaimError when it is gone."""
        if self.stopping.is_set():
            raise LostClaimError(f"the hub is stopping while training run {self.run_id[:8]} is {self.step}")
        now = self.ctx.clock()
        quarter = self.config.lease_s / 4
        if not force and self._last_beat is not None and (now - self._last_beat).total_seconds() < quarter:
            return
        with transaction(self.ctx.sessions) as session:
            renewed = session.exec(
                update(TrainingRun)
                .where(
                    col(TrainingRun.id) == self.run_id,
                    col(TrainingRun.owner) == self.owner,
                    col(TrainingRun.state) == RunState.RUNNING.value,
                )
                .values(lease_until=renewed_lease(self.config, now), step=self.step, updated_at=now)
            )
            if renewed.rowcount != 1:
                raise LostClaimError(f"training run {self.run_id[:8]} is no longer claimed by {self.owner}")
        self._last_beat = now

    def _enter(self, step: str) -> None:
        self.step = step
        self._beat(force=True)

    def _update(self, **values: Any) -> None:
        with transaction(self.ctx.sessions) as session:
            run = lock_run(session, self.run_id)
            if run is None or run.owner != self.owner or run.state != RunState.RUNNING.value:
                raise LostClaimError(f"training run {self.run_id[:8]} is no longer claimed by {self.owner}")
            for key, value in values.items():
                setattr(run, key, value)
            session.add(run)

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        plan = self._prepare()
        data = self._data(plan)
        record, model = self._train(plan, data)
        result = self._optimize(plan, data, record, model)
        champion, challenger = self._evaluate(plan, data, result)
        self._register(result)
        self._decide(plan, champion, challenger, result)

    def cleanup(self) -> None:
        remove_bundle(self.folder / "bundle")

    def _prepare(self) -> _Plan:
        self._enter("preparing")
        now = self.ctx.clock()
        with self.ctx.sessions() as session:
            run = session.get(TrainingRun, self.run_id)
            assert run is not None
            champion = serving_champion(session, run.fleet, run.model_name)
            if champion is None:
                raise StepError(
                    f"preparing failed: model {run.model_name} has no registered version to retrain"
                )
            recipe = recipe_of(session, champion)
            if recipe is None:
                raise StepError(
                    f"preparing failed: cannot tell how model {champion.name} {champion.version} was "
                    "trained: its lineage names no experiment (model kind, seed) and its name is not "
                    "digits-mlp or digits-cnn; expected a version registered as a bundle from "
                    "`fleet models optimize`"
                )
            if not self.ctx.store.exists(champion.sha256):
                raise StepError(
                    f"preparing failed: the champion {champion.name} {champion.version}'s artifact "
                    f"{champion.sha256} is missing from the artifact store"
                )
            uploads = tuple(labelled_for(session, run.fleet, run.model_name))
            plan = _Plan(
                model_name=run.model_name,
                fleet=run.fleet,
                champion_version=champion.version,
                champion_sha256=champion.sha256,
                champion_format=champion.format,
                recipe=recipe,
                challenger_version=f"{now:%Y%m%dT%H%M%SZ}-{self.run_id[:8]}",
                trigger=run.trigger,
                trigger_detail=dict(run.trigger_detail),
                uploads=uploads,
            )
        self._update(champion_version=plan.champion_version, challenger_version=plan.challenger_version)
        return plan

    def _data(self, plan: _Plan) -> _Data:
        self._enter("reading the data")
        load_base = self.config.base_data or (lambda seed: load_digits_splits(seed=seed))
        try:
            base = load_base(plan.recipe.seed)
            labelled = load_labelled(labelled_store(self.ctx.settings), plan.uploads)
        except (HubError, ModelToolsError, OSError) as e:
            raise StepError(f"reading the data failed: {e}") from e
        data = _combine(base, labelled)
        self._update(datasets=data.datasets, dataset_hash=data.splits.content_hash)
        return data

    def _train(self, plan: _Plan, data: _Data) -> tuple[ExperimentRecord, Any]:
        self._enter("training")
        epochs = self.config.epochs or plan.recipe.epochs
        try:
            record, folder = train_run(
                plan.recipe.kind,
                self.folder / "runs",
                epochs=epochs,
                seed=plan.recipe.seed,
                device=self.config.device,
                splits=data.splits,
                progress=lambda _p: self._beat(),
                now=self.ctx.clock,
            )
        except ModelToolsError as e:
            raise StepError(f"training failed: {e}") from e
        assert folder is not None  # one process is rank 0
        # The registry keys the experiment by the model's name, not the demo kind's.
        record = replace(record, name=plan.model_name)
        text = json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n"
        (folder / RUN_FILE).write_text(text, "utf-8")
        _, model = load_run(folder)
        return record, model

    def _optimize(self, plan: _Plan, data: _Data, record: ExperimentRecord, model: Any) -> PipelineResult:
        self._enter("optimizing")
        lineage = lineage_of(record)
        lineage["parent"] = {
            "name": plan.model_name,
            "version": plan.champion_version,
            "sha256": plan.champion_sha256,
        }
        lineage["datasets"] = data.datasets
        lineage["continuous_training"] = {
            "run_id": self.run_id,
            "fleet": plan.fleet,
            "trigger": plan.trigger,
            "trigger_detail": plan.trigger_detail,
        }
        image_shape = getattr(model, "image_shape", None)
        preprocessing = dict(DIGITS_PREPROCESSING)
        if image_shape is not None:
            preprocessing["image_shape"] = list(image_shape)
        info = VersionInfo(
            name=plan.model_name,
            version=plan.challenger_version,
            lineage=lineage,
            train_metrics=record.metrics,
            preprocessing=preprocessing,
            image_shape=image_shape,
        )
        recipe = replace(RECIPES[record.kind], epochs=int(record.params["epochs"]))
        try:
            return optimize(
                model,
                data.splits,
                self.folder / "bundle",
                info=info,
                recipe=recipe,
                seed=record.seed,
                options=self.config.optimize,
                progress=lambda _e: self._beat(),
                now=self.ctx.clock,
            )
        except ModelToolsError as e:
            raise StepError(f"optimizing failed: {e}") from e

    def _evaluate(
        self, plan: _Plan, data: _Data, result: PipelineResult
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self._enter("evaluating")
        manifest = result.manifest
        challenger_file = result.bundle_dir / manifest.variant(manifest.baseline).file
        try:
            champion_run = load_runner(self.ctx.store.path(plan.champion_sha256), plan.champion_format)
            champion = score(champion_run, data.evaluation)
        except Exception as e:  # onnxruntime raises its own unrelated types
            raise StepError(
                f"evaluating failed: the champion {plan.model_name} {plan.champion_version} cannot be run "
                f"on the held-out samples: {e}"
            ) from e
        try:
            challenger = score(load_runner(challenger_file, "onnx"), data.evaluation)
        except Exception as e:
            raise StepError(
                f"evaluating failed: the challenger cannot be run on the held-out samples: {e}"
            ) from e
        return champion, challenger

    def _register(self, result: PipelineResult) -> None:
        self._enter("registering")
        try:
            with self.ctx.sessions() as session:
                register_bundle_dir(session, self.ctx.store, result.bundle_dir, clock=self.ctx.clock)
        except HubError as e:
            raise StepError(f"registering failed: {e}") from e
        publish_registered(self.ctx.signing)
        remove_bundle(result.bundle_dir)

    def _decide(
        self, plan: _Plan, champion: dict[str, Any], challenger: dict[str, Any], result: PipelineResult
    ) -> None:
        self.step = "deciding"
        decision, reason = decide(champion, challenger, tolerance=self.config.tolerance)
        policy = self.ctx.settings.ct_policy
        challenger = {**challenger, "variants": [v.name for v in result.manifest.variants]}
        now = self.ctx.clock()
        with transaction(self.ctx.sessions) as session:
            run = lock_run(session, self.run_id)
            if run is None or run.owner != self.owner or run.state != RunState.RUNNING.value:
                raise LostClaimError(f"training run {self.run_id[:8]} is no longer claimed by {self.owner}")
            run.champion_metrics = champion
            run.challenger_metrics = challenger
            run.decision = decision.value
            run.decision_reason = reason
            run.step = ""
            event = _event(decision, policy)
            record_transition(session, run, event, actor=SYSTEM, now=now, reason=reason)
        if event is not RunEvent.PROMOTE:
            return
        self.step = "starting the canary rollout"
        try:
            with self.ctx.sessions() as session:
                run = lock_run(session, self.run_id)
                assert run is not None
                start_rollout(session, run, actor=f"training-run-{self.run_id[:8]}", now=now)
        except HubError as e:
            raise StepError(f"starting the canary rollout failed: {e}") from e
        # A no-op in the training process, which no rollout engine runs in: the worker kicks the hub's
        # once the process ends.
        self.ctx.kick_rollouts()


def _event(decision: Decision, policy: str) -> RunEvent:
    if decision is Decision.KEEP_CHAMPION:
        return RunEvent.KEEP_CHAMPION
    return RunEvent.PROMOTE if policy == "canary" else RunEvent.AWAIT_APPROVAL


def _combine(base: DigitsSplits, labelled: list[LabelledSamples]) -> _Data:
    """The base splits with each upload's training rows added, and the held-out rows to judge on."""
    train_x, train_y = [base.x_train], [base.y_train]
    held_x = [np.zeros((0, FEATURES), dtype=np.float32)]
    held_y = [np.zeros(0, dtype=np.int64)]
    datasets: list[dict[str, Any]] = [
        {"role": "base", "name": base.name, "hash": base.content_hash, "samples": sum(base.sizes().values())}
    ]
    for upload in labelled:
        train, held = split_holdout(upload)
        train_x.append(upload.x[train])
        train_y.append(upload.y[train])
        held_x.append(upload.x[held])
        held_y.append(upload.y[held])
        datasets.append(
            {"role": "labelled", "name": "labelled", "hash": upload.sha256, "samples": upload.samples,
             "trained_on": int(train.sum()), "held_out": int(held.sum())}
        )  # fmt: skip
    x_train, y_train = np.concatenate(train_x), np.concatenate(train_y)
    arrays = (x_train, y_train, base.x_val, base.y_val, base.x_test, base.y_test)
    splits = DigitsSplits(
        x_train=x_train,
        y_train=y_train,
        x_val=base.x_val,
        y_val=base.y_val,
        x_test=base.x_test,
        y_test=base.y_test,
        content_hash=array_digest(*arrays) if labelled else base.content_hash,
        seed=base.seed,
        num_classes=base.num_classes,
        feature_shape=base.feature_shape,
        name=f"{base.name}+labelled" if labelled else base.name,
    )
    evaluation = EvaluationSet(base.x_test, base.y_test, np.concatenate(held_x), np.concatenate(held_y))
    return _Data(splits, evaluation, datasets)
