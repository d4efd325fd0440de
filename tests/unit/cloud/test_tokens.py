"""Token service: only digests are stored; tokens expire and are revoked; the bootstrap admin token is
written privately, and again when every admin token has been revoked."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from cloud.db import SessionFactory
from cloud.errors import ConflictError, InvalidInputError, NotFoundError
from cloud.models import ApiToken, Role
from cloud.services import tokens
from tests.unit.cloud.helpers import T0, FrozenClock


class TestTokens:
    def test_create_and_authenticate(self, sessions: SessionFactory) -> None:
        with sessions() as s:
            row, secret = tokens.create_token(s, "ci", Role.OPERATOR)
            assert row.token_sha256 == tokens.token_digest(secret) != secret
            assert row.expires_at is None and row.revoked_at is None
            found = tokens.authenticate(s, secret)
            assert found is not None and (found.name, found.role) == ("ci", Role.OPERATOR)
            assert tokens.authenticate(s, secret + "x") is None
            assert tokens.authenticate(s, "") is None
            with pytest.raises(ConflictError, match="'ci' already exists"):
                tokens.create_token(s, "ci", Role.VIEWER)

    def test_roles_are_ordered(self) -> None:
        assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
        assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)

    def test_a_token_expires(self, sessions: SessionFactory, clock: FrozenClock) -> None:
        with sessions() as s:
            row, secret = tokens.create_token(s, "short", Role.VIEWER, expires_in_s=60, clock=clock)
            assert row.expires_at == clock.now + timedelta(seconds=60)
            assert tokens.authenticate(s, secret, clock=clock) is not None
            clock.advance(60)
            assert tokens.authenticate(s, secret, clock=clock) is None
            with pytest.raises(tokens.TokenExpiredError, match="'short' expired at") as caught:
                tokens.check_token(tokens.find_token(s, secret), clock())
            assert secret not in str(caught.value)

    @pytest.mark.parametrize("seconds", [0, -5, tokens.MAX_EXPIRES_IN_S + 1])
    def test_an_expiry_out_of_range_is_refused(self, sessions: SessionFactory, seconds: int) -> None:
        with sessions() as s, pytest.raises(InvalidInputError, match="expected 1 to"):
            tokens.create_token(s, "x", Role.VIEWER, expires_in_s=seconds)

    def test_revoking_is_idempotent_and_refuses_the_token(
        self, sessions: SessionFactory, clock: FrozenClock
    ) -> None:
        with sessions() as s:
            _row, secret = tokens.create_token(s, "old", Role.ADMIN, clock=clock)
            row, now = tokens.revoke_token(s, "old", clock=clock)
            revoked_at = clock.now
            assert now and row.revoked_at == revoked_at
            clock.advance(10)
            again, now = tokens.revoke_token(s, "old", clock=clock)
            assert not now and again.revoked_at == revoked_at
            assert tokens.authenticate(s, secret, clock=clock) is None
            with pytest.raises(tokens.TokenRevokedError, match="'old' was revoked at"):
                tokens.check_token(tokens.find_token(s, secret), clock())
            with pytest.raises(NotFoundError, match="no token named 'nope'"):
                tokens.revoke_token(s, "nope", clock=clock)

    def test_unknown_token_says_so(self, sessions: SessionFactory) -> None:
        with pytest.raises(tokens.UnknownTokenError, match="expected a token issued by this hub"):
            tokens.check_token(None, T0)

    def test_listing_pages_by_name(self, sessions: SessionFactory) -> None:
        with sessions() as s:
            for name in ("c", "a", "b"):
                tokens.create_token(s, name, Role.VIEWER)
            first = tokens.list_tokens(s, limit=2)
            assert [t.name for t in first.items] == ["a", "b"] and first.next_cursor
            rest = tokens.list_tokens(s, limit=2, cursor=first.next_cursor)
            assert [t.name for t in rest.items] == ["c"] and rest.next_cursor is None

    def test_use_is_noted_at_most_once_a_minute(self, sessions: SessionFactory, clock: FrozenClock) -> None:
        with sessions() as s:
            row, _secret = tokens.create_token(s, "u", Role.VIEWER, clock=clock)
            tokens.note_use(s, row, clock())
            s.refresh(row)
            first = row.last_used_at
            assert first == clock.now
            clock.advance(30)
            tokens.note_use(s, row, clock())
            s.refresh(row)
            assert row.last_used_at == first
            clock.advance(31)
            tokens.note_use(s, row, clock())
            s.refresh(row)
            assert row.last_used_at == clock.now

    def test_ensure_admin_token_writes_it_once(
        self, sessions: SessionFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = tmp_path / "secrets" / "admin.token"
        with sessions() as s:
            secret = tokens.ensure_admin_token(s, path)
            assert secret is not None
            assert path.read_text().strip() == secret
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert secret not in caplog.text and str(path) in caplog.text
            found = tokens.authenticate(s, secret)
            assert found is not None and found.role == Role.ADMIN
            assert tokens.ensure_admin_token(s, path) is None
            assert path.read_text().strip() == secret
            assert len(s.exec(select(ApiToken)).all()) == 1

    def test_a_revoked_admin_token_is_replaced_at_the_next_start(
        self, sessions: SessionFactory, tmp_path: Path
    ) -> None:
        path = tmp_path / "admin.token"
        with sessions() as s:
            first = tokens.ensure_admin_token(s, path)
            assert first is not None
            tokens.revoke_token(s, tokens.BOOTSTRAP_ADMIN)
            second = tokens.ensure_admin_token(s, path)
            assert second is not None and second != first
            assert path.read_text().strip() == second
            assert tokens.authenticate(s, second) is not None and tokens.authenticate(s, first) is None
