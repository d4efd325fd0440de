"""Desired-state checks (pure): what is applied, what is a harmless duplicate, what is rejected and why."""

from __future__ import annotations

import pytest

from edge_agent.desired import Verdict, check_desired, decode_desired
from edge_agent.errors import DesiredRejectedError
from edgefleet_proto.v1 import common_pb2, desired_pb2
from tests.unit.agent.fakes import ref_for

MODEL = ref_for(b"model")


def desired(**overrides: object) -> desired_pb2.DesiredState:
    fields: dict[str, object] = {"device_id": "dev-1", "fleet": "f1", "generation": 5, "model": MODEL}
    fields.update(overrides)
    return desired_pb2.DesiredState(**fields)  # type: ignore[arg-type]


def check(d: desired_pb2.DesiredState, applied: int = 4) -> Verdict:
    return check_desired(
        d, device_id="dev-1", fleet="f1", applied_generation=applied, max_artifact_bytes=1000
    )


def test_a_newer_generation_for_this_device_is_applied() -> None:
    assert check(desired()) is Verdict.APPLY
    assert check(desired(model=None)) is Verdict.APPLY


def test_the_applied_generation_again_is_a_duplicate() -> None:
    assert check(desired(generation=4)) is Verdict.DUPLICATE


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"device_id": "dev-2"}, "desired state is for device 'dev-2'; this device is 'dev-1'"),
        ({"fleet": "f2"}, "desired state is for fleet 'f2'; this device is in 'f1'"),
        ({"generation": 3}, "replayed desired state: generation 3 is older than the applied generation 4"),
        ({"generation": 0}, "generation 0: expected 1 or more"),
        (
            {"model": common_pb2.ModelRef(sha256="AB" * 32, length=1, format="onnx")},
            "expected 64 lowercase hex digits",
        ),
        ({"model": common_pb2.ModelRef(sha256="ab" * 32, length=0, format="onnx")}, "has length 0"),
        ({"model": ref_for(b"x" * 1001)}, "desired model is 1001 bytes; this device accepts at most 1000"),
        ({"model": ref_for(b"x", fmt="")}, "has no format"),
    ],
)
def test_inapplicable_desired_states_are_rejected_with_a_reason(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(DesiredRejectedError) as info:
        check(desired(**overrides))
    assert message in str(info.value)


def test_bytes_that_are_not_a_desired_state_are_rejected() -> None:
    with pytest.raises(
        DesiredRejectedError, match="malformed desired state: expected a DesiredState protobuf"
    ):
        decode_desired(b"\xff\xff\xff\xff")


def test_a_valid_payload_decodes() -> None:
    assert decode_desired(desired().SerializeToString()) == desired()
