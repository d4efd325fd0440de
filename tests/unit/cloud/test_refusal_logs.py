"""Every refused API request is logged with its status, reason and request id."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.api.errors import problem_response
from cloud.context import HubContext
from cloud.models import Role
from cloud.services import tokens


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), raise_server_exceptions=False) as c:
        yield c


def _refusals(caplog: pytest.LogCaptureFixture, request_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "cloud.api.errors" and r.getMessage().startswith(f"refused request {request_id}:")
    ]


def test_a_413_upload_is_logged_with_status_reason_and_request_id(
    client: TestClient, ctx: HubContext, caplog: pytest.LogCaptureFixture
) -> None:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "t-op", Role.OPERATOR)
    too_big = b"\0" * (ctx.settings.max_upload_bytes + 1)
    with caplog.at_level(logging.WARNING, logger="cloud.api.errors"):
        response = client.post(
            "/api/v1/models",
            headers={"Authorization": f"Bearer {secret}", "X-Request-ID": "up-413"},
            data={"name": "m", "version": "1.0.0"},
            files={"file": ("m.onnx", too_big, "application/octet-stream")},
        )
    assert response.status_code == 413, response.text
    [line] = _refusals(caplog, "up-413")
    assert "413 /api/v1/models" in line
    assert f"expected at most {ctx.settings.max_upload_bytes} bytes" in line


def test_a_401_is_logged_without_the_token_it_refused(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cloud.api.errors"):
        response = client.get(
            "/api/v1/models",
            headers={"Authorization": "Bearer not-a-real-token-xyz", "X-Request-ID": "auth-401"},
        )
    assert response.status_code == 401, response.text
    [line] = _refusals(caplog, "auth-401")
    assert "401 /api/v1/models" in line and response.json()["detail"] in line
    assert "not-a-real-token-xyz" not in line
    assert all(r.levelno == logging.WARNING for r in caplog.records if "auth-401" in r.getMessage())


def test_a_caller_cannot_forge_log_lines_through_a_refusal(caplog: pytest.LogCaptureFixture) -> None:
    # A detail or path may quote the caller's input, newlines included.
    with caplog.at_level(logging.WARNING, logger="cloud.api.errors"):
        problem_response(422, "bad key 'x\nrefused request forged: 200'", instance="/api/v1/a\nb")
    [line] = _refusals(caplog, "None")
    assert "\n" not in line
    assert line == "refused request None: 422 /api/v1/a b: bad key 'x refused request forged: 200'"
