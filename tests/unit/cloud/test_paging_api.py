"""Cursor pagination of the models, firmware, rollbacks and experiments listings, through the HTTP API.

SQLite in a temp folder; rows are written as registration and ingest leave them, several with the
same timestamp, so the listings' tie-breaker (the row id) is what keeps a row from repeating.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.models import Device, DeviceRollback, Experiment, FirmwareImage, ModelVersion, Role
from cloud.services import tokens
from tests.unit.cloud.helpers import T0


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def viewer(ctx: HubContext) -> dict[str, str]:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "viewer", Role.VIEWER)
    return {"Authorization": f"Bearer {secret}"}


def _pages(
    client: TestClient, headers: dict[str, str], path: str, limit: int, **params: str
) -> list[list[Any]]:
    pages: list[list[Any]] = []
    cursor: str | None = None
    for _ in range(50):
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        r = client.get(path, headers=headers, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["count"] == len(body["data"])
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError(f"{path} did not end after 50 pages")


def test_models_page_by_name_then_age_with_ties(
    ctx: HubContext, client: TestClient, viewer: dict[str, str]
) -> None:
    with ctx.sessions() as s:
        for name, version, minutes in [
            ("b", "1", 0),
            ("a", "2", 5),
            ("a", "1", 0),
            ("a", "3", 5),
            ("c", "1", 0),
        ]:
            s.add(
                ModelVersion(
                    name=name,
                    version=version,
                    format="onnx",
                    sha256=f"{name}{version}".ljust(64, "0"),
                    length=1,
                    created_at=T0 + timedelta(minutes=minutes),
                )
            )
        s.commit()
    pages = _pages(client, viewer, "/api/v1/models", 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [(m["name"], m["version"]) for p in pages for m in p] == [
        ("a", "1"),
        ("a", "2"),
        ("a", "3"),
        ("b", "1"),
        ("c", "1"),
    ]
    only_a = _pages(client, viewer, "/api/v1/models", 1, name="a")
    assert [m["version"] for p in only_a for m in p] == ["1", "2", "3"]


def test_firmware_pages_by_name_then_age(ctx: HubContext, client: TestClient, viewer: dict[str, str]) -> None:
    with ctx.sessions() as s:
        for i in range(5):
            s.add(
                FirmwareImage(
                    name="fw",
                    hardware_id="board",
                    version=f"1.{i}",
                    kind="full",
                    min_agent_version="0.1",
                    target_path=f"firmware/fw-1.{i}",
                    sha256=f"{i:064x}",
                    length=1,
                    payload_sha256=f"{i:064x}",
                    payload_length=1,
                    created_at=T0 + timedelta(minutes=i // 2),
                )
            )
        s.commit()
    pages = _pages(client, viewer, "/api/v1/firmware", 2)
    assert [f["version"] for p in pages for f in p] == [f"1.{i}" for i in range(5)]
    assert [len(p) for p in pages] == [2, 2, 1]


def test_rollbacks_page_newest_first_and_a_cursor_of_another_listing_is_refused(
    ctx: HubContext, client: TestClient, viewer: dict[str, str]
) -> None:
    with ctx.sessions() as s:
        s.add(Device(id="d1", fleet=ctx.settings.fleet, first_seen=T0, last_seen=T0))
        s.flush()
        for seq in range(7):
            s.add(
                DeviceRollback(
                    device_id="d1",
                    seq=seq,
                    ts=T0 + timedelta(seconds=seq // 3),  # three share each timestamp
                    model_name="digits",
                    model_version=str(seq),
                    model_sha256="a" * 64,
                )
            )
        s.commit()
    pages = _pages(client, viewer, "/api/v1/rollbacks", 3)
    assert [r["seq"] for p in pages for r in p] == [6, 5, 4, 3, 2, 1, 0]
    with ctx.sessions() as s:
        for v in ("1", "2"):
            s.add(ModelVersion(name="m", version=v, format="onnx", sha256=v * 64, length=1, created_at=T0))
        s.commit()
    other = client.get("/api/v1/models", headers=viewer, params={"limit": 1}).json()["next_cursor"]
    r = client.get("/api/v1/rollbacks", headers=viewer, params={"cursor": other})
    assert r.status_code == 422
    assert "expected the next_cursor of a rollbacks listing" in r.json()["detail"]


def test_experiments_page_newest_first(ctx: HubContext, client: TestClient, viewer: dict[str, str]) -> None:
    with ctx.sessions() as s:
        for i in range(5):
            s.add(
                Experiment(
                    run_id=f"{i:08x}",
                    name="digits",
                    kind="mlp",
                    dataset_name="digits",
                    dataset_hash="d" * 64,
                    code_revision="abc",
                    device="cpu",
                    started_at=T0,
                    finished_at=T0,
                    created_at=T0 + timedelta(minutes=i // 2),  # pairs share a time: the id breaks the tie
                )
            )
        s.commit()
    pages = _pages(client, viewer, "/api/v1/experiments", 2)
    assert [e["run_id"] for p in pages for e in p] == [f"{i:08x}" for i in (4, 3, 2, 1, 0)]
    assert [len(p) for p in pages] == [2, 2, 1]
