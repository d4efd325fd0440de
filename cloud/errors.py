"""The hub's domain errors.

Every error says what was expected and what came. The HTTP layer maps each class to
a status code in one place (``cloud.api.errors``); nothing below the API knows HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence


class HubError(Exception):
    """Root of every error the hub raises on purpose."""


class InvalidInputError(HubError, ValueError):
    """A caller passed a value of the wrong shape (bad name, bad digest, bad selector)."""


class NotFoundError(HubError, LookupError):
    """A named resource does not exist."""


class ConflictError(HubError):
    """The request contradicts what is stored (a duplicate name and version)."""


class TooLargeError(HubError):
    """An upload or artifact is longer than the configured limit."""

    def __init__(self, limit: int, got: int | None = None) -> None:
        self.limit = limit
        self.got = got
        seen = f"got at least {got} bytes" if got is not None else "got more"
        super().__init__(f"artifact too large: expected at most {limit} bytes, {seen}")


class InvalidArtifactError(HubError):
    """The artifact's content is not what its format promises (corrupt, truncated, not ONNX)."""


class UnsupportedFormatError(InvalidArtifactError):
    """The artifact's declared format is one the hub cannot validate or serve."""


class UnknownDevicesError(NotFoundError):
    """An assignment names devices the hub has never heard from."""

    def __init__(self, device_ids: Sequence[str]) -> None:
        self.device_ids = sorted(device_ids)
        super().__init__(
            f"unknown devices: {', '.join(self.device_ids)}; expected ids of devices that have "
            "reported a status to this hub"
        )


class DeliveryError(HubError):
    """Desired states were stored but could not be handed to the broker.

    They are not lost: the MQTT transport republishes every stored desired state on
    each (re)connect, so a device receives its state once the broker is reachable again.
    """

    def __init__(self, failed: Sequence[str], reason: str) -> None:
        self.failed = list(failed)
        self.reason = reason
        super().__init__(
            f"stored desired state for {len(self.failed)} device(s) but could not publish it "
            f"({reason}); it will be republished when the hub reconnects to the broker"
        )


class AuthError(HubError):
    """A request carries no valid API token."""


class ForbiddenError(HubError):
    """A valid token whose role is too low for the request."""


class PublishError(HubError):
    """The broker did not accept a message (not connected, or no PUBACK in time)."""


class RateLimitedError(HubError):
    """A caller asked for more of something than its limit allows in a window."""

    def __init__(self, what: str, limit: int, window_s: int, retry_after_s: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self.retry_after_s = max(1, retry_after_s)
        super().__init__(
            f"too many {what}: expected at most {limit} per {window_s} s; try again in {self.retry_after_s} s"
        )
