"""Applying desired states: the I/O around the update state machine.

:meth:`Updater.submit` takes a desired-state payload from the transport and
decides at once (reporting DESIRED_RECEIVED or DESIRED_REJECTED);
:meth:`Updater.run` applies accepted ones in order, newest wins, and retries a
failed one after a capped, jittered back-off. Each attempt walks
:class:`~edge_agent.update_machine.UpdateMachine`: every state has a step here
that does the work and posts an event; the machine's table picks what follows.
The model that serves keeps serving until a new one is verified, loaded and
recorded in the state file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_agent.backoff import Backoff
from edge_agent.desired import Verdict, check_desired, decode_desired
from edge_agent.errors import (
    DesiredRejectedError,
    DownloadError,
    ModelLoadError,
    StateFileError,
    StoreError,
    VerifyError,
)
from edge_agent.fetcher import Fetcher
from edge_agent.logs import Log
from edge_agent.runtime import ModelRuntime, RuntimeOptions, RuntimeRegistry
from edge_agent.serving import LoadedModel, ServingSlot
from edge_agent.state import PersistentState
from edge_agent.store import ArtifactStore
from edge_agent.update_machine import RESTING, UpdateEvent, UpdateMachine, UpdateState
from edgefleet_proto.v1 import common_pb2, desired_pb2, event_pb2

__all__ = ["Reporter", "UpdateEvent", "UpdateState", "Updater"]

log = logging.getLogger(__name__)

K = event_pb2.EventKind


class Reporter(Protocol):
    """Sends an Event to the hub (numbering, timestamps and transport are the caller's)."""

    def __call__(
        self,
        kind: event_pb2.EventKind.ValueType,
        reason: str = "",
        *,
        model: common_pb2.ModelRef | None = None,
        generation: int = 0,
        details: Mapping[str, str] | None = None,
    ) -> None: ...


@dataclass(slots=True)
class _Attempt:
    """What one attempt at one desired state has gathered so far."""

    desired: desired_pb2.DesiredState
    ref: common_pb2.ModelRef
    downloaded: bool = False
    path: Path | None = None
    runtime: ModelRuntime | None = None

    @property
    def generation(self) -> int:
        return self.desired.generation


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
        max_artifact_bytes: int,
        on_change: Callable[[], None] = lambda: None,
        logger: Log = log,
    ) -> None:
        self._log = logger
        self._device_id = device_id
        self._fleet = fleet
        self._store = store
        self._fetcher = fetcher
        self._runtimes = runtimes
        self._options = runtime_options
        self._state = state
        self._serving = serving
        self._report = report
        self._backoff = backoff
        self._max_bytes = max_artifact_bytes
        # Called after anything the status message shows has changed (active model, generation).
        self._on_change = on_change
        self.machine = UpdateMachine()
        self._steps: dict[UpdateState, Callable[[_Attempt], Awaitable[UpdateEvent]]] = {
            UpdateState.DOWNLOADING: self._download,
            UpdateState.VERIFYING: self._verify,
            UpdateState.LOADING: self._load,
            UpdateState.ACTIVATING: self._activate,
        }
        self._pending: desired_pb2.DesiredState | None = None
        self._in_flight: desired_pb2.DesiredState | None = None
        self._failed: desired_pb2.DesiredState | None = None
        self._retry_delay = 0.0
        self._wake = asyncio.Event()
        self.last_failure = ""

    # -- intake ----------------------------------------------------------------------------------

    def submit(self, payload: bytes) -> None:
        """Take a payload from the desired topic; report and drop it if it cannot be applied."""
        if not payload:
            # An empty retained message is the hub clearing the topic, not a desired state.
            self._log.debug("desired state cleared on the broker; keeping the current model")
            return
        try:
            desired = decode_desired(payload)
            verdict = check_desired(
                desired,
                device_id=self._device_id,
                fleet=self._fleet,
                applied_generation=self._state.state.applied_generation,
                max_artifact_bytes=self._max_bytes,
            )
        except DesiredRejectedError as e:
            self._log.warning("desired state rejected: %s", e)
            self._report(K.EVENT_KIND_DESIRED_REJECTED, str(e))
            return
        duplicate = verdict is Verdict.DUPLICATE and not self._needs_apply(desired)
        if duplicate or self._known(desired.generation):
            self._log.debug("desired generation %d already known; ignoring the copy", desired.generation)
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

    def _needs_apply(self, desired: desired_pb2.DesiredState) -> bool:
        applied = self._state.state.applied_generation
        if desired.generation != applied:
            return desired.generation > applied
        # The applied generation, yet not what serves (its artifact failed at start): apply it again.
        if not desired.HasField("model"):
            return False
        current = self._serving.current
        return current is None or current.ref.sha256 != desired.model.sha256

    def _known(self, generation: int) -> bool:
        return any(
            d is not None and d.generation == generation
            for d in (self._pending, self._in_flight, self._failed)
        )

    def retry_now(self) -> None:
        """Retry a failed desired state without waiting out the back-off (a resync command)."""
        if self._failed is not None and self._pending is None:
            self._pending = self._failed
            self._wake.set()

    # -- loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Apply desired states as they come, retrying failures with back-off. Runs until cancelled."""
        while True:
            desired = await self._next()
            self._in_flight = desired
            try:
                ok = await self.apply(desired)
            finally:
                self._in_flight = None
            if ok:
                self._failed = None
                self._backoff.reset()
            else:
                self._failed = desired
                self._retry_delay = self._backoff.next_delay()
                self._log.info("will retry generation %d in %.1f s", desired.generation, self._retry_delay)

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

    async def apply(self, desired: desired_pb2.DesiredState) -> bool:
        """Walk the machine for ``desired`` until it rests; True when it serves what was asked."""
        if self.machine.state is UpdateState.FAILED:
            self.machine.post(UpdateEvent.RETRY)
        if not desired.HasField("model"):
            return self._record_applied(desired.generation)
        ref = desired.model
        current = self._serving.current
        if current is not None and current.ref.sha256 == ref.sha256:
            return self._record_applied(desired.generation)
        attempt = _Attempt(desired=desired, ref=ref)
        try:
            self._runtimes.check_format(ref.format)
        except ModelLoadError as e:
            return self._fail_early(attempt, e)
        state = self.machine.post(UpdateEvent.CACHED if self._store.has(ref.sha256) else UpdateEvent.FETCH)
        while state not in RESTING:
            try:
                event = await self._steps[state](attempt)
            except Exception as e:  # a bug or an OS surprise must not take serving down
                self._log.exception("update step %s failed unexpectedly", state.name)
                self._report(
                    K.EVENT_KIND_ERROR,
                    f"{state.name.lower()} failed unexpectedly: {type(e).__name__}: {e}",
                    model=ref,
                    generation=attempt.generation,
                )
                self.last_failure = f"{state.name.lower()}: {e}"
                event = UpdateEvent.FAIL
            state = self.machine.post(event)
        if state is UpdateState.IDLE:
            self.last_failure = ""
        return state is UpdateState.IDLE

    def _record_applied(self, generation: int) -> bool:
        """Nothing to install (no model, or the model already serves): remember the generation."""
        try:
            self._state.update(applied_generation=generation)
        except StateFileError as e:
            self._report(K.EVENT_KIND_ERROR, str(e), generation=generation)
            self.last_failure = str(e)
            return False
        self.last_failure = ""
        self._on_change()
        return True

    def _fail_early(self, attempt: _Attempt, error: Exception) -> bool:
        self._fail(K.EVENT_KIND_INSTALL_FAILED, attempt, str(error))
        self.machine.post(UpdateEvent.FAIL)
        return False

    def _fail(
        self, kind: event_pb2.EventKind.ValueType, attempt: _Attempt, reason: str, **details: str
    ) -> None:
        self._log.warning(
            "update failed kind=%s generation=%d sha256=%s reason=%s",
            K.Name(kind),
            attempt.generation,
            attempt.ref.sha256,
            reason,
        )
        self.last_failure = reason
        self._report(kind, reason, model=attempt.ref, generation=attempt.generation, details=details or None)

    # -- steps: each does its work and says how it went --------------------------------------------

    async def _download(self, attempt: _Attempt) -> UpdateEvent:
        ref = attempt.ref
        offset = self._store.partial_size(ref.sha256)
        if offset > ref.length:
            # More bytes than pinned cannot be the start of the right file.
            self._store.discard_partial(ref.sha256)
            offset = 0
        endpoint = attempt.desired.artifact_endpoint
        self._report(
            K.EVENT_KIND_DOWNLOAD_STARTED,
            model=ref,
            generation=attempt.generation,
            details={"offset": str(offset), **({"endpoint": endpoint} if endpoint else {})},
        )
        try:
            async for _held in self._fetcher.fetch(
                ref, self._store.partial_path(ref.sha256), offset, endpoint=endpoint
            ):
                pass
        except DownloadError as e:
            held = self._store.partial_size(ref.sha256)
            self._fail(K.EVENT_KIND_DOWNLOAD_FAILED, attempt, str(e), offset=str(held))
            return UpdateEvent.FAIL
        attempt.downloaded = True
        self._report(
            K.EVENT_KIND_DOWNLOAD_COMPLETED,
            model=ref,
            generation=attempt.generation,
            details={"bytes": str(ref.length), "resumed_from": str(offset)},
        )
        return UpdateEvent.DONE

    async def _verify(self, attempt: _Attempt) -> UpdateEvent:
        ref = attempt.ref
        if not attempt.downloaded:
            try:
                attempt.path = await asyncio.to_thread(self._store.verified_path, ref)
            except VerifyError as e:
                self._fail(
                    K.EVENT_KIND_VERIFY_FAILED, attempt, f"stored artifact damaged, fetching it again: {e}"
                )
                self._store.discard(ref.sha256)
                return UpdateEvent.CACHE_CORRUPT
            except StoreError as e:
                self._fail(K.EVENT_KIND_INSTALL_FAILED, attempt, str(e))
                return UpdateEvent.FAIL
            return UpdateEvent.DONE
        try:
            attempt.path = await asyncio.to_thread(self._store.install_partial, ref)
        except VerifyError as e:
            self._fail(K.EVENT_KIND_VERIFY_FAILED, attempt, str(e))
            return UpdateEvent.FAIL
        except StoreError as e:
            self._fail(K.EVENT_KIND_INSTALL_FAILED, attempt, str(e))
            return UpdateEvent.FAIL
        return UpdateEvent.DONE

    async def _load(self, attempt: _Attempt) -> UpdateEvent:
        if attempt.path is None:
            raise RuntimeError("LOADING entered without a verified path")
        try:
            attempt.runtime = await asyncio.to_thread(
                self._runtimes.load, attempt.ref.format, attempt.path, self._options
            )
        except ModelLoadError as e:
            self._fail(K.EVENT_KIND_INSTALL_FAILED, attempt, str(e))
            return UpdateEvent.FAIL
        return UpdateEvent.DONE

    async def _activate(self, attempt: _Attempt) -> UpdateEvent:
        if attempt.runtime is None:
            raise RuntimeError("ACTIVATING entered without a loaded runtime")
        ref = attempt.ref
        saved = self._state.state
        old = saved.active
        previous = old if old is not None and old.sha256 != ref.sha256 else saved.previous
        try:
            # The file first: after a crash here the agent restarts into the new model, verified.
            self._state.update(active=ref, previous=previous, applied_generation=attempt.generation)
        except StateFileError as e:
            self._fail(K.EVENT_KIND_INSTALL_FAILED, attempt, str(e))
            return UpdateEvent.FAIL
        self._serving.swap(LoadedModel(ref=ref, runtime=attempt.runtime))
        self._log.info("activated model=%s:%s sha256=%s", ref.name, ref.version, ref.sha256)
        self._report(
            K.EVENT_KIND_ACTIVATED,
            model=ref,
            generation=attempt.generation,
            details={"previous": f"{old.name}:{old.version}"} if old is not None else None,
        )
        keep = {ref.sha256} | ({previous.sha256} if previous is not None else set())
        removed = self._store.prune(keep)
        if removed:
            self._log.info("pruned artifacts: %s", ", ".join(removed))
        self._on_change()
        return UpdateEvent.DONE


def _describe(desired: desired_pb2.DesiredState) -> str:
    if not desired.HasField("model"):
        return "(unchanged)"
    m = desired.model
    return f"{m.name}:{m.version} sha256={m.sha256}"
