"""Experiments: training runs with their lineage, and the versions each produced.

A run is keyed by the ``run_id`` its trainer drew. Recording the same run twice
(``fleet train`` registers it, then its bundle carries it again) is a no-op;
recording a different run under a taken id is a conflict.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.api.schemas.fleet import (
    ExperimentCreate,
    ExperimentDetailPublic,
    ExperimentPublic,
    ModelVersionRef,
)
from cloud.clock import Clock, utcnow
from cloud.errors import ConflictError, InvalidInputError, NotFoundError
from cloud.models import Bundle, Experiment, ModelVariant, ModelVersion
from cloud.services.pagination import Page, keyset_page

__all__ = [
    "experiment_detail",
    "get_experiment",
    "list_experiments",
    "parse_experiment",
    "record_experiment",
    "upsert_experiment",
]

# Fields that identify what a run was; two records of one run_id must agree on all of them.
_IDENTITY = (
    "name", "kind", "params", "seed", "metrics", "dataset_name", "dataset_hash", "code_revision", "device",
    "world_size",
)  # fmt: skip


def parse_experiment(data: Mapping[str, Any]) -> ExperimentCreate:
    """Validate an experiment record from a manifest or a request; InvalidInputError names the field."""
    try:
        return ExperimentCreate.model_validate(dict(data))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise InvalidInputError(
            f"invalid experiment record: {where}: {first['msg']} ({e.error_count()} error(s))"
        ) from e


def upsert_experiment(session: Session, data: ExperimentCreate, *, clock: Clock = utcnow) -> Experiment:
    """The stored experiment for ``data.run_id``, added to the session when new (the caller commits)."""
    existing = session.exec(select(Experiment).where(Experiment.run_id == data.run_id)).first()
    if existing is not None:
        differs = [f for f in _IDENTITY if getattr(existing, f) != getattr(data, f)]
        if differs:
            raise ConflictError(
                f"experiment {data.run_id} is already recorded with other {', '.join(differs)}: "
                "expected the same record or a new run id"
            )
        return existing
    row = Experiment(**data.model_dump(), created_at=clock())
    session.add(row)
    session.flush()
    return row


def record_experiment(session: Session, data: ExperimentCreate, *, clock: Clock = utcnow) -> Experiment:
    """Record a run and commit; idempotent for the same record."""
    try:
        row = upsert_experiment(session, data, clock=clock)
        session.commit()
    except IntegrityError as e:
        session.rollback()
        # Lost a race with a concurrent recording of the same run: read back what won.
        row = get_experiment(session, data.run_id)
        differs = [f for f in _IDENTITY if getattr(row, f) != getattr(data, f)]
        if differs:
            raise ConflictError(
                f"experiment {data.run_id} was recorded concurrently with other {differs}"
            ) from e
    except BaseException:
        session.rollback()
        raise
    session.refresh(row)
    return row


def get_experiment(session: Session, run_id: str) -> Experiment:
    row = session.exec(select(Experiment).where(Experiment.run_id == run_id)).first()
    if row is None:
        raise NotFoundError(f"experiment {run_id} is not recorded")
    return row


def list_experiments(session: Session, *, name: str | None = None, limit: int = 100) -> list[Experiment]:
    """Newest first."""
    return page_experiments(session, name=name, limit=limit).items


def page_experiments(
    session: Session, *, name: str | None = None, limit: int = 100, cursor: str | None = None
) -> Page[Experiment]:
    """A page of the runs, newest first; ``next_cursor`` continues with older ones."""
    query = select(Experiment)
    if name is not None:
        query = query.where(Experiment.name == name)
    return keyset_page(
        session,
        query,
        [Experiment.created_at, Experiment.id],
        listing="experiments",
        key_of=lambda e: (e.created_at, e.id or 0),
        limit=limit,
        cursor=cursor,
        descending=True,
    )


def experiment_detail(session: Session, run_id: str) -> ExperimentDetailPublic:
    """An experiment and the versions its bundles registered."""
    row = get_experiment(session, run_id)
    versions = session.exec(
        select(ModelVersion)
        .join(Bundle, col(Bundle.model_version_id) == col(ModelVersion.id))
        .where(Bundle.experiment_id == row.id)
        .order_by(col(ModelVersion.created_at))
    ).all()
    variants: dict[int, list[str]] = defaultdict(list)
    ids = [v.id for v in versions if v.id is not None]
    if ids:
        for variant in session.exec(
            select(ModelVariant)
            .where(col(ModelVariant.model_version_id).in_(ids))
            .order_by(col(ModelVariant.id))
        ).all():
            variants[variant.model_version_id].append(variant.variant)
    return ExperimentDetailPublic(
        **ExperimentPublic.model_validate(row).model_dump(),
        versions=[
            ModelVersionRef(
                name=v.name, version=v.version, variants=variants[v.id or 0], created_at=v.created_at
            )
            for v in versions
        ],
    )
