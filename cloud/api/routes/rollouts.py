"""Staged rollouts: create one from a plan, list, show, steer (pause, resume, approve, abort, rollback).

Every change is made by ``cloud.rollouts.service`` and stored as a transition with the token's
name as its actor; the route then kicks the engine, so that what follows (offering the next
devices, giving devices their previous version back) starts at once, not at the next tick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request, status
from sqlmodel import Session

from cloud.api.deps import ContextDep, OperatorDep, SessionDep, ViewerDep
from cloud.api.schemas.rollouts import (
    GateResultPublic,
    RolloutAction,
    RolloutDetailPublic,
    RolloutPublic,
    RolloutsPublic,
    RolloutStagePublic,
    RolloutTransitionPublic,
)
from cloud.context import HubContext
from cloud.db import read_transaction
from cloud.errors import InvalidInputError, TooLargeError
from cloud.models import Rollout
from cloud.rollouts import service
from cloud.rollouts.machine import RolloutState
from cloud.rollouts.plan import RolloutPlan, parse_plan
from cloud.rollouts.view import StageView
from cloud.services.pagination import DEFAULT_LIMIT, MAX_LIMIT

__all__ = ["MAX_PLAN_BYTES", "detail", "router", "summary"]

router = APIRouter(prefix="/rollouts", tags=["rollouts"])

# A plan is a page of text; anything near this is not a plan.
MAX_PLAN_BYTES = 256 * 1024
# YAML is a superset of JSON, so one parser reads every one of these.
_PLAN_TYPES = frozenset(
    {"application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"}
)

RolloutIdPath = Annotated[str, Path(description="a rollout id, or a unique prefix of one")]


def _plan_body() -> dict[str, Any]:
    yaml_text = {"type": "string", "description": "the plan as YAML (or JSON) text"}
    return {
        "requestBody": {
            "required": True,
            "description": "A rollout plan: a JSON object, or YAML text with a YAML or text content type.",
            "content": {
                "application/json": {"schema": RolloutPlan.model_json_schema()},
                "application/yaml": {"schema": yaml_text},
                "text/plain": {"schema": yaml_text},
            },
        }
    }


async def _read_plan(request: Request) -> bytes:
    """The body, refused unless it is plan text of a sensible size."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype not in _PLAN_TYPES:
        raise InvalidInputError(
            f"expected a plan as {', '.join(sorted(_PLAN_TYPES))}; got content type {ctype or 'none'!r}"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_PLAN_BYTES:
            raise TooLargeError(MAX_PLAN_BYTES, len(body))
    return bytes(body)


def summary(row: Rollout) -> RolloutPublic:
    stages = list(row.plan.get("stages", []))
    current = stages[row.stage] if 0 <= row.stage < len(stages) else {}
    return RolloutPublic(
        id=row.id,
        fleet=row.fleet,
        name=row.name,
        target={"kind": row.target_kind, "name": row.target_name, "version": row.target_version},
        state=row.state,
        stage=row.stage,
        stage_name=str(current.get("name", "")),
        stages=len(stages),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        next_action_at=row.next_action_at,
        superseded_by=row.superseded_by,
    )


def _stage(stage: StageView) -> RolloutStagePublic:
    measured: dict[str, Any] = {}
    if stage.figures is not None:
        measured = {k: v for k, v in asdict(stage.figures).items() if k != "extra"} | dict(
            stage.figures.extra
        )
    verdict = stage.verdict
    return RolloutStagePublic(
        index=stage.index,
        name=stage.name,
        cohort=stage.cohort,
        percent=stage.percent,
        bake_s=stage.bake_s,
        approval=stage.approval,
        status=stage.status,
        devices=stage.devices,
        by_state=dict(stage.by_state),
        verdict=verdict.outcome if verdict is not None else None,
        verdict_detail=verdict.detail if verdict is not None else "",
        gates=[GateResultPublic(**asdict(r)) for r in verdict.results] if verdict is not None else [],
        figures=measured,
    )


def detail(session: Session, ctx: HubContext, row: Rollout) -> RolloutDetailPublic:
    """The full view of ``row``, as the service reads it now."""
    view = service.rollout_view(session, row, ctx.clock())
    return RolloutDetailPublic(
        **summary(row).model_dump(),
        plan=row.plan,
        stage_detail=[_stage(s) for s in view.stages],
        transitions=[
            RolloutTransitionPublic.model_validate(t, from_attributes=True) for t in view.transitions
        ],
        next_action=view.next_action,
        missing_cohorts=list(view.missing_cohorts),
    )


def committed_detail(ctx: HubContext, rollout_id: str) -> RolloutDetailPublic:
    """The view of a rollout whose change was just committed, read without the write lock.

    On SQLite a read in a writing session waits for the write lock like a write: with the engine and
    ingest busy, the answer to a create that had been stored came back 503, and a client that retried
    it got a 409 for its own rollout. The change is stored; its answer must not depend on that lock.
    """
    with read_transaction(ctx.read_sessions) as session:
        return detail(session, ctx, service.get_rollout(session, ctx.settings.fleet, rollout_id))


def _create(ctx: HubContext, body: bytes, actor: str, supersede: bool) -> RolloutDetailPublic:
    plan = parse_plan(body, source="request body")
    with ctx.sessions() as session:
        row = service.create_rollout(
            session, fleet=ctx.settings.fleet, plan=plan, actor=actor, supersede=supersede, clock=ctx.clock
        )
    ctx.kick_rollouts()
    return committed_detail(ctx, row.id)


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra=_plan_body())
async def create_rollout(
    request: Request,
    ctx: ContextDep,
    token: OperatorDep,
    supersede: Annotated[
        bool,
        Query(
            description="take over devices another active rollout of the same kind holds; it is superseded"
        ),
    ] = False,
) -> RolloutDetailPublic:
    """Start a rollout from a plan (JSON, or YAML text).

    The whole plan is checked before anything is stored: a plan with errors is refused with 422 and
    one sentence per problem (field path, what was expected, what came). A cohort, model or firmware
    the plan names must exist; a device already held by an active rollout of the same target kind is
    a 409 conflict that lists it, unless ``supersede=true``.
    """
    body = await _read_plan(request)
    return await anyio.to_thread.run_sync(_create, ctx, body, token.name, supersede)


