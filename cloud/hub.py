"""One hub process: database, artifact store, gRPC artifact server, MQTT transport, HTTP API.

``Hub(settings).start()`` brings them up in dependency order and ``stop()`` takes them
down in reverse; ``run_forever()`` is what ``fleet hub`` runs.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

import uvicorn
from sqlalchemy import Engine

from cloud.api.app import create_app
from cloud.clock import Clock, utcnow
from cloud.context import HubContext
from cloud.db import SessionFactory, read_session_factory, session_factory
from cloud.drift import gates as drift_gates
from cloud.errors import HubError
from cloud.identity import service as identity
from cloud.identity.grpc_auth import ArtifactAccess
from cloud.identity.tls import server_tls, warn_plaintext
from cloud.leader import Leadership
from cloud.observability.metrics import HubMetrics
from cloud.observe import ObserveCycle
from cloud.rollouts.scheduler import RolloutScheduler
from cloud.services import assignments, registry
from cloud.services.director import Director
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.signing import Signing
from cloud.services.tokens import ensure_admin_token
from cloud.settings import Settings
from cloud.startup import HubStartError, bind_http_socket, open_database, probe_port
from cloud.storage import StorageError, open_artifact_store
from cloud.training.continuous.pipeline import PipelineConfig
from cloud.transport.grpc_server import (
    ArtifactServer,
    GrpcServerError,
    ServerLimits,
    bind_grpc_server,
    serve_artifacts,
)
from cloud.transport.mqtt import HubMqtt, check_broker
from cloud.tuf import TufSettings, ensure_initialized, open_repository
from cloud.tuf.scheduler import ResignScheduler
from cloud.tuf.sync import sync_targets
from edgefleet_proto.topics import FleetTopics

log = logging.getLogger(__name__)

__all__ = ["Hub", "HubStartError", "read_admin_token"]


class Hub:
    """Everything the hub runs, composed in one process."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        tuf_settings: TufSettings | None = None,
        broker_check_s: float | None = None,
        training: PipelineConfig | None = None,
    ) -> None:
        self.settings = settings
        # None: start without the broker and connect when it comes up (tests, the demo);
        # seconds: refuse to start unless the broker accepts the hub within that time (`fleet hub`).
        self._broker_check_s = broker_check_s
        self._http_socket: socket.socket | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._stopped = False
        self._engine: Engine | None = None
        self._grpc: ArtifactServer | None = None
        self._grpc_port: int | None = None
        self._mqtt: HubMqtt | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._api_thread: threading.Thread | None = None
        self._api_url: str | None = None
        self.context: HubContext | None = None
        self._resigner: ResignScheduler | None = None
        self._rollouts: RolloutScheduler | None = None
        self._observe: ObserveCycle | None = None
        self._leadership: Leadership | None = None
        # How continuous-training runs train (None: the production defaults; the demo makes them small).
        self._training = training
        # EDGEFLEET_TUF_* settings; tests and the demo hand in their own.
        self.tuf_settings = tuf_settings or TufSettings()
        self.ingestor: Ingestor | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start every part; returns once the API accepts connections. Stops what started on failure."""
        with self._lock:
            if self._started.is_set() or self._engine is not None:
                raise RuntimeError("Hub.start() called twice")
            try:
                self._start_parts()
            except BaseException:
                self._stop_parts()
                raise
        try:
            self.wait_until_started(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_parts(self) -> None:
        s = self.settings
        # All or nothing: every port and the database are checked before the broker hears
        # from this hub, so a hub that cannot start publishes nothing (cloud.startup).
        self._http_socket = bind_http_socket(s.api_host, s.api_port)
        probe_port(s.grpc_host, s.grpc_port, what="gRPC", env="EDGEFLEET_GRPC")
        grpc_tls = server_tls(s)
        warn_plaintext(s)
        try:
            self._grpc, self._grpc_port = bind_grpc_server(
                s.grpc_host,
                s.grpc_port,
                tls=grpc_tls,
                limits=ServerLimits(
                    max_pending_calls=s.grpc_max_pending_calls,
                    max_active_downloads=s.grpc_max_active_downloads,
                ),
            )
        except GrpcServerError as e:
            raise HubStartError(f"{e} (EDGEFLEET_GRPC_HOST, EDGEFLEET_GRPC_PORT)") from e
        try:
            s.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HubStartError(
                f"cannot create the data folder {s.data_dir}: {e.strerror} (EDGEFLEET_DATA_DIR)"
            ) from e
        engine = self._engine = open_database(s.resolved_database_url(), auto_upgrade=s.db_auto_upgrade)
        if self._broker_check_s is not None:
            check_broker(s, timeout=self._broker_check_s)
        sessions = session_factory(engine)
        with sessions() as session:
            ensure_admin_token(session, s.admin_token_path(), clock=self._clock)
        try:
            store = open_artifact_store(s)
        except StorageError as e:
            raise HubStartError(f"{e} (EDGEFLEET_ARTIFACT_STORE)") from e
        signing = self._open_signing(sessions)

        # Read-only sessions: a download's check never waits on the write lock (cloud.db).
        reads = read_session_factory(engine)
        is_served = registry.ServedArtifacts(reads, also=signing.repo.has_target_sha256)
        # Downloads name their caller: a device certificate, a token, or loopback in the plaintext demo.
        access = ArtifactAccess(reads, plaintext=grpc_tls is None, clock=self._clock)
        serve_artifacts(self._grpc, store, is_served, metadata=signing.repo.metadata_file, authorize=access)
        if (s.resolved_identity_dir() / "ca.key").exists():
            # A fresh CRL at each start: brokers refuse every client once theirs is past its next update.
            with sessions() as session:
                identity.write_crl(session, identity.open_ca(s, clock=self._clock), s)
        endpoint = s.public_grpc_endpoint(self._grpc_port)

        metrics = HubMetrics()  # this hub's own registry: hubs sharing a process count apart
        self.ingestor = Ingestor(sessions, _fleet_topics(s), clock=self._clock, metrics=metrics.ingest)

        def desired_source() -> Sequence[tuple[str, bytes]]:
            with sessions() as session:
                return assignments.desired_payloads(
                    session, fleet=s.fleet, artifact_endpoint=endpoint, signing=signing
                )

        mqtt = self._mqtt = HubMqtt(
            s,
            on_batch=self._ingest_batch,
            desired_source=desired_source,
            metrics=metrics.ingest,
            heal_metrics=metrics.heal,
        )
        ingestor = self.ingestor

        def on_seq_gap(missing: int) -> None:
            # Windows the broker may have dropped for this hub: statuses it dropped are re-read.
            metrics.heal.seq_gaps.inc(missing)
            mqtt.request_heal("seq_gap")

        ingestor.on_seq_gap = on_seq_gap
        metrics.bind_parts(
            ingest_stats=ingestor.stats.snapshot,
            queue_depth=lambda: mqtt.queue_depth,
            mqtt_connected=lambda: mqtt.connected,
        )
        signing.publisher = mqtt
        self.context = HubContext(
            settings=s,
            engine=engine,
            store=store,
            publisher=mqtt,
            artifact_endpoint=endpoint,
            mqtt_connected=lambda: mqtt.connected,
            clock=self._clock,
            signing=signing,
            broker_dropped=lambda: mqtt.broker_dropped,
            metrics=metrics,
        )
        mqtt.start()
        # Before the schedulers: their first runs ask it. One leader runs the periodic jobs (cloud.leader).
        leadership = self._leadership = Leadership(
            engine, fleet=s.fleet, renew_s=s.leader_renew_s, metrics=metrics.leader
        )
        leadership.start()

        def is_leader() -> bool:
            return leadership.is_leader

        self._resigner = ResignScheduler(
            signing.repo,
            signing.director,
            sessions,
            signing.publish_all,
            jobs=metrics.jobs,
            is_leader=is_leader,
        )
        self._resigner.start()
        self._start_api(self.context)
        # Last, once every part it drives is up: it publishes, and the API kicks it.
        self._rollouts = RolloutScheduler(self.context, is_leader=is_leader)
        self.context.kick_rollouts = self._rollouts.kick
        self._rollouts.start()
        # Rollups, drift and accuracy scores, alerts and retraining triggers (cloud.observe).
        observe = self._observe = ObserveCycle(self.context, training=self._training, is_leader=is_leader)
        drift_gates.configure(observe.baseline, alpha=s.drift_alpha)
        observe.start()

    def _ingest_batch(self, messages: Sequence[InboundMessage]) -> None:
        if self.ingestor is None:
            raise RuntimeError("the ingestor is made in _start_parts before the broker delivers anything")
        self.ingestor.ingest(messages)
        if self._rollouts is not None:
            # A rollback or a failed update may fail a gate: judged now, not at the next interval.
            self._rollouts.kick_on_events(messages)

    def _open_signing(self, sessions: SessionFactory) -> Signing:
        """The update repository (created with a development root key on a first start, when allowed)."""
        repo = open_repository(self.settings, sessions, tuf=self.tuf_settings, clock=self._clock)
        if repo.settings.auto_init:
            ensure_initialized(repo)
        if repo.initialized():
            sync_targets(repo)
        else:
            log.warning(
                "the update repository has no root yet: run `fleet keys init`; devices refuse updates"
            )
        return Signing(repo, Director(repo, clock=self._clock), sessions)

    def _start_api(self, ctx: HubContext) -> None:
        sock = self._http_socket
        if sock is None:
            raise RuntimeError("the HTTP socket is bound in _start_parts before the API starts")
        config = uvicorn.Config(create_app(ctx), log_level="warning", access_log=False, lifespan="off")
        server = self._uvicorn = uvicorn.Server(config)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self._api_url = f"http://{shown}:{port}"
        # uvicorn serves on the socket bound at the start, so nothing can take the port in between.
        self._api_thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="hub-api", daemon=True
        )
        self._api_thread.start()

    def wait_until_started(self, timeout: float) -> None:
        """Block until the API serves; raise HubStartError if it does not within ``timeout`` seconds."""
        if self._started.is_set():
            return
        server, thread = self._uvicorn, self._api_thread
        if server is None or thread is None:
            raise HubStartError("the hub was not started: call start() first")
        deadline = threading.Event()
        waited = 0.0
        while not server.started:
            if not thread.is_alive():
                raise HubStartError("the HTTP API stopped while starting; see the log")
            if waited >= timeout:
                raise HubStartError(f"the HTTP API did not start within {timeout:g} s")
            deadline.wait(0.02)  # polling uvicorn's flag: it offers no event to wait on
            waited += 0.02
        self._started.set()
        log.info(
            "hub serving: API %s, gRPC %s, fleet %s", self.api_url, self.grpc_endpoint, self.settings.fleet
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every part, API first (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stop_parts(timeout)

    def _stop_parts(self, timeout: float = 10.0) -> None:
        # First: a tick must not publish through a transport that is going away.
        if self._rollouts is not None:
            self._rollouts.stop()
        if self._observe is not None:
            self._observe.stop()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._api_thread is not None:
            self._api_thread.join(timeout)
        if self._resigner is not None:
            self._resigner.stop()
        if self._leadership is not None:
            self._leadership.stop()  # after every job it leads: a follower takes over at its next try
        if self._mqtt is not None:
            self._mqtt.stop(timeout)
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait(timeout)
        if self._http_socket is not None:
            self._http_socket.close()  # uvicorn closed it if it served; a failed start did not get that far
        if self._engine is not None:
            self._engine.dispose()
        self._started.clear()

    def run_forever(self) -> None:
        """Run until SIGINT or SIGTERM, then stop cleanly (call from the main thread)."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            stop.wait()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- what callers need to reach the hub --------------------------------------------

    @property
    def api_url(self) -> str:
        if self._api_url is None:
            raise RuntimeError("the hub is not started: no API URL yet")
        return self._api_url

    @property
    def grpc_endpoint(self) -> str:
        """Where devices fetch artifacts (the public endpoint when one is configured)."""
        if self._grpc_port is None:
            raise RuntimeError("the hub is not started: no gRPC endpoint yet")
        return self.settings.public_grpc_endpoint(self._grpc_port)

    @property
    def observe(self) -> ObserveCycle:
        """The observe cycle (``run_once()`` runs one now)."""
        if self._observe is None:
            raise RuntimeError("the hub is not started: no observe cycle yet")
        return self._observe

    @property
    def mqtt(self) -> HubMqtt:
        if self._mqtt is None:
            raise RuntimeError("the hub is not started: no MQTT transport yet")
        return self._mqtt

    @property
    def admin_token(self) -> str:
        """The bootstrap admin token, read from ``{data_dir}/admin.token``."""
        return read_admin_token(self.settings.admin_token_path())


def read_admin_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise HubError(
            f"admin token file {path} is missing: expected the file the hub wrote on its first start"
        ) from None
    if not token:
        raise HubError(f"admin token file {path} is empty: expected a token")
    return token


def _fleet_topics(settings: Settings) -> FleetTopics:
    return FleetTopics(settings.fleet, settings.topic_prefix)
