"""The device agent: wires the link, the updater, the serving slot, telemetry and the local API.

One :class:`Agent` is one device. Everything runs as tasks on the caller's
event loop (no thread per agent), so a simulator runs a thousand in one
process. Blocking work that can take long (hashing, loading a model) goes to
worker threads; predictions run inline, which suits the small models edge
devices serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from edge_agent import __version__
from edge_agent.backoff import Backoff
from edge_agent.clock import Clock, SystemClock
from edge_agent.config import AgentConfig
from edge_agent.errors import (
    AgentError,
    InferenceError,
    InputError,
    ModelLoadError,
    NoModelError,
    StateFileError,
    StoreError,
)
from edge_agent.fetcher import ChannelPool, Fetcher, GrpcFetcher
from edge_agent.link import MqttLink, Outbox, OutMessage
from edge_agent.logs import device_logger
from edge_agent.runtime import RuntimeOptions, RuntimeRegistry, available_runtimes
from edge_agent.server import LocalApiServer
from edge_agent.serving import LoadedModel, Prediction, ServingSlot
from edge_agent.state import PersistentState, StateFile
from edge_agent.store import ArtifactStore
from edge_agent.sysinfo import capabilities
from edge_agent.tasks import cancel_and_wait
from edge_agent.telemetry import TelemetryRecorder
from edge_agent.tensors import check_inputs
from edge_agent.updater import Updater
from edgefleet_proto.topics import DeviceTopics
from edgefleet_proto.v1 import command_pb2, common_pb2, device_pb2, event_pb2, telemetry_pb2

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
        outbox_size: int = 1000,
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
        self.state = PersistentState(StateFile(config.state_dir / "state.json"), self._clock)
        self.outbox = Outbox(outbox_size)
        self.serving = ServingSlot()
        self.serving.add_listener(self._before_swap)
        self.telemetry = TelemetryRecorder(
            clock=self._clock,
            next_seq=self.state.next_telemetry_seq,
            max_samples=config.telemetry.max_samples_per_window,
            rng=rng,
        )
        self._runtimes = runtimes or RuntimeRegistry()
        self._runtime_options = RuntimeOptions(intra_op_threads=config.runtime.intra_op_threads)
        self._runtime_names = available_runtimes()
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
        )
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
            max_artifact_bytes=config.limits.max_artifact_bytes,
            on_change=self._on_change,
            logger=device_logger("edge_agent.updater", config.device_id),
        )
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
        # The local prediction API (None when the config disables it); run() starts and stops it.
        self.local_api: LocalApiServer | None = None
        if config.local_api.socket is not None or config.local_api.tcp_port:
            self.local_api = LocalApiServer(
                self, socket_path=config.local_api.socket, tcp_port=config.local_api.tcp_port
            )
        # Set once the local API listens and the first broker connection is up.
        self.ready = asyncio.Event()

    # -- what others read ------------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self.config.device_id

    @property
    def active_model(self) -> LoadedModel | None:
        return self.serving.current

    def health(self) -> str:
        if self.updater.last_failure:
            return f"degraded: {self.updater.last_failure}"[:_MAX_HEALTH]
        return "serving" if self.serving.current is not None else "idle"

    async def wait_serving(self, sha256: str, timeout: float) -> LoadedModel:
        """Return once the model with ``sha256`` serves; TimeoutError after ``timeout`` seconds."""
        return await self.serving.wait_for(sha256, timeout)

    # -- serving ---------------------------------------------------------------------------------

    def predict(self, inputs: Mapping[str, npt.ArrayLike]) -> Prediction:
        """Run the serving model (recorded in telemetry); a single input may use the name ""."""
        loaded = self.serving.current  # read once: a swap mid-request must not mix two models
        start = self._clock.monotonic()
        if loaded is None:
            self.telemetry.record(0.0, error=True)
            raise NoModelError("no model is serving yet: the device waits for its desired state")
        try:
            arrays = {name: np.asarray(value) for name, value in inputs.items()}
            outputs = loaded.runtime.predict(check_inputs(loaded.runtime.inputs, arrays))
        except (InputError, InferenceError):
            self.telemetry.record((self._clock.monotonic() - start) * 1000, error=True)
            raise
        latency_ms = (self._clock.monotonic() - start) * 1000
        self.telemetry.record(latency_ms)
        return Prediction(outputs=outputs, model=loaded.ref, latency_ms=latency_ms)

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
        )
        current = self.serving.current
        if current is not None:
            msg.slots.add(name="active", model=current.ref)
        if saved.previous is not None:
            msg.slots.add(name="previous", model=saved.previous)
        return msg

    def on_desired(self, payload: bytes) -> None:
        self.updater.submit(payload)

    def on_command(self, payload: bytes) -> None:
        try:
            cmd = command_pb2.Command.FromString(payload)
        except DecodeError as e:
            self._report(K.EVENT_KIND_ERROR, f"malformed command: expected a Command protobuf ({e})")
            return
        if cmd.device_id != self.device_id:
            self._log.warning("ignoring a command for device %r", cmd.device_id)
            return
        if cmd.expires_at_ms and cmd.expires_at_ms < self._clock.wall_ms():
            self._log.info("ignoring command seq=%d: expired at %d", cmd.seq, cmd.expires_at_ms)
            return
        body = cmd.WhichOneof("body")
        if body == "resync":
            self.link.request_resync()
            self.updater.retry_now()
        elif body == "ping":
            self.link.request_status()
        else:
            self._log.warning("ignoring command seq=%d with unknown body %r", cmd.seq, body)

    # -- run -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then flush telemetry, say OFFLINE and close the local API."""
        try:
            await self.restore()
            if self.local_api is not None:
                await self.local_api.start()
            await self._serve(stop)
        finally:
            if self.local_api is not None:
                await self.local_api.stop()
            if self._own_channels:
                await self._channels.close()

    async def _serve(self, stop: asyncio.Event) -> None:
        link_stop = asyncio.Event()
        link_task = asyncio.create_task(self.link.run(link_stop), name=f"link-{self.device_id}")
        workers = [
            link_task,
            asyncio.create_task(self.updater.run(), name=f"updater-{self.device_id}"),
            asyncio.create_task(self._telemetry_loop(), name=f"telemetry-{self.device_id}"),
        ]
        ready = asyncio.create_task(self._mark_ready(), name=f"ready-{self.device_id}")
        stopper = asyncio.create_task(stop.wait(), name=f"stop-{self.device_id}")
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
            link_stop.set()
            with contextlib.suppress(Exception):
                await link_task

    async def _mark_ready(self) -> None:
        await self.link.connected.wait()
        self.ready.set()

    async def restore(self) -> None:
        """Serve what the state file names, verified again; fall back to the previous model.

        :meth:`run` calls it first; a damaged state file or artifact is reported, never fatal.
        """
        if self.state.load_problem is not None:
            self._log.error("%s", self.state.load_problem)
            self._report(K.EVENT_KIND_ERROR, self.state.load_problem)
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

    def _queue_window(self, *, final: bool = False, model: common_pb2.ModelRef | None = None) -> None:
        current = self.serving.current
        served = model or (current.ref if current is not None else None)
        if self.telemetry.requests == 0 and (served is None or final):
            # Nothing served and nothing asked, or a shutdown with nothing to say: no window.
            self.telemetry.restart()
            return
        window = self.telemetry.close_window(model=served)
        batch = telemetry_pb2.TelemetryBatch(device_id=self.device_id, windows=[window])
        self.outbox.put(OutMessage(self.topics.telemetry, batch.SerializeToString()))

    def _before_swap(self, old: LoadedModel | None, new: LoadedModel) -> None:
        # Close the window on the old model so that no window mixes two versions.
        if old is not None and self.telemetry.requests:
            self._queue_window(model=old.ref)

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
        details: Mapping[str, str] | None = None,
    ) -> None:
        event = event_pb2.Event(
            device_id=self.device_id,
            seq=self.state.next_event_seq(),
            ts_ms=self._clock.wall_ms(),
            kind=kind,
            reason=reason,
            details=dict(details or {}),
            generation=generation,
        )
        if model is not None:
            event.model.CopyFrom(model)
        self._log.debug("event %s seq=%d %s", K.Name(kind), event.seq, reason)
        self.outbox.put(OutMessage(self.topics.events, event.SerializeToString()))
