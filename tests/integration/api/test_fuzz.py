"""The API against its own OpenAPI document, fuzzed by schemathesis with every check, and without a token.

Schemathesis reads /openapi.json from the app in process (its ASGI transport), then runs its phases
(examples, coverage, fuzzing, stateful) with every check: no 5xx, every status and header and body as
documented, schema-violating requests refused, schema-valid ones accepted, 405 with a right Allow.
Examples per operation are bounded so that the run stays within a couple of minutes on two cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from schemathesis.engine import Status, events, from_schema
from sqlmodel import select

from cloud.api.app import create_app
from cloud.api.auth import PUBLIC_ROUTES
from cloud.api.errors import PROBLEM_JSON
from cloud.audit.tables import AuditEntry
from cloud.clock import utcnow
from cloud.context import HubContext
from cloud.db import SessionFactory
from cloud.models import Role
from cloud.services import tokens
from cloud.services.director import Director
from cloud.services.publisher import RecordingPublisher
from cloud.services.signing import Signing
from cloud.settings import Settings
from cloud.tuf import TufSettings, ensure_initialized, open_repository
from tests.unit.cloud.helpers import FrozenClock

MAX_EXAMPLES = 8
# Fixed, so that a failure reproduces; EDGEFLEET_FUZZ_SEED tries another.
SEED = int(os.environ.get("EDGEFLEET_FUZZ_SEED", "11"))
STATEFUL_STEPS = 6

# Requests that fit the schema and are still refused, for reasons a JSON Schema cannot state. Each is
# a documented 4xx problem that names the reason, and every other check still holds these operations.
_SEMANTIC: dict[tuple[str, str], tuple[list[int], str]] = {
    ("GET", "/api/v1/devices"): ([422], "label selectors have a grammar of their own"),
    ("POST", "/api/v1/assignments"): ([422], "exactly one of devices or selector; selector grammar"),
    ("POST", "/api/v1/firmware/assignments"): ([422], "exactly one of devices or selector"),
    ("POST", "/api/v1/cohorts"): ([422], "selector grammar; device ids checked by the service"),
    ("POST", "/api/v1/keys/rotations"): ([422], "a threshold must fit the number of root keys"),
    ("POST", "/api/v1/keys/rotations/{rotation_id}/signatures"): ([422], "signatures must verify"),
    ("PUT", "/api/v1/experiments/{run_id}"): ([422], "the body's run_id must equal the path's"),
    ("POST", "/api/v1/alert-rules"): ([422], "an alert rule is validated by its own model"),
    ("PUT", "/api/v1/alert-rules/{name}"): ([422], "the rule's name must equal the path's"),
    ("POST", "/api/v1/alert-rules/apply"): ([422], "a rules file is YAML text"),
    ("POST", "/api/v1/rollouts"): ([422], "a rollout plan is validated by its own model"),
    ("POST", "/api/v1/alert-receivers"): ([422], "a webhook URL needs a scheme and a host"),
    ("PATCH", "/api/v1/alert-receivers/{name}"): ([422], "a webhook URL needs a scheme and a host"),
    ("POST", "/api/v1/devices/{device_id}/csr"): ([422], "a CSR is checked, not described, by the schema"),
}
# A cursor is opaque: any string fits the schema, only one the hub issued decodes.
_CURSOR_STATUSES = [422]
# An upload's content (ONNX, a firmware bundle, .npz, a CSR) is checked, not described, by the schema.
_UPLOAD_STATUSES = [400, 413, 422]


def _operations_config(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Per operation: the statuses positive_data_acceptance also takes, on top of its defaults."""
    defaults = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
    configs = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            extra: set[int] = set()
            if any(p.get("name") == "cursor" for p in op.get("parameters", [])):
                extra |= set(_CURSOR_STATUSES)
            content = op.get("requestBody", {}).get("content", {})
            if "multipart/form-data" in content or "application/x-pem-file" in content:
                extra |= set(_UPLOAD_STATUSES)
            extra |= set(_SEMANTIC.get((method.upper(), path), ([], ""))[0])
            if extra:
                configs.append(
                    {
                        "include-path": path,
                        "include-method": method.upper(),
                        "checks": {
                            "positive_data_acceptance": {
                                "expected-statuses": defaults + [str(s) for s in sorted(extra)]
                            }
                        },
                    }
                )
    return configs


