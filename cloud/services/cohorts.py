"""Cohorts: named sets of a fleet's devices, by label selector, by explicit list, or both (the union).

Membership is never stored: it is evaluated in SQL at each query (``member_ids_query``), so a
device that joins the fleet later, or whose labels change, is a member at the next query.

A cohort that something else depends on (an active rollout stages over it) must not be deleted
under it. The modules that know of such uses register a check with ``register_cohort_in_use``;
``delete_cohort`` asks each one and refuses with the first reason given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from sqlalchemy import ColumnElement, false, func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from cloud.clock import Clock, utcnow
from cloud.errors import ConflictError, InvalidInputError, NotFoundError, UnknownDevicesError
from cloud.models import Cohort, Device
from cloud.services.labels import parse_selector, selector_clause
from cloud.services.pagination import DEFAULT_LIMIT, Page, keyset_page
from cloud.sql_lists import in_list
from edgefleet_proto.topics import TopicError, validate_id

__all__ = [
    "COHORT_NAME_PATTERN",
    "CohortInUse",
    "cohort_clause",
    "count_members",
    "create_cohort",
    "delete_cohort",
    "get_cohort",
    "list_cohorts",
    "list_members",
    "member_ids_query",
    "register_cohort_in_use",
    "unregister_cohort_in_use",
]

log = logging.getLogger(__name__)

COHORT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_NAME_RE = re.compile(COHORT_NAME_PATTERN)
MAX_LISTED_DEVICES = 10_000

# (session, fleet, cohort name) -> why the cohort cannot be deleted now, or None when it can.
CohortInUse = Callable[[Session, str, str], str | None]
_in_use_checks: list[CohortInUse] = []


def register_cohort_in_use(check: CohortInUse) -> None:
    """Have ``delete_cohort`` ask ``check`` first (e.g. the rollouts: "used by active rollout r1")."""
    if check not in _in_use_checks:
        _in_use_checks.append(check)


def unregister_cohort_in_use(check: CohortInUse) -> None:
    if check in _in_use_checks:
        _in_use_checks.remove(check)


def _check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise InvalidInputError(
            f"invalid cohort name {name!r}: expected 1-64 characters of lowercase letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return name


def _check_devices(session: Session, fleet: str, devices: Sequence[str]) -> list[str]:
    wanted = sorted(set(devices))
    if len(wanted) > MAX_LISTED_DEVICES:
        raise InvalidInputError(
            f"a cohort lists at most {MAX_LISTED_DEVICES} devices, got {len(wanted)}: use a label selector"
        )
    for device_id in wanted:
        try:
            validate_id("device", device_id)
        except TopicError as e:
            raise InvalidInputError(str(e)) from e
    query = select(Device.id).where(in_list(Device.id, wanted), Device.fleet == fleet)
    known = set(session.exec(query).all())
    missing = set(wanted) - known
    if missing:
        raise UnknownDevicesError(sorted(missing))
    return wanted


def create_cohort(
    session: Session,
    *,
    fleet: str,
    name: str,
    selector: str | None = None,
    devices: Sequence[str] | None = None,
    description: str = "",
    clock: Clock = utcnow,
) -> Cohort:
    """A new cohort; commits. The selector is stored in its canonical spelling.

    InvalidInputError for a bad name or selector, or neither a selector nor devices;
    UnknownDevicesError (not found) for listed devices the fleet does not have;
    ConflictError when the fleet has a cohort of that name.
    """
    _check_name(name)
    parsed = parse_selector(selector) if selector is not None else None
    if not parsed and not devices:
        raise InvalidInputError(
            f"cohort {name!r} needs a label selector with at least one requirement, devices, or both; "
            "got neither"
        )
    listed = _check_devices(session, fleet, devices) if devices else []
    row = Cohort(
        fleet=fleet,
        name=name,
        selector=str(parsed) if parsed else "",
        devices=listed,
        description=description,
        created_at=clock(),
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError as e:
        session.rollback()
        raise ConflictError(
            f"fleet {fleet!r} already has a cohort named {name!r}; expected a new name"
        ) from e
    session.refresh(row)
    log.info("created cohort %r in fleet %r", name, fleet)
    return row


def get_cohort(session: Session, fleet: str, name: str) -> Cohort:
    row = session.exec(select(Cohort).where(Cohort.fleet == fleet, Cohort.name == name)).first()
    if row is None:
        raise NotFoundError(f"cohort {name!r} is not known in fleet {fleet!r}")
    return row


def list_cohorts(
    session: Session, fleet: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[Cohort]:
    """A page of the fleet's cohorts by name."""
    query = select(Cohort).where(Cohort.fleet == fleet)
    return keyset_page(
        session,
        query,
        [Cohort.name],
        listing="cohorts",
        key_of=lambda c: (c.name,),
        limit=limit,
        cursor=cursor,
    )


def delete_cohort(session: Session, fleet: str, name: str) -> None:
    """Delete a cohort; ConflictError, deleting nothing, when a registered check says it is in use."""
    row = get_cohort(session, fleet, name)
    for check in list(_in_use_checks):
        reason = check(session, fleet, name)
        if reason:
            raise ConflictError(f"cohort {name!r} is in use: {reason}; expected a cohort nothing uses")
    session.delete(row)
    session.commit()
    log.info("deleted cohort %r in fleet %r", name, fleet)


def cohort_clause(cohort: Cohort) -> ColumnElement[bool]:
    """A WHERE clause over ``Device`` for this cohort's members (the fleet is the caller's to add)."""
    terms: list[ColumnElement[bool]] = []
    if cohort.selector:
        terms.append(selector_clause(parse_selector(cohort.selector)))
    if cohort.devices:
        terms.append(col(Device.id).in_(cohort.devices))
    return or_(*terms) if terms else false()


def member_ids_query(fleet: str, cohort: Cohort | None) -> SelectOfScalar[str]:
    """The ids of the fleet's devices in ``cohort`` (None: every device of the fleet), unordered."""
    query = select(Device.id).where(Device.fleet == fleet)
    return query if cohort is None else query.where(cohort_clause(cohort))


def count_members(session: Session, fleet: str, cohort: Cohort | None) -> int:
    subquery = member_ids_query(fleet, cohort).subquery()
    return int(session.exec(select(func.count()).select_from(subquery)).one())


def list_members(
    session: Session,
    fleet: str,
    cohort: Cohort | None,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[str]:
    """A page of the member ids, by id."""
    return keyset_page(
        session,
        member_ids_query(fleet, cohort),
        [Device.id],
        listing="cohort members",
        key_of=lambda device_id: (device_id,),
        limit=limit,
        cursor=cursor,
    )
