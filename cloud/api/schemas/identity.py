"""Device credentials: what `fleet devices provision` receives, and what a revocation reports."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from cloud.api.schemas.base import RequestBody


class DeviceCredentials(BaseModel):
    """Everything one device needs to join the fleet over TLS. The private key is in this answer only."""

    device_id: str
    serial: str = Field(description="The certificate's serial number, hex")
    not_after: datetime
    certificate_pem: str = Field(description="The device's client certificate (CN = device id)")
    private_key_pem: str | None = Field(
        description="Generated on the hub and returned once, never stored; null when the device sent a CSR"
    )
    ca_certificate_pem: str = Field(description="The fleet CA: the broker's and gRPC service's issuer")
    root_json: str | None = Field(description="The fleet's trusted TUF root; null before `fleet keys init`")
    agent_config_toml: str = Field(description="An agent config naming the files above, TLS on")


class CsrIn(RequestBody):
    """A PEM certificate signing request for an EC P-256 key the device made; its subject is ignored."""

    csr_pem: str = Field(min_length=1, max_length=16_384)


class RevocationPublic(BaseModel):
    device_id: str
    revoked: list[str] = Field(
        description="Serials revoked by this request (already revoked ones not listed)"
    )
    crl_updated: bool = Field(
        description="The CRL file was rewritten: reload the broker (SIGHUP) to apply it"
    )
