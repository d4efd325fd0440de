"""Request and response shapes of the signed-update API: keys, rotations, firmware."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud.api.schemas.base import RequestBody


class RoleKeysPublic(BaseModel):
    role: str
    version: int = Field(description="metadata version (root's version for root and director)")
    expires: datetime
    keyids: list[str]
    threshold: int


class RotationPublic(BaseModel):
    id: int
    role: str
    root_version: int
    state: str = Field(description="pending, published or superseded")
    root_json: str = Field(description="the new root metadata (JSON); root keys sign its 'signed' part")
    signatures: dict[str, str] = Field(description="key id -> signature (hex) collected so far")
    missing: dict[str, int] = Field(description="signatures still needed by the previous and the new root")
    old_keyids: list[str]
    new_keyids: list[str]


class KeysPublic(BaseModel):
    roles: list[RoleKeysPublic]
    pending: list[RotationPublic]
    root_keys_on_hub: bool = Field(description="true while a development root key lives on the hub")


class RotationCreate(RequestBody):
    role: str = Field(description="root, targets, snapshot, timestamp or director")
    root_keys: list[dict[str, Any]] | None = Field(
        default=None,
        description="for root: the new root keys' public halves (securesystemslib key dicts with keyid)",
    )
    threshold: int | None = Field(default=None, ge=1, description="for root: how many root keys must sign")


class SignaturesIn(RequestBody):
    signatures: dict[str, str] = Field(
        description="key id -> signature (hex) over the new root's signed part"
    )


class FirmwarePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    hardware_id: str
    version: str
    kind: str
    base_version: str
    min_agent_version: str
    algorithm: str
    target_path: str
    sha256: str
    length: int
    payload_length: int
    created_at: datetime


class FirmwareListPublic(BaseModel):
    data: list[FirmwarePublic]
    count: int
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last page"
    )


class FirmwareAssignmentCreate(RequestBody):
    name: str
    version: str
    hardware_id: str | None = None
    devices: list[str] | None = None
    selector: dict[str, str] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.devices is None) == (self.selector is None):
            raise ValueError("expected exactly one of devices or selector")
        return self


class FirmwareAssignmentPublic(BaseModel):
    devices: list[str]
    count: int
