"""`fleet`: run the hub, manage models and devices, simulate a fleet, run the demo."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cloud import cli_firmware, cli_keys, cli_rollbacks, cli_train
from cloud.cli_common import HubUrl, Output, OutputOpt, Token, console
from cloud.cli_common import fail as _fail
from cloud.cli_common import print_json as _print_json
from cloud.client import DEFAULT_HUB_URL, HubClient, HubError, resolve_token

app = typer.Typer(help="edgefleet hub and fleet CLI.", no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Register and list model versions.", no_args_is_help=True)
devices_app = typer.Typer(help="List and inspect devices.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(devices_app, name="devices")
app.add_typer(cli_rollbacks.rollbacks_app, name="rollbacks")  # fleet rollbacks ls
cli_train.register(app, models_app)  # fleet train, fleet models optimize|show, fleet experiments
app.add_typer(cli_keys.keys_app, name="keys")  # fleet keys init|rotate|sign|status|root
app.add_typer(cli_firmware.firmware_app, name="firmware")  # fleet firmware build|delta|push|ls|assign


def _client(hub_url: str, token: str | None) -> HubClient:
    return HubClient(hub_url, resolve_token(token))


def _model_label(m: dict[str, Any] | None) -> str:
    if not m:
        return "-"
    return f"{m.get('name')}:{m.get('version')}"


@app.command()
def hub(
    host: Annotated[str | None, typer.Option(help="HTTP bind address (EDGEFLEET_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (EDGEFLEET_API_PORT).")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC artifact port (EDGEFLEET_GRPC_PORT).")] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run the hub: HTTP API, MQTT transport and gRPC artifact server, until interrupted."""
    from cloud.hub import Hub
    from cloud.settings import Settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {"api_host": host, "api_port": port, "grpc_port": grpc_port}
    try:
        # Options given on the command line win over EDGEFLEET_* variables.
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as e:
        raise _fail(f"invalid settings: {e}") from e
    Hub(settings).run_forever()


