"""Certificates the fleet CA issued: what the CRL is built from and what the gRPC service checks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from cloud.clock import utcnow
from cloud.models import UTCDateTime

__all__ = ["IssuedCert"]


class IssuedCert(SQLModel, table=True):
    """One certificate: a device's, the hub's own client certificate, or a server's."""

    __tablename__ = "issued_cert"
    __table_args__ = (Index("ix_issued_cert_subject", "fleet", "subject"),)

    # Serials are random 159-bit numbers (RFC 5280 allows 20 octets): stored as lower-case hex.
    serial: str = Field(primary_key=True, max_length=40)
    fleet: str = Field(max_length=128)
    # "device", "hub" or "server".
    kind: str = Field(max_length=16)
    # The certificate's common name: the device id for a device.
    subject: str = Field(max_length=64)
    issued_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    not_after: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
