"""Every error in one shape (RFC 9457 problems), Allow headers, bodies that refuse unknown fields,
messages that name no server path, and the rate of key rotations."""

from __future__ import annotations

import dataclasses
import json
import logging
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError, OperationalError

from cloud.alerts.spec import RuleSpec, parse_rules
from cloud.api.app import create_app
from cloud.api.errors import PROBLEM_JSON
from cloud.api.openapi import BODY_EXAMPLES, OPERATION_EXAMPLES
from cloud.artifacts import ArtifactStore
from cloud.context import HubContext
from cloud.db import SessionFactory, create_db_engine
from cloud.errors import InvalidArtifactError
from cloud.models import Role
from cloud.rollouts.plan import RolloutPlan
from cloud.services import tokens
from cloud.services.director import Director
from cloud.services.publisher import RecordingPublisher
from cloud.services.signing import Signing
from cloud.settings import Settings
from cloud.tuf import TufSettings, ensure_initialized, open_repository
from tests.unit.cloud.helpers import FrozenClock

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}


def _app(ctx: HubContext) -> FastAPI:
    app = create_app(ctx)

    # Routes that fail the way a bug, a lost database or a chatty library would.
    def boom() -> None:
        raise RuntimeError("secret: password=hunter2 at /srv/edgefleet/hub.db")

    def db_down() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection to server at 10.9.8.7 failed"))

    def chatty(request: Any) -> None:
        raise InvalidArtifactError(f"cannot read {ctx.store.root}/sha256/09/09abc: truncated")

    def nul_text() -> None:
        raise DataError("INSERT", {}, Exception("A string literal cannot contain NUL (0x00) characters."))

    app.add_api_route("/api/v1/test/nul", nul_text)
    app.add_api_route("/api/v1/test/boom", boom)
    app.add_api_route("/api/v1/test/db", db_down)
    app.add_api_route("/api/v1/test/chatty", lambda: chatty(None))
    return app


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(_app(ctx), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def admin(ctx: HubContext) -> dict[str, str]:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "t-admin", Role.ADMIN)
    return {"Authorization": f"Bearer {secret}"}


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status and isinstance(body["detail"], str)
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_unknown_path_is_a_404_problem(client: TestClient, admin: dict[str, str]) -> None:
    body = _problem(client.get("/api/v1/nothing-here", headers={**admin, "X-Request-ID": "req-1"}), 404)
    assert body["instance"] == "/api/v1/nothing-here" and body["request_id"] == "req-1"
    assert body["title"] == "Not Found" and body["type"] == "about:blank"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/cohorts", "GET, POST"),  # two routes serve this path
        ("POST", "/api/v1/cohorts/lab", "DELETE, GET"),
        ("GET", "/api/v1/keys/rotations", "POST"),
        ("GET", "/api/v1/alert-rules/apply", "POST"),  # the literal path, not /alert-rules/{name}
        ("PATCH", "/healthz", "GET"),
    ],
)
def test_405_lists_exactly_the_methods_of_the_path(
    client: TestClient, admin: dict[str, str], method: str, path: str, allow: str
) -> None:
    response = client.request(method, path, headers=admin)
    if path == "/api/v1/alert-rules/apply" and method == "GET":
        # GET routes to /alert-rules/{name}; OPTIONS is served by no route and shows the resource's Allow.
        response = client.request("OPTIONS", path, headers=admin)
    body = _problem(response, 405)
    assert response.headers["allow"] == allow
    assert allow in body["detail"]


def test_validation_problem_lists_fields_and_echoes_no_input(
    client: TestClient, admin: dict[str, str]
) -> None:
    huge = "A" * 100_000
    response = client.post(
        "/api/v1/cohorts", headers=admin, json={"name": "lab", "selector": None, "x" * 500: huge, "extra": 1}
    )
    body = _problem(response, 422)
    assert huge[:1000] not in response.text and len(response.content) < 4000
    locs = [e["loc"] for e in body["errors"]]
    assert ["body", "extra"] in locs
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    assert {e["type"] for e in body["errors"]} == {"extra_forbidden"}
    assert "body.extra" in body["detail"] or "body.x" in body["detail"]


def test_a_detail_quoting_a_lone_surrogate_is_still_a_problem(
    client: TestClient, admin: dict[str, str]
) -> None:
    # JSON may escape half a surrogate pair; the rules parser quotes the key back in its message.
    response = client.post(
        "/api/v1/alert-rules/apply",
        headers={**admin, "Content-Type": "application/json"},
        content=b'{"rules": {"\\ud8b0x": []}}',
    )
    body = _problem(response, 422)
    assert "expected a list of rules" in body["detail"]


