"""`fleet keys`: the update repository's keys. `fleet firmware`: firmware bundles.

Root keys stay on the custodian's machine: ``init`` and ``rotate`` generate or read them
in ``--root-dir`` (encrypted with a passphrase), send the hub public keys and
signatures only, and the hub publishes the new root once both thresholds are met.
"""

# Typer commands take their options as parameters.

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

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
from cloud.tuf.errors import KeyCustodyError, RotationError
from cloud.tuf.keys import KeyDir
from cloud.tuf.offline import describe_root, generate_root_keys, key_to_dict, sign_root_json

keys_app = typer.Typer(
    cls=FriendlyGroup,
    help="The update repository's signing keys.",
    no_args_is_help=True,
    epilog=example("fleet keys status", "fleet keys init --root-dir /media/usb/root --keys 3 --threshold 2"),
)
RootDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--root-dir", metavar="DIR", help="A folder of root keys (repeat for several custodians' folders)."
    ),
]
# `keys init` creates keys in --root-dir; the folders of the root it replaces are named apart.
OldRootDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--old-root-dir",
        metavar="DIR",
        help="When root is already offline: a folder of the current root keys (repeatable).",
    ),
]
PassFile = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        metavar="FILE",
        help="File holding the root keys' passphrase (else EDGEFLEET_ROOT_PASSPHRASE, else a prompt).",
    ),
]


def _client(hub_url: str, token: str | None) -> SigningClient:
    return SigningClient(hub_url, resolve_token(token))


def _passphrase(path: Path | None, *, confirm: bool = False, what: str = "root keys") -> bytes:
    if path is not None:
        try:
            return path.read_bytes().strip()
        except OSError as e:
            raise usage_error(f"--passphrase-file: cannot read {path}: {e.strerror}") from e
    env = os.environ.get("EDGEFLEET_ROOT_PASSPHRASE")
    if env:
        return env.encode()
    return str(
        typer.prompt(f"Passphrase for the {what}", hide_input=True, confirmation_prompt=confirm)
    ).encode()


def _sign_and_send(client: SigningClient, rotation: dict[str, Any], folders: list[KeyDir]) -> dict[str, Any]:
    if rotation["state"] != "pending":
        return rotation
    for line in describe_root(rotation["root_json"]):
        err_console.print(line)
    wanted = set(rotation["old_keyids"]) | set(rotation["new_keyids"])
    signatures = sign_root_json(rotation["root_json"], folders, wanted)
    if not signatures:
        raise _fail(
            f"none of the root keys in {', '.join(str(f.path) for f in folders) or 'no folder'} may sign "
            f"root v{rotation['root_version']}: it needs {rotation['missing']}"
        )
    return client.sign_rotation(int(rotation["id"]), signatures)


def _report(rotation: dict[str, Any], as_json: bool) -> None:
    if as_json:
        shown = {k: v for k, v in rotation.items() if k != "root_json"}
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return
    if rotation["state"] == "published":
        console.print(f"published root v{rotation['root_version']} ({rotation['role']} keys rotated)")
    else:
        console.print(
            f"root v{rotation['root_version']} is pending (rotation {rotation['id']}); "
            f"still missing: {rotation['missing']}; other custodians run `fleet keys sign {rotation['id']}`"
        )


@keys_app.command("status", epilog=example("fleet keys status", "fleet keys status -o json"))
def status(
    hub_url: HubUrl = "http://127.0.0.1:8080", token: Token = None, output: OutputOpt = Output.table
) -> None:
    """Roles, key ids, thresholds, versions and expiry; pending rotations."""
    try:
        with _client(hub_url, token) as client:
            data = client.keys()
    except HubError as e:
        raise _fail(e) from e
    if output is Output.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    table = Table("role", "version", "expires", "threshold", "key ids")
    for role in data["roles"]:
        table.add_row(
            role["role"],
            str(role["version"]),
            str(role["expires"]),
            str(role["threshold"]),
            ", ".join(k[:12] for k in role["keyids"]),
        )
    console.print(table)
    if data["root_keys_on_hub"]:
        console.print(
            "[yellow]root is a development key kept on the hub: move it offline with "
            "`fleet keys init --root-dir DIR` (e.g. a USB disk; add --keys N --threshold N for several)[/]"
        )
    for r in data["pending"]:
        console.print(
            f"pending rotation {r['id']}: {r['role']} (root v{r['root_version']}), missing {r['missing']}"
        )


