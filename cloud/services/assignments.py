"""Assignments: decide which model version (and variant) a device should run, and publish it.

The database is written first and the broker second. A publish that fails leaves the
stored state to be republished on the next (re)connect; the reverse order could
hand a device a state the hub then forgets. The desired state itself, model and firmware
parts together, is composed by ``cloud.services.desired``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sqlmodel import Session, col, select

from cloud.clock import Clock, utcnow
from cloud.errors import InvalidInputError, NotFoundError, UnknownDevicesError
from cloud.models import DesiredState, Device, ModelVariant
from cloud.services import desired
from cloud.services.labels import Selector, as_selector, effective_labels, selector_clause
from cloud.services.publisher import DesiredPublisher
from cloud.services.registry import get_model
from cloud.services.rollbacks import RefusedDevice, exclude_refused
from cloud.services.signing import Signing
from cloud.services.variants import VariantOption, choose_for_devices
from edgefleet_proto.topics import TopicError, validate_id
from model_tools.trial_policy import PolicySource, TrialPolicy

log = logging.getLogger(__name__)


def _variant_options(session: Session, model_version_id: int) -> list[VariantOption]:
    query = select(ModelVariant).where(ModelVariant.model_version_id == model_version_id)
    return [VariantOption.from_row(v) for v in session.exec(query.order_by(col(ModelVariant.id))).all()]


def _targets(
    session: Session,
    fleet: str,
    device_ids: Sequence[str] | None,
    selector: Selector | str | Mapping[str, str] | None,
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
    chosen = as_selector(selector)
    if not chosen:
        raise InvalidInputError("expected a selector with at least one label, got an empty one")
    # Matched in SQL over the effective labels: the fleet is never read into Python to filter it.
    matched = list(
        session.exec(
            select(Device)
            .where(Device.fleet == fleet, selector_clause(chosen))
            .order_by(col(Device.id))
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()
    )
    if not matched:
        raise NotFoundError(f"no device in fleet {fleet!r} has labels {chosen}")
    return matched


def assign(
    session: Session,
    publisher: DesiredPublisher,
    model_name: str,
    version: str,
    *,
    device_ids: Sequence[str] | None = None,
    selector: Selector | str | Mapping[str, str] | None = None,
    fleet: str,
    artifact_endpoint: str,
    clock: Clock = utcnow,
    signing: Signing | None = None,
    skipped: list[RefusedDevice] | None = None,
    trial_policy: TrialPolicy | None = None,
) -> list[DesiredState]:
    """Make ``model_name`` ``version`` the desired model of the chosen devices, and publish it.

    ``trial_policy`` judges the version's trial on these devices, ahead of any rollout plan's and
    the bundle's; None leaves it to the bundle's default (and clears an earlier assignment's).

    Raises DeliveryError (after committing) when the broker does not take some of them, and
    ConflictError when named devices rolled this version back; devices chosen by ``selector``
    that rolled it back are left out and appended to ``skipped``.
    """
    # A malformed selector is refused before anything is looked up.
    wanted = as_selector(selector) if selector is not None else None
    model = get_model(session, model_name, version)
    devices = _targets(session, fleet, device_ids, wanted)
    # Never offer a device a version it rolled back (ConflictError when it was named).
    devices = exclude_refused(session, model, devices, named=device_ids is not None, skipped=skipped)
    assert model.id is not None
    # Every device gets the variant its reported runtimes run best; one that none fits fails the
    # whole assignment before anything is written.
    chosen = choose_for_devices(
        _variant_options(session, model.id),
        [(d.id, d.capabilities, effective_labels(d.labels, d.operator_labels)) for d in devices],
    )
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
        row.variant_id = chosen[device.id].id
        row.generation = generation
        row.issued_at = now
        row.trial_policy = desired.override(trial_policy, PolicySource.ASSIGNMENT)
        session.add(row)
        rows.append(row)
    session.flush()
    # Composed with the device's firmware part, so a model assignment keeps its firmware.
    states = desired.compose(session, devices, fleet=fleet, artifact_endpoint=artifact_endpoint)
    session.commit()
    log.info("assigned %s %s to %d device(s)", model.name, model.version, len(rows))
    # Signed first, and the director's counters committed before anything is published.
    payloads = desired.seal(session, states, signing)
    session.commit()
    desired.publish(publisher, payloads)
    return rows


def desired_payloads(
    session: Session, *, fleet: str, artifact_endpoint: str, signing: Signing | None = None
) -> list[tuple[str, bytes]]:
    """Every stored desired state of a fleet, serialised: what a reconnecting hub republishes."""
    return desired.fleet_payloads(session, fleet=fleet, artifact_endpoint=artifact_endpoint, signing=signing)
