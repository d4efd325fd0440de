"""Authentication of /api requests: bearer tokens that expire and are revoked, dashboard sessions with a
CSRF token, and the order of checks (credentials before any body is read)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.models import Role
from cloud.services import tokens
from tests.unit.cloud.helpers import FrozenClock


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def issue(ctx: HubContext, name: str, role: Role, expires_in_s: int | None = None) -> str:
    with ctx.sessions() as s:
        return tokens.create_token(s, name, role, expires_in_s=expires_in_s, clock=ctx.clock)[1]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _problem(r: Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert isinstance(body, dict)
    assert body["status"] == status and body["request_id"] == r.headers["x-request-id"]
    return body


class TestBearer:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/api/v1/devices"),
            ("GET", "/api/v1/no-such-thing"),
            ("DELETE", "/api/v1/devices"),  # a method the path does not serve
            ("POST", "/api/v1/tokens"),
            ("GET", "/api"),
        ],
    )
    def test_every_api_path_needs_credentials(self, client: TestClient, method: str, path: str) -> None:
        r = client.request(method, path)
        body = _problem(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"
        assert body["instance"] == path and "expected an 'Authorization: Bearer <token>'" in str(
            body["detail"]
        )

    def test_paths_outside_the_api_are_not_touched(self, client: TestClient) -> None:
        assert client.get("/healthz").status_code == 200

    def test_a_route_outside_the_api_with_a_role_checks_the_token_itself(
        self, client: TestClient, ctx: HubContext
    ) -> None:
        admin = issue(ctx, "root", Role.ADMIN)
        viewer = issue(ctx, "scraper", Role.VIEWER)
        assert client.get("/metrics", headers=bearer(viewer)).status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.delete("/api/v1/tokens/scraper", headers=bearer(admin)).status_code == 200
        body = _problem(client.get("/metrics", headers=bearer(viewer)), 401)
        assert "'scraper' was revoked" in str(body["detail"])

    def test_credentials_are_checked_before_the_body_is_parsed(
        self, client: TestClient, ctx: HubContext
    ) -> None:
        json_type = {"Content-Type": "application/json"}
        assert client.post("/api/v1/tokens", content=b"{not json", headers=json_type).status_code == 401
        viewer = issue(ctx, "v", Role.VIEWER)
        r = client.post("/api/v1/tokens", content=b"{not json", headers={**bearer(viewer), **json_type})
        body = _problem(r, 403)
        assert "needs the admin role; token 'v' has viewer" in str(body["detail"])

    def test_expired_and_revoked_tokens_say_why_and_never_echo_the_secret(
        self, client: TestClient, ctx: HubContext, clock: FrozenClock
    ) -> None:
        admin = issue(ctx, "root", Role.ADMIN)
        short = issue(ctx, "short", Role.VIEWER, expires_in_s=60)
        gone = issue(ctx, "gone", Role.VIEWER)
        assert client.get("/api/v1/devices", headers=bearer(short)).status_code == 200
        clock.advance(60)
        body = _problem(client.get("/api/v1/devices", headers=bearer(short)), 401)
        assert "'short' expired at" in str(body["detail"]) and short not in str(body)
        assert client.delete("/api/v1/tokens/gone", headers=bearer(admin)).status_code == 200
        body = _problem(client.get("/api/v1/devices", headers=bearer(gone)), 401)
        assert "'gone' was revoked at" in str(body["detail"]) and gone not in str(body)
        body = _problem(client.get("/api/v1/devices", headers=bearer("nope")), 401)
        assert "invalid API token" in str(body["detail"]) and "nope" not in str(body["detail"])
        body = _problem(client.get("/api/v1/devices", headers={"Authorization": "Basic eDp5"}), 401)
        assert "malformed Authorization header" in str(body["detail"])


class TestTokenRoutes:
    def test_create_list_revoke(self, client: TestClient, ctx: HubContext, clock: FrozenClock) -> None:
        admin = bearer(issue(ctx, "root", Role.ADMIN))
        r = client.post(
            "/api/v1/tokens", headers=admin, json={"name": "ci", "role": "operator", "expires_in_s": 3600}
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["expires_at"] is not None and created["token"]
        listed = client.get("/api/v1/tokens", headers=admin).json()
        assert [t["name"] for t in listed["data"]] == ["ci", "root"]
        text = str(listed)
        assert created["token"] not in text and "sha256" not in text and "digest" not in text
        ci = listed["data"][0]
        assert ci["role"] == "operator" and ci["active"] and ci["revoked_at"] is None
        first = client.delete("/api/v1/tokens/ci", headers=admin).json()
        assert first["already_revoked"] is False and first["revoked_at"] and not first["active"]
        clock.advance(5)
        again = client.delete("/api/v1/tokens/ci", headers=admin).json()
        assert again["already_revoked"] is True and again["revoked_at"] == first["revoked_at"]
        body = _problem(client.delete("/api/v1/tokens/nope", headers=admin), 404)
        assert "no token named 'nope'" in str(body["detail"])

    def test_unknown_fields_and_bad_expiry_are_refused(self, client: TestClient, ctx: HubContext) -> None:
        admin = bearer(issue(ctx, "root", Role.ADMIN))
        for body in (
            {"name": "x", "role": "viewer", "expires_in_s": 0},
            {"name": "x", "role": "viewer", "ttl": 5},
        ):
            assert client.post("/api/v1/tokens", headers=admin, json=body).status_code == 422


class TestSessions:
    def login(self, client: TestClient, secret: str) -> dict[str, object]:
        r = client.post("/api/v1/session", json={"token": secret})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def test_login_sets_a_strict_httponly_cookie(self, client: TestClient, ctx: HubContext) -> None:
        secret = issue(ctx, "dash", Role.OPERATOR)
        r = client.post("/api/v1/session", json={"token": secret})
        body = r.json()
        assert (body["name"], body["role"]) == ("dash", "operator") and body["csrf_token"]
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("ef_session=") and secret not in cookie
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= flags and "secure" not in flags
        assert f"max-age={ctx.settings.session_ttl_s}" in flags

    def test_the_cookie_is_secure_over_https(self, ctx: HubContext) -> None:
        secret = issue(ctx, "dash", Role.VIEWER)
        with TestClient(create_app(ctx), base_url="https://hub.example") as c:
            cookie = c.post("/api/v1/session", json={"token": secret}).headers["set-cookie"]
        assert "secure" in {part.strip().lower() for part in cookie.split(";")}

    def test_a_bad_token_gets_no_session(
        self, client: TestClient, ctx: HubContext, clock: FrozenClock
    ) -> None:
        body = _problem(client.post("/api/v1/session", json={"token": "nope"}), 401)
        assert "invalid API token" in str(body["detail"])
        short = issue(ctx, "short", Role.VIEWER, expires_in_s=1)
        clock.advance(1)
        assert "'short' expired" in str(
            _problem(client.post("/api/v1/session", json={"token": short}), 401)["detail"]
        )
        assert client.post("/api/v1/session", json={"token": "x", "extra": 1}).status_code == 422

    def test_the_cookie_authenticates_and_unsafe_methods_need_the_csrf_token(
        self, client: TestClient, ctx: HubContext
    ) -> None:
        session = self.login(client, issue(ctx, "dash", Role.OPERATOR))
        # The client keeps the cookie: reads work with it alone.
        assert client.get("/api/v1/devices").status_code == 200
        who = client.get("/api/v1/session").json()
        assert who == session
        cohort = {"name": "lab", "selector": "site=lab"}
        body = _problem(client.post("/api/v1/cohorts", json=cohort), 403)
        assert "X-CSRF-Token" in str(body["detail"])
        assert (
            client.post("/api/v1/cohorts", json=cohort, headers={"X-CSRF-Token": "wrong"}).status_code == 403
        )
        csrf = {"X-CSRF-Token": str(session["csrf_token"])}
        assert client.post("/api/v1/cohorts", json=cohort, headers=csrf).status_code == 201
        # The role still counts: an operator's session cannot list tokens.
        assert client.get("/api/v1/tokens").status_code == 403

    def test_logout_ends_the_session_on_the_hub(self, client: TestClient, ctx: HubContext) -> None:
        session = self.login(client, issue(ctx, "dash", Role.VIEWER))
        cookie = client.cookies.get("ef_session")
        assert cookie
        assert client.delete("/api/v1/session").status_code == 403  # CSRF applies to logout too
        r = client.delete("/api/v1/session", headers={"X-CSRF-Token": str(session["csrf_token"])})
        assert r.status_code == 204 and 'ef_session=""' in r.headers["set-cookie"]
        client.cookies.set("ef_session", cookie)  # a copy of the old cookie is worth nothing now
        body = _problem(client.get("/api/v1/devices"), 401)
        assert "log in again" in str(body["detail"])

    def test_a_session_ends_with_its_ttl_and_never_outlives_its_token(
        self, client: TestClient, ctx: HubContext, clock: FrozenClock
    ) -> None:
        admin = bearer(issue(ctx, "root", Role.ADMIN))
        self.login(client, issue(ctx, "dash", Role.VIEWER))
        clock.advance(ctx.settings.session_ttl_s)
        assert "session expired at" in str(_problem(client.get("/api/v1/devices"), 401)["detail"])
        client.cookies.clear()
        self.login(client, issue(ctx, "dash2", Role.VIEWER))
        assert client.get("/api/v1/devices").status_code == 200
        assert client.delete("/api/v1/tokens/dash2", headers=admin).status_code == 200
        assert "'dash2' was revoked" in str(_problem(client.get("/api/v1/devices"), 401)["detail"])
        client.cookies.clear()
        short = self.login(client, issue(ctx, "short", Role.VIEWER, expires_in_s=120))
        # The token's expiry comes before the TTL's end: the session ends with the token.
        assert datetime.fromisoformat(str(short["expires_at"])) == clock.now + timedelta(seconds=120)

    def test_get_session_with_a_bearer_token_has_no_csrf_token(
        self, client: TestClient, ctx: HubContext
    ) -> None:
        r = client.get("/api/v1/session", headers=bearer(issue(ctx, "cli", Role.VIEWER)))
        assert r.json() == {"name": "cli", "role": "viewer", "csrf_token": None, "expires_at": None}
        assert "set-cookie" not in r.headers
