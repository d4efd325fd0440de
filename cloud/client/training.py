"""The continuous-training part of the hub's HTTP API: runs, approvals, labelled uploads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloud.client.hub import HubClient

__all__ = ["TrainingApi"]


class TrainingApi:
    """The hub's training and labelled-data routes, through a HubClient's requests."""

    def __init__(self, client: HubClient) -> None:
        self._client = client

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._client._request(method, path, **kwargs)
        return result

    def runs_page(
        self, *, state: str | None, model: str | None, limit: int | None, cursor: str | None
    ) -> dict[str, Any]:
        given = {"state": state, "model": model, "limit": limit, "cursor": cursor}
        return self._call("GET", "/api/v1/training/runs", params={k: v for k, v in given.items() if v})

    def run(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/training/runs/{run_id}")

    def start(self, model: str, reason: str) -> dict[str, Any]:
        return self._call("POST", "/api/v1/training/runs", json={"model": model, "reason": reason})

    def act(self, run_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/training/runs/{run_id}/{action}", json=body)

    def add_labelled(self, path: Path, model: str | None) -> dict[str, Any]:
        with path.open("rb") as fh:
            return self._call(
                "POST",
                "/api/v1/datasets/labelled",
                data={"model": model} if model else {},
                files={"file": (path.name, fh, "application/octet-stream")},
            )

    def labelled_page(self, *, limit: int | None, cursor: str | None) -> dict[str, Any]:
        given = {"limit": limit, "cursor": cursor}
        return self._call("GET", "/api/v1/datasets/labelled", params={k: v for k, v in given.items() if v})