@keys_app.command(
    "init",
    epilog=example(
        "fleet keys init --root-dir /media/usb/root",
        "fleet keys init --root-dir /media/usb/root --keys 3 --threshold 2",
    ),
)
def init(
    root_dir: Annotated[
        Path,
        typer.Option(
            "--root-dir",
            metavar="DIR",
            file_okay=False,
            help="Where to create the root keys (e.g. a USB disk).",
        ),
    ],
    keys: Annotated[int, typer.Option("--keys", metavar="N", min=1, help="How many root keys to make.")] = 1,
    threshold: Annotated[
        int, typer.Option("--threshold", metavar="N", min=1, help="How many must sign a new root.")
    ] = 1,
    passphrase_file: PassFile = None,
    old_root_dir: OldRootDirs = None,
    hub_url: HubUrl = "http://127.0.0.1:8080",
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create offline root keys and make them the repository's root (replacing a development root).

    The hub signs with the development root key it holds; if root is already offline, the
    previous root keys' folders must be given with --old-root-dir.
    """
    if threshold > keys:
        raise usage_error(f"--threshold: expected at most --keys ({keys}); got {threshold}")
    if root_dir.exists() and any(root_dir.glob("*.pem")):
        raise usage_error(f"--root-dir: expected an empty or new folder; {root_dir} already holds keys")
    passphrase = _passphrase(passphrase_file, confirm=passphrase_file is None)
    try:
        public = generate_root_keys(root_dir, keys, passphrase)
        folders = [KeyDir(root_dir, passphrase)]
        for d in old_root_dir or []:
            folders.append(KeyDir(d, _passphrase(None, what=f"root keys in {d}")))
        with _client(hub_url, token) as client:
            rotation = client.propose_rotation(
                "root", root_keys=[key_to_dict(k) for k in public], threshold=threshold
            )
            rotation = _sign_and_send(client, rotation, folders)
    except HubError as e:
        raise _fail(e) from e
    except (KeyCustodyError, RotationError) as e:
        raise _fail(str(e)) from e
    err_console.print(f"created {keys} root key(s) in {root_dir}; keep them offline")
    _report(rotation, output is Output.json)


@keys_app.command(
    "rotate",
    epilog=example(
        "fleet keys rotate timestamp",
        "fleet keys rotate targets --root-dir /media/usb/root",
        "fleet keys rotate root --root-dir /media/usb/root --new-root-dir /media/usb2/root",
    ),
)
def rotate(
    role: Annotated[
        str, typer.Argument(metavar="ROLE", help="root, targets, snapshot, timestamp or director")
    ],
    root_dir: RootDirs = None,
    passphrase_file: PassFile = None,
    new_root_dir: Annotated[
        Path | None, typer.Option(metavar="DIR", help="For root: where to create the new root keys.")
    ] = None,
    keys: Annotated[
        int, typer.Option("--keys", metavar="N", min=1, help="For root: how many new root keys.")
    ] = 1,
    threshold: Annotated[
        int, typer.Option("--threshold", metavar="N", min=1, help="For root: the new threshold.")
    ] = 1,
    hub_url: HubUrl = "http://127.0.0.1:8080",
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Replace a role's keys: a new root version, signed with the root keys in --root-dir."""
    try:
        folders = [KeyDir(d, _passphrase(passphrase_file, what=f"root keys in {d}")) for d in root_dir or []]
        root_keys = None
        if role == "root":
            if new_root_dir is None:
                raise usage_error("rotating root needs --new-root-dir DIR for the new root keys")
            passphrase = _passphrase(None, confirm=True, what="new root keys")
            root_keys = [key_to_dict(k) for k in generate_root_keys(new_root_dir, keys, passphrase)]
            folders.append(KeyDir(new_root_dir, passphrase))
        with _client(hub_url, token) as client:
            rotation = client.propose_rotation(
                role, root_keys=root_keys, threshold=threshold if root_keys else None
            )
            if folders:
                rotation = _sign_and_send(client, rotation, folders)
    except HubError as e:
        raise _fail(e) from e
    except (KeyCustodyError, RotationError) as e:
        raise _fail(str(e)) from e
    _report(rotation, output is Output.json)


@keys_app.command("sign", epilog=example("fleet keys sign 4 --root-dir /media/usb/root"))
def sign(
    rotation_id: Annotated[int, typer.Argument(metavar="ROTATION", help="The pending rotation to sign.")],
    root_dir: RootDirs = None,
    passphrase_file: PassFile = None,
    hub_url: HubUrl = "http://127.0.0.1:8080",
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Add this custodian's root-key signatures to a pending rotation."""
    try:
        folders = [KeyDir(d, _passphrase(passphrase_file, what=f"root keys in {d}")) for d in root_dir or []]
        with _client(hub_url, token) as client:
            rotation = _sign_and_send(client, client.rotation(rotation_id), folders)
    except HubError as e:
        raise _fail(e) from e
    except (KeyCustodyError, RotationError) as e:
        raise _fail(str(e)) from e
    _report(rotation, output is Output.json)


@keys_app.command(
    "root", epilog=example("fleet keys root --out root.json", "fleet keys root --version 1 --out 1.root.json")
)
def root(
    out: Annotated[
        Path,
        typer.Option("--out", metavar="FILE", help="Where to write root.json (for provisioning devices)."),
    ],
    version: Annotated[
        int | None, typer.Option(metavar="N", help="A given root version (default: the newest).")
    ] = None,
    hub_url: HubUrl = "http://127.0.0.1:8080",
    token: Token = None,
) -> None:
    """Download the trusted root that devices are provisioned with."""
    try:
        with _client(hub_url, token) as client:
            data = client.root_metadata(version)
    except HubError as e:
        raise _fail(e) from e
    out.write_bytes(data)
    err_console.print(f"wrote {out} ({len(data)} bytes)")
