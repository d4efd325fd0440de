"""10,000 simulated devices on one hub: connect, heartbeat, one rollout to all; the hub's cost per device.

    python bench/scale.py [--devices 10000] [--connect-rate 0] [--database-url URL] [--soak-minutes 10]

Starts a private Mosquitto (the queue and size settings of deploy/mosquitto/edgefleet.conf, plain
TCP, ``max_connections -1``, open files up to the hard limit), a hub (`fleet hub`, SQLite in the
work folder unless --database-url), and N devices (`edgefleet-agent simulate --light`: one onnxruntime
session and one TUF metadata client per process shared by its devices, each with its own state,
director counter and MQTT connection; see edge_agent/sim_light.py), in one process per 5,000
devices, at most one per core (--fleet-processes), since a process runs its devices on one event
loop. Then:

1. connect: every device connects at once (--connect-rate 0, the reconnect storm) or spread out;
   measured from the first device's ONLINE status on the broker (the simulator first builds its
   devices, which is no part of a connect): until every birth reached the broker, and until the
   hub's fleet summary counts every device online (target <= 60 s); hub RSS growth per connected device
   (VmRSS of the hub process from /proc, before the fleet and after it settled; target <= 2 KiB);
   the broker's dropped-message counter.
2. rollout: a cohort of every device, one stage of 100%, bake 0 (--max-rate: devices offered per
   minute), a small model (--model-kib); until the rollout ends (completed, or paused by a gate: the
   bench reports it as it stands); planned egress = devices x artifact bytes.
3. heartbeat: the fleet serving, a telemetry window per device every --telemetry-interval s, over
   --window-s: MQTT messages/s (the broker's $SYS counter), the database's growth extrapolated to
   bytes per device-day, the hub's and the broker's CPU and RSS.
4. baseline: a bare paho subscriber's messages/s on the same broker, in the same run.
5. --soak-minutes M: --soak-devices (1,000) x 1 window per second for M minutes; 0 windows lost
   (seen on the broker vs stored), hub RSS flat (last minute within 5% of the second minute).

Each finished phase prints one JSON line on stderr. The last line of stdout is one JSON object
(../shared/DESIGN.md, "Benchmarks"); the exit status is 1 when a target is missed. The machine may
be shared: the load average is in the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

import httpx  # noqa: E402
import psutil  # noqa: E402
from sqlalchemy import text  # noqa: E402

from bench._scale_bare import bare_rate  # noqa: E402
from bench._scale_services import (  # noqa: E402
    BirthWatch,
    BrokerCounters,
    FleetGroup,
    FleetProc,
    PrivateMosquitto,
    open_file_limit,
    threads,
    vm_rss_bytes,
)
from bench._scale_soak import WindowWatch, drain, rss_flat  # noqa: E402
from bench.rollout import HubProcess, _machine, _versions, _workdir, make_model  # noqa: E402
from cloud.client.hub import HubClient, HubError  # noqa: E402
from cloud.db import create_db_engine  # noqa: E402
from edge_agent.sim import device_ids  # noqa: E402
from edge_agent.sim_light import LIGHT_NOTE  # noqa: E402

T = TypeVar("T")
KiB, MiB = 1024, 1024 * 1024
TARGET_ONLINE_S = 60.0
TARGET_RSS_PER_DEVICE_KIB = 2.0
TARGET_SOAK_LOST = 0
TARGET_SOAK_RSS_RATIO = 1.05
# A simulator process runs its devices on one event loop (one core); past this many, add a process.
DEVICES_PER_PROCESS = 5_000
RECEIVED = "$SYS/broker/publish/messages/received"
DAY_S = 86_400


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which."""


def _pause(seconds: float) -> None:
    threading.Event().wait(seconds)  # a measuring window or a settle pause, not a wait for an event


