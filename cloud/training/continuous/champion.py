"""The champion: the version of a model that a fleet serves, and what is known of how it was made.

The champion of a model is the version most of the fleet's devices are assigned (their desired
state); a model assigned to no device yet has its newest registered version as champion. Its
recorded held-out accuracy is what the bundle's optimizer measured on the held-out split (or the
trainer's test accuracy), and its recipe (model kind, seed, epochs) comes from the experiment in
its lineage: a challenger is trained the same way on the same base split, plus the labelled data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, func, select

from cloud.models import Bundle, DesiredState, Device, Experiment, ModelVariant, ModelVersion

__all__ = ["Recipe", "recipe_of", "recorded_accuracy", "served_models", "serving_champion"]

# The demo's naming of a model trained by `fleet train` without a bundle: digits-<kind>.
_DEMO_NAME = re.compile(r"^digits-(mlp|cnn)$")


def served_models(session: Session, fleet: str) -> list[str]:
    """Names of the models assigned to at least one device of ``fleet``, sorted."""
    rows = session.exec(
        select(ModelVersion.name)
        .join(DesiredState, col(DesiredState.model_version_id) == col(ModelVersion.id))
        .join(Device, col(Device.id) == col(DesiredState.device_id))
        .where(Device.fleet == fleet)
        .distinct()
    ).all()
    return sorted(rows)


def serving_champion(session: Session, fleet: str, model_name: str) -> ModelVersion | None:
    """The version of ``model_name`` most devices of ``fleet`` are assigned, else the newest registered."""
    devices = func.count(col(DesiredState.device_id))
    served = session.exec(
        select(ModelVersion, devices)
        .join(DesiredState, col(DesiredState.model_version_id) == col(ModelVersion.id))
        .join(Device, col(Device.id) == col(DesiredState.device_id))
        .where(Device.fleet == fleet, ModelVersion.name == model_name)
        .group_by(col(ModelVersion.id))
        .order_by(devices.desc(), col(ModelVersion.created_at).desc())
    ).first()
    if served is not None:
        return served[0]
    return session.exec(
        select(ModelVersion)
        .where(ModelVersion.name == model_name)
        .order_by(col(ModelVersion.created_at).desc(), col(ModelVersion.id).desc())
    ).first()


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def recorded_accuracy(session: Session, version: ModelVersion) -> float | None:
    """The version's accuracy on its held-out split as recorded when it was made; None when unknown."""
    bundle = session.get(Bundle, version.id)
    if bundle is not None:
        found = _number(bundle.manifest.get("metrics", {}).get("fp32_test_accuracy"))
        if found is not None:
            return found
    baseline = session.exec(
        select(ModelVariant).where(ModelVariant.model_version_id == version.id, col(ModelVariant.is_baseline))
    ).first()
    if baseline is not None:
        found = _number(baseline.metrics.get("accuracy"))
        if found is not None:
            return found
    experiment = _experiment(session, version)
    return _number(experiment.metrics.get("test_accuracy")) if experiment is not None else None


def _experiment(session: Session, version: ModelVersion) -> Experiment | None:
    bundle = session.get(Bundle, version.id)
    if bundle is None or bundle.experiment_id is None:
        return None
    return session.get(Experiment, bundle.experiment_id)


@dataclass(frozen=True)
class Recipe:
    """How to train a challenger like the champion: model kind, seed, epochs (None: the kind's recipe)."""

    kind: str
    seed: int
    epochs: int | None
    source: str
    """Where it was read: "experiment <run id>" or "model name"."""


def recipe_of(session: Session, version: ModelVersion) -> Recipe | None:
    """The champion's recipe from the experiment in its lineage, else from a demo model's name."""
    experiment = _experiment(session, version)
    if experiment is not None:
        epochs = experiment.params.get("epochs")
        return Recipe(
            kind=experiment.kind,
            seed=int(experiment.seed),
            epochs=int(epochs) if isinstance(epochs, int) and not isinstance(epochs, bool) else None,
            source=f"experiment {experiment.run_id}",
        )
    match = _DEMO_NAME.match(version.name)
    if match is not None:
        return Recipe(kind=match.group(1), seed=0, epochs=None, source="model name")
    return None
