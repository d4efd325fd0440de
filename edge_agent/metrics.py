"""A Prometheus metrics endpoint on 127.0.0.1: ``GET /metrics`` in the text exposition format.

The figures are read from the agent when scraped (a collector, not counters
updated on the serving path), so metrics cost nothing between scrapes.
prometheus-client formats the exposition; the HTTP side is a few lines on the
agent's own event loop rather than the client's threaded server, so the agent
runs no extra thread for it. It listens on loopback only; a node exporter or a
local Prometheus agent scrapes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from edge_agent.errors import AgentError

if TYPE_CHECKING:
    from edge_agent.agent import Agent

__all__ = ["MetricsServer", "render"]

log = logging.getLogger(__name__)

_MAX_REQUEST = 8192
_READ_TIMEOUT_S = 5.0


class _AgentCollector:
    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        agent = self._agent
        labels = ["device", "fleet"]
        ids = [agent.device_id, agent.config.fleet]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(ids, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(ids, value)
            return c

        info = GaugeMetricFamily(
            "edgefleet_agent_info", "Agent version (always 1)", labels=[*labels, "version"]
        )
        info.add_metric([*ids, agent.agent_version], 1)
        yield info
        tel = agent.telemetry
        yield counter("edgefleet_agent_requests", "Predictions served", tel.total_requests)
        yield counter("edgefleet_agent_request_errors", "Predictions that failed", tel.total_errors)
        yield gauge("edgefleet_agent_queue_depth", "Messages waiting for the broker", len(agent.outbox))
        yield counter(
            "edgefleet_agent_queue_dropped",
            "Messages dropped because the queue was full",
            agent.outbox.dropped,
        )
        yield gauge(
            "edgefleet_agent_mqtt_connected", "1 while connected to the broker", agent.link.connected.is_set()
        )
        yield counter("edgefleet_agent_mqtt_connections", "Broker connections made", agent.link.connections)
        state = GaugeMetricFamily(
            "edgefleet_agent_update_state",
            "1 for the update machine's current state",
            labels=[*labels, "state"],
        )
        state.add_metric([*ids, agent.updater.machine.state.value], 1)
        yield state
        trial = agent.updater.trial
        yield gauge("edgefleet_agent_trial_active", "1 while a new version is on trial", trial is not None)
        yield gauge(
            "edgefleet_agent_trial_requests",
            "Requests judged in the current trial",
            trial.judge.requests if trial else 0,
        )
        models = GaugeMetricFamily(
            "edgefleet_agent_model",
            "Models in the slots (always 1)",
            labels=[*labels, "slot", "name", "version", "sha256"],
        )
        for slot in agent.status_slots():
            models.add_metric([*ids, slot.name, slot.model.name, slot.model.version, slot.model.sha256], 1)
        yield models
        events = CounterMetricFamily(
            "edgefleet_agent_events", "Events reported to the hub, by kind", labels=[*labels, "kind"]
        )
        for kind, count in sorted(agent.event_counts.items()):
            events.add_metric([*ids, kind], count)
        yield events
        refused = CounterMetricFamily(
            "edgefleet_agent_commands_refused",
            "Commands on the cmd topic refused, by the check that failed",
            labels=[*labels, "check"],
        )
        for check, count in sorted(agent.command_refusals.items()):
            refused.add_metric([*ids, check], count)
        yield refused


def render(agent: Agent) -> bytes:
    """The exposition text for ``agent``."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_AgentCollector(agent))
    return generate_latest(registry)


class MetricsServer:
    """Serves :func:`render` on ``127.0.0.1:port`` until stopped."""

    def __init__(self, agent: Agent, *, port: int) -> None:
        self._agent = agent
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS chose for port 0 in tests)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._port)
        except OSError as e:
            raise AgentError(f"metrics endpoint cannot listen on 127.0.0.1:{self._port}: {e.strerror}") from e
        log.info("metrics on http://127.0.0.1:%d/metrics", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        parts = head[:_MAX_REQUEST].split(b"\r\n", 1)[0].split()
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
        if method != b"GET":
            status, body, kind = b"405 Method Not Allowed", b"only GET\n", b"text/plain"
        elif path.split(b"?")[0] in (b"/metrics", b"/"):
            status, body, kind = b"200 OK", render(self._agent), b"text/plain; version=0.0.4; charset=utf-8"
        else:
            status, body, kind = b"404 Not Found", b"try /metrics\n", b"text/plain"
        writer.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )  # fmt: skip
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
