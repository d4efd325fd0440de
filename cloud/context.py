"""What the API and the transports share inside one hub process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from cloud.artifacts import ArtifactStore
from cloud.clock import Clock, utcnow
from cloud.db import SessionFactory, read_session_factory, session_factory
from cloud.observability.metrics import HubMetrics
from cloud.services.publisher import DesiredPublisher
from cloud.services.signing import Signing
from cloud.settings import Settings


@dataclass
class HubContext:
    """The hub's shared parts; tests build one with SQLite in a temp folder and a fake publisher."""

    settings: Settings
    engine: Engine
    store: ArtifactStore
    publisher: DesiredPublisher
    # What devices are told to fetch artifacts from; known once the gRPC server is bound.
    artifact_endpoint: str
    mqtt_connected: Callable[[], bool] = lambda: False
    clock: Clock = utcnow
    # The signed-update channel (TUF repository, director); None on a hub without one.
    signing: Signing | None = None
    # Advance the rollouts now rather than at the next interval (after an operator's action, or an
    # event a gate reacts to); a no-op where no rollout scheduler runs (tests, tools).
    kick_rollouts: Callable[[], None] = lambda: None
    # Messages the MQTT broker dropped ($SYS/broker/publish/messages/dropped), for /metrics; None: not known.
    broker_dropped: Callable[[], int | None] | None = None
    # This hub's in-memory metrics (ingest, API, scheduler jobs), in a registry of its own (/metrics).
    metrics: HubMetrics = field(default_factory=HubMetrics)
    sessions: SessionFactory = field(init=False)
    # Read-only sessions: no write lock on SQLite (cloud.db.read_session_factory).
    read_sessions: SessionFactory = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = session_factory(self.engine)
        self.read_sessions = read_session_factory(self.engine)
