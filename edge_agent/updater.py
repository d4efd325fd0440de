"""Applying desired states: the engine around the update state machine.

:meth:`Updater.submit` takes a desired-state payload from the transport and
decides at once (reporting DESIRED_RECEIVED or DESIRED_REJECTED);
:meth:`Updater.run` applies accepted ones in order, newest wins, and retries a
failure before the swap after a capped, jittered back-off. Each attempt walks
:class:`~edge_agent.update_machine.UpdateMachine`; the steps live in
:mod:`edge_agent.steps`.

Crash safety. Before each working state the engine saves an
:class:`~edge_agent.state.UpdateRecord` (the state it enters, the desired
state, a save count) atomically. On start, :meth:`Updater.resume` maps what was
saved to where to go on: before the swap the attempt starts over (a partial
download resumes from its bytes); from the swap on the trial resumes, unless
the agent restarted during it more than ``trial.max_restarts`` times, which
counts as a failed trial and rolls back; an interrupted rollback finishes. A
save count past ``update.max_state_saves`` is "state looping detected" and
rolls back too, so no update can keep a device restarting for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from edge_agent.backoff import Backoff
from edge_agent.clock import Clock, SystemClock
from edge_agent.config import LimitsConfig, TrialConfig, UpdateConfig
from edge_agent.desired import Verdict as Intake
from edge_agent.desired import check_desired
from edge_agent.details import as_text
from edge_agent.errors import DesiredRejectedError, ModelLoadError, StateFileError, StateLoopError
from edge_agent.fetcher import Fetcher
from edge_agent.gates import Verdict
from edge_agent.logs import Log
from edge_agent.resources import Resources, SystemResources
from edge_agent.runtime import RuntimeOptions, RuntimeRegistry
from edge_agent.serving import ServingSlot
from edge_agent.state import PersistentState, UpdateRecord
from edge_agent.steps import Attempt, Reporter, Steps
from edge_agent.store import ArtifactStore
from edge_agent.trial import TrialSession
from edge_agent.update_machine import BEFORE_SWAP, RESTING, UpdateEvent, UpdateMachine, UpdateState
from edge_agent.verify import ArtifactVerifier, DesiredDecoder, PinnedDigestVerifier, ProtobufDesiredDecoder
from edgefleet_proto.v1 import desired_pb2, device_pb2, event_pb2

__all__ = ["Reporter", "UpdateEvent", "UpdateState", "Updater"]

log = logging.getLogger(__name__)

K = event_pb2.EventKind
S, E = UpdateState, UpdateEvent
# A download is bounded per chunk (a stalled stream is dropped), a trial by its window; any
# other step that hangs this long fails, so that a stuck runtime cannot stall updates for ever.
_OWN_TIMEOUTS = frozenset({S.DOWNLOADING, S.TRIAL})


@dataclass(frozen=True, slots=True)
class _Resume:
    """Where a restarted agent picks an unfinished update up."""

    desired: desired_pb2.DesiredState
    saves: int
    restarts: int
    # Set when the update must roll back at once (a crash-looping trial, an interrupted rollback).
    reject: Verdict | None = None


class Updater:
    """Drives desired states to the serving slot through the update state machine."""

    def __init__(
        self,
        *,
        device_id: str,
        fleet: str,
        store: ArtifactStore,
        fetcher: Fetcher,
        runtimes: RuntimeRegistry,
        runtime_options: RuntimeOptions,
        state: PersistentState,
        serving: ServingSlot,
        report: Reporter,
        backoff: Backoff,
        limits: LimitsConfig | None = None,
        trial: TrialConfig | None = None,
        update: UpdateConfig | None = None,
        verifier: ArtifactVerifier | None = None,
        decoder: DesiredDecoder | None = None,
        resources: Resources | None = None,
        clock: Clock | None = None,
        on_change: Callable[[], None] = lambda: None,
        logger: Log = log,
    ) -> None:
        self._log = logger
        self._device_id = device_id
        self._fleet = fleet
        self._state = state
        self._serving = serving
        self._report = report
        self._backoff = backoff
        self._limits = limits or LimitsConfig()
        self._trial = trial or TrialConfig()
        self._update = update or UpdateConfig()
        self._decoder: DesiredDecoder = decoder or ProtobufDesiredDecoder()
        self._runtimes = runtimes
        # Called after anything the status message shows has changed (slots, generation, trial).
        self._on_change = on_change
        self.machine = UpdateMachine()
        # Set on every transition, so callers wait for a state instead of polling for it.
        self._transitioned = asyncio.Event()
        self.machine.add_listener(lambda _state: self._transitioned.set())
        self._pending: desired_pb2.DesiredState | None = None
        self._in_flight: desired_pb2.DesiredState | None = None
        self._failed: desired_pb2.DesiredState | None = None
        self._resume: _Resume | None = None
        self._attempt: Attempt | None = None
        self._retry_delay = 0.0
        self._wake = asyncio.Event()
        self.steps = Steps(
            store=store,
            fetcher=fetcher,
            verifier=verifier or PinnedDigestVerifier(),
            runtimes=runtimes,
            runtime_options=runtime_options,
            state=state,
            serving=serving,
            report=report,
            resources=resources or SystemResources(),
            clock=clock or SystemClock(),
            limits=self._limits,
            trial=self._trial,
            update=self._update,
            logger=logger,
            on_change=on_change,
            pending=lambda: self._pending,
            wake=self._wake,
        )
        self._table: dict[UpdateState, Callable[[Attempt], Awaitable[UpdateEvent]]] = {
            S.DOWNLOADING: self.steps.download,
            S.VERIFYING: self.steps.verify,
            S.LOADING: self.steps.load,
            S.ACTIVATING: self.steps.activate,
            S.TRIAL: self.steps.judge,
            S.COMMITTING: self.steps.commit,
            S.ROLLING_BACK: self.steps.roll_back,
        }

    # -- what others read ------------------------------------------------------------------------

    @property
    def last_failure(self) -> str:
        return self.steps.last_failure

    def fill_status(self, msg: device_pb2.DeviceStatus) -> None:
        """The status fields the updater owns: which trial policy judged, and the last load's cost."""
        steps = self.steps
        msg.trial_policy_source = steps.policy_source
        msg.trial_policy_digest = steps.policy_digest
        msg.last_load_ms = steps.last_load_ms
        msg.session_memory_bytes = steps.session_memory_bytes

    @property
    def trial(self) -> TrialSession | None:
        """The trial in progress (new version on trial, not yet committed or rolled back)."""
        attempt = self._attempt
        if attempt is None or attempt.session is None or self.machine.state not in (S.TRIAL, S.ACTIVATING):
            return None
        return attempt.session

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once ``predicate()`` holds, checking it after every state transition.

        Raises TimeoutError after ``timeout`` seconds. Only state the machine's transitions change
        (its state, its history, the trial in progress) makes a useful predicate.
        """
        async with asyncio.timeout(timeout):
            while not predicate():
                self._transitioned.clear()
                await self._transitioned.wait()

    def poke(self) -> None:
        """Re-check a running trial's clock now (tests move a fake clock, then poke)."""
        self._wake.set()

    # -- intake ----------------------------------------------------------------------------------

    def submit(self, payload: bytes) -> None:
        """Take a payload from the desired topic; report and drop it if it cannot be applied."""
        if not payload:
            # An empty retained message is the hub clearing the topic, not a desired state.
            self._log.debug("desired state cleared on the broker; keeping the current model")
            return
        try:
            desired = self._decoder.decode(payload)
            verdict = check_desired(
                desired,
                device_id=self._device_id,
                fleet=self._fleet,
                applied_generation=self._state.state.applied_generation,
                max_artifact_bytes=self._limits.max_artifact_bytes,
                max_profile_bytes=self._limits.max_profile_bytes,
            )
        except DesiredRejectedError as e:
            self._log.warning("desired state rejected: %s", e)
            self._report(K.EVENT_KIND_DESIRED_REJECTED, str(e))
            return
        if self._known(desired.generation):
            self._log.debug("desired generation %d already known; ignoring the copy", desired.generation)
            return
        refusal = self._state.state.refusal(desired.model.sha256) if desired.HasField("model") else None
        if refusal is not None:
            if verdict is not Intake.DUPLICATE:
                self._refuse(desired, refusal.generation, refusal.reason)
            return
        if verdict is Intake.DUPLICATE and not self._needs_apply(desired):
            self._log.debug("desired generation %d already applied; ignoring the copy", desired.generation)
            return
        self._log.info("desired state generation=%d model=%s", desired.generation, _describe(desired))
        self._report(
            K.EVENT_KIND_DESIRED_RECEIVED,
            model=desired.model if desired.HasField("model") else None,
            generation=desired.generation,
        )
        if self._pending is None or desired.generation > self._pending.generation:
            self._pending = desired
            self._wake.set()

    def _refuse(self, desired: desired_pb2.DesiredState, rolled_back_at: int, why: str) -> None:
        m = desired.model
        reason = (
            f"{m.name}:{m.version} (sha256 {m.sha256[:12]}…) was rolled back on this device at generation "
            f"{rolled_back_at} ({why}); refusing it until the hub assigns another version"
        )
        self._log.warning("desired state rejected: %s", reason)
        self._report(K.EVENT_KIND_DESIRED_REJECTED, reason, model=m, generation=desired.generation)
        try:
            # Acted upon: the retained copy that comes back on every reconnect stays quiet.
            self._state.update(
                applied_generation=max(self._state.state.applied_generation, desired.generation)
            )
        except StateFileError as e:
            self._log.error("cannot record the refused generation: %s", e)

    def _needs_apply(self, desired: desired_pb2.DesiredState) -> bool:
        applied = self._state.state.applied_generation
        if desired.generation != applied:
            return desired.generation > applied
        # The applied generation, yet not what serves (its artifact failed at start): apply it again.
        if not desired.HasField("model") or self._state.state.refusal(desired.model.sha256) is not None:
            return False
        current = self._serving.current
        return current is None or current.ref.sha256 != desired.model.sha256

    def _known(self, generation: int) -> bool:
        resuming = self._resume.desired if self._resume is not None else None
        return any(
            d is not None and d.generation == generation
            for d in (self._pending, self._in_flight, self._failed, resuming)
        )

    def retry_now(self) -> None:
        """Retry a failed desired state without waiting out the back-off (a resync command)."""
        if self._failed is not None and self._pending is None:
            self._pending = self._failed
            self._wake.set()

    # -- restart ---------------------------------------------------------------------------------

    def resume(self) -> None:
        """Pick up what the state file says was in progress (call once, before :meth:`run`)."""
        saved = self._state.state
        record = saved.update
        if record is None:
            if saved.trial is not None:
                self._save_quietly(trial=None)  # a trial slot without its record: nothing to resume
            return
        try:
            where = UpdateState(record.state)
        except ValueError:
            self._log.error("unknown update state %r in the state file; dropping it", record.state)
            self._save_quietly(update=None, trial=None)
            return
        restarts = record.restarts + (0 if record.clean_stop else 1)
        self._save_quietly(update=replace(record, restarts=restarts, clean_stop=False))
        reject: Verdict | None = None
        ref = record.desired.model
        if where is S.ROLLING_BACK:
            reject = Verdict(
                False, dict(record.details).get("gate", "rollback"), record.reason, dict(record.details)
            )
        elif where not in BEFORE_SWAP and restarts > self._trial.max_restarts:
            reject = Verdict(
                False,
                "crash_loop",
                f"the agent restarted {restarts} times during the trial of {ref.name}:{ref.version} "
                f"(limit {self._trial.max_restarts}): a crash loop counts as a failed trial",
                {"restarts": restarts},
            )
        self._log.info("resuming the update of generation %d from %s", record.generation, where.name)
        self._resume = _Resume(record.desired, record.saves, restarts, reject)
        self._wake.set()

    def mark_clean_stop(self) -> None:
        """Note in the state file that this stop was on purpose, so a restart does not count as a crash."""
        record = self._state.state.update
        if record is not None:
            self._save_quietly(update=replace(record, clean_stop=True))

    def _save_quietly(self, **changes: object) -> None:
        try:
            self._state.update(**changes)
        except StateFileError as e:
            self._log.error("cannot save the update state: %s", e)

    # -- loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Apply desired states as they come, retrying failures with back-off. Runs until cancelled."""
        while True:
            plan, self._resume = self._resume, None
            desired = plan.desired if plan is not None else await self._next()
            self._in_flight = desired
            try:
                await self.apply(desired, resume=plan)
            finally:
                self._in_flight = None
            if self.machine.state is S.FAILED:
                self._failed = desired
                self._retry_delay = self._backoff.next_delay()
                self._log.info("will retry generation %d in %.1f s", desired.generation, self._retry_delay)
            else:
                # Serving what was asked, or rolled back (refused): nothing to retry.
                self._failed = None
                self._backoff.reset()

    async def _next(self) -> desired_pb2.DesiredState:
        while True:
            pending, self._pending = self._pending, None
            if pending is not None:
                if self._needs_apply(pending):
                    return pending
                continue
            self._wake.clear()
            timeout = self._retry_delay if self._failed is not None else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                if self._failed is not None:
                    return self._failed

    # -- one attempt -----------------------------------------------------------------------------

    async def apply(self, desired: desired_pb2.DesiredState, *, resume: _Resume | None = None) -> bool:
        """Walk the machine for ``desired`` until it rests; True when it serves what was asked."""
        if self.machine.state is not S.IDLE:
            self.machine.post(E.RETRY)
        if not desired.HasField("model"):
            return self._record_applied(desired.generation)
        ref = desired.model
        committed = self._state.state.active
        current = self._serving.current
        if (
            resume is None
            and current is not None
            and current.ref.sha256 == ref.sha256
            and (committed is not None and committed.sha256 == ref.sha256)
        ):
            return self._record_applied(desired.generation)
        refusal = self._state.state.refusal(ref.sha256)
        if resume is None and refusal is not None:
            self._refuse(desired, refusal.generation, refusal.reason)
            return False
        attempt = Attempt(
            desired=desired,
            ref=ref,
            saves=resume.saves if resume else 0,
            restarts=resume.restarts if resume else 0,
        )
        self._attempt = attempt
        try:
            return await self._walk(attempt, resume)
        finally:
            self._attempt = None

    async def _walk(self, attempt: Attempt, resume: _Resume | None) -> bool:
        try:
            self._runtimes.check_format(attempt.ref.format)
        except ModelLoadError as e:
            self.steps.fail(K.EVENT_KIND_INSTALL_FAILED, attempt, str(e))
            self.machine.post(E.FAIL)
            return False
        if resume is not None and resume.reject is not None:
            attempt.verdict = resume.reject
            first = E.REJECT
        else:
            stored = all(self.steps.store.has(a.sha256) for a in attempt.artifacts)
            first = E.CACHED if stored else E.FETCH
        state = self.machine.post(first)
        while state not in RESTING:
            state = self.machine.post(await self._run_step(state, attempt))
        if state is S.IDLE:
            self.steps.last_failure = ""
        elif state is S.FAILED:
            self._save_quietly(update=None, trial=None)
        return state is S.IDLE

    async def _run_step(self, state: UpdateState, attempt: Attempt) -> UpdateEvent:
        try:
            self._checkpoint(state, attempt)
        except StateLoopError as e:
            self._log.error("%s", e)
            attempt.verdict = Verdict(False, "state_loop", str(e), {"saves": attempt.saves + 1})
            return E.LOOP
        except StateFileError as e:
            if state is not S.ROLLING_BACK:
                self.steps.fail(
                    K.EVENT_KIND_INSTALL_FAILED,
                    attempt,
                    f"cannot save the update state before {state.name}: {e}",
                )
                return E.FAIL
            # Rolling back goes on without the checkpoint: the committed model must serve.
            self._log.error("cannot save the update state before rolling back: %s", e)
        try:
            step = self._table[state](attempt)
            if state in _OWN_TIMEOUTS:
                return await step
            return await asyncio.wait_for(step, self._update.step_timeout_s)
        except TimeoutError:
            reason = f"{state.name.lower()} did not finish within {self._update.step_timeout_s:g} s"
            self.steps.fail(K.EVENT_KIND_INSTALL_FAILED, attempt, reason)
            return E.FAIL
        except Exception as e:  # a bug or an OS surprise must not take serving down
            self._log.exception("update step %s failed unexpectedly", state.name)
            self._report(
                K.EVENT_KIND_ERROR,
                f"{state.name.lower()} failed unexpectedly: {type(e).__name__}: {e}",
                model=attempt.ref,
                generation=attempt.generation,
            )
            self.steps.last_failure = f"{state.name.lower()}: {e}"
            return E.FAIL

    def _checkpoint(self, state: UpdateState, attempt: Attempt) -> None:
        """Save the state about to be entered (the loop guard counts these saves)."""
        if state is S.COMMITTING:
            return  # the commit is one atomic save of its own
        saves = attempt.saves + 1
        limit = self._update.max_state_saves
        if state is not S.ROLLING_BACK and saves > limit:
            raise StateLoopError(
                f"state looping detected: generation {attempt.generation} saved its update state "
                f"{saves} times (limit {limit}), the last time entering {state.name}"
            )
        verdict = attempt.verdict
        record = UpdateRecord(
            state=state.value,
            desired=attempt.desired,
            saves=saves,
            restarts=attempt.restarts,
            reason=verdict.reason if verdict is not None and state is S.ROLLING_BACK else "",
            # The state file keeps the text form: a resumed rollback reports the figures as text.
            details=tuple(sorted((k, as_text(v)) for k, v in verdict.figures.items()))
            if verdict is not None
            else (),
        )
        self._state.update(update=record)
        attempt.saves = saves

    def _record_applied(self, generation: int) -> bool:
        """Nothing to install (no model, or the model already serves): remember the generation."""
        try:
            self._state.update(applied_generation=generation)
        except StateFileError as e:
            self._report(K.EVENT_KIND_ERROR, str(e), generation=generation)
            self.steps.last_failure = str(e)
            self.machine.post(E.FAIL)
            return False
        self.steps.last_failure = ""
        self._on_change()
        return True


def _describe(desired: desired_pb2.DesiredState) -> str:
    if not desired.HasField("model"):
        return "(unchanged)"
    m = desired.model
    return f"{m.name}:{m.version} sha256={m.sha256}"
