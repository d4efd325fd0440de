"""A small typed client for the hub's HTTP API; the CLI and the demo use it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

DEFAULT_HUB_URL = "http://127.0.0.1:8080"


class HubError(RuntimeError):
    """The hub refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def resolve_token(token: str | None, data_dir: Path | None = None) -> str | None:
    """Token from the argument, else EDGEFLEET_TOKEN, else the hub's admin token file (same machine)."""
    if token:
        return token
    env = os.environ.get("EDGEFLEET_TOKEN")
    if env:
        return env
    base = data_dir or Path(os.environ.get("EDGEFLEET_DATA_DIR", ".edgefleet"))
    path = base / "admin.token"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip() or None
    return None


class HubClient:
    def __init__(self, base_url: str = DEFAULT_HUB_URL, token: str | None = None, *, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise HubError(f"cannot reach the hub at {self.base_url}: {e}") from e
        if response.status_code >= 400:
            raise HubError(
                f"hub answered {response.status_code} to {method} {path}: {_detail(response)}",
                status=response.status_code,
            )
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/healthz")
        return result

    def push_model(self, path: Path, *, name: str, version: str, fmt: str = "onnx") -> dict[str, Any]:
        if not path.is_file():
            raise HubError(f"model file not found: {path}")
        with path.open("rb") as fh:
            result: dict[str, Any] = self._request(
                "POST",
                "/api/v1/models",
                data={"name": name, "version": version, "format": fmt},
                files={"file": (path.name, fh, "application/octet-stream")},
            )
        return result

    def list_models(self, name: str | None = None) -> list[dict[str, Any]]:
        params = {"name": name} if name else {}
        return list(self._request("GET", "/api/v1/models", params=params)["data"])

    def list_devices(self, *, state: str | None = None, label: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"state": state, "label": label}.items() if v}
        return list(self._request("GET", "/api/v1/devices", params=params)["data"])

    def device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/devices/{device_id}")
        return result

    def device_events(self, device_id: str, limit: int = 20) -> list[dict[str, Any]]:
        return list(
            self._request("GET", f"/api/v1/devices/{device_id}/events", params={"limit": limit})["data"]
        )

    def device_telemetry(self, device_id: str, limit: int = 20) -> list[dict[str, Any]]:
        return list(
            self._request("GET", f"/api/v1/devices/{device_id}/telemetry", params={"limit": limit})["data"]
        )

    def assign(
        self,
        *,
        model: str,
        version: str,
        devices: list[str] | None = None,
        selector: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if bool(devices) == bool(selector):
            raise HubError("assign needs either device ids or a label selector, not both and not neither")
        body: dict[str, Any] = {"model": model, "version": version}
        if devices:
            body["devices"] = devices
        else:
            body["selector"] = selector
        result: dict[str, Any] = self._request("POST", "/api/v1/assignments", json=body)
        return result


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)[:1000]
