"""Whether a desired state is one this device acts on. Pure: no I/O, no clock.

The retained desired state arrives again on every reconnect; one whose
generation was already applied is a duplicate and ignored quietly. Anything
else that cannot be acted on is rejected with a reason naming what was expected
and what came, and the updater reports it as DESIRED_REJECTED.
"""

from __future__ import annotations

import enum

from google.protobuf.message import DecodeError

from edge_agent.errors import DesiredRejectedError, StoreError
from edge_agent.store import check_sha256
from edgefleet_proto.v1 import desired_pb2
from model_tools.trial_policy import TrialPolicy, TrialPolicyError

__all__ = ["Verdict", "check_desired", "decode_desired"]


class Verdict(enum.Enum):
    APPLY = "apply"
    # The generation was applied already: the retained copy came back after a reconnect.
    DUPLICATE = "duplicate"


def decode_desired(payload: bytes) -> desired_pb2.DesiredState:
    """Parse a desired-state payload; raise :class:`DesiredRejectedError` when it is not one."""
    try:
        return desired_pb2.DesiredState.FromString(payload)
    except DecodeError as e:
        raise DesiredRejectedError(
            f"malformed desired state: expected a DesiredState protobuf, got {len(payload)} bytes "
            f"that do not parse ({e})"
        ) from e


def check_desired(
    desired: desired_pb2.DesiredState,
    *,
    device_id: str,
    fleet: str,
    applied_generation: int,
    max_artifact_bytes: int,
    max_profile_bytes: int = 16 * 1024 * 1024,
) -> Verdict:
    """Say whether to apply ``desired``; raise :class:`DesiredRejectedError` saying why not."""
    if desired.device_id != device_id:
        raise DesiredRejectedError(
            f"desired state is for device {desired.device_id!r}; this device is {device_id!r}"
        )
    if desired.fleet != fleet:
        raise DesiredRejectedError(
            f"desired state is for fleet {desired.fleet!r}; this device is in {fleet!r}"
        )
    if desired.generation == 0:
        raise DesiredRejectedError("desired state has generation 0: expected 1 or more")
    if desired.generation < applied_generation:
        raise DesiredRejectedError(
            f"replayed desired state: generation {desired.generation} is older than the applied "
            f"generation {applied_generation}"
        )
    if desired.HasField("model"):
        model = desired.model
        try:
            check_sha256(model.sha256)
        except StoreError as e:
            raise DesiredRejectedError(f"desired model: {e}") from e
        if model.length == 0:
            raise DesiredRejectedError("desired model has length 0: expected the artifact's size in bytes")
        if model.length > max_artifact_bytes:
            raise DesiredRejectedError(
                f"desired model is {model.length} bytes; this device accepts at most {max_artifact_bytes}"
            )
        if not model.format:
            raise DesiredRejectedError("desired model has no format: expected one like 'onnx'")
        if model.HasField("profile") and model.profile.sha256:
            profile = model.profile
            try:
                check_sha256(profile.sha256)
            except StoreError as e:
                raise DesiredRejectedError(f"desired model's data profile: {e}") from e
            if not 0 < profile.length <= max_profile_bytes:
                raise DesiredRejectedError(
                    f"desired model's data profile is {profile.length} bytes; expected 1 to "
                    f"{max_profile_bytes}"
                )
    if desired.HasField("trial_policy"):
        try:
            TrialPolicy.from_proto(desired.trial_policy)
        except TrialPolicyError as e:
            raise DesiredRejectedError(f"desired state's {e}") from e
    if desired.generation == applied_generation:
        return Verdict.DUPLICATE
    return Verdict.APPLY
