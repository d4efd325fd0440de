"""A model version's lineage: the experiment that trained it (data set hash, code revision, params,
metrics), the version it was trained to replace, the versions trained from it, and its variants.

The pieces live in several tables (``Bundle`` names the experiment, a continuous ``TrainingRun``
names champion and challenger); this reads them with a query each, whatever the version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from cloud.models import Bundle, Experiment, ModelVariant, ModelVersion
from cloud.training.continuous.tables import TrainingRun

__all__ = ["Lineage", "lineage_of"]


@dataclass(frozen=True, slots=True)
class Lineage:
    model: ModelVersion
    experiment: Experiment | None
    # The continuous-training run that produced this version, and the champion it was measured against.
    training_run: TrainingRun | None
    # Versions whose training run measured them against this one (this was their champion), oldest first.
    children: list[str]
    variants: list[ModelVariant]
    manifest_lineage: dict[str, Any]
    metrics: dict[str, Any]


def lineage_of(session: Session, model: ModelVersion) -> Lineage:
    assert model.id is not None
    bundle = session.get(Bundle, model.id)
    experiment = None
    if bundle is not None and bundle.experiment_id is not None:
        experiment = session.get(Experiment, bundle.experiment_id)
    runs = session.exec(
        select(TrainingRun)
        .where(TrainingRun.model_name == model.name, TrainingRun.challenger_version == model.version)
        .order_by(col(TrainingRun.created_at).desc())
    ).all()
    children = session.exec(
        select(TrainingRun.challenger_version)
        .where(
            TrainingRun.model_name == model.name,
            TrainingRun.champion_version == model.version,
            col(TrainingRun.challenger_version).is_not(None),
        )
        .order_by(col(TrainingRun.created_at))
    ).all()
    variants = session.exec(
        select(ModelVariant)
        .where(ModelVariant.model_version_id == model.id)
        .order_by(col(ModelVariant.variant))
    ).all()
    manifest: dict[str, Any] = bundle.manifest if bundle is not None else {}
    metrics = dict(manifest.get("metrics", {})) or (dict(experiment.metrics) if experiment else {})
    return Lineage(
        model=model,
        experiment=experiment,
        training_run=runs[0] if runs else None,
        children=[c for c in dict.fromkeys(children) if c],
        variants=list(variants),
        manifest_lineage=dict(manifest.get("lineage", {})),
        metrics=metrics,
    )
