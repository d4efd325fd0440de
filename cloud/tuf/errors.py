"""Errors of the update repository and its keys."""

from __future__ import annotations

from cloud.errors import ConflictError, HubError, InvalidInputError, NotFoundError

__all__ = [
    "KeyCustodyError",
    "NotInitializedError",
    "PassphraseError",
    "RepositoryStateError",
    "RotationError",
    "RotationNotFoundError",
    "SignatureThresholdError",
]


class NotInitializedError(HubError):
    """The repository has no root yet: run `fleet keys init` (or start the hub with auto-init)."""


class RepositoryStateError(ConflictError):
    """The request contradicts the repository's state (initialised twice, a stale proposal)."""


class KeyCustodyError(HubError):
    """A key file is missing, unreadable, or does not match the key the metadata names."""


class PassphraseError(KeyCustodyError, InvalidInputError):
    """A passphrase does not decrypt a key."""


class RotationError(InvalidInputError):
    """A key rotation asked for something the rules do not allow."""


class RotationNotFoundError(NotFoundError):
    """No pending rotation with that id."""


class SignatureThresholdError(InvalidInputError):
    """Signatures that do not verify, or fewer than a threshold."""
