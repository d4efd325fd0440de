"""The work behind each working state of the update machine.

Each step does its I/O and returns the :class:`UpdateEvent` the machine then
posts; a step never picks the next state itself. The :class:`Attempt` carries
what one attempt at one desired state has gathered (paths, the loaded runtime,
the trial session, the verdict). The engine that walks the machine, saves the
state before each step and resumes after a restart is :mod:`edge_agent.updater`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from google.protobuf.message import DecodeError

from edge_agent.clock import Clock
from edge_agent.config import LimitsConfig, TrialConfig, TrialMode, UpdateConfig
from edge_agent.details import DetailValue
from edge_agent.errors import (
    DownloadError,
    InferenceError,
    ModelLoadError,
    ResourceError,
    StateFileError,
    StepTimeoutError,
    StoreError,
    VerifyError,
)
from edge_agent.fetcher import Fetcher
from edge_agent.gates import TrialJudge, Verdict
from edge_agent.logs import Log
from edge_agent.memory import release_free_memory
from edge_agent.resources import Resources, check_disk, check_memory
from edge_agent.runtime import ModelRuntime, RuntimeOptions, RuntimeRegistry
from edge_agent.serving import LoadedModel, ServingSlot
from edge_agent.state import MAX_REFUSED, PersistentState, Refusal
from edge_agent.store import ArtifactStore
from edge_agent.tensors import SUPPORTED_DTYPES
from edge_agent.trial import PolicyInForce, TrialSession, policy_in_force
from edge_agent.update_machine import UpdateEvent
from edge_agent.usage import rss_bytes
from edge_agent.verify import ArtifactVerifier
from edgefleet_proto.v1 import common_pb2, desired_pb2, event_pb2, profile_pb2
from model_tools.graph_signature import GraphSignatureError, onnx_graph_signature

# The gate named in the verdict of a trial the hub withdrew (a newer desired state names another version).
WITHDRAWN = "withdrawn"

__all__ = ["Attempt", "Reporter", "Steps", "profile_ref"]

log = logging.getLogger(__name__)

K = event_pb2.EventKind
E = UpdateEvent
T = TypeVar("T")


class Reporter(Protocol):
    """Sends an Event to the hub (numbering, timestamps and transport are the caller's)."""

    def __call__(
        self,
        kind: event_pb2.EventKind.ValueType,
        reason: str = "",
        *,
        model: common_pb2.ModelRef | None = None,
        generation: int = 0,
        details: Mapping[str, DetailValue] | None = None,
    ) -> None: ...


def _class_distribution(path: Path) -> list[float] | None:
    """The class distribution of the data profile at ``path``; None when it has none."""
    profile = profile_pb2.DataProfile.FromString(path.read_bytes())
    shares = list(profile.class_distribution)
    return shares if len(shares) >= 2 and sum(shares) > 0 else None


def profile_ref(ref: common_pb2.ModelRef) -> common_pb2.ModelRef | None:
    """The data profile of ``ref`` as an artifact to fetch and verify, or None when it has none."""
    if not ref.HasField("profile") or not ref.profile.sha256:
        return None
    return common_pb2.ModelRef(
        name=f"{ref.name}.profile",
        version=ref.version,
        format="profile",
        sha256=ref.profile.sha256,
        length=ref.profile.length,
    )


@dataclass(slots=True)
class Attempt:
    """What one attempt at one desired state has gathered so far."""

    desired: desired_pb2.DesiredState
    ref: common_pb2.ModelRef
    # Loop guard and crash counting, carried over from the saved record when resuming.
    saves: int = 0
    restarts: int = 0
    # Digests fetched into .part files by this attempt (the rest are verified in the store).
    fetched: set[str] = field(default_factory=set)
    path: Path | None = None
    profile_path: Path | None = None
    runtime: ModelRuntime | None = None
    class_distribution: list[float] | None = None
    profile_note: str = ""
    session: TrialSession | None = None
    policy: PolicyInForce | None = None
    verdict: Verdict | None = None

    @property
    def generation(self) -> int:
        return self.desired.generation

    @property
    def artifacts(self) -> list[common_pb2.ModelRef]:
        """The model and, when it has one, its data profile."""
        profile = profile_ref(self.ref)
        return [self.ref] if profile is None else [self.ref, profile]


def keep_set(*refs: common_pb2.ModelRef | None) -> set[str]:
    """Digests to keep in the store: these models and their data profiles."""
    keep: set[str] = set()
    for ref in refs:
        if ref is None:
            continue
        keep.add(ref.sha256)
        profile = profile_ref(ref)
        if profile is not None:
            keep.add(profile.sha256)
    return keep


def _io_schema(runtime: ModelRuntime) -> tuple[tuple[str, str, str, tuple[int, ...]], ...]:
    return tuple(
        (side, spec.name, spec.dtype, tuple(spec.shape))
        for side, specs in (("in", runtime.inputs), ("out", runtime.outputs))
        for spec in specs
    )


def _outputs(runtime: ModelRuntime) -> tuple[tuple[str, tuple[object, ...]], ...]:
    return tuple((spec.dtype, tuple(spec.shape)) for spec in runtime.outputs)


def architecture(
    previous: LoadedModel | None,
    previous_path: Path | None,
    ref: common_pb2.ModelRef,
    path: Path,
    runtime: ModelRuntime,
) -> str:
    """How ``ref`` relates to the version serving: "first" (none serves), "changed" (another format,
    input/output schema or ONNX graph) or "same" (a retrain: the same graph with other weights).

    Reads both ONNX files' graphs (not their weights): run it in a worker thread.
    """
    if previous is None:
        return "first"
    if previous.ref.format != ref.format or _io_schema(previous.runtime) != _io_schema(runtime):
        return "changed"
    if ref.format == "onnx" and previous_path is not None:
        try:
            same = onnx_graph_signature(previous_path) == onnx_graph_signature(path)
        except GraphSignatureError as e:
            # Unreadable graph: judge as a retrain, the stricter of the two defaults.
            log.warning("cannot compare model graphs, judging as the same architecture: %s", e)
            return "same"
        return "same" if same else "changed"
    return "same"


def _warm_up(runtime: ModelRuntime) -> None:
    """One run on zeros (dynamic dimensions as 1): catches a model that loads but cannot run."""
    inputs: dict[str, np.ndarray] = {}
    for spec in runtime.inputs:
        if spec.dtype not in SUPPORTED_DTYPES:
            return  # nothing sensible to feed; the trial judges it on real inputs
        inputs[spec.name] = np.zeros(tuple(d if d > 0 else 1 for d in spec.shape), dtype=spec.dtype)
    runtime.predict(inputs)


@dataclass(slots=True)
class Steps:
    """The steps, with everything they touch."""

    store: ArtifactStore
    fetcher: Fetcher
    verifier: ArtifactVerifier
    runtimes: RuntimeRegistry
    runtime_options: RuntimeOptions
    state: PersistentState
    serving: ServingSlot
    report: Reporter
    resources: Resources
    clock: Clock
    limits: LimitsConfig
    trial: TrialConfig
    update: UpdateConfig
    logger: Log
    on_change: Callable[[], None]
    # The newest desired state waiting behind the one in flight (a trial is withdrawn for it).
    pending: Callable[[], desired_pb2.DesiredState | None]
    wake: asyncio.Event
    last_failure: str = ""
    # For the status: the policy that judged the newest trial, and the last load's cost.
    policy_source: str = ""
    policy_digest: str = ""
    last_load_ms: float = 0.0
    session_memory_bytes: int = 0

    def fail(
        self, kind: event_pb2.EventKind.ValueType, attempt: Attempt, reason: str, **details: DetailValue
    ) -> None:
        self.logger.warning(
            "update failed kind=%s generation=%d sha256=%s reason=%s",
            K.Name(kind),
            attempt.generation,
            attempt.ref.sha256,
            reason,
        )
        self.last_failure = reason
        self.report(kind, reason, model=attempt.ref, generation=attempt.generation, details=details or None)

    async def _in_thread(self, what: str, fn: Callable[[], T]) -> T:
        """Run blocking work in a worker thread; give up on it after the step timeout."""
        timeout = self.update.step_timeout_s
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn), timeout)
        except TimeoutError:
            # The thread cannot be stopped; it finishes in the background and its result is dropped.
            raise StepTimeoutError(f"{what} did not finish within {timeout:g} s") from None

    # -- before the swap: a failure leaves the serving model alone -----------------------------------

    async def download(self, attempt: Attempt) -> UpdateEvent:
        wanted = [a for a in attempt.artifacts if not self.store.has(a.sha256)]
        for artifact in wanted:
            if self.store.partial_size(artifact.sha256) > artifact.length:
                # More bytes than pinned cannot be the start of the right file.
                self.store.discard_partial(artifact.sha256)
        needed = sum(a.length - self.store.partial_size(a.sha256) for a in wanted)
        try:
            check_disk(
                self.resources, self.store.root, needed=needed, reserve=self.limits.min_free_disk_bytes
            )
        except ResourceError as e:
            self.fail(K.EVENT_KIND_INSTALL_FAILED, attempt, str(e))
            return E.FAIL
        for artifact in wanted:
            if not await self._fetch_one(attempt, artifact):
                return E.FAIL
            attempt.fetched.add(artifact.sha256)
        return E.DONE

    async def _fetch_one(self, attempt: Attempt, artifact: common_pb2.ModelRef) -> bool:
        ref = attempt.ref
        is_model = artifact.sha256 == ref.sha256
        offset = self.store.partial_size(artifact.sha256)
        endpoint = attempt.desired.artifact_endpoint
        details: dict[str, DetailValue] = {"offset": offset, **({"endpoint": endpoint} if endpoint else {})}
        if not is_model:
            details["artifact"] = "profile"
        self.report(K.EVENT_KIND_DOWNLOAD_STARTED, model=ref, generation=attempt.generation, details=details)
        try:
            async for _held in self.fetcher.fetch(
                artifact, self.store.partial_path(artifact.sha256), offset, endpoint=endpoint
            ):
                pass
        except DownloadError as e:
            held = self.store.partial_size(artifact.sha256)
            what = "" if is_model else "data profile: "
            self.fail(K.EVENT_KIND_DOWNLOAD_FAILED, attempt, f"{what}{e}", offset=held)
            return False
        done: dict[str, DetailValue] = {"bytes": artifact.length, "resumed_from": offset}
        if not is_model:
            done["artifact"] = "profile"
        self.report(K.EVENT_KIND_DOWNLOAD_COMPLETED, model=ref, generation=attempt.generation, details=done)
        return True

    async def verify(self, attempt: Attempt) -> UpdateEvent:
        for artifact in attempt.artifacts:
            event = await self._verify_one(attempt, artifact)
            if event is not E.DONE:
                return event
        return E.DONE

    async def _verify_one(self, attempt: Attempt, artifact: common_pb2.ModelRef) -> UpdateEvent:
        sha = artifact.sha256
        fresh = sha in attempt.fetched
        path = self.store.partial_path(sha) if fresh else self.store.path_for(sha)
        try:
            if not fresh and not path.is_file():
                raise VerifyError(f"artifact {sha} is not in the store")
            await self._in_thread(
                f"verifying {sha}", lambda: self.verifier.verify(path, artifact, attempt.desired)
            )
            if fresh:
                path = self.store.promote_partial(artifact)
        except VerifyError as e:
            if fresh:
                # Wrong bytes somewhere: resuming from their length would only keep the damage.
                self.store.discard_partial(sha)
                self.fail(K.EVENT_KIND_VERIFY_FAILED, attempt, str(e))
                return E.FAIL
            self.store.discard(sha)
            self.fail(K.EVENT_KIND_VERIFY_FAILED, attempt, f"stored artifact damaged, fetching it again: {e}")
            return E.CACHE_CORRUPT
        except DownloadError as e:
            # The signed metadata did not arrive (the hub busy in a rollout storm, or gone): the
            # bytes were not judged, so they stay for the retry, and the hub counts no failed update.
            held = self.store.partial_size(sha) if fresh else artifact.length
            check = getattr(e, "code", "")  # metadata_download, from the signed-update channel
            extra: dict[str, DetailValue] = {"check": check} if isinstance(check, str) and check else {}
            self.fail(K.EVENT_KIND_DOWNLOAD_FAILED, attempt, str(e), offset=held, **extra)
            return E.FAIL
        except (StoreError, StepTimeoutError) as e:
            self.fail(K.EVENT_KIND_INSTALL_FAILED, attempt, str(e))
            return E.FAIL
        if sha == attempt.ref.sha256:
            attempt.path = path
        else:
            attempt.profile_path = path
        return E.DONE

    async def load(self, attempt: Attempt) -> UpdateEvent:
        if attempt.path is None:
            raise RuntimeError("LOADING entered without a verified path")
        ref = attempt.ref
        path = attempt.path
        try:
            check_memory(
                self.resources,
                artifact_bytes=ref.length,
                factor=self.limits.load_memory_factor,
                reserve=self.limits.min_free_memory_bytes,
            )
            # Wall time of the work itself (not the agent's clock, which tests freeze), and the resident
            # memory the new session added: process-wide, so concurrent work blurs it a little.
            rss_before, started = rss_bytes(), time.perf_counter()
            runtime = await self._in_thread(
                f"loading {ref.name}:{ref.version}",
                lambda: self.runtimes.load(ref.format, path, self.runtime_options),
            )
            await self._in_thread(f"a first run of {ref.name}:{ref.version}", lambda: _warm_up(runtime))
            self.last_load_ms = (time.perf_counter() - started) * 1000
            self.session_memory_bytes = max(0, rss_bytes() - rss_before)
            self.logger.info(
                "loaded model=%s:%s in %.1f ms, session memory %d bytes",
                ref.name, ref.version, self.last_load_ms, self.session_memory_bytes,
            )  # fmt: skip
        except InferenceError as e:
            self.fail(K.EVENT_KIND_INSTALL_FAILED, attempt, f"the model loads but fails on a first run: {e}")
            return E.FAIL
        except (ModelLoadError, ResourceError, StepTimeoutError) as e:
            self.fail(K.EVENT_KIND_INSTALL_FAILED, attempt, str(e))
            return E.FAIL
        attempt.runtime = runtime
        if attempt.profile_path is not None:
            self._read_profile(attempt, attempt.profile_path)
        return E.DONE

    def _read_profile(self, attempt: Attempt, path: Path) -> None:
        # A profile that does not parse costs the divergence baseline, not the update.
        try:
            shares = _class_distribution(path)
        except (OSError, DecodeError) as e:
            attempt.profile_note = f"data profile unusable ({e}); judging against the previous version"
            return
        if shares is not None:
            attempt.class_distribution = shares
        else:
            attempt.profile_note = (
                "data profile has no class distribution; judging against the previous version"
            )

    def _previous_profile(self, attempt: Attempt, previous: LoadedModel) -> None:
        """For a new architecture without a profile of its own: the previous version's class distribution.

        A new architecture is never judged against the previous model's answers, but with the same
        output (the same task) the class distribution its data profile measured is still the baseline
        the new one must not stray from. Without it, a new graph that always gives one answer would be
        judged on latency and errors alone.
        """
        ref = profile_ref(previous.ref)
        if ref is None or attempt.runtime is None or _outputs(attempt.runtime) != _outputs(previous.runtime):
            return
        try:
            shares = _class_distribution(self.store.path_for(ref.sha256))
        except (OSError, DecodeError):
            return  # the previous version's profile is gone or damaged: no baseline, as without one
        if shares is not None:
            attempt.class_distribution = shares
            attempt.profile_note = (
                f"a new architecture without a data profile: judged against {previous.ref.name}:"
                f"{previous.ref.version}'s profile"
            )

    # -- the swap and the trial ----------------------------------------------------------------------

    async def activate(self, attempt: Attempt) -> UpdateEvent:
        if attempt.runtime is None:
            raise RuntimeError("ACTIVATING entered without a loaded runtime")
        ref = attempt.ref
        try:
            # The trial slot first: after a crash from here on, a restart knows a trial was on.
            self.state.update(trial=ref)
        except StateFileError as e:
            self.fail(K.EVENT_KIND_INSTALL_FAILED, attempt, str(e))
            return E.FAIL
        previous = self.serving.current
        candidate = LoadedModel(ref=ref, runtime=attempt.runtime)
        policy = await self._policy(attempt, previous)
        config = policy.config
        judge = TrialJudge(
            config,
            mode=config.mode,
            profile_distribution=attempt.class_distribution,
            context={"policy_source": policy.source, "policy_digest": policy.digest},
        )
        session = TrialSession(
            candidate=candidate,
            previous=previous,
            config=config,
            judge=judge,
            serving=self.serving,
            clock=self.clock,
            started_wall_ms=self.clock.wall_ms(),
        )
        attempt.session = session
        if not config.enabled:
            return E.DONE
        session.start()
        if session.mode is TrialMode.SERVE:
            self._report_activated(attempt, previous)
        reference = config.divergence_reference
        if reference == "auto":
            reference = "profile" if attempt.class_distribution is not None else "previous"
        details: dict[str, DetailValue] = {
            "mode": session.mode.value,
            "window_requests": config.window_requests,
            "window_s": float(config.window_s),
            "baseline": reference,
            **policy.details(),
        }
        if attempt.profile_note:
            details["profile"] = attempt.profile_note
        self.report(K.EVENT_KIND_TRIAL_STARTED, model=ref, generation=attempt.generation, details=details)
        self.logger.info("trial of %s:%s started (%s)", ref.name, ref.version, session.mode.value)
        self.on_change()
        return E.DONE

    async def _policy(self, attempt: Attempt, previous: LoadedModel | None) -> PolicyInForce:
        """The trial policy in force for this attempt (the desired state's, over this device's config)."""
        assert attempt.path is not None and attempt.runtime is not None
        runtime, path = attempt.runtime, attempt.path
        previous_path = self.store.path_for(previous.ref.sha256) if previous is not None else None
        try:
            arch = await self._in_thread(
                "comparing model graphs",
                lambda: architecture(previous, previous_path, attempt.ref, path, runtime),
            )
        except StepTimeoutError:
            arch = "same"
        if arch == "changed" and attempt.class_distribution is None and previous is not None:
            self._previous_profile(attempt, previous)
        carried = attempt.desired.trial_policy if attempt.desired.HasField("trial_policy") else None
        # check_desired refused a policy that does not parse, so this one does.
        policy = policy_in_force(self.trial, carried, architecture=arch)
        attempt.policy = policy
        self.policy_source, self.policy_digest = policy.source, policy.digest
        return policy

    def _report_activated(self, attempt: Attempt, previous: LoadedModel | None) -> None:
        ref = attempt.ref
        self.logger.info("activated model=%s:%s sha256=%s", ref.name, ref.version, ref.sha256)
        old = previous.ref if previous is not None else None
        self.report(
            K.EVENT_KIND_ACTIVATED,
            model=ref,
            generation=attempt.generation,
            details={"previous": f"{old.name}:{old.version}"} if old is not None else None,
        )

    async def judge(self, attempt: Attempt) -> UpdateEvent:
        session = attempt.session
        if session is None:
            raise RuntimeError("TRIAL entered without a trial session")
        enabled = attempt.policy.config.enabled if attempt.policy is not None else self.trial.enabled
        if not enabled:
            attempt.verdict = Verdict(True, "none", "trials are disabled on this device")
            return E.PASS
        while session.verdict is None:
            newer = self.pending()
            if newer is not None and _withdraws(newer, attempt):
                # A version that has not finished its trial never becomes the rollback target: the hub
                # changed its mind (an operator's assignment, a rollout restoring the previous version),
                # so the candidate is set aside unjudged and the next desired state is applied from the
                # version that served before it.
                attempt.verdict = Verdict(
                    False,
                    WITHDRAWN,
                    f"withdrawn by generation {newer.generation}, which names "
                    f"{newer.model.name}:{newer.model.version}"
                    if newer.HasField("model")
                    else f"withdrawn by generation {newer.generation}",
                )
                return E.REJECT
            remaining = None if session.deadline is None else session.deadline - self.clock.monotonic()
            remaining = None if session.deadline is None else session.deadline - self.clock.monotonic()
            if remaining is not None and remaining <= 0:
                session.finish("time")
                break
            self.wake.clear()
            await _first_of(session.decided, self.wake, timeout=remaining)
        attempt.verdict = session.verdict
        assert attempt.verdict is not None
        return E.PASS if attempt.verdict.passed else E.REJECT

    # -- after the trial -------------------------------------------------------------------------

    async def commit(self, attempt: Attempt) -> UpdateEvent:
        ref = attempt.ref
        saved = self.state.state
        old = saved.active
        previous = old if old is not None and old.sha256 != ref.sha256 else saved.previous
        try:
            self.state.update(
                active=ref, previous=previous, trial=None, update=None, applied_generation=attempt.generation
            )
        except StateFileError as e:
            reason = f"cannot record the commit: {e}"
            self.fail(K.EVENT_KIND_INSTALL_FAILED, attempt, reason)
            attempt.verdict = Verdict(False, "commit", reason)
            return E.FAIL
        session = attempt.session
        current = self.serving.current
        if attempt.runtime is not None and (current is None or current.ref.sha256 != ref.sha256):
            # Shadow mode (or no trial): the new version starts serving only now.
            self.serving.swap(LoadedModel(ref=ref, runtime=attempt.runtime))
            self._report_activated(attempt, current)
        if session is not None:
            session.end()
        verdict = attempt.verdict or Verdict(True, "none", "committed")
        self.report(
            K.EVENT_KIND_COMMITTED, verdict.reason, model=ref, generation=attempt.generation,
            details=dict(verdict.figures) or None,
        )  # fmt: skip
        self._prune(self.state.state.active, self.state.state.previous)
        self.last_failure = ""
        self.on_change()
        release_free_memory()
        return E.DONE

    async def roll_back(self, attempt: Attempt) -> UpdateEvent:
        ref = attempt.ref
        verdict = attempt.verdict or Verdict(
            False, "error", self.last_failure or "the update failed after the new version was activated"
        )
        session = attempt.session
        if session is not None:
            session.rollback_now()
        if verdict.gate == WITHDRAWN:
            return self._withdraw(attempt, verdict)
        saved = self.state.state
        refusal = Refusal(
            sha256=ref.sha256,
            name=ref.name,
            version=ref.version,
            generation=attempt.generation,
            reason=verdict.reason,
            at_ms=self.clock.wall_ms(),
        )
        refused = (*(r for r in saved.refused if r.sha256 != ref.sha256), refusal)
        event = E.DONE
        try:
            self.state.update(
                trial=None,
                update=None,
                applied_generation=max(saved.applied_generation, attempt.generation),
                refused=refused[-MAX_REFUSED:],
            )
        except StateFileError as e:
            # The committed model serves either way; a restart finds the trial record and judges again.
            self.report(K.EVENT_KIND_ERROR, f"cannot record the rollback: {e}", model=ref)
            event = E.FAIL
        # "refused": the hub records that this device will not take this version again.
        details: dict[str, DetailValue] = {**verdict.figures, "gate": verdict.gate, "refused": True}
        if session is not None and session.rollback_ms is not None:
            details["swap_ms"] = session.rollback_ms
        back_to = (
            session.previous.ref if session is not None and session.previous is not None else saved.active
        )
        if back_to is not None:
            details["serving"] = f"{back_to.name}:{back_to.version}"
        reason = f"{ref.name}:{ref.version} rolled back: {verdict.reason}"
        self.logger.warning("%s", reason)
        self.report(
            K.EVENT_KIND_ROLLED_BACK, reason, model=ref, generation=attempt.generation, details=details
        )
        self.last_failure = reason
        self._prune(saved.active, saved.previous)
        self.on_change()
        release_free_memory()  # the refused version's session is gone
        return event

    def _withdraw(self, attempt: Attempt, verdict: Verdict) -> UpdateEvent:
        """Set a withdrawn trial aside: the previous version serves, nothing is refused."""
        ref = attempt.ref
        saved = self.state.state
        event = E.DONE
        try:
            # The withdrawn generation counts as applied: the newer one waiting is what comes next.
            self.state.update(
                trial=None, update=None, applied_generation=max(saved.applied_generation, attempt.generation)
            )
        except StateFileError as e:
            self.report(K.EVENT_KIND_ERROR, f"cannot record the withdrawal: {e}", model=ref)
            event = E.FAIL
        reason = f"{ref.name}:{ref.version} set aside: {verdict.reason}"
        self.logger.info("%s", reason)
        details: dict[str, DetailValue] = {}
        if saved.active is not None:
            details["serving"] = f"{saved.active.name}:{saved.active.version}"
        self.report(
            K.EVENT_KIND_TRIAL_WITHDRAWN,
            reason,
            model=ref,
            generation=attempt.generation,
            details=details or None,
        )
        self._prune(saved.active, saved.previous)
        self.on_change()
        release_free_memory()
        return event

    def _prune(self, *keep: common_pb2.ModelRef | None) -> None:
        removed = self.store.prune(keep_set(*keep))
        if removed:
            self.logger.info("pruned artifacts: %s", ", ".join(removed))


def _withdraws(newer: desired_pb2.DesiredState, attempt: Attempt) -> bool:
    """Whether a newer desired state takes the trial's version away (not: the same artifact again)."""
    if newer.generation <= attempt.generation:
        return False
    return not (newer.HasField("model") and newer.model.sha256 == attempt.ref.sha256)


async def _first_of(a: asyncio.Event, b: asyncio.Event, *, timeout: float | None) -> None:
    """Return when either event is set or ``timeout`` seconds passed."""
    waiters = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
