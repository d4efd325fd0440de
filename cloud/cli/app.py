"""`fleet`: run the hub, manage models and devices, simulate a fleet, run the demo."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cloud.cli import alerts as cli_alerts
from cloud.cli import audit as cli_audit
from cloud.cli import cohorts as cli_cohorts
from cloud.cli import db as cli_db
from cloud.cli import devices as cli_devices
from cloud.cli import firmware as cli_firmware
from cloud.cli import identity as cli_identity
from cloud.cli import keys as cli_keys
from cloud.cli import rollbacks as cli_rollbacks
from cloud.cli import rollouts as cli_rollouts
from cloud.cli import tokens as cli_tokens
from cloud.cli import train as cli_train
from cloud.cli import training as cli_training
from cloud.cli.common import (
    EXIT_CODES_HELP,
    Col,
    FriendlyGroup,
    HubUrl,
    Output,
    OutputOpt,
    Token,
    console,
    data_dir,
    example,
    hub_call,
    json_out,
    package_version,
    short_prefixes,
    table,
    usage_error,
)
from cloud.cli.common import fail as _fail
from cloud.cli.common import print_json as _print_json
from cloud.cli.drift import drift_app
from cloud.client.hub import DEFAULT_HUB_URL, HubClient, HubError, resolve_token

app = typer.Typer(
    cls=FriendlyGroup,
    help="edgefleet hub and fleet CLI.",
    no_args_is_help=True,
    add_completion=True,
    epilog=example("fleet hub", "fleet models ls", "fleet devices show cam-01") + "\n\n" + EXIT_CODES_HELP,
)
models_app = typer.Typer(
    cls=FriendlyGroup,
    help="Register, optimize, list and show model versions.",
    no_args_is_help=True,
    epilog=example("fleet models ls", "fleet models show digits-mlp 1.0.0"),
)
app.add_typer(models_app, name="models")
app.add_typer(cli_devices.devices_app, name="devices")  # fleet devices ls|show|label|provision|revoke
cli_identity.register(cli_devices.devices_app)
app.add_typer(cli_identity.identity_app, name="identity")  # fleet identity ca|hub-cert|server-cert|crl
app.add_typer(cli_cohorts.cohorts_app, name="cohorts")  # fleet cohorts create|ls|show|rm
app.add_typer(cli_alerts.alerts_app, name="alerts")  # fleet alerts ls|show|rules|receivers|prometheus
app.add_typer(drift_app, name="drift")  # fleet drift ls|show|series
app.add_typer(cli_rollbacks.rollbacks_app, name="rollbacks")  # fleet rollbacks ls
app.add_typer(cli_rollouts.rollouts_app, name="rollouts")  # fleet rollouts create|ls|show|watch|pause|...
cli_train.register(app, models_app)  # fleet train, fleet models optimize|show, fleet experiments
app.add_typer(cli_training.training_app, name="training")  # fleet training runs ls|show|approve|...
app.add_typer(cli_training.data_app, name="data")  # fleet data add|ls: labelled samples for retraining
app.add_typer(cli_keys.keys_app, name="keys")  # fleet keys init|rotate|sign|status|root
app.add_typer(cli_firmware.firmware_app, name="firmware")  # fleet firmware build|delta|push|ls|assign
app.add_typer(cli_tokens.tokens_app, name="tokens")  # fleet tokens create|ls|revoke
app.add_typer(cli_audit.audit_app, name="audit")  # fleet audit ls
app.add_typer(cli_db.db_app, name="db")  # fleet db upgrade|current|history|check: on the database itself


def _client(hub_url: str, token: str | None) -> HubClient:
    return HubClient(hub_url, resolve_token(token))


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"fleet {package_version()}")
        raise typer.Exit


@app.callback()
def _main(
    _version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """edgefleet hub and fleet CLI."""


# How long `fleet hub` waits for the broker to accept it before refusing to start (exit 4).
HUB_BROKER_CHECK_S = 10.0


@app.command(epilog=example("fleet hub", "EDGEFLEET_DATA_DIR=/var/lib/edgefleet fleet hub --port 8080"))
def hub(
    host: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="HTTP bind address (EDGEFLEET_API_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="HTTP port (EDGEFLEET_API_PORT).")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(metavar="PORT", help="gRPC artifact port (EDGEFLEET_GRPC_PORT).")
    ] = None,
    log_level: Annotated[
        str, typer.Option(metavar="LEVEL", help="Logging level: DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
) -> None:
    """Run the hub: HTTP API, MQTT transport and gRPC artifact server, until interrupted."""
    from cloud.cli.common import ExitCode
    from cloud.hub import Hub, HubStartError
    from cloud.observability.logging import configure_logging
    from cloud.settings import Settings

    overrides: dict[str, Any] = {"api_host": host, "api_port": port, "grpc_port": grpc_port}
    try:
        # Options given on the command line win over EDGEFLEET_* variables.
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        # Text or JSON lines (EDGEFLEET_LOG_FORMAT), set up before the hub logs anything.
        configure_logging(log_level, settings.log_format)
    except ValueError as e:
        raise usage_error(f"invalid settings: {e}") from e
    try:
        Hub(settings, broker_check_s=HUB_BROKER_CHECK_S).run_forever()
    except HubStartError as e:
        # One plain line, never wrapped to the terminal's width: scripts and service managers read it.
        sys.stderr.write(f"error: cannot start the hub: {e}\n")
        raise typer.Exit(ExitCode.REFUSED) from None


@models_app.command("push", epilog=example("fleet models push model.onnx --name digits-mlp --version 1.0.0"))
def models_push(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Model file (ONNX).", exists=True, dir_okay=False)
    ],
    name: Annotated[str, typer.Option(metavar="NAME", help="Model name, e.g. digits-mlp.")],
    version: Annotated[str, typer.Option(metavar="VERSION", help="Version string, unique per name.")],
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="Artifact format.")] = "onnx",
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Upload a model version to the hub's registry."""
    try:
        with _client(hub_url, token) as c:
            mv = c.push_model(file, name=name, version=version, fmt=fmt)
    except HubError as e:
        raise _fail(e) from e
    if output is Output.json:
        _print_json(mv)
    else:
        console.print(
            f"registered [bold]{mv['name']}:{mv['version']}[/] "
            f"sha256={mv['sha256'][:16]}… {mv['length']} bytes"
        )


