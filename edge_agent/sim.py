"""A simulated fleet: N real agents in one asyncio loop, for demos, tests and benchmarks.

Each agent is the real thing (its own state folder, MQTT connection, updater and
onnxruntime sessions); they share the event loop and one gRPC channel per hub
endpoint. Once every agent is connected and listening, one JSON line goes to
stdout:

    {"event": "ready", "devices": N, "sockets": {"sim-0001": "/path/agent.sock", ...}}

In light mode (``light=True``, :mod:`edge_agent.sim_light`) the devices share one onnxruntime
session per artifact and keep their outboxes in memory, so that 10,000 fit on a small machine.
``connect_rate`` spreads the first connections out (devices per second, each start jittered
within its slot), as a real fleet reconnects; 0 connects every device at once (a storm).

With a :class:`~edge_agent.sim_traffic.TrafficPlan`, every device also serves synthetic
requests in-process; when the fleet stops, one summary line of that traffic goes to stderr.
SIGUSR1 switches the traffic's input shifts off and on (``--shift-paused`` starts with them
off), and each switch prints a line to stdout:

    {"event": "shift", "on": true, "devices": N}      (N: devices that now see shifted rows)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import json
import logging
import math
import random
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, BackoffConfig, MqttProtocol, TrialConfig
from edge_agent.fetcher import ChannelPool, SyncChannels
from edge_agent.runtime import RuntimeRegistry
from edge_agent.sim_labels import LabelMix
from edge_agent.sim_light import SessionCache, SharedRuntimes, open_files_per_device
from edge_agent.sim_mix import DeviceKind
from edge_agent.sim_traffic import TrafficPlan, TrafficRunner
from edge_agent.sim_trust import LIGHT_TRUST_DIR, SharedTrust
from edge_agent.tasks import cancel_and_wait
from edge_agent.trust.config import FirmwareConfig, TrustConfig

__all__ = ["SHIFT_SIGNAL", "Fleet", "device_ids", "run_fleet"]

log = logging.getLogger(__name__)

# Switches the traffic's input shifts off and on: a demo rolls a version out on steady inputs, then
# moves one cohort's inputs without restarting the fleet (which would reset its telemetry).
SHIFT_SIGNAL = signal.SIGUSR1
# Devices of one simulated fleet in their MQTT handshake at once, and how long one may hold its place.
DEFAULT_HANDSHAKES = 256
# Downloads the fleet's devices stream at once, at most. A device waiting for a place has not asked
# the hub yet, so the wait does not count against its chunk timeout. Every device shares this
# process's one event loop: 10,000 downloads started together by a rollout each waited behind all the
# others for their first chunk, past the 30 s timeout, again on every retry (bench/scale.py), while
# the hub answered any other client within 0.2 s. A real device has its own CPU.
DEFAULT_DOWNLOADS = 256
HANDSHAKE_HOLD_S = 15.0
# The keepalive of a light device: the shipped broker's max_keepalive (deploy/mosquitto/edgefleet.conf).
LIGHT_KEEPALIVE_S = 120


def device_ids(n: int, first: int = 1) -> list[str]:
    """``sim-0001`` .. ``sim-N`` (wider numbers past 9999), in order; from ``sim-<first>`` when several
    processes simulate one fleet, each its own range."""
    if n < 1:
        raise ValueError(f"a fleet needs at least 1 device, got {n}")
    if first < 1:
        raise ValueError(f"device numbers start at 1 or above, got {first}")
    last = first + n - 1
    width = max(4, len(str(last)))
    return [f"sim-{i:0{width}d}" for i in range(first, last + 1)]


def _write_line(out: TextIO | None, line: Mapping[str, Any]) -> None:
    """One JSON line on ``out`` (stdout), flushed: a script that drives the fleet reads them as they come."""
    stream = out if out is not None else sys.stdout
    stream.write(json.dumps(line) + "\n")
    stream.flush()


def _allow_open_files(devices: int, *, light: bool = False) -> None:
    """Raise the soft limit on open files: each device holds a broker connection, in full mode its
    queue database (three files) and perhaps a socket, and 1024 is a common default. Past the hard
    limit the fleet would fail device by device on connect, so say so once, up front."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = open_files_per_device(light) * devices + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning(
            "%d devices may need %d open files, but the hard limit is %d%s",
            devices,
            wanted,
            hard,
            "" if light else ": --light needs fewer",
        )


