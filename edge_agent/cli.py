"""``edgefleet-agent``: run the device agent, or a simulated fleet of them.

    edgefleet-agent --config /etc/edgefleet/agent.toml        (same as `run`)
    edgefleet-agent run --config /etc/edgefleet/agent.toml
    edgefleet-agent simulate --devices 100 --fleet demo --state-root /tmp/fleet
    edgefleet-agent simulate --devices 100 --fleet demo --state-root /tmp/fleet \
        --traffic-rate 1 --traffic-data digits.npz --label-mix region=north:50,region=south:50 \
        --shift region=north:0.5 [--shift-paused]
    edgefleet-agent status --config /etc/edgefleet/agent.toml [--json]

SIGTERM and SIGINT stop cleanly: the agent flushes telemetry and publishes
OFFLINE before it exits. SIGUSR1 to `simulate` switches its --shift rules off
and on. argparse keeps the agent light (no CLI framework).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent import __version__
from edge_agent.errors import AgentError, ConfigError
from edge_agent.logs import configure_logging, use_log_format

if TYPE_CHECKING:
    from edge_agent.sim_labels import LabelMix
    from edge_agent.sim_mix import DeviceKind
    from edge_agent.sim_traffic import ShiftRule, TrafficPlan

__all__ = ["main"]

log = logging.getLogger(__name__)


# sysexits' EX_TEMPFAIL: the service manager restarts the agent, which then boots the new firmware slot.
EXIT_RESTART = 75


class RestartRequestedError(Exception):
    """The agent asked to be started again (it switched firmware slots)."""


def _install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _run_agent(config_path: Path) -> None:
    from edge_agent.agent import Agent
    from edge_agent.config import load_config

    config = load_config(config_path)
    use_log_format(config.log_format)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    agent = Agent(config)
    log.info("agent %s starting device=%s fleet=%s", __version__, config.device_id, config.fleet)
    await agent.run(stop)
    if agent.restart_requested.is_set() and not stop.is_set():
        # A firmware slot switch: the service manager starts the agent again (Restart=always).
        raise RestartRequestedError


def _status(config_path: Path, as_json: bool) -> None:
    import json

    from edge_agent.config import load_config
    from edge_agent.report import collect, render

    report = collect(load_config(config_path))
    print(json.dumps(report.as_dict(), indent=2) if as_json else render(report))


async def _simulate(args: argparse.Namespace) -> None:
    from edge_agent.config import TrialConfig
    from edge_agent.sim import run_fleet
    from edge_agent.trust.config import FirmwareConfig, TrustConfig

    stop = asyncio.Event()
    _install_stop_signals(stop)
    labels = dict(args.label)
    await run_fleet(
        args.devices,
        args.state_root,
        args.fleet,
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port,
        mqtt_protocol=args.mqtt_protocol,
        grpc_endpoint=args.grpc_endpoint,
        local_api_devices=args.local_api_devices,
        labels=labels,
        label_mix=args.label_mix,
        telemetry_interval_s=args.telemetry_interval,
        stop_event=stop,
        runtimes_mix=args.runtimes_mix,
        trust=TrustConfig(
            require_signed=not args.unsigned, root_file=args.trust_root, http_url=args.trust_http_url or ""
        ),
        firmware=FirmwareConfig(
            hardware_id=args.firmware_hardware or "", factory_bundle=args.firmware_factory
        ),
        trial=TrialConfig(window_s=args.trial_window),
        traffic=args.traffic_plan,
        light=args.light,
        connect_rate=args.connect_rate,
        # This process runs nothing but the fleet: its long-lived objects stay out of the collector.
        freeze_heap=True,
        first=args.first_device,
    )


def _parse_label(item: str) -> tuple[str, str]:
    from edge_agent.sim_labels import parse_label

    try:
        return parse_label(item)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _parse_label_mix(text: str) -> LabelMix:
    from edge_agent.sim_labels import parse_label_mix

    try:
        return parse_label_mix(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _parse_runtimes_mix(text: str) -> list[DeviceKind]:
    from edge_agent.sim_mix import parse_runtimes_mix

    try:
        return parse_runtimes_mix(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _parse_shift(text: str) -> ShiftRule:
    from edge_agent.sim_traffic import parse_shift

    try:
        return parse_shift(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _traffic_plan(args: argparse.Namespace) -> TrafficPlan | None:
    """The traffic the simulated devices serve (None: off); reads the data file, so bad data shows
    up front (also with --check). ConfigError says what is wrong."""
    from edge_agent.sim_traffic import TrafficData, TrafficPlan

    if args.traffic_rate == 0:
        if args.traffic_data is not None or args.shift or args.shift_paused:
            raise ConfigError(
                "--traffic-data, --shift and --shift-paused take effect with --traffic-rate R > 0 "
                "(default 0: off)"
            )
        return None
    if args.traffic_data is None:
        raise ConfigError("--traffic-rate needs --traffic-data PATH.npz (arrays x and optional y)")
    if args.shift_paused and not args.shift:
        raise ConfigError(
            "--shift-paused holds back --shift rules: expected at least one --shift SELECTOR:AMOUNT"
        )
    return TrafficPlan(
        rate=args.traffic_rate,
        data=TrafficData.load(args.traffic_data),
        shifts=tuple(args.shift),
        shift_paused=args.shift_paused,
        feedback_rate=args.feedback_rate,
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}") from None
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected requests per second >= 0, got {text!r}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a share from 0 to 1, got {text!r}")
    return value


def _package_version() -> str:
    """The installed distribution's version (what pip shows), else the package's own."""
    from importlib import metadata

    try:
        return metadata.version("edgefleet")
    except metadata.PackageNotFoundError:
        return __version__


def _build_parser() -> argparse.ArgumentParser:
    from edge_agent.config import TrialConfig
    from edge_agent.sim_traffic import DEFAULT_FEEDBACK_RATE

    parser = argparse.ArgumentParser(
        prog="edgefleet-agent",
        description="The edgefleet device agent: keeps a verified model serving and reports to the hub.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    parser.add_argument("--config", type=Path, metavar="PATH", help="agent config (TOML); runs the agent")
    parser.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent for one device", description="Run the agent.")
    run.add_argument(
        "--config", type=Path, required=True, dest="run_config", metavar="PATH", help="agent config (TOML)"
    )
    run.add_argument("--log-level", dest="run_log_level", metavar="LEVEL", help="log level (default INFO)")

    status = sub.add_parser(
        "status",
        help="print slots, versions, trial and update state, queue depth and recent events",
        description="Read the state folder (and the running agent's local API, if up) and print what the "
        "device runs and does. Safe while the agent runs.",
    )
    status.add_argument(
        "--config", type=Path, required=True, dest="status_config", metavar="PATH", help="agent config (TOML)"
    )
    status.add_argument("--json", action="store_true", help="print JSON")

    sim = sub.add_parser(
        "simulate",
        help="run N simulated devices in one process",
        description="Run N real agents in one process, each with its own state folder under --state-root. "
        'Prints {"event": "ready", ...} on stdout once all are connected. SIGUSR1 switches the --shift '
        'rules off and on, and prints {"event": "shift", "on": true|false, "devices": N} on stdout.',
        epilog="example: edgefleet-agent simulate --devices 100 --fleet demo --state-root /tmp/fleet "
        "--label-mix region=north:50,region=south:50 --traffic-rate 1 --traffic-data digits.npz "
        "--shift region=north:0.5 (every device asks its model once a second; the northern half "
        "sees rows moved by half a standard deviation). Add --shift-paused to start unshifted, then "
        "kill -USR1 PID to move the northern half's rows (and again to move them back).",
    )
    sim.add_argument("--devices", type=_positive_int, default=10, metavar="N", help="devices (default 10)")
    sim.add_argument("--fleet", required=True, help="fleet name")
    sim.add_argument(
        "--first-device",
        type=_positive_int,
        default=1,
        metavar="K",
        help="number the devices from sim-K (default 1): several processes, each its own range, "
        "simulate one fleet on several cores",
    )
    sim.add_argument("--mqtt-host", default="127.0.0.1", metavar="HOST", help="broker (default 127.0.0.1)")
    sim.add_argument("--mqtt-port", type=int, default=1883, metavar="PORT", help="broker port (default 1883)")
    sim.add_argument("--mqtt-protocol", choices=["5", "3.1.1"], default="5", help="MQTT version (default 5)")
    sim.add_argument(
        "--grpc-endpoint", default="127.0.0.1:50051", metavar="HOST:PORT", help="hub artifact service"
    )
    sim.add_argument(
        "--state-root", type=Path, required=True, metavar="DIR", help="folder for the state folders"
    )
    sim.add_argument(
        "--local-api-devices",
        type=int,
        metavar="K",
        help="first K devices get a local API (default all)",
    )
    sim.add_argument(
        "--light",
        action="store_true",
        help="light mode for large fleets: the devices share one onnxruntime session per artifact (by "
        "sha256) and one signed-update metadata client per trusted root, keep their outboxes in memory "
        "and ping the broker every 120 s; each keeps its own state, director counter and connection",
    )
    sim.add_argument(
        "--connect-rate",
        type=_non_negative_float,
        default=0.0,
        metavar="R",
        help="devices that connect per second at start, jittered (default 0: all at once)",
    )
    sim.add_argument(
        "--telemetry-interval", type=float, default=10.0, metavar="S", help="seconds per window (default 10)"
    )
    sim.add_argument(
        "--label",
        action="append",
        type=_parse_label,
        default=[],
        metavar="KEY=VALUE",
        help="a label every device reports (repeatable)",
    )
    sim.add_argument(
        "--label-mix",
        type=_parse_label_mix,
        metavar="MIX",
        help="labels shared out by device index, e.g. region=eu:40,region=us:60 (each key's "
        "percentages add up to 100; the same devices get the same values on every run)",
    )
    sim.add_argument(
        "--runtimes-mix",
        type=_parse_runtimes_mix,
        metavar="MIX",
        help="device kinds in turn, e.g. onnxruntime+litert,litert,onnxruntime@fp32: each device reports "
        "and runs only its runtimes; @PRECISION sets its precision label (default: all runtimes)",
    )
    sim.add_argument(
        "--trust-root", type=Path, metavar="FILE", help="the fleet's root.json, installed on every device"
    )
    sim.add_argument(
        "--trust-http-url", metavar="URL", help="the hub's /tuf URL, for TUF over HTTP as a fallback"
    )
    sim.add_argument(
        "--unsigned",
        action="store_true",
        help="accept unsigned desired states (testing only; refused by default)",
    )
    sim.add_argument(
        "--firmware-hardware", metavar="ID", help="hardware id of the simulated devices (firmware on)"
    )
    sim.add_argument(
        "--firmware-factory", type=Path, metavar="FILE", help="factory firmware bundle for slot a"
    )
    sim.add_argument(
        "--trial-window",
        type=_non_negative_float,
        default=TrialConfig().window_s,
        metavar="S",
        help=f"seconds a new version is on trial at most, with or without traffic (default "
        f"{TrialConfig().window_s:g}; 0: until the request window ends)",
    )
    sim.add_argument(
        "--traffic-rate",
        type=_rate,
        default=0.0,
        metavar="R",
        help="requests per second each device serves itself, jittered (default 0: none), e.g. "
        "--traffic-rate 1 --traffic-data digits.npz; a summary goes to stderr at the end",
    )
    sim.add_argument(
        "--traffic-data",
        type=Path,
        metavar="PATH.npz",
        help="rows to send: an .npz with x (N, ...) float32, reshaped to the model's input, and "
        "optional y (N,) class ids, sent back as feedback",
    )
    sim.add_argument(
        "--shift",
        action="append",
        type=_parse_shift,
        default=[],
        metavar="SELECTOR:AMOUNT",
        help="shift the rows of the devices whose labels match (repeatable): region=north:0.5 adds "
        "0.5 std to every feature, region=north:scale=1.3 multiplies; *:0.5 means every device",
    )
    sim.add_argument(
        "--shift-paused",
        action="store_true",
        help="check the --shift rules but send unshifted rows until the process gets SIGUSR1 (each "
        "SIGUSR1 switches them on or off), e.g. --shift region=north:0.5 --shift-paused, then "
        "kill -USR1 PID",
    )
    sim.add_argument(
        "--feedback-rate",
        type=_share,
        default=DEFAULT_FEEDBACK_RATE,
        metavar="F",
        help="share of answers whose true label (y) goes back as feedback "
        f"(default {DEFAULT_FEEDBACK_RATE:g})",
    )
    sim.add_argument("--log-level", dest="sim_log_level", metavar="LEVEL", help="log level (default WARNING)")
    sim.add_argument("--check", action="store_true", help="check the options and exit without running")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    command = args.command or ("run" if args.config is not None else None)
    if command == "simulate" and args.label_mix is not None:
        both = sorted({key for key, _ in args.label} & set(args.label_mix.keys))
        if both:
            parser.error(f"label {', '.join(both)} is given by both --label and --label-mix: give it once")
    if command == "simulate":
        try:
            args.traffic_plan = _traffic_plan(args)
        except ConfigError as e:
            parser.error(str(e))
    if command == "simulate" and args.check:
        return 0
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    if command in ("simulate", "status"):
        level = getattr(args, "sim_log_level", None) or args.log_level or "WARNING"
    else:
        level = getattr(args, "run_log_level", None) or args.log_level or "INFO"
    try:
        configure_logging(level)
    except ValueError as e:
        parser.error(str(e))
    try:
        if command == "simulate":
            asyncio.run(_simulate(args))
        elif command == "status":
            _status(args.status_config, args.json)
        else:
            asyncio.run(_run_agent(getattr(args, "run_config", None) or args.config))
    except RestartRequestedError:
        print("edgefleet-agent: restarting to boot the new firmware slot", file=sys.stderr)
        return EXIT_RESTART
    except ConfigError as e:
        print(f"edgefleet-agent: configuration error: {e}", file=sys.stderr)
        return 2
    except AgentError as e:
        print(f"edgefleet-agent: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