@router.get("")
def list_rollouts(
    *,
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    state: Annotated[RolloutState | None, Query(description="only rollouts in this state")] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="newest first, at most this many")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> RolloutsPublic:
    """Rollouts of this fleet, newest first, one page at a time."""
    page = service.list_rollouts(session, ctx.settings.fleet, state=state, limit=limit, cursor=cursor)
    data = [summary(r) for r in page.items]
    return RolloutsPublic(data=data, count=len(data), next_cursor=page.next_cursor)


@router.get("/{rollout_id}")
def get_rollout(
    rollout_id: RolloutIdPath, ctx: ContextDep, session: SessionDep, _token: ViewerDep
) -> RolloutDetailPublic:
    """One rollout: its stages with devices per state, gate figures against thresholds, its transitions
    with actor, reason and figures, and what the engine does next and when."""
    row = service.get_rollout(session, ctx.settings.fleet, rollout_id)
    return detail(session, ctx, row)


_ACTIONS: dict[str, tuple[Callable[..., Rollout], str]] = {
    "pause": (service.pause, "Pause: stop offering devices and promoting; devices keep what they run."),
    "resume": (service.resume, "Resume a paused rollout from its current stage."),
    "approve": (service.approve, "Approve the promotion of a rollout waiting for approval."),
    "abort": (service.abort, "Abort: give every device the rollout offered its previous version back."),
    "rollback": (
        service.rollback,
        "Roll a paused or completed rollout back: every offered device is restored.",
    ),
}


def _action_route(action: str, act: Callable[..., Rollout], doc: str) -> None:
    def route(
        rollout_id: RolloutIdPath,
        ctx: ContextDep,
        session: SessionDep,
        token: OperatorDep,
        body: RolloutAction | None = None,
    ) -> RolloutDetailPublic:
        reason = body.reason if body is not None else ""
        row = act(session, ctx.settings.fleet, rollout_id, actor=token.name, reason=reason, clock=ctx.clock)
        ctx.kick_rollouts()
        return committed_detail(ctx, row.id)

    route.__name__ = f"{action}_rollout"
    route.__doc__ = doc + " An action the current state does not allow is a 409 that lists the allowed ones."
    router.post(f"/{{rollout_id}}/{action}", name=f"{action}_rollout")(route)


for _name, (_act, _doc) in _ACTIONS.items():
    _action_route(_name, _act, _doc)
