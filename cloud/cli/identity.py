"""Device identity on the command line.

`fleet devices provision|revoke` go through the hub's API (admin token): the CA key stays on the hub.
`fleet identity ca|hub-cert|server-cert|crl` run on the hub's machine, with its data folder
(EDGEFLEET_DATA_DIR), for what the hub and the broker themselves need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cloud.cli.common import (
    FriendlyGroup,
    HubUrl,
    Output,
    OutputOpt,
    Token,
    console,
    example,
    fail,
    json_out,
    usage_error,
)
from cloud.client.hub import DEFAULT_HUB_URL, HubError, resolve_token
from cloud.client.identity import IdentityClient

__all__ = ["identity_app", "register"]

identity_app = typer.Typer(
    cls=FriendlyGroup,
    help="The fleet CA on the hub's machine: its certificate, the hub's and servers' certificates, the CRL.",
    no_args_is_help=True,
    epilog=example(
        "fleet identity ca --out /etc/mosquitto/certs",
        "fleet identity server-cert broker.example.net 10.0.0.5 --out /etc/mosquitto/certs",
        "fleet identity hub-cert --out /etc/edgefleet/hub",
        "fleet identity crl",
    ),
)

OutDir = Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder to write the files to.")]
Force = Annotated[bool, typer.Option("--force", help="Replace files already in the folder.")]


def _write(folder: Path, name: str, data: bytes | str, *, secret: bool = False, force: bool) -> Path:
    from model_tools.atomic import atomic_write

    path = folder / name
    if path.exists() and not force:
        raise usage_error(f"{path} exists; expected a new folder, or --force to replace it")
    atomic_write(path, data, mode=0o600 if secret else 0o644)
    return path


# --- through the API --------------------------------------------------------------------------


def provision(
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device id (its certificate's CN).")],
    out: OutDir,
    csr: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="A PEM CSR for a key the device made itself (no key is written)."),
    ] = None,
    force: Force = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Issue what one device needs: client certificate and key, CA, TUF root and an agent config."""
    from cloud.identity.service import CA_NAME, CERT_NAME, CONFIG_NAME, KEY_NAME, ROOT_NAME

    # Checked before the hub issues anything: a refusal afterwards would leave a certificate nobody holds.
    taken = [out / n for n in (CERT_NAME, KEY_NAME, CA_NAME, ROOT_NAME, CONFIG_NAME) if (out / n).exists()]
    if taken and not force:
        raise usage_error(f"{taken[0]} exists; expected a new folder, or --force to replace it")
    csr_pem = None
    if csr is not None:
        try:
            csr_pem = csr.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise usage_error(f"cannot read the CSR {csr}: {e}") from e
    try:
        with IdentityClient(hub_url, resolve_token(token)) as c:
            bundle = c.issue_credentials(device_id) if csr_pem is None else c.sign_csr(device_id, csr_pem)
    except HubError as e:
        raise fail(e) from e
    # Existing files were checked before the request (--force replaces them).
    written = [_write(out, CERT_NAME, bundle["certificate_pem"], force=True)]
    if bundle.get("private_key_pem"):
        written.append(_write(out, KEY_NAME, bundle["private_key_pem"], secret=True, force=True))
    written.append(_write(out, CA_NAME, bundle["ca_certificate_pem"], force=True))
    if bundle.get("root_json"):
        written.append(_write(out, ROOT_NAME, bundle["root_json"], force=True))
    written.append(_write(out, CONFIG_NAME, bundle["agent_config_toml"], force=True))
    summary = {
        "device_id": bundle["device_id"],
        "serial": bundle["serial"],
        "not_after": bundle["not_after"],
        "files": [str(p) for p in written],
    }
    if json_out(output, summary):
        return
    console.print(
        f"issued certificate {bundle['serial']} to {bundle['device_id']} until {bundle['not_after']}"
    )
    for p in written:
        console.print(f"  {p}")
    if not bundle.get("root_json"):
        console.print("[yellow]the hub has no TUF root yet (`fleet keys init`): add root.json before use[/]")