@models_app.command("push")
def models_push(
    file: Annotated[Path, typer.Argument(help="Model file (ONNX).", exists=True, dir_okay=False)],
    name: Annotated[str, typer.Option(help="Model name, e.g. digits-mlp.")],
    version: Annotated[str, typer.Option(help="Version string, unique per name.")],
    fmt: Annotated[str, typer.Option("--format", help="Artifact format.")] = "onnx",
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Upload a model version to the hub's registry."""
    try:
        with _client(hub_url, token) as c:
            mv = c.push_model(file, name=name, version=version, fmt=fmt)
    except HubError as e:
        raise _fail(str(e)) from e
    if output is Output.json:
        _print_json(mv)
    else:
        console.print(
            f"registered [bold]{mv['name']}:{mv['version']}[/] "
            f"sha256={mv['sha256'][:16]}… {mv['length']} bytes"
        )


@models_app.command("ls")
def models_ls(
    name: Annotated[str | None, typer.Option(help="Only versions of this model.")] = None,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List registered model versions."""
    try:
        with _client(hub_url, token) as c:
            rows = c.list_models(name)
    except HubError as e:
        raise _fail(str(e)) from e
    if output is Output.json:
        _print_json(rows)
        return
    table = Table("name", "version", "format", "bytes", "sha256", "created")
    for m in rows:
        table.add_row(
            m["name"],
            m["version"],
            m["format"],
            str(m["length"]),
            m["sha256"][:12],
            str(m.get("created_at", "")),
        )
    console.print(table)


@devices_app.command("ls")
def devices_ls(
    state: Annotated[str | None, typer.Option(help="online or offline.")] = None,
    label: Annotated[str | None, typer.Option(help="Label selector key=value.")] = None,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List devices known to the hub."""
    try:
        with _client(hub_url, token) as c:
            rows = c.list_devices(state=state, label=label)
    except HubError as e:
        raise _fail(str(e)) from e
    if output is Output.json:
        _print_json(rows)
        return
    table = Table("device", "state", "active model", "desired", "in sync", "agent", "last seen")
    for d in rows:
        table.add_row(
            d["id"],
            d["state"],
            _model_label(d.get("active_model")),
            _model_label(d.get("desired_model")),
            "yes" if d.get("in_sync") else "no",
            d.get("agent_version") or "-",
            str(d.get("last_seen") or "-"),
        )
    console.print(table)


@devices_app.command("show")
def devices_show(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """Show one device with its recent events and telemetry (JSON)."""
    try:
        with _client(hub_url, token) as c:
            _print_json(c.device(device_id))
    except HubError as e:
        raise _fail(str(e)) from e


@app.command()
def assign(
    model: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[str, typer.Option(help="Model version.")],
    device: Annotated[
        list[str] | None, typer.Option("--device", "-d", help="Device id (repeatable).")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="Assign to every device with this label key=value.")
    ] = None,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Assign a model version to devices: the hub publishes their new desired state."""
    selector: dict[str, str] | None = None
    if label:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise _fail(f"--label expects key=value, got {label!r}")
        selector = {key: value}
    if bool(device) == bool(selector):
        raise _fail("give --device (one or more) or --label, not both")
    try:
        with _client(hub_url, token) as c:
            result = c.assign(model=model, version=version, devices=device, selector=selector)
    except HubError as e:
        raise _fail(str(e)) from e
    if output is Output.json:
        _print_json(result)
    else:
        console.print(f"assigned {model}:{version} to {result['count']} device(s)")


@app.command()
def simulate(
    devices: Annotated[int, typer.Option(min=1, max=100_000, help="Number of simulated devices.")] = 10,
    fleet: Annotated[str, typer.Option(envvar="EDGEFLEET_FLEET", help="Fleet name.")] = "default",
    mqtt_host: Annotated[str, typer.Option(envvar="EDGEFLEET_MQTT_HOST")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(envvar="EDGEFLEET_MQTT_PORT")] = 1883,
    mqtt_protocol: Annotated[str, typer.Option(envvar="EDGEFLEET_MQTT_PROTOCOL", help="5 or 3.1.1")] = "5",
    grpc_endpoint: Annotated[str, typer.Option(help="Hub's gRPC artifact endpoint.")] = "127.0.0.1:50051",
    state_root: Annotated[Path, typer.Option(help="Folder for the devices' state folders.")] = Path(
        ".edgefleet/fleet"
    ),
    local_api_devices: Annotated[int, typer.Option(help="How many devices serve a local API socket.")] = 3,
    telemetry_interval: Annotated[float, typer.Option(help="Seconds between telemetry windows.")] = 10.0,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    trust_root: Annotated[
        Path | None, typer.Option(help="The fleet's root.json (default: the hub's, from --hub-url).")
    ] = None,
) -> None:
    """Run N real agents in one process (each with its own state folder) until interrupted."""
    # Every device is provisioned with the fleet's trusted root: it refuses what does not verify against it.
    if trust_root is None:
        from cloud.client_signing import SigningClient

        state_root.mkdir(parents=True, exist_ok=True)
        trust_root = state_root / "root.json"
        try:
            with SigningClient(hub_url) as signing:
                trust_root.write_bytes(signing.root_metadata())
        except HubError as e:
            raise _fail(f"cannot fetch the fleet's root.json to provision the devices: {e}") from e
    # The agent is a separate program: the hub never imports it, it runs it.
    argv = [
        sys.executable, "-m", "edge_agent.cli", "simulate",
        "--devices", str(devices), "--fleet", fleet,
        "--mqtt-host", mqtt_host, "--mqtt-port", str(mqtt_port), "--mqtt-protocol", mqtt_protocol,
        "--grpc-endpoint", grpc_endpoint, "--state-root", str(state_root),
        "--local-api-devices", str(local_api_devices), "--telemetry-interval", str(telemetry_interval),
        "--trust-root", str(trust_root), "--trust-http-url", f"{hub_url.rstrip('/')}/tuf",
    ]  # fmt: skip
    os.execv(sys.executable, argv)  # noqa: S606 - argv is built here, no shell


@app.command()
def demo(
    devices: Annotated[int, typer.Option(min=1, max=1000, help="Simulated devices.")] = 20,
    model: Annotated[str, typer.Option(help="Demo model: mlp or cnn.")] = "mlp",
    workdir: Annotated[
        Path | None, typer.Option(help="Keep all files here instead of a temp folder.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the fleet to converge.")] = 120.0,
    log_level: Annotated[str, typer.Option(help="Logging level for the hub and broker.")] = "WARNING",
) -> None:
    """Train, push and roll a model out to a simulated fleet on this machine, end to end."""
    from cloud.demo import DemoError, run_demo

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_demo(devices=devices, model_kind=model, workdir=workdir, timeout=timeout, console=console)
    except DemoError as e:
        raise _fail(str(e)) from e


def main() -> None:
    app()


if __name__ == "__main__":
    main()
