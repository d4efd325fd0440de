"""Every /api route against every kind of caller: no credentials, an expired token, a revoked token,
and a valid token of each role.

The role a route needs is read from its dependencies (``cloud.api.deps.require``), so a route added
later is covered without touching this file, and a route under /api that declares no role fails here.
The only routes open without credentials are those in ``cloud.api.auth.PUBLIC_ROUTES``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.api.auth import PUBLIC_ROUTES
from cloud.api.deps import required_role
from cloud.context import HubContext
from cloud.models import Role
from cloud.services import tokens
from tests.unit.cloud.helpers import FrozenClock

_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")
DENIED = (401, 403)


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str
    role: Role | None

    @property
    def path(self) -> str:
        # Values of the right type that name nothing: a caller let in gets 404 or 422, never 401/403.
        return _PARAM.sub(lambda m: "1" if m.group(2) == "int" else "zz-none", self.template)

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def api_endpoints(app: FastAPI) -> list[Endpoint]:
    found = []
    for rc in iter_route_contexts(app.routes):
        if not isinstance(rc.original_route, APIRoute) or not str(rc.path).startswith("/api/"):
            continue
        role = required_role(rc.dependant)
        for method in sorted(rc.methods or ()):
            found.append(Endpoint(method, str(rc.path_format), role))
    return found


@pytest.fixture
def app(ctx: HubContext) -> FastAPI:
    return create_app(ctx)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def callers(ctx: HubContext, clock: FrozenClock) -> dict[str, dict[str, str]]:
    """Headers of each kind of caller; the expired token was valid a minute ago."""
    headers: dict[str, dict[str, str]] = {"none": {}}
    with ctx.sessions() as s:
        for role in Role:
            headers[role.value] = {"Authorization": f"Bearer {tokens.create_token(s, role.value, role)[1]}"}
        expired = tokens.create_token(s, "expired", Role.ADMIN, expires_in_s=60, clock=clock)[1]
        revoked = tokens.create_token(s, "revoked", Role.ADMIN)[1]
        tokens.revoke_token(s, "revoked", clock=clock)
    clock.advance(61)
    headers["expired"] = {"Authorization": f"Bearer {expired}"}
    headers["revoked"] = {"Authorization": f"Bearer {revoked}"}
    return headers


def expected_denial(endpoint: Endpoint, caller: str) -> int | None:
    """401 or 403 when the caller must be refused; None when it must get past authorization."""
    if (endpoint.method, endpoint.template) in PUBLIC_ROUTES:
        return None
    if caller in ("none", "expired", "revoked"):
        return 401
    assert endpoint.role is not None
    return None if Role(caller).allows(endpoint.role) else 403


def test_every_api_route_declares_a_role(app: FastAPI) -> None:
    endpoints = api_endpoints(app)
    assert len(endpoints) > 50, "the app's routes were not found"
    open_routes = [
        str(e) for e in endpoints if e.role is None and (e.method, e.template) not in PUBLIC_ROUTES
    ]
    assert open_routes == [], "routes under /api with no ViewerDep/OperatorDep/AdminDep"
    assert {(e.method, e.template) for e in endpoints} >= PUBLIC_ROUTES


def test_the_matrix_of_routes_and_callers(
    app: FastAPI, client: TestClient, callers: dict[str, dict[str, str]]
) -> None:
    wrong: list[str] = []
    counted = 0
    for endpoint in api_endpoints(app):
        for caller, headers in callers.items():
            # A JSON body that fits no route: a caller let in is refused for its content, not its token.
            r = client.request(endpoint.method, endpoint.path, headers=headers, json={"zz": 1})
            counted += 1
            want = expected_denial(endpoint, caller)
            if want is None and r.status_code in DENIED:
                wrong.append(f"{endpoint} as {caller}: expected to pass, got {r.status_code} {r.text[:120]}")
            elif want is not None and r.status_code != want:
                wrong.append(f"{endpoint} as {caller}: expected {want}, got {r.status_code} {r.text[:120]}")
            elif want == 401 and r.headers.get("www-authenticate") != "Bearer":
                wrong.append(f"{endpoint} as {caller}: 401 without WWW-Authenticate: Bearer")
    assert wrong == []
    assert counted >= 6 * 50


def test_the_roles_of_a_few_routes_are_what_the_docs_say(app: FastAPI) -> None:
    roles = {str(e): e.role for e in api_endpoints(app)}
    assert roles["GET /api/v1/devices"] is Role.VIEWER
    assert roles["POST /api/v1/cohorts"] is Role.OPERATOR
    assert roles["GET /api/v1/audit"] is Role.OPERATOR
    assert roles["GET /api/v1/tokens"] is Role.ADMIN
    assert roles["DELETE /api/v1/tokens/{name}"] is Role.ADMIN
    assert roles["POST /api/v1/keys/rotations"] is Role.ADMIN
