"""The device agent: wires the link, the updater, the serving slot, telemetry and the local API.

One :class:`Agent` is one device. Everything runs as tasks on the caller's
event loop (no thread per agent), so a simulator runs a thousand in one
process. Blocking work that can take long (hashing, loading a model) goes to
worker threads; predictions run inline, which suits the small models edge
devices serve. While a new version is on trial, predictions go through its
:class:`~edge_agent.trial.TrialSession`; otherwise straight to the serving model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent import __version__
from edge_agent.backoff import Backoff
from edge_agent.clock import Clock, SystemClock
from edge_agent.config import AgentConfig
from edge_agent.details import DetailValue, fill_details
from edge_agent.errors import (
    AgentError,
    InferenceError,
    InputError,
    ModelLoadError,
    NoModelError,
    StateFileError,
    StoreError,
)
from edge_agent.feedback import FeedbackResult, FeedbackStore
from edge_agent.fetcher import ChannelPool, Fetcher, GrpcFetcher, SyncChannels
from edge_agent.link import MqttLink
from edge_agent.logs import device_logger
from edge_agent.memory import release_free_memory
from edge_agent.metrics import MetricsServer
from edge_agent.outbox import DiskOutbox, MemoryOutbox, Outbox, OutMessage
from edge_agent.resources import Resources
from edge_agent.runtime import RuntimeOptions, RuntimeRegistry
from edge_agent.server import LocalApiServer
from edge_agent.serving import LoadedModel, Prediction, ServingSlot, TrialRoute
from edge_agent.sketching import SketchRecorder
from edge_agent.state import PersistentState, StateFile
from edge_agent.store import ArtifactStore
from edge_agent.sysinfo import capabilities
from edge_agent.tasks import cancel_and_wait
from edge_agent.telemetry import TelemetryRecorder
from edge_agent.trust.attach import RepositoryFactory, Trust, attach_trust, own_repository
from edge_agent.trust.commands import check_bare_command
from edge_agent.trust.errors import CommandRejectedError
from edge_agent.updater import Updater
from edge_agent.verify import ArtifactVerifier, DesiredDecoder
from edge_agent.window_sketch import ProfileSpecs
from edgefleet_proto.topics import DeviceTopics
from edgefleet_proto.v1 import command_pb2, common_pb2, device_pb2, event_pb2, sketch_pb2, telemetry_pb2

__all__ = ["AGENT_VERSION", "Agent"]

log = logging.getLogger(__name__)

AGENT_VERSION = __version__
K = event_pb2.EventKind
_MAX_HEALTH = 200


class Agent:
    """One device: ``await agent.run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Clock | None = None,
        fetcher: Fetcher | None = None,
        channels: ChannelPool | None = None,
        runtimes: RuntimeRegistry | None = None,
        rng: random.Random | None = None,
        outbox: Outbox | None = None,
        verifier: ArtifactVerifier | None = None,
        decoder: DesiredDecoder | None = None,
        resources: Resources | None = None,
        sync_channels: SyncChannels | None = None,
        durable_state: bool = True,
        download_slots: asyncio.Semaphore | None = None,
        trust_repository: RepositoryFactory | None = None,
    ) -> None:
        self.config = config
        self._log = device_logger(__name__, config.device_id)
        self._clock: Clock = clock or SystemClock()
        rng = rng or random.Random()
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AgentError(f"cannot create state_dir {config.state_dir}: {e.strerror}") from e
        self.topics = DeviceTopics(config.fleet, config.device_id, config.mqtt.topic_prefix)
        self.store = ArtifactStore(config.state_dir / "artifacts")
        # Not durable only in the light simulator (edge_agent.sim_light); a device always fsyncs its state.
        self.state = PersistentState(
            StateFile(config.state_dir / "state.json", durable=durable_state), self._clock
        )
        self.outbox: Outbox = outbox or _open_outbox(config)
        self.serving = ServingSlot()
        self.serving.add_listener(self._before_swap)
        self.telemetry = TelemetryRecorder(
            clock=self._clock,
            next_seq=self.state.next_telemetry_seq,
            max_samples=config.telemetry.max_samples_per_window,
            rng=rng,
        )
        # Drift sketches ride along with telemetry windows; predictions stay open to labels.
        sk = config.sketch
        self.sketches = SketchRecorder(
            specs=ProfileSpecs(self.store, override=sk.reduction or None, logger=self._log),
            publish=self._publish_sketch,
            k=sk.k,
            buffer_rows=sk.buffer_rows,
            sketch_inputs=sk.enabled,
            logger=self._log,
        )
        self.feedback_store = FeedbackStore(
            capacity=sk.feedback_capacity, ttl_s=sk.feedback_ttl_s, clock=self._clock
        )
        self._runtimes = runtimes or RuntimeRegistry()
        self._runtime_options = RuntimeOptions(intra_op_threads=config.runtime.intra_op_threads)
        # What the status reports is what this registry loads (a simulated device may run fewer).
        self._runtime_names = self._runtimes.runtime_names()
        # A pool made here is closed here; one handed in belongs to the caller (the simulator).
        self._own_channels = channels is None and fetcher is None
        self._channels = channels or ChannelPool()
        self._fetcher: Fetcher = fetcher or GrpcFetcher(
            self._channels,
            endpoint=config.hub.grpc_endpoint,
            device_id=config.device_id,
            chunk_timeout_s=config.limits.download_chunk_timeout_s,
            max_bytes=config.limits.max_artifact_bytes,
            tls=config.hub.grpc_tls,
            ca_file=config.hub.ca_file,
            cert_file=config.hub.cert_file,
            key_file=config.hub.key_file,
            slots=download_slots,
        )
        # The signed-update channel (edge_agent.trust): a desired state counts only when the director
        # signed it, an artifact only when the TUF repository lists it. A caller that hands in its own
        # decoder or verifier (a test) takes that on itself.
        self.trust: Trust | None = None
        # Set to restart the agent (a firmware slot switch): run() returns, the caller starts it again.
        self.restart_requested = asyncio.Event()
        self._own_sync_channels = sync_channels is None
        self._sync_channels = sync_channels or SyncChannels()
        if config.trust.require_signed and decoder is None and verifier is None:
            self.trust = attach_trust(
                config,
                clock=self._clock,
                fetcher=self._fetcher,
                report=self._report,
                request_restart=self.restart_requested.set,
                sync_channels=self._sync_channels,
                agent_version=AGENT_VERSION,
                repository=trust_repository or own_repository,
                logger=device_logger("edge_agent.trust", config.device_id),
            )
            decoder, verifier = self.trust.channel, self.trust.verifier
        b = config.backoff
        self.updater = Updater(
            device_id=config.device_id,
            fleet=config.fleet,
            store=self.store,
            fetcher=self._fetcher,
            runtimes=self._runtimes,
            runtime_options=self._runtime_options,
            state=self.state,
            serving=self.serving,
            report=self._report,
            backoff=Backoff(initial_s=b.initial_s, max_s=b.max_s, multiplier=b.multiplier, rng=rng),
            limits=config.limits,
            trial=config.trial,
            update=config.update,
            verifier=verifier,
            decoder=decoder,
            resources=resources,
            clock=self._clock,
            on_change=self._on_change,
            logger=device_logger("edge_agent.updater", config.device_id),
        )
        if self.trust is not None:
            self.trust.wire(self.updater.submit, self._report, self._log)
        self.link = MqttLink(
            config=config.mqtt,
            client_id=config.mqtt_client_id,
            topics=self.topics,
            handler=self,
            outbox=self.outbox,
            backoff=Backoff(initial_s=b.initial_s, max_s=b.max_s, multiplier=b.multiplier, rng=rng),
            logger=device_logger("edge_agent.link", config.device_id),
        )
        # The local prediction API (None when the config disables it); run() starts and stops it.
        self.local_api: LocalApiServer | None = None
        if config.local_api.socket is not None or config.local_api.tcp_port:
            self.local_api = LocalApiServer(
                self, socket_path=config.local_api.socket, tcp_port=config.local_api.tcp_port
            )
        self.metrics: MetricsServer | None = (
            MetricsServer(self, port=config.metrics.port) if config.metrics.port else None
        )
        # Counts of what the updater reported, for the metrics endpoint.
        self.event_counts: dict[str, int] = {}
        # Refused commands by check (unsigned, bad_signature, replayed, ...), for the metrics endpoint.
        self.command_refusals: dict[str, int] = {}
        # Set once the local API listens and the first broker connection is up.
        self.ready = asyncio.Event()

    # -- what others read ------------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self.config.device_id

    @property
    def active_model(self) -> LoadedModel | None:
        return self.serving.current

    @property
    def agent_version(self) -> str:
        return AGENT_VERSION

    def health(self) -> str:
        trial = self.updater.trial
        if trial is not None:
            ref, judge = trial.candidate.ref, trial.judge
            window = self.config.trial.window_requests
            seen = f"{judge.requests}/{window}" if window else str(judge.requests)
            return f"trial: {ref.name}:{ref.version} ({trial.mode.value}, {seen} requests)"[:_MAX_HEALTH]
        if self.updater.last_failure:
            return f"degraded: {self.updater.last_failure}"[:_MAX_HEALTH]
        return "serving" if self.serving.current is not None else "idle"

    async def wait_serving(self, sha256: str, timeout: float) -> LoadedModel:
        """Return once the model with ``sha256`` serves; TimeoutError after ``timeout`` seconds."""
        return await self.serving.wait_for(sha256, timeout)

    # -- serving ---------------------------------------------------------------------------------

    def predict(self, inputs: Mapping[str, npt.ArrayLike]) -> Prediction:
        """Run the serving model (recorded in telemetry); a single input may use the name ""."""
        trial = self.serving.trial
        if trial is not None:
            return self._predict_trial(trial, inputs)
        loaded = self.serving.current  # read once: a swap mid-request must not mix two models
        start = self._clock.monotonic()
        if loaded is None:
            self.telemetry.record(0.0, error=True)
            raise NoModelError("no model is serving yet: the device waits for its desired state")
        try:
            checked = loaded.check(inputs)
            outputs = loaded.runtime.predict(checked)
        except (InputError, InferenceError):
            self.telemetry.record((self._clock.monotonic() - start) * 1000, error=True)
            raise
        latency_ms = (self._clock.monotonic() - start) * 1000
        self.telemetry.record(latency_ms)
        # Copies into preallocated buffers only; the sketching happens in bulk, off this path.
        model = loaded.ref
        slot = self.sketches.record(model, next(iter(checked.values())), next(iter(outputs.values())))
        return Prediction(outputs, model, latency_ms, self.feedback_store.remember(model, slot, start))

    def _predict_trial(self, trial: TrialRoute, inputs: Mapping[str, npt.ArrayLike]) -> Prediction:
        start = self._clock.monotonic()
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        try:
            result = trial.predict(arrays)
        except (InputError, InferenceError):
            self.telemetry.record((self._clock.monotonic() - start) * 1000, error=True)
            raise
        self.telemetry.record(result.latency_ms)
        slot = self.sketches.record(
            result.model, _first_input(arrays, self.serving.current), next(iter(result.outputs.values()))
        )
        prediction_id = self.feedback_store.remember(result.model, slot, start)
        return Prediction(result.outputs, result.model, result.latency_ms, prediction_id)

    def feedback(self, prediction_id: str, label: int) -> FeedbackResult:
        """The true class of an earlier prediction (by :attr:`Prediction.id`), counted into the
        open window's labels. Raises UnknownPredictionError (unknown or expired id),
        DuplicateLabelError (labelled already) or LabelError (not one of the model's classes)."""
        result = self.feedback_store.label(prediction_id, label)
        self.sketches.count_label(result.model.version, result.label, result.predicted)
        return result

    # -- link handler ----------------------------------------------------------------------------

    def status(self, state: device_pb2.DeviceState.ValueType) -> device_pb2.DeviceStatus:
        saved = self.state.state
        msg = device_pb2.DeviceStatus(
            device_id=self.device_id,
            fleet=self.config.fleet,
            state=state,
            agent_version=AGENT_VERSION,
            capabilities=capabilities(self.config.state_dir, self._runtime_names),
            labels=dict(self.config.labels),
            sent_at_ms=self._clock.wall_ms(),
            applied_generation=saved.applied_generation,
            health=self.health() if state == device_pb2.DEVICE_STATE_ONLINE else "offline",
            # The hub refuses firmware for another board before it signs anything.
            hardware_id=self.config.firmware.hardware_id,
        )
        msg.slots.extend(self.status_slots())
        trial = self.updater.trial
        if trial is not None:
            msg.trial.CopyFrom(trial.status())
        msg.dropped_messages = self.outbox.dropped
        msg.queued_messages = len(self.outbox)
        self.updater.fill_status(msg)
        if self.trust is not None:
            msg.trusted_root_version = self.trust.root_version()
            firmware = self.trust.firmware
            if firmware is not None and firmware.manager.running is not None:
                msg.firmware_version = firmware.manager.running.version
                msg.firmware_slot = firmware.manager.active_slot
        return msg

    def status_slots(self) -> list[device_pb2.Slot]:
        """``active`` (what answers now), ``previous`` (the rollback target), ``trial`` (being judged)."""
        slots: list[device_pb2.Slot] = []
        current = self.serving.current
        if current is not None:
            slots.append(device_pb2.Slot(name="active", model=current.ref))
        trial = self.updater.trial
        # During a trial the rollback target is the committed model; otherwise the one before it.
        if trial is not None:
            previous = trial.previous.ref if trial.previous is not None else None
        else:
            previous = self.state.state.previous
        if previous is not None:
            slots.append(device_pb2.Slot(name="previous", model=previous))
        if trial is not None:
            slots.append(device_pb2.Slot(name="trial", model=trial.candidate.ref))
        return slots

    def on_desired(self, payload: bytes) -> None:
        self.updater.submit(payload)

    def on_command(self, payload: bytes) -> None:
        """Act on a command from the cmd topic, once the director's signature and its content check out.

        A refused command is logged, counted (``command_refusals``, exported as a metric) and
        reported as an error event naming the check; it never raises into the link.
        """
        try:
            cmd = self._accept_command(payload)
        except CommandRejectedError as e:
            self.command_refusals[e.code] = self.command_refusals.get(e.code, 0) + 1
            self._log.warning("refused a command (%s): %s", e.code, e)
            self._report(
                K.EVENT_KIND_ERROR, f"refused a command: {e}", details={"check": e.code, "channel": "cmd"}
            )
            return
        body = cmd.WhichOneof("body")
        if body == "resync":
            self.link.request_resync()
            self.updater.retry_now()
        elif body == "ping":
            self.link.request_status()
        else:
            self._log.warning("ignoring command seq=%d with unknown body %r", cmd.seq, body)

    def _accept_command(self, payload: bytes) -> command_pb2.Command:
        now_ms = self._clock.wall_ms()
        commands = self.trust.commands if self.trust is not None else None
        if commands is not None:
            return commands.accept(payload)
        if not self.config.trust.require_signed:
            # Signed updates switched off (the local demo): the bare form, as desired states are then.
            return check_bare_command(
                payload, device_id=self.device_id, fleet=self.config.fleet, now_ms=now_ms
            )
        raise CommandRejectedError(
            "this agent has no director keys to check a command's signature: unsigned commands are refused"
        )

    # -- run -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then flush telemetry, say OFFLINE and close the local API."""
        try:
            await self.restore()
            if self.local_api is not None:
                await self.local_api.start()
            if self.metrics is not None:
                try:
                    await self.metrics.start()
                except AgentError as e:
                    # Metrics are for the operator; the device keeps serving without them.
                    self._log.error("%s", e)
                    self.metrics = None
            await self._serve(stop)
            self.updater.mark_clean_stop()
        finally:
            if self.metrics is not None:
                await self.metrics.stop()
            if self.local_api is not None:
                await self.local_api.stop()
            if self._own_channels:
                await self._channels.close()
            if self._own_sync_channels:
                self._sync_channels.close()
            self.outbox.close()

    async def _serve(self, stop: asyncio.Event) -> None:
        link_stop = asyncio.Event()
        link_task = asyncio.create_task(self.link.run(link_stop), name=f"link-{self.device_id}")
        workers = [
            link_task,
            asyncio.create_task(self.updater.run(), name=f"updater-{self.device_id}"),
            asyncio.create_task(self._telemetry_loop(), name=f"telemetry-{self.device_id}"),
        ]
        firmware = self.trust.firmware if self.trust is not None else None
        if firmware is not None:
            workers.append(asyncio.create_task(firmware.run(), name=f"firmware-{self.device_id}"))
        interval = self.config.trust.refresh_interval_s
        if self.trust is not None and interval > 0:
            watch = self.trust.watch(self._report, interval, self._log)
            workers.append(asyncio.create_task(watch, name=f"trust-{self.device_id}"))
        ready = asyncio.create_task(self._mark_ready(), name=f"ready-{self.device_id}")
        # A restart request (firmware slot switch) ends serving like a stop does.
        stopper = asyncio.create_task(_first(stop, self.restart_requested), name=f"stop-{self.device_id}")
        try:
            done, _ = await asyncio.wait([stopper, *workers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper:
                    # Workers run until cancelled: ending any other way is a bug worth stopping for.
                    raise RuntimeError(f"agent task {task.get_name()} ended") from task.exception()
        finally:
            await cancel_and_wait([stopper, ready, *workers[1:]])
            # The last window and queued events go out before OFFLINE (the link drains, briefly).
            self._queue_window(final=True)
            self.sketches.flush()
            link_stop.set()
            with contextlib.suppress(Exception):
                await link_task

    async def _mark_ready(self) -> None:
        await self.link.connected.wait()
        self.ready.set()
        firmware = self.trust.firmware if self.trust is not None else None
        if firmware is not None:
            # A new firmware slot commits once the agent is up and talking to the broker again.
            await firmware.confirm_boot(self.link.connected, timeout_s=60.0)

    async def restore(self) -> None:
        """Serve what the state file names, verified again; fall back to the previous model.

        Then hand an unfinished update to the updater, which resumes it or rolls it back.
        :meth:`run` calls it first; a damaged state file or artifact is reported, never fatal.
        """
        if self.state.load_problem is not None:
            self._log.error("%s", self.state.load_problem)
            self._report(K.EVENT_KIND_ERROR, self.state.load_problem)
        firmware = self.trust.firmware if self.trust is not None else None
        if firmware is not None:
            firmware.manager.boot()  # the boot loader's part: count a trial boot, or fall back
        await self._restore_committed()
        release_free_memory()  # the load's transient peak need not stay resident
        self.updater.resume()

    async def _restore_committed(self) -> None:
        # The committed model, never a trial: a version on trial is not trusted to start with.
        saved = self.state.state
        for slot, ref in (("active", saved.active), ("previous", saved.previous)):
            if ref is None:
                continue
            try:
                path = await asyncio.to_thread(self.store.verified_path, ref)
                runtime = await asyncio.to_thread(
                    self._runtimes.load, ref.format, path, self._runtime_options
                )
            except (StoreError, ModelLoadError) as e:
                reason = f"cannot restore the {slot} model {ref.name}:{ref.version}: {e}"
                self._log.error("%s", reason)
                self._report(K.EVENT_KIND_ERROR, reason, model=ref)
                continue
            self.serving.swap(LoadedModel(ref=ref, runtime=runtime))
            if slot == "previous":
                self._fall_back_to(ref, saved.active)
            self._log.info("serving %s model %s:%s", slot, ref.name, ref.version)
            return

    def _fall_back_to(self, ref: common_pb2.ModelRef, failed: common_pb2.ModelRef | None) -> None:
        # The desired state that named the failed model arrives again on connect and is re-applied.
        try:
            self.state.update(active=ref, previous=None)
        except StateFileError as e:
            self._log.error("cannot record the fallback: %s", e)
        what = f"{failed.name}:{failed.version}" if failed is not None else "the active model"
        self._report(
            K.EVENT_KIND_ROLLED_BACK,
            f"{what} could not be restored at start; serving the previous model {ref.name}:{ref.version}",
            model=ref,
        )

    async def _telemetry_loop(self) -> None:
        while True:
            # A periodic timer, not a wait for something to happen.
            await asyncio.sleep(self.config.telemetry.interval_s)
            self._queue_window()
            self.sketches.flush()  # bulk sketching of the closed window, here off the request path

    def _queue_window(self, *, final: bool = False, model: common_pb2.ModelRef | None = None) -> None:
        current = self.serving.current
        served = model or (current.ref if current is not None else None)
        if self.telemetry.requests == 0 and (served is None or final) and not self.sketches.has_labels:
            # Nothing served and nothing asked, or a shutdown with nothing to say: no window.
            self.telemetry.restart()
            return
        window = self.telemetry.close_window(model=served)
        batch = telemetry_pb2.TelemetryBatch(device_id=self.device_id, windows=[window])
        self.outbox.put(OutMessage(self.topics.telemetry, batch.SerializeToString()))
        # The sketch window with the same seq; published by SketchRecorder.flush (on the event loop).
        self.sketches.seal(window)

    def _publish_sketch(self, window: sketch_pb2.SketchWindow) -> None:
        batch = sketch_pb2.SketchBatch(device_id=self.device_id, windows=[window])
        self.outbox.put(OutMessage(self.topics.sketch, batch.SerializeToString()))

    def _before_swap(self, old: LoadedModel | None, new: LoadedModel | None) -> None:
        # Close the window on the old model so that no window mixes two versions; requests refused
        # while no model served close as a window of no model, so the first version is not blamed.
        if self.telemetry.requests:
            self._queue_window(model=old.ref if old is not None else None)

    def _on_change(self) -> None:
        self.link.request_status()
        if self.local_api is not None:
            self.local_api.notify_serving(self.serving.current is not None)

    def _report(
        self,
        kind: event_pb2.EventKind.ValueType,
        reason: str = "",
        *,
        model: common_pb2.ModelRef | None = None,
        generation: int = 0,
        details: Mapping[str, DetailValue] | None = None,
    ) -> None:
        event = event_pb2.Event(
            device_id=self.device_id,
            seq=self.state.next_event_seq(),
            ts_ms=self._clock.wall_ms(),
            kind=kind,
            reason=reason,
            generation=generation,
        )
        fill_details(event, details or {})
        if model is not None:
            event.model.CopyFrom(model)
        name = K.Name(kind).removeprefix("EVENT_KIND_").lower()
        self.event_counts[name] = self.event_counts.get(name, 0) + 1
        self._log.debug("event %s seq=%d %s", K.Name(kind), event.seq, reason)
        self.outbox.put(OutMessage(self.topics.events, event.SerializeToString()))
        what = f"{model.name}:{model.version}" if model is not None and model.name else ""
        line = reason if reason.startswith(what) else f"{what} {reason}"
        self.outbox.note(event.ts_ms, name, line.strip())


def _first_input(inputs: Mapping[str, npt.NDArray[Any]], loaded: LoadedModel | None) -> npt.NDArray[Any]:
    """The model's first input among ``inputs`` (the one a data profile describes)."""
    if len(inputs) > 1 and loaded is not None:
        first = inputs.get(loaded.runtime.inputs[0].name)
        if first is not None:
            return first
    return next(iter(inputs.values()))


def _open_outbox(config: AgentConfig) -> Outbox:
    q = config.queue
    if q.path is None:
        return MemoryOutbox(q.max_messages)
    return DiskOutbox(q.path, q.max_messages, sync=q.sync)


async def _first(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
