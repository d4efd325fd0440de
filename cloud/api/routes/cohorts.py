"""Cohorts: named sets of devices (a label selector, a list, or both); anyone may read, operators change."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlmodel import Session

from cloud.api.deps import ContextDep, OperatorDep, SessionDep, ViewerDep
from cloud.api.schemas.cohorts import (
    CohortCreate,
    CohortDetailPublic,
    CohortMembersPublic,
    CohortPublic,
    CohortsPublic,
)
from cloud.models import Cohort
from cloud.services import cohorts
from cloud.services.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/cohorts", tags=["cohorts"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")]
Cursor = Annotated[str | None, Query(description="the next_cursor of the previous page")]
# What `GET /cohorts/{name}` shows of its members: a glimpse; /members pages through all of them.
SHOWN_MEMBERS = 20


def _public(session: Session, row: Cohort) -> CohortPublic:
    return CohortPublic(
        name=row.name,
        fleet=row.fleet,
        selector=row.selector,
        devices=row.devices,
        description=row.description,
        created_at=row.created_at,
        member_count=cohorts.count_members(session, row.fleet, row),
    )


@router.get("")
def list_cohorts(
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> CohortsPublic:
    """The fleet's cohorts by name, each with how many devices it holds now."""
    page = cohorts.list_cohorts(session, ctx.settings.fleet, limit=limit, cursor=cursor)
    rows = [_public(session, c) for c in page.items]
    return CohortsPublic(data=rows, count=len(rows), next_cursor=page.next_cursor)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        404: {"description": "listed devices the fleet does not have"},
        409: {"description": "the fleet has a cohort of that name"},
        422: {"description": "a bad name or selector, or neither a selector nor devices"},
    },
)
def create_cohort(
    body: CohortCreate, ctx: ContextDep, session: SessionDep, _token: OperatorDep
) -> CohortPublic:
    row = cohorts.create_cohort(
        session,
        fleet=ctx.settings.fleet,
        name=body.name,
        selector=body.selector,
        devices=body.devices,
        description=body.description,
        clock=ctx.clock,
    )
    return _public(session, row)


@router.get("/{name}")
def get_cohort(
    name: str,
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    members: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="how many members to show")
    ] = SHOWN_MEMBERS,
) -> CohortDetailPublic:
    """The cohort's definition, its member count and its first members (evaluated now)."""
    row = cohorts.get_cohort(session, ctx.settings.fleet, name)
    page = cohorts.list_members(session, row.fleet, row, limit=members)
    shown = CohortMembersPublic(data=page.items, count=len(page.items), next_cursor=page.next_cursor)
    return CohortDetailPublic(**_public(session, row).model_dump(), members=shown)


@router.get("/{name}/members")
def cohort_members(
    name: str,
    ctx: ContextDep,
    session: SessionDep,
    _token: ViewerDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> CohortMembersPublic:
    """The ids of the devices in the cohort now, in order."""
    row = cohorts.get_cohort(session, ctx.settings.fleet, name)
    page = cohorts.list_members(session, row.fleet, row, limit=limit, cursor=cursor)
    return CohortMembersPublic(data=page.items, count=len(page.items), next_cursor=page.next_cursor)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "the cohort is in use (an active rollout stages over it)"}},
)
def delete_cohort(name: str, ctx: ContextDep, session: SessionDep, _token: OperatorDep) -> Response:
    cohorts.delete_cohort(session, ctx.settings.fleet, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
