"""The ``[trust]`` and ``[firmware]`` tables of the agent config.

[trust]
require_signed = true          # refuse any desired state the director did not sign (default)
root_file = "/etc/edgefleet/root.json"   # installed into {state_dir}/trust at first start
http_url = "http://hub:8080/tuf"         # TUF over HTTP when the gRPC service is unreachable
metadata_timeout_s = 30
refresh_interval_s = 3600      # check the repository this often even without updates (0: off)
max_root_bytes = 65536         # size caps: no metadata file is read past these
max_timestamp_bytes = 16384
max_snapshot_bytes = 262144
max_targets_bytes = 4194304
max_desired_bytes = 16384

[firmware]
hardware_id = "sim-board"      # empty: this device takes no firmware
bootlimit = 3                  # failed trial boots before the old slot runs again
factory_bundle = "/usr/share/edgefleet/factory.efw"   # written to slot a at first start
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from edge_agent.trust.repository import TrustLimits

__all__ = ["FirmwareConfig", "TrustConfig"]


@dataclass(frozen=True, slots=True)
class TrustConfig:
    require_signed: bool = True
    root_file: Path | None = None
    http_url: str = ""
    metadata_timeout_s: float = 30.0
    # The same caps as TrustLimits' defaults.
    max_root_bytes: int = 64 * 1024
    max_timestamp_bytes: int = 16 * 1024
    max_snapshot_bytes: int = 256 * 1024
    max_targets_bytes: int = 4 * 1024 * 1024
    max_desired_bytes: int = 16 * 1024
    # How often the repository metadata is checked when no update is due (0: only with updates), so
    # that a freeze (metadata no longer re-signed, or withheld) is reported within a timestamp's life.
    refresh_interval_s: float = 3600.0

    def __post_init__(self) -> None:
        for key in (
            "max_root_bytes",
            "max_timestamp_bytes",
            "max_snapshot_bytes",
            "max_targets_bytes",
            "max_desired_bytes",
        ):
            if getattr(self, key) < 1024:
                raise ConfigError(f"trust.{key}: expected at least 1024 bytes, got {getattr(self, key)}")
        if self.refresh_interval_s < 0:
            raise ConfigError(
                f"trust.refresh_interval_s: expected >= 0 seconds, got {self.refresh_interval_s}"
            )
        if self.metadata_timeout_s <= 0:
            raise ConfigError(
                f"trust.metadata_timeout_s: expected > 0 seconds, got {self.metadata_timeout_s}"
            )
        if self.http_url and not self.http_url.startswith(("http://", "https://")):
            raise ConfigError(f"trust.http_url: expected an http:// or https:// URL, got {self.http_url!r}")

    def limits(self) -> TrustLimits:
        from edge_agent.trust.repository import TrustLimits

        return TrustLimits(
            root_max_bytes=self.max_root_bytes,
            timestamp_max_bytes=self.max_timestamp_bytes,
            snapshot_max_bytes=self.max_snapshot_bytes,
            targets_max_bytes=self.max_targets_bytes,
        )


@dataclass(frozen=True, slots=True)
class FirmwareConfig:
    hardware_id: str = ""
    bootlimit: int = 3
    factory_bundle: Path | None = None

    def __post_init__(self) -> None:
        if self.bootlimit < 1:
            raise ConfigError(f"firmware.bootlimit: expected >= 1, got {self.bootlimit}")

    @property
    def enabled(self) -> bool:
        return bool(self.hardware_id)
