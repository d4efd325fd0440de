"""The tokens and audit parts of the hub's HTTP API, for the CLI."""

from __future__ import annotations

from typing import Any

from cloud.client.hub import HubClient

__all__ = ["AuthClient"]


def _params(**given: Any) -> dict[str, Any]:
    return {k: v for k, v in given.items() if v is not None and v != ""}


class AuthClient(HubClient):
    def create_token(self, name: str, role: str, *, expires_in_s: int | None = None) -> dict[str, Any]:
        """A new token; its secret is in the answer's ``token`` and nowhere else, ever."""
        body: dict[str, Any] = {"name": name, "role": role}
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        result: dict[str, Any] = self._request("POST", "/api/v1/tokens", json=body)
        return result

    def tokens_page(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", "/api/v1/tokens", params=_params(limit=limit, cursor=cursor)
        )
        return result

    def revoke_token(self, name: str) -> dict[str, Any]:
        """The token after revocation; ``already_revoked`` says whether it was before."""
        result: dict[str, Any] = self._request("DELETE", f"/api/v1/tokens/{name}")
        return result

    def audit_page(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        object_type: str | None = None,
        object_id: str | None = None,
        request_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of the audit log, newest first: ``data``, ``count`` and ``next_cursor``."""
        params = _params(
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            request_id=request_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
        result: dict[str, Any] = self._request("GET", "/api/v1/audit", params=params)
        return result
