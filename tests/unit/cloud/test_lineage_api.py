"""A model version's lineage through the HTTP API: experiment, parent and children, metrics, variants.

SQLite in a temp folder; the rows are written as registration and continuous training leave them
(both are tested on their own in test_registry.py, test_ct_*.py), so each case states its history.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.models import Bundle, Experiment, ModelVariant, ModelVersion, Role
from cloud.services import tokens
from cloud.training.continuous.tables import TrainingRun
from tests.unit.cloud.helpers import T0

DATASET = "d" * 64


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def viewer(ctx: HubContext) -> dict[str, str]:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "viewer", Role.VIEWER)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def history(ctx: HubContext) -> None:
    """digits 1 (pushed by hand) -> 2 (trained, bundled, champion 1) -> 3 (trained, champion 2)."""
    with ctx.sessions() as s:
        ids: dict[str, int] = {}
        for k, version in enumerate(("1", "2", "3")):
            row = ModelVersion(
                name="digits", version=version, format="onnx", sha256=f"{k:064x}", length=10, created_at=T0
            )
            s.add(row)
            s.flush()
            assert row.id is not None
            ids[version] = row.id
        experiment = Experiment(
            run_id="abcdef12",
            name="digits",
            kind="mlp",
            params={"epochs": 3},
            seed=7,
            metrics={"accuracy": 0.95},
            dataset_name="digits",
            dataset_hash=DATASET,
            code_revision="3f1c2e9",
            device="cpu",
            started_at=T0,
            finished_at=T0,
        )
        s.add(experiment)
        s.flush()
        s.add(
            Bundle(
                model_version_id=ids["2"],
                experiment_id=experiment.id,
                manifest={"metrics": {"accuracy": 0.97}, "lineage": {"experiment": {"run_id": "abcdef12"}}},
                profile_sha256="e" * 64,
                profile_length=1,
                profile_media_type="application/octet-stream",
            )
        )
        s.add(
            ModelVariant(
                model_version_id=ids["2"],
                variant="onnx-int8",
                format="onnx",
                precision="int8",
                sha256="f" * 64,
                length=5,
            )
        )
        for run_id, champion, challenger in (("r1", "1", "2"), ("r2", "2", "3")):
            s.add(
                TrainingRun(
                    id=run_id,
                    fleet=ctx.settings.fleet,
                    model_name="digits",
                    trigger="drift",
                    state="rolled_out",
                    champion_version=champion,
                    challenger_version=challenger,
                    decision="promote",
                    decision_reason="accuracy 0.97 >= 0.95",
                    created_at=T0,
                )
            )
        s.commit()


@pytest.mark.usefixtures("history")
def test_lineage_of_a_trained_version_names_its_data_code_parent_and_children(
    client: TestClient, viewer: dict[str, str]
) -> None:
    r = client.get("/api/v1/models/digits/2/lineage", headers=viewer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dataset_hash"] == DATASET
    assert body["code_revision"] == "3f1c2e9"
    assert body["parent_version"] == "1"
    assert body["children"] == ["3"]
    assert body["experiment"]["run_id"] == "abcdef12"
    assert body["training_run"]["id"] == "r1" and body["training_run"]["trigger"] == "drift"
    assert body["metrics"] == {"accuracy": 0.97}
    assert [v["variant"] for v in body["variants"]] == ["onnx-int8"]
    assert body["lineage"] == {"experiment": {"run_id": "abcdef12"}}


@pytest.mark.usefixtures("history")
def test_lineage_of_a_pushed_version_has_no_parent_and_an_unknown_version_is_404(
    client: TestClient, viewer: dict[str, str]
) -> None:
    body = client.get("/api/v1/models/digits/1/lineage", headers=viewer).json()
    assert body["parent_version"] is None and body["experiment"] is None and body["dataset_hash"] is None
    assert body["children"] == ["2"]
    assert body["metrics"] == {} and body["variants"] == []
    r = client.get("/api/v1/models/digits/9/lineage", headers=viewer)
    assert r.status_code == 404
    assert "digits version 9 is not registered" in r.json()["detail"]