def revoke(
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device whose certificates to revoke.")],
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Revoke every certificate of a device; then reload the broker (SIGHUP) so that it reads the CRL."""
    try:
        with IdentityClient(hub_url, resolve_token(token)) as c:
            result = c.revoke_credentials(device_id)
    except HubError as e:
        raise fail(e) from e
    if json_out(output, result):
        return
    serials = ", ".join(result["revoked"]) or "none (already revoked)"
    console.print(f"revoked {device_id}: {serials}")
    console.print("reload the broker so that it reads the new CRL: systemctl reload mosquitto")


def register(devices_app: typer.Typer) -> None:
    """Add `provision` and `revoke` to `fleet devices`."""
    devices_app.command(
        "provision",
        epilog=example("fleet devices provision cam-01 --out ./cam-01"),
    )(provision)
    devices_app.command("revoke", epilog=example("fleet devices revoke cam-01"))(revoke)


# --- on the hub's machine ---------------------------------------------------------------------


def _local() -> tuple[Any, Any, Any]:
    """Settings, the CA and a session factory of the hub whose data folder is EDGEFLEET_DATA_DIR."""
    from cloud.db import session_factory
    from cloud.errors import HubError as HubSideError
    from cloud.identity import service
    from cloud.settings import Settings
    from cloud.startup import open_database

    try:
        settings = Settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        ca = service.open_ca(settings)
        sessions = session_factory(open_database(settings.resolved_database_url()))
    except (ValueError, OSError, HubSideError) as e:
        raise fail(str(e)) from e
    return settings, ca, sessions


@identity_app.command("ca", epilog=example("fleet identity ca --out /etc/mosquitto/certs"))
def ca_cmd(
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Copy ca.crt here.")] = None,
) -> None:
    """Create the fleet CA if there is none, and show (or copy) its certificate."""
    settings, ca, _sessions = _local()
    path = settings.resolved_identity_dir() / "ca.crt"
    if out is not None:
        path = _write(out, "ca.crt", ca.cert_pem, force=True)
    console.print(
        f"fleet CA {ca.certificate.subject.rfc4514_string()}, valid until "
        f"{ca.certificate.not_valid_after_utc:%Y-%m-%d}: {path}"
    )


def _issue_local(kind: str, issued: Any, out: Path, name: str, force: bool) -> None:
    from cloud.clock import utcnow
    from cloud.identity import service

    settings, ca, sessions = _local()
    with sessions() as session:
        service.record(session, settings.fleet, kind, issued, clock=utcnow)
        session.commit()
    cert = _write(out, f"{name}.crt", issued.cert_pem, force=force)
    key = _write(out, f"{name}.key", issued.key_pem, secret=True, force=force)
    _write(out, "ca.crt", ca.cert_pem, force=True)
    console.print(
        f"issued {kind} certificate {issued.serial_hex} until {issued.not_after:%Y-%m-%d}: {cert}, {key}"
    )


@identity_app.command("hub-cert", epilog=example("fleet identity hub-cert --out /etc/edgefleet/hub"))
def hub_cert(out: OutDir, force: Force = False) -> None:
    """The hub's own client certificate (CN edgefleet-hub): EDGEFLEET_MQTT_TLS_CERT and _KEY."""
    _settings, ca, _sessions = _local()
    _issue_local("hub", ca.issue_hub_client(), out, "hub", force)


@identity_app.command(
    "server-cert",
    epilog=example("fleet identity server-cert broker.example.net 10.0.0.5 --out /etc/mosquitto/certs"),
)
def server_cert(
    names: Annotated[
        list[str], typer.Argument(metavar="NAME...", help="DNS names and IP addresses it serves.")
    ],
    out: OutDir,
    force: Force = False,
) -> None:
    """A server certificate (the broker's, or the gRPC service's) for the names devices connect to."""
    _settings, ca, _sessions = _local()
    try:
        issued = ca.issue_server(names)
    except ValueError as e:
        raise usage_error(str(e)) from e
    _issue_local("server", issued, out, "server", force)


@identity_app.command("crl", epilog=example("fleet identity crl"))
def crl_cmd(output: OutputOpt = Output.table) -> None:
    """Rewrite the CRL (EDGEFLEET_CRL_FILE) now, e.g. before it expires; then reload the broker."""
    from cloud.identity import service

    settings, ca, sessions = _local()
    with sessions() as session:
        path = service.write_crl(session, ca, settings)
    if json_out(output, {"crl_file": str(path)}):
        return
    console.print(
        f"wrote {path} (valid {settings.crl_days} days); reload the broker: systemctl reload mosquitto"
    )
