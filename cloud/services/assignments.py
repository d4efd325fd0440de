"""Assignments: decide what a device should run and publish it as its desired state.

The database is written first and the broker second. A publish that fails leaves the
stored state to be republished on the next (re)connect; the reverse order could
hand a device a state the hub then forgets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sqlmodel import Session, col, select

from cloud.clock import Clock, to_ms, utcnow
from cloud.errors import DeliveryError, InvalidInputError, NotFoundError, PublishError, UnknownDevicesError
from cloud.models import DesiredState, Device, ModelVersion
from cloud.services.devices import labels_match
from cloud.services.publisher import DesiredPublisher
from cloud.services.registry import get_model
from edgefleet_proto.topics import TopicError, validate_id
from edgefleet_proto.v1 import common_pb2, desired_pb2

log = logging.getLogger(__name__)


def build_desired(
    row: DesiredState, model: ModelVersion, *, fleet: str, artifact_endpoint: str
) -> desired_pb2.DesiredState:
    """The wire form of a stored desired state."""
    return desired_pb2.DesiredState(
        device_id=row.device_id,
        fleet=fleet,
        generation=row.generation,
        issued_at_ms=to_ms(row.issued_at),
        model=common_pb2.ModelRef(
            name=model.name,
            version=model.version,
            format=model.format,
            sha256=model.sha256,
            length=model.length,
        ),
        artifact_endpoint=artifact_endpoint,
    )


def _targets(
    session: Session,
    fleet: str,
    device_ids: Sequence[str] | None,
    selector: Mapping[str, str] | None,
) -> list[Device]:
    if (device_ids is None) == (selector is None):
        raise InvalidInputError("expected exactly one of device_ids or selector")
    if device_ids is not None:
        wanted = sorted(set(device_ids))
        if not wanted:
            raise InvalidInputError("expected at least one device id, got none")
        for device_id in wanted:
            try:
                validate_id("device", device_id)
            except TopicError as e:
                raise InvalidInputError(str(e)) from e
        found = session.exec(
            select(Device)
            .where(col(Device.id).in_(wanted), Device.fleet == fleet)
            .order_by(col(Device.id))
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()
        missing = set(wanted) - {d.id for d in found}
        if missing:
            raise UnknownDevicesError(sorted(missing))
        return list(found)
    assert selector is not None
    if not selector:
        raise InvalidInputError("expected a selector with at least one label, got an empty one")
    everyone = session.exec(select(Device).where(Device.fleet == fleet).order_by(col(Device.id))).all()
    matched_ids = [d.id for d in everyone if labels_match(d.labels, selector)]
    matched = list(
        session.exec(
            select(Device)
            .where(col(Device.id).in_(matched_ids))
            .order_by(col(Device.id))
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()
    )
    if not matched:
        shown = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        raise NotFoundError(f"no device in fleet {fleet!r} has labels {shown}")
    return matched


def assign(
    session: Session,
    publisher: DesiredPublisher,
    model_name: str,
    version: str,
    *,
    device_ids: Sequence[str] | None = None,
    selector: Mapping[str, str] | None = None,
    fleet: str,
    artifact_endpoint: str,
    clock: Clock = utcnow,
) -> list[DesiredState]:
    """Make ``model_name`` ``version`` the desired model of the chosen devices, and publish it.

    Raises DeliveryError (after committing) when the broker does not take some of them.
    """
    model = get_model(session, model_name, version)
    devices = _targets(session, fleet, device_ids, selector)
    now = clock()
    rows: list[DesiredState] = []
    for device in devices:
        # The device rows are locked (PostgreSQL; SQLite serialises writers), so concurrent
        # assignments never hand out one generation twice, even for a first assignment.
        row = session.get(DesiredState, device.id)
        # Never below what the device already applied: a hub whose database was rebuilt
        # must still issue generations the device sees as new.
        generation = max(row.generation if row else 0, device.applied_generation) + 1
        if row is None:
            row = DesiredState(device_id=device.id, model_version_id=0, generation=0, issued_at=now)
        assert model.id is not None
        row.model_version_id = model.id
        row.generation = generation
        row.issued_at = now
        session.add(row)
        rows.append(row)
    session.commit()
    log.info("assigned %s %s to %d device(s)", model.name, model.version, len(rows))

    failed: list[str] = []
    reason = ""
    for row in rows:
        payload = build_desired(row, model, fleet=fleet, artifact_endpoint=artifact_endpoint)
        try:
            publisher.publish_desired(row.device_id, payload.SerializeToString(deterministic=True))
        except PublishError as e:
            failed.append(row.device_id)
            reason = str(e)
    if failed:
        raise DeliveryError(failed, reason)
    return rows


def desired_payloads(session: Session, *, fleet: str, artifact_endpoint: str) -> list[tuple[str, bytes]]:
    """Every stored desired state of a fleet, serialised: what a reconnecting hub republishes."""
    rows = session.exec(
        select(DesiredState, ModelVersion)
        .join(ModelVersion, col(DesiredState.model_version_id) == col(ModelVersion.id))
        .join(Device, col(DesiredState.device_id) == col(Device.id))
        .where(Device.fleet == fleet)
        .order_by(col(DesiredState.device_id))
    ).all()
    return [
        (
            d.device_id,
            build_desired(d, m, fleet=fleet, artifact_endpoint=artifact_endpoint).SerializeToString(
                deterministic=True
            ),
        )
        for d, m in rows
    ]