@pytest.fixture
def hub_app(
    ctx: HubContext,
    tmp_path: Path,
    sessions: SessionFactory,
    clock: FrozenClock,
    publisher: RecordingPublisher,
) -> FastAPI:
    """The hub's app as `fleet hub` serves it, with an update repository, so that /keys works."""
    repo = open_repository(Settings(data_dir=tmp_path / "tuf"), sessions, tuf=TufSettings(), clock=clock)
    assert ensure_initialized(repo)
    signing = Signing(repo, Director(repo, clock=clock), sessions, publisher)
    # The API on the wall clock: a change stamps updated_at anew, so no accepted change is a no-op
    # for the audit check (a frozen clock would make a PATCH repeating the current values one).
    return create_app(dataclasses.replace(ctx, signing=signing, clock=utcnow))


@pytest.fixture
def admin_token(sessions: SessionFactory) -> str:
    with sessions() as s:
        _row, secret = tokens.create_token(s, "fuzz-admin", Role.ADMIN)
    return secret


@dataclass(frozen=True)
class Failure:
    operation: str
    check: str
    title: str
    request: str
    status: int | None
    body: str

    def __str__(self) -> str:
        return f"{self.operation}: {self.check} ({self.title}) {self.request} -> {self.status} {self.body}"


@dataclass
class Run:
    failures: dict[tuple[str, str, str], Failure] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    phases: dict[str, Status] = field(default_factory=dict)
    scenarios: Counter[str] = field(default_factory=Counter)
    # Request id -> "METHOD uri" of every change the API accepted (2xx to a method that mutates).
    accepted_changes: dict[str, str] = field(default_factory=dict)


_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Accepted changes that may leave the database as it was, so that no audit row is owed: revoking a
# token or a device that is already revoked answers 200 and says so, and logging out without a session
# (with the bearer token) has no session to end.
_MAY_CHANGE_NOTHING = re.compile(
    r"^(DELETE \S*/api/v1/tokens/|POST \S*/credentials/revoke$|DELETE \S*/api/v1/session$)"
)


def _applied_nothing(uri: str, body: bytes) -> bool:
    """An alert rules document that only repeats the rules as they are: the answer lists none as
    created or updated, and there is nothing to audit."""
    if not uri.split("?", maxsplit=1)[0].endswith("/api/v1/alert-rules/apply"):
        return False
    answer = json.loads(body)
    return not answer.get("created") and not answer.get("updated")


def _note_changes(run: Run, event: events.ScenarioFinished) -> None:
    for interaction in event.recorder.interactions.values():
        response = interaction.response
        if response is None or interaction.request.method.upper() not in _MUTATING:
            continue
        if not 200 <= response.status_code < 300:
            continue
        if _applied_nothing(interaction.request.uri, response.content):
            continue
        request_id = next(iter(response.headers.get("x-request-id") or []), None)
        assert request_id, f"{interaction.request.method} {interaction.request.uri}: no X-Request-ID"
        run.accepted_changes[request_id] = f"{interaction.request.method.upper()} {interaction.request.uri}"


def _failure(event: events.ScenarioFinished, case_id: str, node: Any) -> Failure:
    interaction = event.recorder.interactions.get(case_id)
    response = interaction.response if interaction is not None else None
    title = node.failure_info.failure.title if node.failure_info is not None else ""
    request = ""
    if interaction is not None:
        sent = interaction.request
        request = f"{sent.method} {sent.uri} {sent.headers.get('content-type')} {(sent.body or b'')[:200]!r}"
    return Failure(
        event.label or request,
        node.name,
        title,
        request[:600],
        getattr(response, "status_code", None),
        (response.content or b"")[:300].decode("utf-8", "replace") if response is not None else "",
    )