def _poll(what: str, probe: Any, timeout: float, every: float = 0.5) -> Any:
    """Poll ``probe`` (the hub's API or database: nothing there can be waited on) until truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        _pause(every)


# Every 503 the hub answered ("the database is unavailable; try again later"), by request.
UNAVAILABLE: dict[str, int] = {}


def _retrying(what: str, call: Callable[[], T], timeout: float = 300.0) -> T:
    """``call()``, again after a 503 (the hub asks to be retried, as an operator would), until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except HubError as e:
            if e.status != 503 or time.monotonic() > deadline:
                raise
            UNAVAILABLE[what] = UNAVAILABLE.get(what, 0) + 1
            _pause(1.0)


def _online(client: HubClient) -> int:
    summary = _retrying("GET /api/v1/fleet/summary", lambda: client._request("GET", "/api/v1/fleet/summary"))
    return int(summary.get("by_state", {}).get("online", 0))


def _serving(client: HubClient, version: str) -> int:
    """Devices the hub knows to serve ``version`` (their active slot, from their statuses)."""
    summary = _retrying("GET /api/v1/fleet/summary", lambda: client._request("GET", "/api/v1/fleet/summary"))
    return sum(int(v.get("count", 0)) for v in summary.get("by_version", []) if v.get("version") == version)


def _db_bytes(url: str, sqlite_path: Path) -> int:
    """The database's size: SQLite's pages in use (the committed state, the WAL's included; the files'
    sizes would count a WAL that is reused and never shrinks), or PostgreSQL's tables in the schema."""
    if not url:
        lite = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
        try:
            pages = lite.execute("PRAGMA page_count").fetchone()[0]
            free = lite.execute("PRAGMA freelist_count").fetchone()[0]
            size = lite.execute("PRAGMA page_size").fetchone()[0]
            return int((pages - free) * size)
        finally:
            lite.close()
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            q = (
                "SELECT coalesce(sum(pg_total_relation_size(format('%I.%I', schemaname, tablename))), 0) "
                "FROM pg_tables WHERE schemaname = current_schema()"
            )
            return int(conn.execute(text(q)).scalar_one())
    finally:
        engine.dispose()


def _progress(phase: str, figures: Any) -> None:
    """One line per finished phase on stderr, so that a long run shows where it is."""
    print(json.dumps({"phase": phase, **figures}), file=sys.stderr, flush=True)


def _cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def _fleet_argv(
    args: argparse.Namespace, work: Path, hub: HubProcess, broker: PrivateMosquitto, **kw: Any
) -> list[str]:
    n = kw.get("devices", args.devices)
    return [
        "--devices", str(n), "--fleet", args.fleet, "--light",
        "--connect-rate", f"{kw.get('connect_rate', args.connect_rate):g}",
        "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
        "--grpc-endpoint", hub.grpc_endpoint, "--state-root", str(kw.get("state_root", work / "fleet")),
        "--local-api-devices", "0",
        "--telemetry-interval", f"{kw.get('telemetry_interval', args.telemetry_interval):g}",
        "--trial-window", f"{args.trial_window:g}",
        "--trust-root", str(work / "root.json"), "--trust-http-url", f"{hub.api_url}/tuf",
        "--label", f"scale={kw.get('label', 'all')}",
    ]  # fmt: skip


def fleet_processes(args: argparse.Namespace) -> int:
    """--fleet-processes, or when 0 one process per 5,000 devices, at most one per core."""
    if args.fleet_processes:
        return int(min(args.fleet_processes, args.devices))
    return max(1, min(os.cpu_count() or 1, math.ceil(args.devices / DEVICES_PER_PROCESS)))


