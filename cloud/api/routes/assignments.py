"""Assignments: which model version a set of devices should run."""

from __future__ import annotations

from fastapi import APIRouter

from cloud.api.deps import ContextDep, OperatorDep, SessionDep
from cloud.api.schemas.fleet import AssignedDevice, AssignmentCreate, AssignmentsPublic, SkippedDevice
from cloud.errors import InvalidInputError
from cloud.services import assignments
from cloud.services.rollbacks import RefusedDevice
from model_tools.trial_policy import TrialPolicyError, parse_trial_policy

router = APIRouter(prefix="/assignments", tags=["assignments"])


@router.post(
    "",
    responses={
        404: {"description": "unknown model version, unknown devices, or no device matches the selector"},
        503: {"description": "stored, but the broker did not take it; it is republished on reconnect"},
    },
)
def create_assignment(
    body: AssignmentCreate, ctx: ContextDep, session: SessionDep, _token: OperatorDep
) -> AssignmentsPublic:
    """Publish a new desired state (generation + 1) to each chosen device.

    Devices that rolled this version back are never offered it again: naming one is a 409;
    one chosen by labels is left out and listed under ``skipped``.
    """
    skipped: list[RefusedDevice] = []
    try:
        policy = parse_trial_policy(body.trial_policy) if body.trial_policy is not None else None
    except TrialPolicyError as e:
        raise InvalidInputError(str(e)) from e
    rows = assignments.assign(
        session,
        ctx.publisher,
        body.model,
        body.version,
        device_ids=body.devices,
        selector=body.selector,
        fleet=ctx.settings.fleet,
        artifact_endpoint=ctx.artifact_endpoint,
        clock=ctx.clock,
        signing=ctx.signing,
        skipped=skipped,
        trial_policy=policy,
    )
    assigned = [AssignedDevice(device_id=r.device_id, generation=r.generation) for r in rows]
    left_out = [SkippedDevice(device_id=s.device_id, reason=s.reason) for s in skipped]
    return AssignmentsPublic(assigned=assigned, count=len(assigned), skipped=left_out)
