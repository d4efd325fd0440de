"""`fleet firmware`: build bundles and deltas locally, push them to the hub, assign them."""

# Typer commands take their options as parameters.

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cloud.cli.common import (
    FriendlyGroup,
    HubUrl,
    Output,
    OutputOpt,
    Token,
    console,
    err_console,
    example,
    usage_error,
)
from cloud.cli.common import fail as _fail
from cloud.client.hub import HubError, resolve_token
from cloud.client.signing import SigningClient
from cloud.validation import parse_label_selector
from firmware_images.build import build_bundle, build_delta, load_bundle
from firmware_images.format import BundleError

firmware_app = typer.Typer(
    cls=FriendlyGroup,
    help="Firmware images: signed bundles, deltas, A/B installs.",
    no_args_is_help=True,
    epilog=example("fleet firmware ls", "fleet firmware push fw-1.2.0.efw"),
)


@firmware_app.command(
    "build",
    epilog=example(
        "fleet firmware build image.bin --name edgefleet-fw --version 1.2.0 --hardware sim-board --out fw.efw"
    ),
)
def build(
    payload: Annotated[
        Path, typer.Argument(metavar="FILE", help="The firmware image.", exists=True, dir_okay=False)
    ],
    name: Annotated[str, typer.Option(metavar="NAME", help="Image name.")],
    version: Annotated[str, typer.Option(metavar="VERSION", help="Image version, e.g. 1.2.0.")],
    hardware: Annotated[str, typer.Option(metavar="ID", help="The hardware id the image runs on.")],
    out: Annotated[Path, typer.Option(metavar="FILE", help="Where to write the .efw bundle.")],
    min_agent_version: Annotated[
        str, typer.Option(metavar="VERSION", help="Oldest agent that may install it.")
    ] = "0.1.0",
) -> None:
    """Wrap an image and its manifest into a bundle (signed when the hub lists it as a target)."""
    try:
        bundle = build_bundle(
            payload.read_bytes(),
            name=name,
            version=version,
            hardware_id=hardware,
            min_agent_version=min_agent_version,
        )
    except (OSError, BundleError) as e:
        raise _fail(str(e)) from e
    bundle.write(out)
    err_console.print(f"wrote {out} ({bundle.length} bytes, sha256 {bundle.sha256})")


@firmware_app.command(
    "delta", epilog=example("fleet firmware delta fw-1.0.0.efw fw-1.1.0.efw --out delta.efw")
)
def delta(
    base: Annotated[
        Path, typer.Argument(metavar="BASE", help="The bundle devices run now.", exists=True, dir_okay=False)
    ],
    new: Annotated[
        Path, typer.Argument(metavar="NEW", help="The bundle to ship.", exists=True, dir_okay=False)
    ],
    out: Annotated[Path, typer.Option(metavar="FILE", help="Where to write the delta bundle.")],
    algorithm: Annotated[str, typer.Option(metavar="ALGORITHM", help="auto, bsdiff4 or zstd-dict.")] = "auto",
) -> None:
    """Make a delta bundle (the hub makes one itself on push; this is for inspection)."""
    try:
        made = build_delta(load_bundle(base), load_bundle(new), algorithm=algorithm, max_ratio=1.0)
    except (OSError, BundleError) as e:
        raise _fail(str(e)) from e
    if made is None:
        raise _fail("the delta is larger than the new image")
    made.write(out)
    full = load_bundle(new).length
    err_console.print(
        f"wrote {out}: {made.length} bytes ({made.length / full:.1%} of the full bundle), "
        f"{made.manifest.algorithm}"
    )


@firmware_app.command("push", epilog=example("fleet firmware push fw-1.2.0.efw"))
def push(
    bundle: Annotated[
        Path, typer.Argument(metavar="FILE", help="A .efw bundle.", exists=True, dir_okay=False)
    ],
    hub_url: HubUrl = "http://127.0.0.1:8080",
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Register a bundle with the hub (which signs it and makes a delta from the previous image)."""
    try:
        with SigningClient(hub_url, resolve_token(token)) as client:
            result = client.push_firmware(bundle)
    except HubError as e:
        raise _fail(e) from e
    if output is Output.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    for row in result["data"]:
        what = f"delta from {row['base_version']}" if row["kind"] == "delta" else "full image"
        console.print(
            f"registered {row['name']} {row['version']} for {row['hardware_id']}: "
            f"{what}, {row['length']} bytes"
        )


@firmware_app.command(
    "ls", epilog=example("fleet firmware ls", "fleet firmware ls --name edgefleet-fw -o json")
)
def ls(
    name: Annotated[str | None, typer.Option(metavar="NAME", help="Only images of this name.")] = None,
    hub_url: HubUrl = "http://127.0.0.1:8080",
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List registered firmware images and deltas."""
    try:
        with SigningClient(hub_url, resolve_token(token)) as client:
            rows = client.list_firmware(name)
    except HubError as e:
        raise _fail(e) from e
    if output is Output.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("name", "hardware", "version", "kind", "bytes", "target")
    for r in rows:
        kind = f"delta from {r['base_version']} ({r['algorithm']})" if r["kind"] == "delta" else "full"
        table.add_row(r["name"], r["hardware_id"], r["version"], kind, str(r["length"]), r["target_path"])
    console.print(table)


@firmware_app.command(
    "assign",
    epilog=example(
        "fleet firmware assign --name edgefleet-fw --version 1.2.0 --device cam-01",
        "fleet firmware assign --name edgefleet-fw --version 1.2.0 --label site=lab",
    ),
)
def assign(
    name: Annotated[str, typer.Option(metavar="NAME", help="Image name.")],
    version: Annotated[str, typer.Option(metavar="VERSION", help="Image version.")],
    device: Annotated[
        list[str] | None, typer.Option("--device", metavar="ID", help="A device id (repeatable).")
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", metavar="KEY=VALUE", help="A label selector, e.g. site=lab.")
    ] = None,
    hardware: Annotated[
        str | None, typer.Option(metavar="ID", help="The hardware id, when the version exists for several.")
    ] = None,
    hub_url: HubUrl = "http://127.0.0.1:8080",
    token: Token = None,
) -> None:
    """Make an image the desired firmware of devices (signed by the director, installed A/B)."""
    if not device and label is None:
        raise usage_error("give --device ID (repeatable) or --label KEY=VALUE")
    if device and label is not None:
        raise usage_error("--device and --label are exclusive: give one of them")
    try:
        selector = parse_label_selector(label) if label is not None else None
    except ValueError as e:
        raise usage_error(f"--label: {e}") from e
    try:
        with SigningClient(hub_url, resolve_token(token)) as client:
            result = client.assign_firmware(
                name=name, version=version, hardware_id=hardware, devices=device or None, selector=selector
            )
    except HubError as e:
        raise _fail(e) from e
    console.print(f"assigned {name} {version} to {result['count']} device(s)")