def _run(stream: Any) -> Run:
    run = Run()
    for event in stream:
        if isinstance(event, events.ScenarioFinished):
            run.scenarios[event.phase.value] += 1
            _note_changes(run, event)
            for case_id, nodes in event.recorder.checks.items():
                for node in nodes:
                    if node.status == Status.FAILURE:
                        found = _failure(event, case_id, node)
                        run.failures.setdefault((found.operation, found.check, found.title), found)
        elif isinstance(event, events.PhaseFinished):
            run.phases[event.phase.name.value] = event.status
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            run.errors.append(f"{type(event).__name__}: {str(getattr(event, 'info', event))[:500]}")
    return run


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_schemathesis_finds_nothing(hub_app: FastAPI, admin_token: str, sessions: SessionFactory) -> None:
    with TestClient(hub_app) as client:
        document = client.get("/openapi.json").json()
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "checks": {"enabled": True},
            "headers": {"Authorization": f"Bearer {admin_token}"},
            # NUL characters in text are refused with a 422 (PostgreSQL cannot store them), a rule that
            # the document's string schemas do not state; the unit tests cover that answer.
            "generation": {"max-examples": MAX_EXAMPLES, "allow-x00": False},
            "phases": {"stateful": {"enabled": True, "max-steps": STATEFUL_STEPS}},
            "operations": _operations_config(document),
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", hub_app, config=config)
    run = _run(from_schema(schema).execute())
    assert not run.errors, "\n".join(run.errors)
    failures = list(run.failures.values())
    assert not failures, f"{len(failures)} failure(s):\n" + "\n".join(str(f) for f in failures)
    for phase in ("examples", "coverage", "fuzzing", "stateful"):
        assert run.phases.get(phase) == Status.SUCCESS, f"phase {phase}: {run.phases.get(phase)}"
        assert run.scenarios[phase] > 0, f"phase {phase} ran no scenario: {dict(run.scenarios)}"
    # Every change the fuzzer got accepted is in the audit log under its request id.
    assert len(run.accepted_changes) >= 10, run.accepted_changes
    with sessions() as s:
        audited = set(s.exec(select(AuditEntry.request_id).distinct()).all())
    unaudited = sorted(
        change
        for request_id, change in run.accepted_changes.items()
        if request_id not in audited and not _MAY_CHANGE_NOTHING.match(change)
    )
    assert not unaudited, f"{len(unaudited)} accepted change(s) left no audit row:\n" + "\n".join(unaudited)


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", template)


def test_without_a_token_every_api_route_answers_401(hub_app: FastAPI) -> None:
    seen = 0
    with TestClient(hub_app) as client:
        for route in iter_route_contexts(hub_app.routes):
            template = route.path_format or route.path or ""
            if not template.startswith("/api/"):
                continue
            for method in sorted(route.methods or ()):
                if (method, template) in PUBLIC_ROUTES:
                    continue
                # A body that would fail validation: the token must be checked before it is read.
                response: httpx.Response = client.request(
                    method,
                    _concrete(template),
                    content=b"{not json",
                    headers={"Content-Type": "application/json"},
                )
                seen += 1
                assert response.status_code == 401, (method, template, response.status_code, response.text)
                assert response.headers["content-type"].startswith(PROBLEM_JSON), (method, template)
                assert response.headers.get("www-authenticate", "").startswith("Bearer"), (method, template)
                assert response.json()["status"] == 401
        unknown = client.get("/api/v1/no-such-thing")
        assert unknown.status_code == 401, unknown.text
    assert seen > 50, f"only {seen} /api operations found: the route walk is broken"
