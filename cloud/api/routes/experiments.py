"""Experiments: training runs with their lineage, and the versions each produced."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import ContextDep, OperatorDep, SessionDep, ViewerDep
from cloud.api.schemas.fleet import (
    ExperimentCreate,
    ExperimentDetailPublic,
    ExperimentPublic,
    ExperimentsPublic,
)
from cloud.errors import InvalidInputError
from cloud.models import Experiment
from cloud.services import experiments, lookup

router = APIRouter(prefix="/experiments", tags=["experiments"])


@router.put(
    "/{run_id}",
    responses={409: {"description": "another record is stored under this run id"}},
)
def record_experiment(
    run_id: str, body: ExperimentCreate, session: SessionDep, ctx: ContextDep, _token: OperatorDep
) -> ExperimentPublic:
    """Record a training run (idempotent: the same record again changes nothing)."""
    if body.run_id != run_id:
        raise InvalidInputError(f"the body's run_id {body.run_id!r} differs from the path's {run_id!r}")
    row = experiments.record_experiment(session, body, clock=ctx.clock)
    return ExperimentPublic.model_validate(row)


@router.get("")
def list_experiments(
    session: SessionDep,
    _token: ViewerDep,
    name: Annotated[str | None, Query(description="only runs of this model")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="newest first, at most this many")] = 100,
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> ExperimentsPublic:
    """Training runs, newest first, a page at a time (follow ``next_cursor``)."""
    page = experiments.page_experiments(session, name=name, limit=limit, cursor=cursor)
    rows = [ExperimentPublic.model_validate(r) for r in page.items]
    return ExperimentsPublic(data=rows, count=len(rows), next_cursor=page.next_cursor)


@router.get("/{run_id}", responses={409: {"description": "the run id prefix is ambiguous"}})
def get_experiment(run_id: str, session: SessionDep, _token: ViewerDep) -> ExperimentDetailPublic:
    """One training run (its id in full or a unique prefix) and the model versions registered from it."""
    row = lookup.resolve(
        session,
        Experiment,
        Experiment.run_id,
        run_id,
        what="experiment",
        not_found=f"experiment {run_id} is not recorded",
    )
    return experiments.experiment_detail(session, row.run_id)
