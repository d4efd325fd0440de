"""`fleet drift` against a running hub: the newest scores per cohort, per feature, and a series.

Cohort metrics are written into the hub's database as the scorers write them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud.cli import app
from cloud.clock import utcnow
from cloud.drift.tables import CohortMetric
from cloud.hub import Hub
from cloud.settings import Settings

pytestmark = pytest.mark.integration

runner = CliRunner()
MODEL, VERSION = "digits", "1.0.0"


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        yield running


def fleet(hub: Hub, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token])
    return result.exit_code, result.stdout + result.stderr


def said(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.fixture
def scored(hub: Hub) -> None:
    assert hub.context is not None
    code, out = fleet(hub, "cohorts", "create", "us", "--selector", "region=us")
    assert code == 0, out
    with hub.context.sessions() as s:
        from cloud.services.cohorts import get_cohort

        us = get_cohort(s, hub.settings.fleet, "us")
        assert us.id is not None
        now = utcnow().replace(microsecond=0)
        rows = []
        for back, score in ((10, 0.5), (5, 2.75)):
            bucket = now - timedelta(minutes=back)
            common = {
                "fleet": hub.settings.fleet,
                "cohort_id": us.id,
                "model_name": MODEL,
                "model_version": VERSION,
                "bucket_start": bucket,
            }
            rows.append(CohortMetric(**common, metric="drift_score", reference="baseline", value=score))
            rows.append(
                CohortMetric(
                    **common,
                    metric="drift_ks",
                    feature="mean",
                    reference="baseline",
                    value=0.3,
                    threshold=0.11,
                    drifted=score > 1,
                    n=400,
                )
            )
            rows.append(CohortMetric(**common, metric="accuracy", value=0.8, n=120))
            rows.append(CohortMetric(**common, metric="recall", feature="7", value=0.4, n=10))
        s.add_all(rows)
        s.commit()


def test_drift_ls_and_show_name_the_drifted_cohort_and_feature(hub: Hub, scored: None) -> None:
    code, out = fleet(hub, "drift", "ls", "-o", "json")
    assert code == 0, out
    (row,) = json.loads(out)
    assert (row["cohort"], row["version"], row["drift_score"]) == ("us", VERSION, 2.75)
    assert row["drifted_features"] == ["mean"] and row["accuracy"] == 0.8 and row["labelled"] == 120

    code, out = fleet(hub, "drift", "ls")
    assert code == 0, out
    assert "us digits 1.0.0" in said(out) and "2.75" in out and "80.0%" in out

    code, out = fleet(hub, "drift", "show", "us")
    assert code == 0, out
    text = said(out)
    assert "mean 0.3 0.11" in text and "yes" in text
    assert "accuracy 80.0% on 120 labelled prediction(s)" in text and "7 40%" in text


def test_drift_series_in_time_order(hub: Hub, scored: None) -> None:
    code, out = fleet(hub, "drift", "series", "drift_score", "--model", MODEL, "--cohort", "us", "-o", "json")
    assert code == 0, out
    (series,) = json.loads(out)
    assert [p["value"] for p in series["points"]] == [0.5, 2.75]


def test_an_unknown_cohort_exits_3_and_says_so(hub: Hub) -> None:
    code, out = fleet(hub, "drift", "show", "nowhere")
    assert code == 3, out
    assert "nowhere" in out
