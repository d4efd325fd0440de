"""Token service: only digests are stored; the bootstrap admin token is written privately, once."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlmodel import select

from cloud.db import SessionFactory
from cloud.errors import ConflictError
from cloud.models import ApiToken, Role
from cloud.services import tokens


class TestTokens:
    def test_create_and_authenticate(self, sessions: SessionFactory) -> None:
        with sessions() as s:
            row, secret = tokens.create_token(s, "ci", Role.OPERATOR)
            assert row.token_sha256 == tokens.token_digest(secret) != secret
            found = tokens.authenticate(s, secret)
            assert found is not None and (found.name, found.role) == ("ci", Role.OPERATOR)
            assert tokens.authenticate(s, secret + "x") is None
            assert tokens.authenticate(s, "") is None
            with pytest.raises(ConflictError, match="'ci' already exists"):
                tokens.create_token(s, "ci", Role.VIEWER)

    def test_roles_are_ordered(self) -> None:
        assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
        assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)

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
