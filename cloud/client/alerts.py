"""The alerts part of the hub's HTTP API, for the CLI: alerts, rules, receivers."""

from __future__ import annotations

from typing import Any

from cloud.client.hub import HubClient

__all__ = ["AlertsClient"]


def _params(**given: Any) -> dict[str, Any]:
    return {k: v for k, v in given.items() if v is not None and v != ""}


class AlertsClient(HubClient):
    def alerts_page(
        self,
        *,
        state: str | None = None,
        cohort: str | None = None,
        cohort_id: int | None = None,
        rule: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of alerts, newest first: ``data``, ``count`` and ``next_cursor``."""
        params = _params(
            state=state, cohort=cohort, cohort_id=cohort_id, rule=rule, limit=limit, cursor=cursor
        )
        result: dict[str, Any] = self._request("GET", "/api/v1/alerts", params=params)
        return result

    def alert(self, alert_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/alerts/{alert_id}")
        return result

    def rules_page(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", "/api/v1/alert-rules", params=_params(limit=limit, cursor=cursor)
        )
        return result

    def all_rules(self) -> list[dict[str, Any]]:
        return self._all_pages(lambda cursor: self.rules_page(cursor=cursor))

    def apply_rules(self, text: str, *, content_type: str = "application/yaml") -> dict[str, Any]:
        """Create or replace the rules of a rules file: ``created``, ``updated``, ``unchanged`` names."""
        result: dict[str, Any] = self._request(
            "POST",
            "/api/v1/alert-rules/apply",
            content=text.encode("utf-8"),
            headers={"Content-Type": content_type},
        )
        return result

    def delete_rule(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/alert-rules/{name}")

    def receivers_page(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", "/api/v1/alert-receivers", params=_params(limit=limit, cursor=cursor)
        )
        return result

    def add_receiver(
        self, name: str, url: str, *, description: str = "", enabled: bool = True
    ) -> dict[str, Any]:
        body = {"name": name, "url": url, "description": description, "enabled": enabled}
        result: dict[str, Any] = self._request("POST", "/api/v1/alert-receivers", json=body)
        return result

    def delete_receiver(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/alert-receivers/{name}")
