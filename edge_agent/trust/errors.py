"""Why the signed-update channel refused something.

Every class carries a short ``code`` that goes into the event's details (``check``), so
the hub can count refusals by kind; the message says what was expected and what came.
Errors from python-tuf are wrapped here (``raise ... from e``) so the agent reports one
family whatever library sits below.
"""

from __future__ import annotations

from edge_agent.errors import AgentError, DesiredRejectedError, DownloadError, VerifyError

__all__ = [
    "CommandExpiredError",
    "CommandRejectedError",
    "CommandReplayError",
    "CommandSignatureError",
    "CommandWrongDeviceError",
    "DesiredExpiredError",
    "DesiredReplayError",
    "DesiredSignatureError",
    "DirectorRejectedError",
    "HostileTargetError",
    "IncompatibleFirmwareError",
    "MalformedCommandError",
    "MetadataDownloadError",
    "MetadataError",
    "MetadataExpiredError",
    "MetadataRollbackError",
    "MetadataSignatureError",
    "MetadataTooLargeError",
    "NotProvisionedError",
    "RepositoryMismatchError",
    "TrustError",
    "TrustStateError",
    "UnsignedCommandError",
    "UnsignedDesiredError",
    "WrongDeviceError",
]


class TrustError(AgentError):
    """Root of everything the signed-update channel refuses."""

    code = "trust"


class NotProvisionedError(TrustError):
    """No trusted root is installed: the device cannot verify anything."""

    code = "not_provisioned"


class TrustStateError(TrustError):
    """The trust state file cannot be read or written."""

    code = "trust_state"


# -- repository metadata (TUF) -------------------------------------------------------------------


class MetadataError(TrustError, VerifyError):
    """Repository metadata did not verify."""

    code = "metadata"


class MetadataExpiredError(MetadataError):
    """A role's metadata is past its expiry: a freeze, or a hub that stopped re-signing."""

    code = "metadata_expired"


class MetadataRollbackError(MetadataError):
    """A role's version went backwards, or a root version was skipped."""

    code = "metadata_rollback"


class MetadataSignatureError(MetadataError):
    """Metadata lacks a threshold of valid signatures from the keys its delegator names."""

    code = "metadata_signature"


class MetadataDownloadError(TrustError, DownloadError):
    """Metadata could not be fetched (transport); retried like any download."""

    code = "metadata_download"


class MetadataTooLargeError(MetadataDownloadError):
    """More bytes than the size cap or the signed length allows (endless data)."""

    code = "metadata_too_large"


# -- the director's signed desired state -------------------------------------------------------


class DirectorRejectedError(TrustError, DesiredRejectedError):
    """A desired state that the director did not sign for this device, now."""

    code = "director"


class UnsignedDesiredError(DirectorRejectedError):
    code = "unsigned"


class DesiredSignatureError(DirectorRejectedError):
    code = "bad_signature"


class DesiredReplayError(DirectorRejectedError):
    code = "replayed"


class DesiredExpiredError(DirectorRejectedError):
    code = "expired"


class WrongDeviceError(DirectorRejectedError):
    code = "other_device"


# -- the director's signed commands ------------------------------------------------------------
# The codes match the desired state's, so the hub counts refusals of both channels alike.


class CommandRejectedError(TrustError):
    """A command that the director did not sign for this device, now, and for the first time."""

    code = "command"


class UnsignedCommandError(CommandRejectedError):
    code = "unsigned"


class MalformedCommandError(CommandRejectedError):
    """Too large, or not a protobuf of the expected kind."""

    code = "malformed"


class CommandSignatureError(CommandRejectedError):
    code = "bad_signature"


class CommandReplayError(CommandRejectedError):
    code = "replayed"


class CommandExpiredError(CommandRejectedError):
    code = "expired"


class CommandWrongDeviceError(CommandRejectedError):
    code = "other_device"


# -- targets ---------------------------------------------------------------------------------------


class RepositoryMismatchError(TrustError, VerifyError):
    """The director names a target the repository does not list, or lists with other bytes."""

    code = "repository_mismatch"


class HostileTargetError(TrustError, VerifyError):
    """A target path that could be read as something else (traversal, control or non-ASCII characters)."""

    code = "hostile_target"


class IncompatibleFirmwareError(TrustError):
    """Firmware for other hardware, or for a newer agent than this one."""

    code = "incompatible_firmware"
