"""Settings of the update repository, read from ``EDGEFLEET_TUF_*`` environment variables.

Kept apart from the hub's ``Settings`` so that the signing policy is read in one place.
Expiry per role follows the TUF guidance: the more a role's key is exposed, the sooner
its metadata expires, so that a stolen online key buys little time.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Duration", "TufSettings", "parse_seconds"]


def parse_seconds(value: object) -> object:
    """Plain seconds (``20``, ``"20"``, ``"2.5"``) as a timedelta; anything else is left to pydantic,
    which reads ISO 8601 durations (``P1D``, ``PT20S``) and ``[D days,] HH:MM:SS``.

    Environment variables arrive as text, and pydantic reads the text ``"20"`` as no duration at
    all: the documented "seconds" form needs this step.
    """
    if isinstance(value, bool):
        return value  # refused by pydantic: True is not a duration
    seconds: float
    if isinstance(value, int | float):
        seconds = value
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            return value
    else:
        return value
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError) as e:  # inf, nan, or past timedelta's range (~2.7 million years)
        raise ValueError(f"expected a duration in seconds, got {value!r} ({e})") from e


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"expected a positive duration, got {value.total_seconds():g} s")
    return value


# Seconds (a number) or an ISO 8601 duration; always positive.
Duration = Annotated[timedelta, BeforeValidator(parse_seconds), AfterValidator(_positive)]


class TufSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_TUF_", extra="ignore")

    # Where the online keys (and a development root key) live; default {data_dir}/keys.
    keys_dir: Path | None = None
    root_expiry: Duration = timedelta(days=365)
    targets_expiry: Duration = timedelta(days=30)
    snapshot_expiry: Duration = timedelta(days=7)
    timestamp_expiry: Duration = timedelta(days=1)
    # A signed desired state is void after this long; the hub re-signs it before then.
    director_expiry: Duration = timedelta(days=7)
    # Re-sign a role once less than this share of its validity is left.
    resign_fraction: float = Field(default=0.5, gt=0, lt=1)
    # How often the scheduler looks for metadata to re-sign.
    resign_check_interval_s: float = Field(default=300.0, gt=0)
    # Protects the online keys at rest. Unset: the hub generates one into {keys_dir}/online.passphrase
    # (mode 0600); production passes it from a secret manager so the data folder alone unlocks nothing.
    online_passphrase: SecretStr | None = None
    # On a first start without a repository, create one with a development root key kept on the hub.
    # `fleet keys init` replaces it with offline root keys; set false to refuse to start without one.
    auto_init: bool = True

    def resolved_keys_dir(self, data_dir: Path) -> Path:
        return self.keys_dir if self.keys_dir is not None else data_dir / "keys"

    def check_interval_s(self) -> float:
        """How often to look for metadata to re-sign: the setting, but never so rarely that a role
        with a short expiry (``EDGEFLEET_TUF_TIMESTAMP_EXPIRY=20``) expires between two looks. Each
        role is looked at least twice within the share of its validity left for re-signing."""
        shortest = min(
            [self.expiry(role).total_seconds() for role in ("root", "targets", "snapshot", "timestamp")]
            + [self.director_expiry.total_seconds()]
        )
        return max(0.5, min(self.resign_check_interval_s, shortest * self.resign_fraction / 2))

    def expiry(self, role: str) -> timedelta:
        return {
            "root": self.root_expiry,
            "targets": self.targets_expiry,
            "snapshot": self.snapshot_expiry,
            "timestamp": self.timestamp_expiry,
        }[role]
