"""The simulated fleet of the fault tests, run as a child process (``python -m tests.fault._fleet_child``).

It is ``edgefleet-agent simulate`` (the real :class:`edge_agent.sim.Fleet`: real agents, their on-disk
queues, their MQTT connections) with two things added for the tests:

- a ledger: each device's telemetry windows as they enter its queue (sent) and as the broker
  acknowledges them (PUBACK), written as JSON to ``--ledger`` when the fleet stops. The tests compare
  it with the rows the hub stored, so "0 acknowledged telemetry lost" is counted per window;
- timings short enough for a test: MQTT keepalive (how soon the broker publishes a cut-off device's
  last will) and reconnect back-off, which ``simulate`` leaves at the production defaults.

It runs in a child process so that a test can put it in a network namespace (``ip netns exec``).
SIGTERM or SIGINT stops it cleanly: the agents flush what they can, then the ledger is written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_agent import sim
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, BackoffConfig, TrialConfig
from edge_agent.outbox import OutMessage
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.v1 import telemetry_pb2

__all__ = ["Ledger", "main"]


def window_seqs(payload: bytes) -> list[int]:
    """The ``seq`` of every telemetry window in one published batch."""
    return [w.seq for w in telemetry_pb2.TelemetryBatch.FromString(payload).windows]


class Ledger:
    """Per device: the windows queued for the broker, and those the broker acknowledged."""

    def __init__(self) -> None:
        self.sent: dict[str, set[int]] = {}
        self.acked: dict[str, set[int]] = {}
        self.dropped: dict[str, int] = {}

    def watch(self, agent: Agent) -> None:
        """Count ``agent``'s telemetry on its way through its queue (wrapping put and ack)."""
        device, topic, outbox = agent.device_id, agent.topics.telemetry, agent.outbox
        sent, acked = self.sent.setdefault(device, set()), self.acked.setdefault(device, set())
        put, ack = outbox.put, outbox.ack

        def counting_put(message: OutMessage) -> None:
            if message.topic == topic:
                sent.update(window_seqs(message.payload))
            put(message)

        def counting_ack(message: OutMessage) -> None:
            # ack is called once the broker's PUBACK came: from here on the window is the broker's.
            ack(message)
            if message.topic == topic:
                acked.update(window_seqs(message.payload))

        outbox.put = counting_put  # type: ignore[method-assign]
        outbox.ack = counting_ack  # type: ignore[method-assign]

    def note_drops(self, agents: Iterable[Agent]) -> None:
        self.dropped = {a.device_id: a.outbox.dropped for a in agents}

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": {d: sorted(s) for d, s in self.sent.items()},
            "acked": {d: sorted(s) for d, s in self.acked.items()},
            "dropped": self.dropped,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        ledger = cls()
        ledger.sent = {d: set(s) for d, s in data["sent"].items()}
        ledger.acked = {d: set(s) for d, s in data["acked"].items()}
        ledger.dropped = {d: int(n) for d, n in data["dropped"].items()}
        return ledger


class _ShortTimings:
    """Stands in for AgentConfig in edge_agent.sim: the same configs, with the test's keepalive.

    ``Fleet`` takes a back-off but no keepalive, and the keepalive decides how long a broker waits
    before it publishes a silent device's last will (1.5 x keepalive): 30 s by default.
    """

    keepalive_s = 30

    @classmethod
    def for_simulation(cls, **kwargs: Any) -> AgentConfig:
        config = AgentConfig.for_simulation(**kwargs)
        return replace(config, mqtt=replace(config.mqtt, keepalive_s=cls.keepalive_s))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fault._fleet_child")
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--fleet", required=True)
    p.add_argument("--state-root", type=Path, required=True)
    p.add_argument("--ledger", type=Path, required=True)
    p.add_argument("--mqtt-host", required=True)
    p.add_argument("--mqtt-port", type=int, required=True)
    p.add_argument("--grpc-endpoint", required=True)
    p.add_argument("--trust-root", type=Path, required=True)
    p.add_argument("--trust-http-url", required=True)
    p.add_argument("--telemetry-interval", type=float, required=True)
    p.add_argument("--trial-window", type=float, default=1.0)
    p.add_argument("--keepalive", type=int, default=30)
    p.add_argument("--backoff-initial", type=float, default=0.2)
    p.add_argument("--backoff-max", type=float, default=1.0)
    return p.parse_args(argv)


async def _run(args: argparse.Namespace, ledger: Ledger) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _ShortTimings.keepalive_s = args.keepalive
    sim.AgentConfig = _ShortTimings  # type: ignore[attr-defined,assignment]  # read by Fleet per agent
    fleet = sim.Fleet(
        args.devices,
        args.state_root,
        args.fleet,
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port,
        grpc_endpoint=args.grpc_endpoint,
        local_api_devices=0,
        telemetry_interval_s=args.telemetry_interval,
        backoff=BackoffConfig(initial_s=args.backoff_initial, max_s=args.backoff_max),
        trust=TrustConfig(require_signed=True, root_file=args.trust_root, http_url=args.trust_http_url),
        trial=TrialConfig(window_s=args.trial_window),
    )
    for agent in fleet.agents:
        ledger.watch(agent)
    try:
        await fleet.run(stop)
    finally:
        ledger.note_drops(fleet.agents)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    ledger = Ledger()
    try:
        asyncio.run(_run(args, ledger))
    finally:
        tmp = args.ledger.with_suffix(".tmp")
        tmp.write_text(json.dumps(ledger.to_json()))
        os.replace(tmp, args.ledger)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
