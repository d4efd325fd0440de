"""Checking a signed desired state against the director keys the trusted root names. Pure.

The order of checks is the order of trust: size, envelope, signatures (a threshold of
distinct director keys over the exact payload bytes), then the content (this device,
this fleet, not expired, not older than the last accepted instruction). Nothing in the
payload is read before the signatures verify.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from edge_agent.trust.errors import (
    DesiredExpiredError,
    DesiredReplayError,
    DesiredSignatureError,
    DirectorRejectedError,
    UnsignedDesiredError,
    WrongDeviceError,
)
from edgefleet_proto.v1 import common_pb2, desired_pb2

if TYPE_CHECKING:
    # securesystemslib pulls in cryptography (several MiB resident): an agent imports it when it
    # first checks a signature (count_valid), not at start. See edge_agent.trust.lazy.
    from securesystemslib.signer import Key
    from tuf.api.metadata import Root

__all__ = [
    "DIRECTOR_FIELD",
    "DirectorKeys",
    "DirectorMark",
    "UnknownDirectorKeyError",
    "count_valid",
    "verify_signed_desired",
]

DIRECTOR_FIELD = "x-edgefleet-director"


class UnknownDirectorKeyError(DesiredSignatureError):
    """Signed only by keys this device's root does not name: refresh the root, then check again."""

    code = "unknown_director_key"


@dataclass(frozen=True, slots=True)
class DirectorKeys:
    """The director's keys and threshold, as a verified root names them."""

    keys: Mapping[str, Key]
    threshold: int
    root_version: int

    @classmethod
    def from_root(cls, root: Root) -> DirectorKeys:
        field = root.unrecognized_fields.get(DIRECTOR_FIELD)
        keyids: list[str] = []
        threshold = 1
        if isinstance(field, dict):
            raw_ids, raw_threshold = field.get("keyids"), field.get("threshold")
            if isinstance(raw_ids, list):
                keyids = [k for k in raw_ids if isinstance(k, str)]
            if isinstance(raw_threshold, int) and raw_threshold >= 1:
                threshold = raw_threshold
        keys = {k: root.keys[k] for k in keyids if k in root.keys}
        return cls(keys=keys, threshold=threshold, root_version=root.version)


@dataclass(frozen=True, slots=True)
class DirectorMark:
    """The last instruction accepted: its counter and the hash of its payload."""

    counter: int = 0
    payload_sha256: str = ""


def count_valid(
    payload: bytes, signatures: Iterable[common_pb2.Signature], keys: DirectorKeys
) -> tuple[int, list[str]]:
    """How many distinct director keys signed ``payload``, and the key ids the root does not name.

    Shared by every envelope the director signs (desired states, commands).
    """
    from securesystemslib.exceptions import UnverifiedSignatureError
    from securesystemslib.signer import Signature

    valid: set[str] = set()
    unknown: list[str] = []
    for sig in signatures:
        key = keys.keys.get(sig.keyid)
        if key is None:
            unknown.append(sig.keyid)
            continue
        try:
            key.verify_signature(Signature(sig.keyid, sig.sig.hex()), payload)
        except UnverifiedSignatureError:
            continue
        valid.add(sig.keyid)
    return len(valid), unknown


def verify_signed_desired(
    payload: bytes,
    keys: DirectorKeys,
    *,
    device_id: str,
    fleet: str,
    last: DirectorMark,
    now_ms: int,
    max_bytes: int,
) -> tuple[desired_pb2.DesiredState, DirectorMark]:
    """The verified desired state and the mark to persist; a :class:`DirectorRejectedError` otherwise."""
    if len(payload) > max_bytes:
        raise DirectorRejectedError(
            f"desired state is {len(payload)} bytes: this device takes at most {max_bytes}"
        )
    try:
        envelope = desired_pb2.SignedDesiredState.FromString(payload)
    except DecodeError as e:
        raise UnsignedDesiredError(
            f"desired state is not a signed envelope: expected a SignedDesiredState protobuf ({e})"
        ) from e
    if not envelope.signatures or not envelope.payload:
        raise UnsignedDesiredError(
            "desired state carries no director signature: unsigned instructions are refused"
        )
    valid, unknown = count_valid(envelope.payload, envelope.signatures, keys)
    if valid < keys.threshold:
        if unknown and len(unknown) == len(envelope.signatures):
            raise UnknownDirectorKeyError(
                f"desired state is signed by key(s) {', '.join(k[:16] for k in unknown)} that root "
                f"v{keys.root_version} does not name as director keys"
            )
        raise DesiredSignatureError(
            f"desired state has {valid} valid director signature(s): root v{keys.root_version} "
            f"requires {keys.threshold}"
        )
    try:
        desired = desired_pb2.DesiredState.FromString(envelope.payload)
    except DecodeError as e:  # signed garbage: a director bug, refused all the same
        raise DirectorRejectedError(f"signed payload is not a DesiredState protobuf ({e})") from e
    if desired.device_id != device_id or desired.fleet != fleet:
        raise WrongDeviceError(
            f"desired state is for device {desired.device_id!r} in fleet {desired.fleet!r}; "
            f"this is {device_id!r} in {fleet!r}"
        )
    if desired.expires_at_ms <= 0:
        raise DesiredExpiredError("desired state has no expiry: the director always sets one")
    if desired.expires_at_ms < now_ms:
        raise DesiredExpiredError(
            f"desired state expired at {desired.expires_at_ms} ms; now is {now_ms} ms "
            "(a stale or replayed copy)"
        )
    digest = hashlib.sha256(envelope.payload).hexdigest()
    if desired.counter == 0:
        raise DesiredReplayError("desired state has counter 0: the director counts from 1")
    if desired.counter < last.counter:
        raise DesiredReplayError(
            f"replayed desired state: counter {desired.counter} is below the last accepted {last.counter}"
        )
    if desired.counter == last.counter and digest != last.payload_sha256:
        raise DesiredReplayError(
            f"desired state reuses counter {desired.counter} with other content: expected a higher counter"
        )
    return desired, DirectorMark(desired.counter, digest)
