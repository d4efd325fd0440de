"""One trial: routing requests between the new version and the previous one, and rolling back at once.

In ``serve`` mode the new version answers. When it raises or returns NaN/inf,
the previous version (still loaded) answers that request instead, so a bad
version costs no failed request. With ``compare_previous`` the previous
version also runs on every trial request: that gives the judge the previous
version's class distribution and latency on the very same inputs.

In ``shadow`` mode the previous version answers and the new one runs on the
same inputs after it; the judge compares the two.

When the judge fails a gate, :meth:`TrialSession.rollback_now` swaps the
previous version back in right there, inside the request that tripped the gate
(a reference swap: microseconds, no I/O), and ends the routing. The updater,
woken through :attr:`TrialSession.decided`, then records the rollback. A pass
only wakes the updater: it commits (and, in shadow mode, swaps).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from edge_agent.clock import Clock
from edge_agent.config import TrialConfig, TrialMode
from edge_agent.details import DetailValue
from edge_agent.errors import InferenceError, InputError
from edge_agent.gates import TrialJudge, Verdict
from edge_agent.serving import LoadedModel, Prediction, ServingSlot
from edge_agent.tensors import Array, check_inputs
from edgefleet_proto.v1 import common_pb2, device_pb2
from model_tools.trial_policy import TrialPolicy, policy_digest

__all__ = ["DEVICE_SOURCE", "PolicyInForce", "TrialSession", "policy_in_force"]

log = logging.getLogger(__name__)

# The source reported when the desired state carried no policy (a hub older than trial policies).
DEVICE_SOURCE = "device"


@dataclass(frozen=True, slots=True)
class PolicyInForce:
    """The trial configuration one trial runs under, and which policy it came from."""

    config: TrialConfig
    source: str
    digest: str
    # "same" (the previous version's graph), "changed" (another graph or schema), "first" (no previous).
    architecture: str

    def details(self) -> dict[str, DetailValue]:
        """What an event says about the policy that judged."""
        cfg = self.config
        return {
            "policy_source": self.source,
            "policy_digest": self.digest,
            "architecture": self.architecture,
            "latency_budget_ms": float(cfg.latency_budget_ms),
            "latency_ratio": float(cfg.max_latency_ratio),
            "divergence_reference": cfg.divergence_reference,
        }


def policy_in_force(
    base: TrialConfig, carried: common_pb2.TrialPolicy | None, *, architecture: str
) -> PolicyInForce:
    """The device's trial config with the carried policy laid over it.

    Fields the policy leaves out take the device's defaults. For a retrained version those are
    the configured ones (judged against the previous version). For an architecture change they
    never look at the previous model: its latency and answers say nothing about a different graph,
    so there is no ratio gate, no disagreement gate, the divergence baseline is the bundle's own
    profile, and the p95 budget is the configured one (``latency_budget_ms``, else
    ``new_architecture_budget_ms``).
    """
    policy = TrialPolicy.from_proto(carried) if carried is not None else TrialPolicy()
    source = carried.source if carried is not None and carried.source else DEVICE_SOURCE
    cfg = base
    if architecture == "changed":
        cfg = replace(
            cfg,
            latency_budget_ms=cfg.latency_budget_ms or cfg.new_architecture_budget_ms,
            max_latency_ratio=0.0,
            divergence_reference="profile",
            max_disagreement=1.0,
        )
    changes: dict[str, object] = {}
    if policy.mode is not None:
        changes["mode"] = TrialMode(policy.mode)
    for key in ("window_s", "window_requests", "min_requests", "max_error_rate", "max_disagreement"):
        value = getattr(policy, key)
        if value is not None:
            changes[key] = value
    if policy.latency is not None:
        # A latency policy sets exactly the gates it names: the one it leaves out is off.
        changes["latency_budget_ms"] = policy.latency.budget_ms or 0.0
        changes["max_latency_ratio"] = policy.latency.ratio or 0.0
    if policy.divergence is not None:
        changes["divergence_reference"] = policy.divergence.reference.value
        if policy.divergence.limit is not None:
            changes["max_divergence"] = policy.divergence.limit
    cfg = replace(cfg, **changes)  # type: ignore[arg-type]
    # The previous version runs beside the new one only for a gate that reads its figures.
    needs_previous = bool(cfg.max_latency_ratio) or cfg.divergence_reference in ("auto", "previous")
    cfg = replace(cfg, compare_previous=base.compare_previous and needs_previous)
    return PolicyInForce(config=cfg, source=source, digest=policy_digest(policy), architecture=architecture)


class TrialSession:
    """A new version on trial beside the previous one; create it on the event loop."""

    def __init__(
        self,
        *,
        candidate: LoadedModel,
        previous: LoadedModel | None,
        config: TrialConfig,
        judge: TrialJudge,
        serving: ServingSlot,
        clock: Clock,
        started_wall_ms: int,
    ) -> None:
        self.candidate = candidate
        self.previous = previous
        # Shadowing needs something to answer: with no previous version the new one serves.
        self.mode = config.mode if previous is not None else TrialMode.SERVE
        self._config = config
        self.judge = judge
        self._serving = serving
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self.started = clock.monotonic()
        self.started_wall_ms = started_wall_ms
        self.deadline = self.started + config.window_s if config.window_s else None
        self.decided = asyncio.Event()
        self.verdict: Verdict | None = None
        # Monotonic instants of the failed gate and of the previous version serving again.
        self.failed_at: float | None = None
        self.swapped_back_at: float | None = None

    # -- lifecycle (the updater) -------------------------------------------------------------------

    def start(self) -> None:
        """Route requests through this trial; in serve mode the new version answers from now on."""
        if self.mode is TrialMode.SERVE:
            self._serving.swap(self.candidate)
        self._serving.begin_trial(self)

    def finish(self, why: str) -> Verdict:
        """End the trial now ("time", or a sentence such as "superseded by generation 7")."""
        return self._decide(self.judge.finish(why))

    def end(self) -> None:
        """Stop routing through this trial (after a commit or a rollback)."""
        self._serving.end_trial(self)

    def rollback_now(self) -> None:
        """Serve the previous version again (or nothing, for a first install); idempotent."""
        self._serving.end_trial(self)
        if self.swapped_back_at is not None:
            return
        current = self._serving.current
        if current is not None and current.ref.sha256 == self.candidate.ref.sha256:
            self._serving.swap(self.previous)
        self.swapped_back_at = self._clock.monotonic()

    @property
    def rollback_ms(self) -> float | None:
        """From the failed gate to the previous version serving, when a gate failed."""
        if self.failed_at is None or self.swapped_back_at is None:
            return None
        return (self.swapped_back_at - self.failed_at) * 1000

    def status(self) -> device_pb2.TrialStatus:
        window_s = self._config.window_s
        return device_pb2.TrialStatus(
            model=self.candidate.ref,
            mode=self.mode.value,
            started_at_ms=self.started_wall_ms,
            requests=self.judge.requests,
            window_requests=self._config.window_requests,
            window_ends_at_ms=self.started_wall_ms + int(window_s * 1000) if window_s else 0,
        )

    def _decide(self, verdict: Verdict) -> Verdict:
        if self.verdict is not None:
            return self.verdict
        self.verdict = verdict
        if not verdict.passed:
            self.failed_at = self._clock.monotonic()
            self.rollback_now()
        self._wake()
        return verdict

    def _wake(self) -> None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self._loop:
            self.decided.set()
        else:  # a prediction from another thread (an in-process caller)
            self._loop.call_soon_threadsafe(self.decided.set)

    # -- requests --------------------------------------------------------------------------------

    def predict(self, inputs: Mapping[str, Array]) -> Prediction:
        if self.mode is TrialMode.SHADOW and self.previous is not None:
            return self._predict_shadow(self.previous, inputs)
        return self._predict_serve(inputs)

    def _run(
        self, model: LoadedModel, inputs: Mapping[str, Array]
    ) -> tuple[dict[str, Array] | None, float, str]:
        """(outputs or None, latency ms, error text) of one model on ``inputs``; input errors raise."""
        checked = check_inputs(model.runtime.inputs, inputs)
        start = self._clock.monotonic()
        try:
            outputs = model.runtime.predict(checked)
        except InferenceError as e:
            return None, (self._clock.monotonic() - start) * 1000, str(e)
        return outputs, (self._clock.monotonic() - start) * 1000, ""

    def _run_reference(self, inputs: Mapping[str, Array]) -> tuple[dict[str, Array] | None, float | None]:
        if self.previous is None:
            return None, None
        try:
            outputs, latency, error = self._run(self.previous, inputs)
        except InputError:
            return None, None  # the versions take different inputs: nothing to compare
        return (None, None) if error else (outputs, latency)

    def _predict_serve(self, inputs: Mapping[str, Array]) -> Prediction:
        outputs, latency, error = self._run(self.candidate, inputs)
        need_fallback = outputs is None
        ref_outputs: dict[str, Array] | None = None
        ref_latency: float | None = None
        if self._config.compare_previous or need_fallback:
            ref_outputs, ref_latency = self._run_reference(inputs)
        verdict = self.judge.observe(
            latency_ms=latency,
            outputs=outputs,
            error=error,
            ref_outputs=ref_outputs,
            ref_latency_ms=ref_latency,
        )
        if verdict is not None:
            self._decide(verdict)
        failed = verdict is not None and not verdict.passed
        if (need_fallback or failed) and ref_outputs is None and self.previous is not None:
            ref_outputs, ref_latency = self._run_reference(inputs)
        if (need_fallback or failed) and ref_outputs is not None and self.previous is not None:
            # The previous version answers the request the new one got wrong.
            return Prediction(ref_outputs, self.previous.ref, ref_latency or 0.0)
        if outputs is None:
            raise InferenceError(f"{error} (the version on trial failed and there is no previous one)")
        return Prediction(outputs, self.candidate.ref, latency)

    def _predict_shadow(self, previous: LoadedModel, inputs: Mapping[str, Array]) -> Prediction:
        answer, latency, error = self._run(previous, inputs)
        if answer is None:
            # The serving version failed on its own; the trial learns nothing from this request.
            raise InferenceError(error)
        try:
            outputs, new_latency, new_error = self._run(self.candidate, inputs)
        except InputError as e:
            outputs, new_latency, new_error = None, 0.0, f"the new version refuses these inputs: {e}"
        verdict = self.judge.observe(
            latency_ms=new_latency,
            outputs=outputs,
            error=new_error,
            ref_outputs=answer,
            ref_latency_ms=latency,
        )
        if verdict is not None:
            self._decide(verdict)
        return Prediction(answer, previous.ref, latency)