def test_domain_errors_keep_their_sentence(client: TestClient, admin: dict[str, str]) -> None:
    body = _problem(client.get("/api/v1/models/digits/2", headers=admin), 404)
    assert "digits" in body["detail"]


def test_missing_token_is_a_401_problem_with_a_challenge(client: TestClient) -> None:
    response = client.get("/api/v1/models")
    _problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_unexpected_error_is_a_bare_500_logged_with_its_request_id(
    client: TestClient, admin: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = client.get("/api/v1/test/boom", headers={**admin, "X-Request-ID": "boom-1"})
    body = _problem(response, 500)
    assert (
        "hunter2" not in response.text and "/srv" not in response.text and "RuntimeError" not in response.text
    )
    assert body["request_id"] == "boom-1"
    logged = [r for r in caplog.records if "boom-1" in r.getMessage()]
    assert logged and logged[0].exc_info is not None, (
        "the 500 must be logged with its request id and traceback"
    )


def test_database_down_is_a_503_that_names_no_host(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get("/api/v1/test/db", headers=admin)
    body = _problem(response, 503)
    assert "10.9.8.7" not in response.text and "SELECT" not in response.text
    assert "database" in body["detail"] and response.headers["retry-after"].isdigit()


def test_a_value_the_database_cannot_store_is_a_422(client: TestClient, admin: dict[str, str]) -> None:
    body = _problem(client.get("/api/v1/test/nul", headers=admin), 422)
    assert "INSERT" not in body["detail"] and "NUL" in body["detail"]


def test_database_down_while_the_token_is_checked_is_a_503_with_the_request_id(
    ctx: HubContext, tmp_path: Path
) -> None:
    # A database file in a folder that does not exist: every connection fails, first in authentication.
    gone = create_db_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'hub.db'}")
    app = create_app(dataclasses.replace(ctx, engine=gone))
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get(
            "/api/v1/models", headers={"Authorization": "Bearer some-token", "X-Request-ID": "db-1"}
        )
    body = _problem(response, 503)
    assert body["request_id"] == "db-1" and "no-such-folder" not in response.text


def test_a_library_message_quoting_the_store_shows_no_path(
    client: TestClient, admin: dict[str, str], store: ArtifactStore
) -> None:
    body = _problem(client.get("/api/v1/test/chatty", headers=admin), 400)
    assert str(store.root) not in body["detail"] and "/sha256/" not in body["detail"]


def test_a_corrupt_upload_is_named_by_its_sha256_not_its_path(
    client: TestClient, admin: dict[str, str], store: ArtifactStore, tmp_path: Path
) -> None:
    response = client.post(
        "/api/v1/models",
        headers=admin,
        data={"name": "digits", "version": "1"},
        files={"file": ("m.onnx", b"this is not an onnx model")},
    )
    body = _problem(response, 400)
    assert "not a loadable ONNX model" in body["detail"]
    assert str(tmp_path) not in response.text and "/sha256/" not in response.text
    assert "artifact " in body["detail"]


# --- request bodies refuse unknown fields -----------------------------------------------------------

# Bodies read as a plain mapping and validated by a model of their own inside the route.
_VALIDATED_INSIDE = {
    ("/api/v1/alert-rules", "POST"): RuleSpec,
    ("/api/v1/alert-rules/{name}", "PUT"): RuleSpec,
}


def _models(annotation: Any) -> Iterator[type[pydantic.BaseModel]]:
    """The pydantic models an annotation holds (Optional, unions, lists and dicts opened)."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        yield annotation
        for field in annotation.model_fields.values():
            yield from _models(field.annotation)
        return
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict, tuple, typing.Annotated):
        for arg in typing.get_args(annotation):
            yield from _models(arg)


def _body_models(app: FastAPI) -> dict[tuple[str, str], list[type[pydantic.BaseModel]]]:
    found: dict[tuple[str, str], list[type[pydantic.BaseModel]]] = {}
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or route.dependant is None:
            continue
        for method in route.methods or ():
            key = (route.path_format or "", method)
            for param in route.dependant.body_params:
                models = list(_models(param.field_info.annotation))
                if key in _VALIDATED_INSIDE:
                    models.append(_VALIDATED_INSIDE[key])
                assert models, f"{method} {key[0]} takes a body that is no pydantic model: {param.name}"
                found.setdefault(key, []).extend(models)
    return found


def test_every_body_model_refuses_unknown_fields(ctx: HubContext) -> None:
    found = _body_models(create_app(ctx))
    assert len(found) >= 20, f"only {len(found)} bodies found: the route walk is broken"
    lenient = sorted(
        f"{method} {path}: {model.__name__}"
        for (path, method), models in found.items()
        for model in models
        if model.model_config.get("extra") != "forbid"
    )
    assert not lenient, "bodies that accept unknown fields (derive them from RequestBody):\n" + "\n".join(
        lenient
    )


def test_rotation_body_with_an_unknown_field_is_a_422(
    signed_client: TestClient, admin: dict[str, str]
) -> None:
    response = signed_client.post(
        "/api/v1/keys/rotations", headers=admin, json={"role": "timestamp", "treshold": 2}
    )
    body = _problem(response, 422)
    assert ["body", "treshold"] in [e["loc"] for e in body["errors"]]


def test_every_json_body_in_the_document_has_an_example_that_its_model_accepts(ctx: HubContext) -> None:
    app = create_app(ctx)
    document = app.openapi()
    by_name = {m.__name__: m for models in _body_models(app).values() for m in models}
    for path, item in document["paths"].items():
        for method, op in item.items():
            media = op.get("requestBody", {}).get("content", {}).get("application/json")
            if media is None:
                continue
            example = media.get("example", (media.get("examples") or [None])[0])
            if example is None:
                example = (media.get("schema", {}).get("examples") or [None])[0]
            assert example is not None, f"{method.upper()} {path} has no request example"
    for name, example in BODY_EXAMPLES.items():
        assert name in by_name, f"an example for {name}, which no route takes"
        by_name[name].model_validate(example)
    RolloutPlan.model_validate(OPERATION_EXAMPLES[("post", "/api/v1/rollouts")])
    assert parse_rules(json.dumps(OPERATION_EXAMPLES[("post", "/api/v1/alert-rules/apply")]))


def test_document_shows_problems_on_every_operation(ctx: HubContext) -> None:
    document = create_app(ctx).openapi()
    schemas = document["components"]["schemas"]
    assert "Problem" in schemas and "HTTPValidationError" not in schemas
    for path, item in document["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            for code, response in responses.items():
                if int(code) >= 400 and (path, code) != ("/healthz", "503"):
                    assert list(response["content"]) == [PROBLEM_JSON], (method, path, code)
            if path.startswith("/api/"):
                assert {"401", "403"} <= set(responses), (method, path)
                assert op.get("security"), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if op.get("parameters") or op.get("requestBody"):
                assert "422" in responses, (method, path)
    assert "429" in document["paths"]["/api/v1/keys/rotations"]["post"]["responses"]
    # A body a route declares for an error status stays: /healthz answers 503 with its report.
    health = document["paths"]["/healthz"]["get"]["responses"]["503"]["content"]["application/json"]
    assert health["schema"] == {"$ref": "#/components/schemas/Health"}


# --- key rotations are limited in rate -----------------------------------------------------------


@pytest.fixture
def signed_client(
    ctx: HubContext,
    tmp_path: Path,
    sessions: SessionFactory,
    clock: FrozenClock,
    publisher: RecordingPublisher,
) -> Iterator[TestClient]:
    repo = open_repository(Settings(data_dir=tmp_path / "tuf"), sessions, tuf=TufSettings(), clock=clock)
    assert ensure_initialized(repo)
    signing = Signing(repo, Director(repo, clock=clock), sessions, publisher)
    settings = ctx.settings.model_copy(update={"key_rotations_per_hour": 2})
    with TestClient(create_app(dataclasses.replace(ctx, signing=signing, settings=settings))) as c:
        yield c


def test_key_rotations_past_the_hourly_limit_are_429_until_the_hour_has_passed(
    signed_client: TestClient, admin: dict[str, str], clock: FrozenClock
) -> None:
    rotate = {"role": "timestamp"}
    assert signed_client.post("/api/v1/keys/rotations", headers=admin, json=rotate).status_code == 201
    clock.advance(600)
    assert signed_client.post("/api/v1/keys/rotations", headers=admin, json=rotate).status_code == 201
    clock.advance(600)
    refused = signed_client.post("/api/v1/keys/rotations", headers=admin, json=rotate)
    body = _problem(refused, 429)
    # The first rotation leaves the window 3600 s after it was made: 1200 s have passed.
    assert refused.headers["retry-after"] == "2400"
    assert "at most 2 per 3600 s" in body["detail"]
    clock.advance(2400)
    assert signed_client.post("/api/v1/keys/rotations", headers=admin, json=rotate).status_code == 201
