"""Device credentials from the fleet CA (admin only): provision, sign a device's CSR, revoke.

``POST /devices/{id}/credentials`` makes the device's key on the hub and returns it once: simple to
deploy, but the key travelled. A device that can make its own key should use
``POST /devices/{id}/csr`` instead, so that the key never leaves it (docs/runbooks/certificates.md).
"""

from __future__ import annotations

from fastapi import APIRouter, status

from cloud.api.deps import AdminDep, ContextDep, SessionDep
from cloud.api.schemas.identity import CsrIn, DeviceCredentials, RevocationPublic
from cloud.context import HubContext
from cloud.errors import NotFoundError
from cloud.identity import service
from cloud.identity.service import DeviceBundle

router = APIRouter(prefix="/devices", tags=["device identity"])


def _root_json(ctx: HubContext) -> bytes | None:
    if ctx.signing is None:
        return None
    try:
        return ctx.signing.repo.root_bytes()
    except NotFoundError:
        return None  # no root yet (`fleet keys init`): the bundle says so with a null


def _public(bundle: DeviceBundle) -> DeviceCredentials:
    return DeviceCredentials(
        device_id=bundle.device_id,
        serial=bundle.serial,
        not_after=bundle.not_after,
        certificate_pem=bundle.cert_pem.decode("ascii"),
        private_key_pem=None if bundle.key_pem is None else bundle.key_pem.decode("ascii"),
        ca_certificate_pem=bundle.ca_pem.decode("ascii"),
        root_json=None if bundle.root_json is None else bundle.root_json.decode("utf-8"),
        agent_config_toml=bundle.agent_config,
    )


def _provision(ctx: HubContext, session: SessionDep, device_id: str, csr: bytes | None) -> DeviceCredentials:
    ca = service.open_ca(ctx.settings, clock=ctx.clock)
    bundle = service.provision_device(
        session,
        ca,
        ctx.settings,
        device_id,
        artifact_endpoint=ctx.artifact_endpoint,
        root_json=_root_json(ctx),
        csr_pem=csr,
        clock=ctx.clock,
    )
    return _public(bundle)


@router.post("/{device_id}/credentials", status_code=status.HTTP_201_CREATED)
def issue_credentials(
    device_id: str, ctx: ContextDep, session: SessionDep, _token: AdminDep
) -> DeviceCredentials:
    """Issue a client certificate and a new private key for a device, with the CA, root and agent config.

    The key is made on the hub and is in this answer only. Devices that can make their own key should
    send a CSR to ``/devices/{device_id}/csr`` instead. Earlier certificates of the device stay valid
    until revoked.
    """
    return _provision(ctx, session, device_id, None)


@router.post("/{device_id}/csr", status_code=status.HTTP_201_CREATED)
def sign_csr(
    device_id: str, body: CsrIn, ctx: ContextDep, session: SessionDep, _token: AdminDep
) -> DeviceCredentials:
    """Issue a client certificate for a key the device made (EC P-256); no private key is returned."""
    return _provision(ctx, session, device_id, body.csr_pem.encode("utf-8"))


@router.post("/{device_id}/credentials/revoke")
def revoke_credentials(
    device_id: str, ctx: ContextDep, session: SessionDep, _token: AdminDep
) -> RevocationPublic:
    """Revoke every certificate of the device and rewrite the CRL (the broker applies it on reload)."""
    ca = service.open_ca(ctx.settings, clock=ctx.clock)
    revoked = service.revoke_device(session, ca, ctx.settings, device_id, clock=ctx.clock)
    return RevocationPublic(device_id=device_id, revoked=revoked, crl_updated=True)