def start_fleet(
    args: argparse.Namespace, work: Path, hub: HubProcess, broker: PrivateMosquitto
) -> FleetGroup:
    """The fleet in ``fleet_processes(args)`` processes, each a range of the devices with its own state
    folder (and so its own shared sessions and TUF client) and log."""
    count = fleet_processes(args)
    sizes = [args.devices // count + (1 if i < args.devices % count else 0) for i in range(count)]
    procs, first = [], 1
    for i, size in enumerate(sizes):
        suffix = "" if count == 1 else f"-{i + 1}"
        argv = _fleet_argv(
            args, work, hub, broker, devices=size, state_root=work / f"fleet{suffix}",
            connect_rate=args.connect_rate * size / args.devices,
        )  # fmt: skip
        argv += ["--first-device", str(first)]
        procs.append(FleetProc(argv, work / f"fleet{suffix}.log", args.timeout))
        first += size
    return FleetGroup(procs)


def connect(
    args: argparse.Namespace, client: HubClient, fleet: FleetGroup, births: BirthWatch
) -> dict[str, Any]:
    """Times from the first device's birth on the broker (the simulator builds its 10,000 devices
    first, which is no part of a connect): every birth on the broker, every device online at the hub."""
    n = args.devices
    ready_s = fleet.wait_ready()
    online_at: float | None = None
    with contextlib.suppress(BenchError):
        left = max(1.0, args.timeout - (time.monotonic() - fleet.started))
        _poll(f"the hub to count {n} devices online", lambda: _online(client) >= n, left)
        online_at = time.monotonic()
    with births.cond:
        first, all_at = births.first, births.all_at
    if first is None:
        raise BenchError("no device's ONLINE status reached the broker")

    def since_first(t: float | None) -> float | None:
        return round(t - first, 1) if t is not None else None

    return {
        "fleet_built_s": round(first - fleet.started, 1),
        "fleet_says_connected_s": since_first(fleet.started + ready_s),
        "broker_all_births_s": since_first(all_at),
        "hub_all_online_s": since_first(online_at),
        "hub_lag_after_last_birth_s": round(online_at - all_at, 1) if online_at and all_at else None,
        "hub_online_count": _online(client),
        "times_from": "the first device's ONLINE status on the broker",
    }


def rollout(
    args: argparse.Namespace, client: HubClient, hub: HubProcess, model: dict[str, Any]
) -> dict[str, Any]:
    n = args.devices
    _retrying(
        "POST /api/v1/cohorts",
        lambda: client.create_cohort(
            "scale-all", selector="scale=all", description="every device of the bench"
        ),
    )
    plan = {
        "name": "scale-all",
        "target": {"kind": "model", "model": model["name"], "version": model["version"]},
        "stages": [
            {
                "name": "all",
                "cohort": "scale-all",
                "percent": 100,
                "bake": 0,
                **({"max_rate": args.max_rate} if args.max_rate else {}),
            }
        ],
        "on_failure": "pause",
    }
    cpu0, t0 = hub.cpu_s(), time.monotonic()
    created = _retrying(
        "POST /api/v1/rollouts",
        lambda: client.create_rollout(json.dumps(plan), content_type="application/json"),
    )
    created_s = time.monotonic() - t0

    def done() -> dict[str, Any] | None:
        view: dict[str, Any] = _retrying("GET /api/v1/rollouts/ID", lambda: client.rollout(created["id"]))
        return view if view["state"] in ("completed", "paused", "aborted", "failed") else None

    # A rollout that does not end in time is reported as it stands (the target says it was missed).
    view = _retrying("GET /api/v1/rollouts/ID", lambda: client.rollout(created["id"]))
    with contextlib.suppress(BenchError):
        view = _poll("the rollout to end", done, args.rollout_timeout, every=2.0)
    ended_s = time.monotonic() - t0
    # A rollout completes once its last stage is promoted; devices may still be fetching. The rollout
    # is done when every device serves the version (the hub's view), within the same time limit.
    all_serving_s: float | None = None
    if view["state"] == "completed":
        with contextlib.suppress(BenchError):
            left = max(1.0, args.rollout_timeout - ended_s)
            _poll(
                f"{n} devices to serve version 1", lambda: _serving(client, model["version"]) >= n, left, 2.0
            )
            all_serving_s = time.monotonic() - t0
    cpu = hub.cpu_s() - cpu0
    last = view["transitions"][-1] if view.get("transitions") else {}
    return {
        "state": view["state"],
        "last_transition": {k: last.get(k) for k in ("event", "reason")},
        "last_figures": (last.get("figures") or {}).get("figures"),
        "devices": n,
        "max_rate_per_min": args.max_rate or None,
        "create_request_s": round(created_s, 2),
        "ended_after_s": round(ended_s, 1),
        "all_serving_s": round(all_serving_s, 1) if all_serving_s is not None else None,
        "serving_count": _serving(client, model["version"]),
        "hub_cpu_s": round(cpu, 1),
        "hub_cpu_ms_per_device": round(cpu * 1000 / n, 2),
        "artifact_bytes": model["bytes"],
        "egress_bytes_planned": n * model["bytes"],
        "egress_formula": "devices x artifact bytes (no device held it before: nothing resumed or cached)",
    }


def heartbeat(
    args: argparse.Namespace,
    hub: HubProcess,
    broker: PrivateMosquitto,
    counters: BrokerCounters,
    db_size: Any,
) -> dict[str, Any]:
    n, window = args.devices, args.window_s
    bps = psutil.Process(broker.proc.pid)
    t_a, rec_a = counters.next_update(RECEIVED, 30)
    db0, hub0, brk0 = db_size(), hub.cpu_s(), _cpu_s(bps)
    _pause(window)
    t_b, rec_b = counters.next_update(RECEIVED, 30)
    db1, hub1, brk1 = db_size(), hub.cpu_s(), _cpu_s(bps)
    span = max(t_b - t_a, 1e-9)
    per_device_day = (db1 - db0) / n / span * DAY_S
    return {
        "window_s": round(span, 1),
        "telemetry_interval_s": args.telemetry_interval,
        "mqtt_messages_per_s": round((rec_b - rec_a) / span, 1),
        "db_growth_bytes": db1 - db0,
        "db_bytes_per_device_day": round(per_device_day),
        "db_formula": "db growth bytes / devices / window seconds x 86400",
        "hub_cpu_pct": round(100 * (hub1 - hub0) / span, 1),
        "broker_cpu_pct": round(100 * (brk1 - brk0) / span, 1),
        "hub_rss_mib": round(vm_rss_bytes(hub.proc.pid) / MiB, 1),
        "broker_rss_mib": round(vm_rss_bytes(broker.proc.pid) / MiB, 1),
    }


def soak(
    args: argparse.Namespace,
    *,
    work: Path,
    client: HubClient,
    hub: HubProcess,
    broker: PrivateMosquitto,
    engine: Any,
) -> dict[str, Any]:
    n, minutes = args.soak_devices, args.soak_minutes
    watch = WindowWatch(broker.host, broker.port, args.fleet)
    fleet = FleetProc(
        _fleet_argv(
            args, work, hub, broker, devices=n, connect_rate=0, state_root=work / "soak",
            telemetry_interval=1, label="soak",
        ),
        work / "soak.log",
        args.timeout,
    )  # fmt: skip
    try:
        fleet.wait_ready()
        ids = device_ids(n)
        client.assign(model="scale", version="1", devices=ids)
        watch.wait(f"telemetry from all {n} soak devices", lambda: len(watch.devices) >= n, args.timeout)
        start, samples = time.monotonic(), []
        while time.monotonic() - start < minutes * 60:
            samples.append((time.monotonic(), vm_rss_bytes(hub.proc.pid)))
            _pause(5.0)
        samples.append((time.monotonic(), vm_rss_bytes(hub.proc.pid)))
    finally:
        fleet.stop()  # a clean stop: every device flushes its last window
    seen = watch.snapshot()
    watch.stop()
    missing = drain(engine, seen, timeout=120)
    return {
        "devices": n,
        "minutes": minutes,
        "windows_seen_on_broker": len(seen),
        "windows_lost": len(missing),
        "hub_rss": rss_flat(samples, start, minutes),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.devices
    args.fleet = f"scale-{os.getpid()}"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "proto")])
    results: dict[str, Any] = {
        "database": "postgresql" if args.database_url else "sqlite",
        "simulation": f"{LIGHT_NOTE}; each device its own state, director counter and MQTT connection",
        "devices": n,
        "connect_rate": args.connect_rate or "all at once",
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "open_file_limit": open_file_limit(),
    }
    with contextlib.ExitStack() as stack, _workdir(args.workdir) as work:
        broker = PrivateMosquitto(work)
        stack.callback(broker.stop)
        results["broker_settings"] = broker.settings
        counters = BrokerCounters(broker.host, broker.port)
        stack.callback(counters.stop)
        hub = HubProcess(
            work,
            args.fleet,
            argparse.Namespace(mqtt_host=broker.host, mqtt_port=broker.port, database_url=args.database_url),
        )
        stack.callback(hub.stop)
        token = hub.wait_ready(90)
        client = stack.enter_context(HubClient(hub.api_url, token, timeout=120))
        root = httpx.get(f"{hub.api_url}/tuf/metadata/1.root.json", timeout=10)
        root.raise_for_status()
        (work / "root.json").write_bytes(root.content)
        data = make_model(work / "v1.onnx", args.model_kib / KiB, seed=1)
        client.push_model(work / "v1.onnx", name="scale", version="1")
        model = {
            "name": "scale",
            "version": "1",
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
        sqlite_path = work / "hub" / "hub.db"
        db_url = args.database_url or f"sqlite:///{sqlite_path}"

        _pause(args.settle_s)
        hub_rss0 = vm_rss_bytes(hub.proc.pid)
        broker_rss0 = vm_rss_bytes(broker.proc.pid)
        births = BirthWatch(broker.host, broker.port, args.fleet)
        stack.callback(births.stop)
        births.expect(n)
        fleet = start_fleet(args, work, hub, broker)
        stack.callback(fleet.stop)
        results["connect"] = connect(args, client, fleet, births)
        births.stop()
        _pause(args.settle_s)
        hub_rss1 = vm_rss_bytes(hub.proc.pid)
        fleet_rss = sum(vm_rss_bytes(pid) for pid in fleet.pids)
        results["connect"].update(
            {
                "hub_rss_before_mib": round(hub_rss0 / MiB, 1),
                "hub_rss_connected_mib": round(hub_rss1 / MiB, 1),
                "hub_rss_growth_kib_per_device": round((hub_rss1 - hub_rss0) / KiB / n, 3),
                "broker_rss_growth_kib_per_device": round(
                    (vm_rss_bytes(broker.proc.pid) - broker_rss0) / KiB / n, 2
                ),
                "fleet_rss_mib": round(fleet_rss / MiB, 1),
                "fleet_rss_kib_per_device": round(fleet_rss / KiB / n, 1),
                "fleet_processes": len(fleet.pids),
                "fleet_threads": sum(threads(pid) for pid in fleet.pids),
                "broker_dropped_counter": counters.get("dropped")[1],
                "broker_dropped_log_lines": broker.dropped_lines(),
                "broker_clients_connected": counters.get("$SYS/broker/clients/connected")[1],
            }
        )
        _progress("connect", results["connect"])
        results["rollout"] = rollout(args, client, hub, model)
        _progress("rollout", results["rollout"])
        results["rollout"]["fleet_sessions_note"] = (
            "light mode: one session per artifact in each fleet process"
        )
        results["heartbeat"] = heartbeat(
            args, hub, broker, counters, lambda: _db_bytes(args.database_url, sqlite_path)
        )
        results["heartbeat"]["broker_dropped_counter"] = counters.get("dropped")[1]
        results["heartbeat"]["fleet_rss_mib"] = round(sum(vm_rss_bytes(pid) for pid in fleet.pids) / MiB, 1)
        _progress("heartbeat", results["heartbeat"])
        fleet.stop()
        results["bare_subscriber"] = bare_rate(broker.host, broker.port)
        # The fleet's steady message rate against what one bare Python subscriber can take from this broker.
        results["heartbeat_rate_vs_bare_subscriber"] = round(
            results["heartbeat"]["mqtt_messages_per_s"] / results["bare_subscriber"]["messages_per_s"], 3
        )
        if args.soak_minutes > 0:
            engine = create_db_engine(db_url)
            stack.callback(engine.dispose)
            _progress("bare_subscriber", results["bare_subscriber"])
            results["soak"] = soak(args, work=work, client=client, hub=hub, broker=broker, engine=engine)
        results["broker_dropped_counter_end"] = counters.get("dropped")[1]
        results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        results["hub_answered_503"] = dict(UNAVAILABLE)
    return results


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    c = results["connect"]
    out: dict[str, dict[str, Any]] = {
        "all_online_at_hub": {"value": c["hub_all_online_s"], "goal": TARGET_ONLINE_S, "unit": "s"},
        "hub_rss_growth_per_device": {
            "value": c["hub_rss_growth_kib_per_device"], "goal": TARGET_RSS_PER_DEVICE_KIB, "unit": "KiB",
        },
        "rollout_completed_and_all_serving": {
            "value": results["rollout"]["all_serving_s"] is not None,
            "goal": True,
            "unit": "",
        },
    }  # fmt: skip
    soak_ = results.get("soak")
    if soak_ is not None:
        out["soak_windows_lost"] = {
            "value": soak_["windows_lost"],
            "goal": TARGET_SOAK_LOST,
            "unit": "windows",
        }
        out["soak_hub_rss_last_vs_second_minute"] = {
            "value": soak_["hub_rss"]["last_vs_second"], "goal": TARGET_SOAK_RSS_RATIO, "unit": "x",
        }  # fmt: skip
    for name, t in out.items():
        if t["value"] is None:
            t["met"] = False
        elif name == "rollout_completed_and_all_serving":
            t["met"] = t["value"] is True
        else:
            t["met"] = t["value"] <= t["goal"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000, help="simulated devices (default 10000)")
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=0.0,
        help="devices connecting per second (default 0: all at once)",
    )
    parser.add_argument(
        "--database-url", default="", help="the hub's database (default: SQLite in the work folder)"
    )
    parser.add_argument("--model-kib", type=float, default=64.0, help="artifact size in KiB (default 64)")
    parser.add_argument("--telemetry-interval", type=float, default=10.0, help="devices' telemetry period, s")
    parser.add_argument(
        "--trial-window", type=float, default=5.0, help="devices' trial window, s (default 5)"
    )
    parser.add_argument("--window-s", type=float, default=60.0, help="heartbeat measuring window, s")
    parser.add_argument("--settle-s", type=float, default=10.0, help="pause before each RSS reading, s")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="soak length, min (default 0: none)")
    parser.add_argument("--soak-devices", type=int, default=1000, help="devices in the soak (default 1000)")
    parser.add_argument("--timeout", type=float, default=900.0, help="per step, s")
    parser.add_argument(
        "--max-rate",
        type=float,
        default=0.0,
        help="devices offered per minute in the rollout (default 0: all)",
    )
    parser.add_argument(
        "--rollout-timeout", type=float, default=900.0, help="how long the rollout may take, s (default 900)"
    )
    parser.add_argument(
        "--fleet-processes",
        type=int,
        default=0,
        help=f"simulator processes sharing the devices (default 0: one per {DEVICES_PER_PROCESS:,} devices, "
        "at most one per core)",
    )
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.fleet_processes < 0:
        parser.error(f"expected --fleet-processes >= 0 (0: automatic), got {args.fleet_processes}")
    if args.devices < 1 or args.connect_rate < 0 or args.model_kib < 1:
        parser.error(
            f"expected --devices >= 1, --connect-rate >= 0, --model-kib >= 1; got {args.devices}, "
            f"{args.connect_rate}, {args.model_kib}"
        )
    if args.soak_minutes and args.soak_minutes < 3:
        parser.error(
            f"expected --soak-minutes >= 3 (the second and the last minute), got {args.soak_minutes}"
        )
    results = run(args)
    goals = targets(results)
    versions = {**_versions(), "aiomqtt": _version("aiomqtt")}
    print(json.dumps({"machine": _machine(), "versions": versions, "results": results, "targets": goals}))
    return 1 if any(t["met"] is False for t in goals.values()) else 0


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


if __name__ == "__main__":
    sys.exit(main())
