"""Continuous training: list and show runs, start one by hand, approve or reject a challenger; upload
labelled samples for retraining.

Every change is made by ``cloud.training.continuous`` and stored as a transition with the token's
name as its actor. Approving creates the challenger's rollout, so the route kicks the rollout
engine, as the rollouts routes do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request, Response, status

from cloud.api.deps import ContextDep, OperatorDep, SessionDep, ViewerDep
from cloud.api.schemas.training import (
    LabelledDatasetPublic,
    LabelledDatasetsPublic,
    TrainingRunAction,
    TrainingRunApprove,
    TrainingRunCreate,
    TrainingRunDetailPublic,
    TrainingRunPublic,
    TrainingRunsPublic,
    TrainingRunTransitionPublic,
)
from cloud.api.upload import receive_upload
from cloud.errors import InvalidInputError
from cloud.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from cloud.training.continuous import datasets, policy, service
from cloud.training.continuous.machine import RunEvent, RunState, allowed_events
from cloud.training.continuous.tables import LabelledDataset, TrainingRun
from cloud.validation import MODEL_NAME_PATTERN, check_model_name

__all__ = ["detail", "router", "summary"]

router = APIRouter(tags=["training"])

RunIdPath = Annotated[str, Path(description="a training run id, or a unique prefix of one")]
_OPERATOR_ACTIONS = (RunEvent.APPROVE, RunEvent.REJECT)
_UPLOAD_FIELDS = ("model",)
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "an .npz (numpy.savez) with x: float (N, 64) in [0, 1] and "
                            "y: integer (N,) labels in [0, 9]",
                        },
                        "model": {
                            "type": "string",
                            "pattern": MODEL_NAME_PATTERN,
                            "description": "the model the samples are for; omitted: every model of the fleet",
                        },
                    },
                }
            }
        },
    }
}


def summary(row: TrainingRun) -> TrainingRunPublic:
    return TrainingRunPublic(
        id=row.id,
        fleet=row.fleet,
        model=row.model_name,
        trigger=row.trigger,
        summary=str(row.trigger_detail.get("summary", "")),
        state=row.state,
        step=row.step,
        champion_version=row.champion_version,
        challenger_version=row.challenger_version,
        decision=row.decision,
        error=row.error,
        created_by=row.created_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def detail(row: TrainingRun) -> TrainingRunDetailPublic:
    return TrainingRunDetailPublic(
        **summary(row).model_dump(),
        trigger_detail=row.trigger_detail,
        datasets=row.datasets,
        dataset_hash=row.dataset_hash,
        champion_metrics=row.champion_metrics,
        challenger_metrics=row.challenger_metrics,
        decision_reason=row.decision_reason,
        rollout_id=row.rollout_id,
        owner=row.owner,
        lease_until=row.lease_until,
        allowed_actions=[e.value for e in allowed_events(row.state) if e in _OPERATOR_ACTIONS],
        transitions=[
            TrainingRunTransitionPublic(
                seq=t["seq"],
                at=t["at"],
                from_state=t["from"],
                to_state=t["to"],
                event=t["event"],
                actor=t["actor"],
                reason=t["reason"],
            )
            for t in row.transitions
        ],
    )


@router.get("/training/runs")
def list_runs(
    *,
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    state: Annotated[RunState | None, Query(description="only runs in this state")] = None,
    model: Annotated[str | None, Query(description="only runs of this model")] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="newest first, at most this many")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> TrainingRunsPublic:
    """Training runs of this fleet, newest first, one page at a time."""
    page = service.list_runs(
        session, ctx.settings.fleet, state=state, model_name=model, limit=limit, cursor=cursor
    )
    data = [summary(r) for r in page.items]
    return TrainingRunsPublic(data=data, count=len(data), next_cursor=page.next_cursor)


@router.post("/training/runs", status_code=status.HTTP_201_CREATED)
def start_run(
    body: TrainingRunCreate, ctx: ContextDep, session: SessionDep, token: OperatorDep
) -> TrainingRunDetailPublic:
    """Queue a run of a model by hand; the hub's worker starts it at its next observe cycle.

    A model that has a run queued or running already is a 409 conflict naming that run.
    """
    row = service.start_manual(
        session, ctx.settings.fleet, body.model, actor=token.name, reason=body.reason, clock=ctx.clock
    )
    return detail(row)


@router.get("/training/runs/{run_id}")
def get_run(
    run_id: RunIdPath, ctx: ContextDep, session: SessionDep, _token: ViewerDep
) -> TrainingRunDetailPublic:
    """One run: its trigger with the figures that fired it, the data sets by hash, champion and challenger
    figures, the decision and its reason, why it failed, and every transition."""
    return detail(service.get_run(session, ctx.settings.fleet, run_id))


@router.post("/training/runs/{run_id}/approve")
def approve_run(
    run_id: RunIdPath,
    ctx: ContextDep,
    session: SessionDep,
    token: OperatorDep,
    body: TrainingRunApprove | None = None,
) -> TrainingRunDetailPublic:
    """Approve a challenger awaiting approval: its canary rollout is created and the run is rolled_out.

    A run in another state is a 409 that lists what it allows; a rollout the engine refuses (devices
    held by an active rollout, without ``supersede``) is a 409 too, and the run still awaits approval.
    """
    action = body or TrainingRunApprove()
    row = policy.approve(
        session,
        ctx.settings.fleet,
        run_id,
        actor=token.name,
        reason=action.reason,
        supersede=action.supersede,
        clock=ctx.clock,
    )
    ctx.kick_rollouts()
    return detail(row)


@router.post("/training/runs/{run_id}/reject")
def reject_run(
    run_id: RunIdPath,
    ctx: ContextDep,
    session: SessionDep,
    token: OperatorDep,
    body: TrainingRunAction | None = None,
) -> TrainingRunDetailPublic:
    """Reject a challenger awaiting approval (it stays registered; nothing rolls out), or cancel a queued
    run."""
    reason = body.reason if body is not None else ""
    row = service.reject(
        session, ctx.settings.fleet, run_id, actor=token.name, reason=reason, clock=ctx.clock
    )
    return detail(row)


# --- labelled data ---------------------------------------------------------------------------------


def _check_fields(fields: Mapping[str, str]) -> None:
    unknown = sorted(set(fields) - set(_UPLOAD_FIELDS))
    if unknown:
        raise InvalidInputError(
            f"unexpected form fields {unknown}: expected {list(_UPLOAD_FIELDS)} and 'file'"
        )
    if fields.get("model"):
        check_model_name(fields["model"])


def _public(row: LabelledDataset) -> LabelledDatasetPublic:
    return LabelledDatasetPublic.model_validate(row)


@router.post(
    "/datasets/labelled",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"description": "the same file was uploaded before: nothing new is recorded"},
        400: {"description": "the file is not an .npz of valid x and y: the reason says what was expected"},
        404: {"description": "the model named is not registered"},
        413: {"description": "the file is larger than the hub takes"},
    },
)
async def upload_labelled(
    request: Request, response: Response, ctx: ContextDep, token: OperatorDep
) -> LabelledDatasetPublic:
    """Upload labelled samples (an .npz with ``x`` and ``y``) that continuous training learns from.

    The file is checked (arrays, shapes, dtypes, finite values, value and label ranges, size) and
    stored by its sha256 under the hub's data folder; the hash is what a run's lineage names. New
    samples count towards the labelled-samples trigger.
    """
    store = datasets.labelled_store(ctx.settings)
    upload = await receive_upload(
        request,
        store,
        max_file_bytes=min(ctx.settings.max_upload_bytes, datasets.MAX_LABELLED_BYTES),
        on_file_start=_check_fields,
    )
    try:
        # Fields sent after the file are checked only now; the file is not kept for a refused form.
        _check_fields(upload.fields)
    except InvalidInputError:
        with ctx.sessions() as session:
            datasets.discard_unreferenced(session, store, upload.artifact.sha256)
        raise

    def record() -> tuple[LabelledDatasetPublic, bool]:
        with ctx.sessions() as session:
            row, created = datasets.add_labelled(
                session,
                store,
                upload.artifact,
                fleet=ctx.settings.fleet,
                model_name=upload.fields.get("model", ""),
                filename=upload.filename,
                uploaded_by=token.name,
                clock=ctx.clock,
            )
            return _public(row), created

    public, created = await anyio.to_thread.run_sync(record)
    if not created:
        response.status_code = status.HTTP_200_OK
    return public


@router.get("/datasets/labelled")
def list_labelled(
    *,
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="newest first, at most this many")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> LabelledDatasetsPublic:
    """Labelled uploads of this fleet, newest first, one page at a time."""
    page = datasets.list_labelled(session, ctx.settings.fleet, limit=limit, cursor=cursor)
    data = [_public(r) for r in page.items]
    return LabelledDatasetsPublic(data=data, count=len(data), next_cursor=page.next_cursor)
