"""Device rollbacks: what devices rolled back on their own, and the versions the hub no longer offers them.

A device that fails a trial gate (or crash-loops during a trial) rolls back at once,
reports ROLLED_BACK with the reason and the measured figures, and refuses that version
from then on. Ingest records each such event here (once per event number); assignments
ask :func:`exclude_refused` before they hand a version out, so the hub never offers a
device a version it rolled back. A fallback at start (a damaged artifact) is recorded
too but refuses nothing: the version was not judged bad.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from cloud.clock import from_ms
from cloud.errors import ConflictError
from cloud.models import Device, DeviceRollback, ModelVersion
from cloud.services.pagination import Page, keyset_page
from cloud.sql_lists import in_list
from edgefleet_proto.v1 import event_pb2

__all__ = [
    "RefusedDevice",
    "exclude_refused",
    "list_rollbacks",
    "page_rollbacks",
    "refusals",
    "row_from_event",
]

log = logging.getLogger(__name__)

_MAX_INT64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class RefusedDevice:
    """A device left out of an assignment, and why."""

    device_id: str
    reason: str


def row_from_event(device_id: str, event: event_pb2.Event, now: datetime) -> dict[str, Any]:
    """The ``device_rollback`` row for a ROLLED_BACK event (ingest inserts it with the event)."""
    details = dict(event.details)
    return {
        "device_id": device_id,
        "seq": min(event.seq, _MAX_INT64),
        "ts": from_ms(event.ts_ms),
        "model_name": event.model.name[:64],
        "model_version": event.model.version[:64],
        "model_sha256": event.model.sha256[:64],
        "variant": event.model.variant[:32],
        "generation": min(event.generation, _MAX_INT64),
        "gate": details.get("gate", "")[:32],
        "reason": event.reason,
        "details": details,
        "refused": details.get("refused") == "true",
        "received_at": now,
    }


def refusals(
    session: Session, model_name: str, version: str, device_ids: Sequence[str]
) -> dict[str, DeviceRollback]:
    """The latest refusing rollback of ``model_name`` ``version`` per device, for these devices."""
    if not device_ids:
        return {}
    rows = session.exec(
        select(DeviceRollback)
        .where(
            in_list(DeviceRollback.device_id, device_ids),
            DeviceRollback.model_name == model_name,
            DeviceRollback.model_version == version,
            col(DeviceRollback.refused).is_(True),
        )
        .order_by(col(DeviceRollback.seq))
    ).all()
    return {row.device_id: row for row in rows}


def exclude_refused(
    session: Session,
    model: ModelVersion,
    devices: Sequence[Device],
    *,
    named: bool,
    skipped: list[RefusedDevice] | None = None,
) -> list[Device]:
    """``devices`` without those that rolled ``model`` back; raise ConflictError when none remain.

    ``named``: the caller listed the devices by id. Naming a device that refuses the version is
    an error (the caller asked for something the device will not do); devices chosen by labels
    that refuse it are left out and listed in ``skipped``.
    """
    refused = refusals(session, model.name, model.version, [d.id for d in devices])
    if not refused:
        return list(devices)
    why = {
        device_id: (
            f"{device_id} rolled back {model.name}:{model.version} at {row.ts.isoformat()} "
            f"(generation {row.generation}): {row.reason}"
        )
        for device_id, row in refused.items()
    }
    if named:
        raise ConflictError(
            f"the hub does not offer {model.name}:{model.version} again to devices that rolled it back: "
            + "; ".join(why[d] for d in sorted(why))
        )
    kept = [d for d in devices if d.id not in refused]
    for device_id in sorted(why):
        log.warning("assignment skips %s", why[device_id])
        if skipped is not None:
            skipped.append(RefusedDevice(device_id, why[device_id]))
    if not kept:
        raise ConflictError(
            f"every device chosen rolled back {model.name}:{model.version}; "
            "the hub does not offer it to them again"
        )
    return kept


def _rollbacks_query(
    fleet: str, device_id: str | None, model_name: str | None, version: str | None
) -> SelectOfScalar[DeviceRollback]:
    query = (
        select(DeviceRollback)
        .join(Device, col(DeviceRollback.device_id) == col(Device.id))
        .where(Device.fleet == fleet)
    )
    if device_id is not None:
        query = query.where(DeviceRollback.device_id == device_id)
    if model_name is not None:
        query = query.where(DeviceRollback.model_name == model_name)
    if version is not None:
        query = query.where(DeviceRollback.model_version == version)
    return query


def list_rollbacks(
    session: Session,
    *,
    fleet: str,
    device_id: str | None = None,
    model_name: str | None = None,
    version: str | None = None,
    limit: int = 100,
) -> list[DeviceRollback]:
    """Rollbacks in ``fleet``, newest first."""
    return page_rollbacks(
        session, fleet=fleet, device_id=device_id, model_name=model_name, version=version, limit=limit
    ).items


def page_rollbacks(
    session: Session,
    *,
    fleet: str,
    device_id: str | None = None,
    model_name: str | None = None,
    version: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[DeviceRollback]:
    """A page of the rollbacks in ``fleet``, newest first; ``next_cursor`` continues with older ones."""
    return keyset_page(
        session,
        _rollbacks_query(fleet, device_id, model_name, version),
        [DeviceRollback.ts, DeviceRollback.id],
        listing="rollbacks",
        key_of=lambda r: (r.ts, r.id or 0),
        limit=limit,
        cursor=cursor,
        descending=True,
    )