@models_app.command("ls", epilog=example("fleet models ls", "fleet models ls --name digits-mlp -o json"))
def models_ls(
    name: Annotated[str | None, typer.Option(metavar="NAME", help="Only versions of this model.")] = None,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List registered model versions."""
    rows = hub_call(hub_url, token, lambda c: c.list_models(name))
    if json_out(output, rows):
        return
    # Versions are typed back into `fleet models show`: shown whole. Digests as git shows hashes.
    digests = short_prefixes(m["sha256"] for m in rows)
    columns = [
        Col("name", typed=True),
        Col("version", typed=True),
        Col("format", drop=2),
        Col("bytes", justify="right", drop=1),
        Col("sha256", typed=True, drop=3),
        Col("created", drop=4),
    ]
    cells = [
        [
            m["name"],
            m["version"],
            m["format"],
            str(m["length"]),
            digests[m["sha256"]],
            _when(m.get("created_at")),
        ]
        for m in rows
    ]
    console.print(table(columns, cells))


def _when(value: Any) -> str:
    return str(value or "-").replace("T", " ")[:16]


@app.command(
    epilog=example(
        "fleet assign --model digits-mlp --version 1.0.0 --device cam-01 --device cam-02",
        "fleet assign --model digits-mlp --version 1.0.0 --label site=lab",
        "fleet assign --model digits-mlp --version 1.0.0 --label 'site in (lab,office),!retired'",
        "fleet assign --model resnet --version 2.0.0 -d cam-01 --trial-policy policy.json",
    )
)
def assign(
    model: Annotated[str, typer.Option(metavar="NAME", help="Model name.")],
    version: Annotated[str, typer.Option(metavar="VERSION", help="Model version.")],
    device: Annotated[
        list[str] | None, typer.Option("--device", "-d", metavar="ID", help="Device id (repeatable).")
    ] = None,
    label: Annotated[
        str | None,
        typer.Option(
            metavar="SELECTOR",
            help="Assign to every device whose labels match: key=value, key!=value, key in (a,b), "
            "key notin (a,b), key, !key; comma-separated requirements must all hold.",
        ),
    ] = None,
    trial_policy: Annotated[
        str | None,
        typer.Option(
            metavar="FILE|JSON",
            help="How the devices judge the version's trial: a JSON file or inline JSON "
            "(see docs/rollouts.md, Trial policy). Comes before the rollout plan's and the bundle's.",
        ),
    ] = None,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Assign a model version to devices: the hub publishes their new desired state."""
    if not device and label is None:
        raise usage_error("give --device ID (repeatable) or --label SELECTOR")
    if device and label is not None:
        raise usage_error("--device and --label are exclusive: give one of them")
    selector: str | None = None
    if label is not None:
        selector = cli_cohorts.check_selector(label, "--label")
        if not selector:
            raise usage_error("--label: expected a selector with at least one requirement, got none")
    policy = cli_rollouts.trial_policy_option(trial_policy)
    try:
        with _client(hub_url, token) as c:
            result = c.assign(
                model=model, version=version, devices=device, selector=selector, trial_policy=policy
            )
    except HubError as e:
        raise _fail(e) from e
    if output is Output.json:
        _print_json(result)
    else:
        console.print(f"assigned {model}:{version} to {result['count']} device(s)")


@app.command(
    epilog=example(
        "fleet simulate --devices 20",
        "fleet simulate --devices 10000 --light --connect-rate 500",
        "EDGEFLEET_DATA_DIR=/tmp/ef fleet simulate --devices 100",
        "fleet simulate --devices 100 --label-mix region=north:50,region=south:50 "
        "--traffic-rate 1 --traffic-data digits --shift region=north:0.5",
        "fleet simulate --devices 100 --label-mix region=north:50,region=south:50 "
        "--traffic-rate 1 --traffic-data digits --shift region=north:0.5 --shift-paused &",
        "kill -USR1 $!   # later: the northern half's rows move (again: back)",
    )
)
def simulate(
    devices: Annotated[int, typer.Option(min=1, max=100_000, help="Number of simulated devices.")] = 10,
    fleet: Annotated[str, typer.Option(envvar="EDGEFLEET_FLEET", help="Fleet name.")] = "default",
    first_device: Annotated[
        int,
        typer.Option(
            min=1,
            help="Number the devices from sim-K: several processes, each its own range and --state-root, "
            "simulate one fleet on several cores.",
        ),
    ] = 1,
    mqtt_host: Annotated[str, typer.Option(envvar="EDGEFLEET_MQTT_HOST")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(envvar="EDGEFLEET_MQTT_PORT")] = 1883,
    mqtt_protocol: Annotated[str, typer.Option(envvar="EDGEFLEET_MQTT_PROTOCOL", help="5 or 3.1.1")] = "5",
    grpc_endpoint: Annotated[
        str | None,
        typer.Option(
            envvar="EDGEFLEET_GRPC_PUBLIC_ENDPOINT",
            show_default="127.0.0.1:$EDGEFLEET_GRPC_PORT (50051)",
            help="Hub's gRPC artifact endpoint.",
        ),
    ] = None,
    # A factory, so EDGEFLEET_DATA_DIR is read when the command runs, not when the module is imported.
    state_root: Path = typer.Option(  # noqa: B008
        default_factory=lambda: data_dir() / "fleet",
        metavar="DIR",
        show_default="$EDGEFLEET_DATA_DIR/fleet",
        help="Folder for the devices' state folders.",
    ),
    local_api_devices: Annotated[int, typer.Option(help="How many devices serve a local API socket.")] = 3,
    telemetry_interval: Annotated[float, typer.Option(help="Seconds between telemetry windows.")] = 10.0,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    trust_root: Annotated[
        Path | None, typer.Option(help="The fleet's root.json (default: the hub's, from --hub-url).")
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="A label every device reports (repeatable)."),
    ] = None,
    label_mix: Annotated[
        str | None,
        typer.Option(
            metavar="MIX",
            help="Labels shared out by device index, e.g. region=eu:40,region=us:60 (each key's "
            "percentages add up to 100; the same devices get the same values on every run).",
        ),
    ] = None,
    firmware_hardware: Annotated[
        str | None,
        typer.Option(
            metavar="ID",
            help="Give every device A/B firmware slots as this board (e.g. sim-board, the samples' board).",
        ),
    ] = None,
    firmware_factory: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Factory firmware bundle written to slot a at first start."),
    ] = None,
    trial_window: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            metavar="SECONDS",
            help="Seconds a new version is on trial at most (default: the agent's, 60); an idle device "
            "keeps a version once its window has passed without evidence against it.",
        ),
    ] = None,
    traffic_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            metavar="R",
            help="Requests per second each device sends its own model, jittered (0: none). A summary "
            "line goes to stderr when the fleet stops.",
        ),
    ] = 0.0,
    traffic_data: Annotated[
        str | None,
        typer.Option(
            metavar="PATH.npz|digits",
            help="Rows to send: an .npz with x (N, ...) float32 and optional labels y, or 'digits' for the "
            "demo model's held-out digits (written to $EDGEFLEET_DATA_DIR/traffic/digits.npz).",
        ),
    ] = None,
    shift: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SELECTOR:AMOUNT",
            help="Shift what matching devices send (repeatable): region=north:0.5 adds 0.5 std to "
            "every feature, region=north:scale=1.3 multiplies it.",
        ),
    ] = None,
    shift_paused: Annotated[
        bool,
        typer.Option(
            "--shift-paused",
            help="Check the --shift rules but send unshifted rows until the process gets SIGUSR1; each "
            'SIGUSR1 switches them on or off and prints {"event": "shift", "on": ..., "devices": N} on '
            "stdout. Without it, SIGUSR1 switches them off first.",
        ),
    ] = False,
    feedback_rate: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            metavar="F",
            help="Share of answers whose true label y goes back as feedback (default: the agent's, 0.5).",
        ),
    ] = None,
    light: Annotated[
        bool,
        typer.Option(
            "--light",
            help="Light mode for large fleets (10,000 devices on one machine): the devices share one "
            "onnxruntime session per artifact (by sha256), keep their outboxes in memory and ping the "
            "broker every 120 s; each keeps its own state, trust metadata and broker connection.",
        ),
    ] = False,
    connect_rate: Annotated[
        float,
        typer.Option(
            min=0.0, metavar="R", help="Devices that connect per second at start, jittered (0: all at once)."
        ),
    ] = 0.0,
) -> None:
    """Run N real agents in one process (each with its own state folder) until interrupted.

    The agent program takes this process's place (exec), so SIGUSR1 to this PID reaches the fleet.
    """
    from model_tools.data import write_traffic_npz

    # The agent is a separate program: the hub never imports it, it runs it.
    agent = [sys.executable, "-m", "edge_agent.cli", "simulate"]
    labels = [arg for item in label or [] for arg in ("--label", item)]
    labels += ["--label-mix", label_mix] if label_mix is not None else []
    traffic = [arg for item in shift or [] for arg in ("--shift", item)]
    traffic += ["--shift-paused"] if shift_paused else []
    traffic += ["--traffic-rate", f"{traffic_rate:g}"] if traffic_rate else []
    if traffic_data is not None:
        path = (
            write_traffic_npz(data_dir() / "traffic" / "digits.npz")
            if traffic_data == "digits"
            else Path(traffic_data)
        )
        traffic += ["--traffic-data", str(path.resolve())]
    traffic += ["--feedback-rate", f"{feedback_rate:g}"] if feedback_rate is not None else []
    if labels or traffic:
        # The agent owns the label, shift and data syntax; ask it before touching the hub, so bad usage
        # exits 2 at once.
        check = subprocess.run(
            [*agent, "--fleet", fleet, "--state-root", str(state_root), *labels, *traffic, "--check"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            reason = check.stderr.strip().splitlines()[-1] if check.stderr.strip() else "invalid labels"
            raise usage_error(reason.split("error: ", 1)[-1])
    if grpc_endpoint is None:
        # The hub on this machine, on the port it reads from the same variable.
        grpc_endpoint = f"127.0.0.1:{os.environ.get('EDGEFLEET_GRPC_PORT', '50051')}"
    # Every device is provisioned with the fleet's trusted root: it refuses what does not verify against it.
    if trust_root is None:
        from cloud.client.signing import SigningClient

        state_root.mkdir(parents=True, exist_ok=True)
        trust_root = state_root / "root.json"
        try:
            with SigningClient(hub_url) as signing:
                trust_root.write_bytes(signing.root_metadata())
        except HubError as e:
            raise _fail(f"cannot fetch the fleet's root.json to provision the devices: {e}") from e
    argv = [
        *agent,
        "--devices", str(devices), "--fleet", fleet,
        "--mqtt-host", mqtt_host, "--mqtt-port", str(mqtt_port), "--mqtt-protocol", mqtt_protocol,
        "--grpc-endpoint", grpc_endpoint, "--state-root", str(state_root),
        "--local-api-devices", str(local_api_devices), "--telemetry-interval", str(telemetry_interval),
        "--trust-root", str(trust_root), "--trust-http-url", f"{hub_url.rstrip('/')}/tuf",
        *labels, *traffic,
    ]  # fmt: skip
    # Without a hardware id a simulated device takes no firmware, and the hub offers it none.
    if firmware_hardware:
        argv += ["--firmware-hardware", firmware_hardware]
    if firmware_factory is not None:
        argv += ["--firmware-factory", str(firmware_factory)]
    if light:
        argv += ["--light"]
    if first_device != 1:
        argv += ["--first-device", str(first_device)]
    if connect_rate:
        argv += ["--connect-rate", f"{connect_rate:g}"]
    if trial_window is not None:
        argv += ["--trial-window", f"{trial_window:g}"]
    os.execv(sys.executable, argv)  # noqa: S606 - argv is built here, no shell


@app.command(epilog=example("fleet demo", "fleet demo --devices 50 --model cnn --workdir /tmp/demo"))
def demo(
    devices: Annotated[int, typer.Option(min=1, max=1000, help="Simulated devices.")] = 20,
    model: Annotated[str, typer.Option(help="Demo model: mlp or cnn.")] = "mlp",
    workdir: Annotated[
        Path | None, typer.Option(help="Keep all files here instead of a temp folder.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the fleet to converge.")] = 120.0,
    log_level: Annotated[str, typer.Option(help="Logging level for the hub and broker.")] = "WARNING",
    mqtt_host: Annotated[
        str,
        typer.Option(
            envvar="EDGEFLEET_MQTT_HOST",
            metavar="HOST",
            help="Broker to use when one answers there; otherwise the demo starts an embedded one.",
        ),
    ] = "127.0.0.1",
    mqtt_port: Annotated[
        int, typer.Option(envvar="EDGEFLEET_MQTT_PORT", min=1, max=65535, metavar="PORT", help="Broker port.")
    ] = 1883,
) -> None:
    """Train, push and roll a model out to a simulated fleet on this machine, end to end."""
    from cloud.demo.run import DemoError, run_demo

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_demo(
            devices=devices,
            model_kind=model,
            workdir=workdir,
            timeout=timeout,
            console=console,
            mqtt_host=mqtt_host,
            mqtt_port=mqtt_port,
        )
    except DemoError as e:
        raise _fail(str(e)) from e


def main() -> None:
    app()