def _lighten(config: AgentConfig, light: bool) -> AgentConfig:
    """In light mode, a keepalive of LIGHT_KEEPALIVE_S: a device pings the broker when it has sent
    nothing for that long, and 2,000 devices on one event loop, busy with a rollout, went more than
    1.5 x 30 s without a turn (bench/scale.py); the broker then dropped every one of them,
    and their last wills told the hub they were offline. The same for acknowledgements: 10,000
    devices taking a rollout at once queue their events faster than the one loop reads the
    broker's PUBACKs, and with the 10 s default more than half of them took their links for down
    and reconnected together, which starved the loop further. A real device has its own CPU."""
    if not light:
        return config
    mqtt = dataclasses.replace(config.mqtt, keepalive_s=LIGHT_KEEPALIVE_S, ack_timeout_s=LIGHT_KEEPALIVE_S)
    return dataclasses.replace(config, mqtt=mqtt)


class Fleet:
    """The agents of one simulated fleet; :meth:`run` runs them all until ``stop`` is set."""

    def __init__(
        self,
        n: int,
        base_dir: Path,
        fleet: str,
        *,
        mqtt_host: str = "127.0.0.1",
        mqtt_port: int = 1883,
        mqtt_protocol: MqttProtocol = "5",
        grpc_endpoint: str = "127.0.0.1:50051",
        local_api_devices: int | None = None,
        labels: Mapping[str, str] | None = None,
        label_mix: LabelMix | None = None,
        telemetry_interval_s: float = 10.0,
        backoff: BackoffConfig | None = None,
        runtimes_mix: Sequence[DeviceKind] | None = None,
        trust: TrustConfig | None = None,
        firmware: FirmwareConfig | None = None,
        trial: TrialConfig | None = None,
        traffic: TrafficPlan | None = None,
        light: bool = False,
        connect_rate: float = 0.0,
        handshakes: int = DEFAULT_HANDSHAKES,
        downloads: int = DEFAULT_DOWNLOADS,
        seed: int = 0,
        first: int = 1,
    ) -> None:
        if not (connect_rate >= 0 and math.isfinite(connect_rate)):
            raise ValueError(
                f"connect_rate must be devices per second >= 0 (0: all at once), got {connect_rate}"
            )
        with_api = n if local_api_devices is None else max(0, min(local_api_devices, n))
        ids = device_ids(n, first)
        mixed = label_mix.assign(n) if label_mix is not None else [{} for _ in ids]
        _allow_open_files(n, light=light)
        self.light = light
        # Devices connecting at once, at most (0: no bound); see _run_first.
        self._handshakes = asyncio.Semaphore(handshakes) if handshakes > 0 else None
        # Downloads in flight across the fleet, at most (0: no bound).
        self.download_slots = asyncio.Semaphore(downloads) if downloads > 0 else None
        self._shared: dict[int, SharedRuntimes] = {}
        # Light mode: one session per artifact for the whole fleet (edge_agent.sim_light).
        self.sessions: SessionCache | None = SessionCache() if light else None
        # Light mode: one TUF client per trusted root and hub for the whole fleet (edge_agent.sim_trust).
        self.trust: SharedTrust | None = SharedTrust(base_dir / LIGHT_TRUST_DIR) if light else None
        # When each device first connects, seconds after run() starts (all 0: at once).
        rng = random.Random(f"{seed}:connect")
        self.start_delays = (
            [(i + rng.random()) / connect_rate for i in range(n)] if connect_rate > 0 else [0.0] * n
        )
        self.channels = ChannelPool()
        # Blocking channels for the TUF client (it runs in worker threads), shared like the async ones.
        self.sync_channels = SyncChannels()
        # Device i is of kind i mod len(mix): its own runtimes, and its precision label.
        kinds = list(runtimes_mix or [])
        self._kinds = kinds
        # Every device's labels, then its share of the mix, then its kind's precision.
        device_labels = [
            {**(labels or {}), **mixed[index], **(kinds[index % len(kinds)].labels() if kinds else {})}
            for index in range(n)
        ]
        self.agents = [
            Agent(
                _lighten(
                    AgentConfig.for_simulation(
                        device_id=device_id,
                        fleet=fleet,
                        state_dir=base_dir / device_id,
                        mqtt_host=mqtt_host,
                        mqtt_port=mqtt_port,
                        mqtt_protocol=mqtt_protocol,
                        grpc_endpoint=grpc_endpoint,
                        local_api=index < with_api,
                        labels=device_labels[index],
                        telemetry_interval_s=telemetry_interval_s,
                        backoff=backoff,
                        trust=trust,
                        firmware=firmware,
                        trial=trial,
                        durable_queue=not light,
                    ),
                    light,
                ),
                **self._shared_parts(index),
            )
            for index, device_id in enumerate(ids)
        ]
        self.traffic: TrafficRunner | None = None
        if traffic is not None:
            # Device i as it is when a request goes out: a restarted agent takes its place in the list.
            targets = [functools.partial(self._agent, i) for i in range(n)]
            self.traffic = TrafficRunner(traffic, targets, device_labels)
            for rule in self.traffic.unmatched_shifts():
                log.warning("--shift %s selects none of the %d devices", rule.describe(), n)

    def _shared_parts(self, index: int) -> dict[str, Any]:
        """What device ``index`` takes from the fleet rather than builds for itself."""
        return {
            "channels": self.channels,
            "sync_channels": self.sync_channels,
            "runtimes": self._runtimes(index),
            "download_slots": self.download_slots,
            "durable_state": not self.light,
            "trust_repository": self.trust.repository if self.trust is not None else None,
        }

    def _agent(self, index: int) -> Agent:
        return self.agents[index]

    def _runtimes(self, index: int) -> RuntimeRegistry | None:
        """Device ``index``'s runtimes: its kind's (default: all); in light mode through the shared
        sessions."""
        kinds = self._kinds
        if self.sessions is None:
            return kinds[index % len(kinds)].registry() if kinds else None
        # One registry per kind, shared by its devices (it holds no device's state): building one
        # looks the installed runtimes up, which for 10,000 devices took longer than connecting them.
        kind = index % len(kinds) if kinds else 0
        shared = self._shared.get(kind)
        if shared is None:
            base = kinds[kind].registry() if kinds else RuntimeRegistry()
            shared = self._shared[kind] = SharedRuntimes(base, self.sessions)
        return shared

    def toggle_shift(self, out: TextIO | None = None) -> None:
        """Switch the traffic's input shifts off when on, on when off (what SHIFT_SIGNAL does); log it
        and print ``{"event": "shift", "on": ..., "devices": N}`` on ``out`` (stdout)."""
        if self.traffic is None or not self.traffic.plan.shifts:
            log.warning("%s ignored: the fleet runs no --shift to switch", SHIFT_SIGNAL.name)
            return
        devices = self.traffic.toggle_shift()
        on = self.traffic.shift_on
        if on:
            log.info("input shift on: %d device%s shifted", devices, "" if devices == 1 else "s")
        else:
            log.info("input shift off")
        _write_line(out, {"event": "shift", "on": on, "devices": devices})

    @property
    def sockets(self) -> dict[str, str]:
        """Unix socket path of each agent that serves a local API."""
        return {
            a.device_id: str(a.config.local_api.socket)
            for a in self.agents
            if a.config.local_api.socket is not None
        }

    async def run(
        self,
        stop: asyncio.Event,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        freeze_heap: bool = False,
    ) -> None:
        """Run every agent; print the ready line to ``out`` (stdout) once all are up, and the traffic
        summary to ``err`` (stderr) once stopped. SHIFT_SIGNAL calls :meth:`toggle_shift` while it runs
        (its handler is in place before run first yields to the loop). ``freeze_heap``: see
        :func:`_freeze_heap` (the process that runs only the fleet asks for it)."""
        if freeze_heap:
            _freeze_heap()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(SHIFT_SIGNAL, self.toggle_shift, out)
            toggles = True
        except (ValueError, RuntimeError, NotImplementedError) as e:
            # Only the main thread of a process can take signals; the fleet runs on without the switch.
            shifts = self.traffic is not None and self.traffic.plan.shifts
            level = logging.WARNING if shifts else logging.DEBUG
            log.log(level, "the input shift cannot be switched by %s here: %s", SHIFT_SIGNAL.name, e)
            toggles = False
        # The agents stop after the traffic does, so that their last windows count every request.
        agents_stop = asyncio.Event()
        tasks = [
            asyncio.create_task(self._run_one(i, agents_stop), name=f"agent-{a.device_id}")
            for i, a in enumerate(self.agents)
        ]
        traffic = (
            asyncio.create_task(self.traffic.run(), name="traffic") if self.traffic is not None else None
        )
        all_ready: asyncio.Future[Any] = asyncio.gather(*(a.ready.wait() for a in self.agents))
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            waiting: set[asyncio.Future[Any]] = {all_ready, stopped, *tasks}
            if traffic is not None:
                waiting.add(traffic)
            while not stopped.done():
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in [*tasks, traffic]:
                    if task is not None and task in done and task.exception() is not None:
                        raise RuntimeError(f"{task.get_name()} failed") from task.exception()
                if all_ready in done:
                    if freeze_heap:
                        _freeze_heap()  # the connections, sessions and tasks every device now holds
                    _write_line(
                        out,
                        {
                            "event": "ready",
                            "devices": len(self.agents),
                            "light": self.light,
                            "sockets": self.sockets,
                        },
                    )
        finally:
            stop.set()
            if freeze_heap:
                gc.unfreeze()
            await cancel_and_wait([all_ready, stopped, *([traffic] if traffic is not None else [])])
            agents_stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.channels.close()
            self.sync_channels.close()
            if self.traffic is not None:
                stream = err if err is not None else sys.stderr
                stream.write(self.traffic.summary() + "\n")
                stream.flush()
            if toggles:
                # Last: a stray signal while the agents flush must not end the process (SIG_DFL would).
                loop.remove_signal_handler(SHIFT_SIGNAL)

    async def _run_one(self, index: int, stop: asyncio.Event) -> None:
        """Run one agent; when it asks for a restart (a firmware slot switch), start it again."""
        delay = self.start_delays[index]
        if delay > 0:
            # The device's turn to connect: a timer, cut short by a stop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
        first = True
        while True:
            agent = self.agents[index]
            if first:
                await self._run_first(agent, stop)
                first = False
            else:
                await agent.run(stop)
            if stop.is_set() or not agent.restart_requested.is_set():
                return
            # What a device's service manager does: the same config and state folder, a fresh process.
            restarted = Agent(agent.config, **self._shared_parts(index))
            restarted.ready.set()  # it was ready once; the ready line is not printed again
            self.agents[index] = restarted

    async def _run_first(self, agent: Agent, stop: asyncio.Event) -> None:
        """Run ``agent``, holding one of the fleet's handshake places until it is connected.

        Every device of the fleet shares this process's one event loop: thousands of handshakes
        started together make each wait behind all the others, past the client's own 10 s timeout,
        and the timed-out ones retry into the same crowd. A few hundred in flight keep each one
        short, and the broker still sees connections as fast as this process can make them. A device
        that cannot connect gives its place up after HANDSHAKE_HOLD_S and keeps retrying outside.
        """
        if self._handshakes is None:
            await agent.run(stop)
            return
        async with self._handshakes:
            running = asyncio.ensure_future(agent.run(stop))
            ready = asyncio.ensure_future(agent.ready.wait())
            try:
                await asyncio.wait(
                    {running, ready}, timeout=HANDSHAKE_HOLD_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                ready.cancel()
        await running


def _freeze_heap() -> None:
    """Collect, then move every object alive now out of the cyclic collector's sight (``gc.freeze``).

    Ten thousand simulated devices hold millions of long-lived objects (agents, their state, their
    connections) and the collector walked them all again and again: 40% of the simulator's CPU during
    a rollout (py-spy --native, bench/scale.py), while its devices' downloads waited for a turn of
    the loop. Objects made later are collected as usual, and reference counting still frees frozen
    ones; only a cycle among them outlives its use until the fleet stops and unfreezes.
    """
    gc.collect()
    gc.freeze()


async def run_fleet(
    n: int,
    base_dir: Path,
    fleet: str,
    *,
    mqtt_host: str = "127.0.0.1",
    mqtt_port: int = 1883,
    mqtt_protocol: MqttProtocol = "5",
    grpc_endpoint: str = "127.0.0.1:50051",
    local_api_devices: int | None = None,
    labels: Mapping[str, str] | None = None,
    label_mix: LabelMix | None = None,
    telemetry_interval_s: float = 10.0,
    stop_event: asyncio.Event,
    out: TextIO | None = None,
    runtimes_mix: Sequence[DeviceKind] | None = None,
    trust: TrustConfig | None = None,
    firmware: FirmwareConfig | None = None,
    trial: TrialConfig | None = None,
    traffic: TrafficPlan | None = None,
    err: TextIO | None = None,
    light: bool = False,
    connect_rate: float = 0.0,
    freeze_heap: bool = False,
    first: int = 1,
) -> None:
    """Run ``n`` agents (``sim-0001``.., or from ``sim-<first>``) under ``base_dir`` until ``stop_event``
    is set.

    ``local_api_devices``: how many of the first devices serve a local API socket
    (None: all). ``labels`` go to every device; ``label_mix`` shares values out by device
    index. ``traffic``: synthetic requests every device serves (None: none), summed up on ``err``
    (stderr) at the end. ``light``: share one onnxruntime session per artifact (see
    :mod:`edge_agent.sim_light`); ``connect_rate``: devices connecting per second (0: all at once).
    ``freeze_heap``: keep the fleet's long-lived objects out of the cyclic collector (a process that
    runs only the fleet; see :func:`_freeze_heap`). The caller turns SIGINT/SIGTERM into
    ``stop_event`` (the CLI does).
    """
    fleet_ = Fleet(
        n,
        base_dir,
        fleet,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        mqtt_protocol=mqtt_protocol,
        grpc_endpoint=grpc_endpoint,
        local_api_devices=local_api_devices,
        labels=labels,
        label_mix=label_mix,
        telemetry_interval_s=telemetry_interval_s,
        runtimes_mix=runtimes_mix,
        trust=trust,
        firmware=firmware,
        trial=trial,
        traffic=traffic,
        light=light,
        connect_rate=connect_rate,
        first=first,
    )
    await fleet_.run(stop_event, out=out, err=err, freeze_heap=freeze_heap)
