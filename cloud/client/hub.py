"""A small typed client for the hub's HTTP API; the CLI and the demo use it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import httpx

DEFAULT_HUB_URL = "http://127.0.0.1:8080"


class HubError(RuntimeError):
    """The hub refused a request (``status`` is its HTTP status) or a request could not be made."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HubUnreachableError(HubError):
    """No answer from the hub: connection refused, a timeout, a name that does not resolve."""


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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise HubUnreachableError(f"cannot reach the hub at {self.base_url}: {e}") from e
        except httpx.HTTPError as e:
            raise HubError(f"request to the hub at {self.base_url} failed: {e}") from e
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
        """Every version (of model ``name``), following the pages to the end."""
        params = {"name": name} if name else {}

        def page(cursor: str | None) -> dict[str, Any]:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            result: dict[str, Any] = self._request("GET", "/api/v1/models", params=query)
            return result

        return self._all_pages(page)

    def list_devices(self, *, state: str | None = None, label: str | None = None) -> list[dict[str, Any]]:
        """Every device matching the filters (``label`` is a selector), following the pages to the end."""
        return self._all_pages(lambda cursor: self.devices_page(state=state, label=label, cursor=cursor))

    def devices_page(
        self,
        *,
        state: str | None = None,
        label: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of devices: ``data``, ``count`` and ``next_cursor`` (None on the last page)."""
        given = {"state": state, "label": label, "limit": limit, "cursor": cursor}
        params = {k: v for k, v in given.items() if v}
        result: dict[str, Any] = self._request("GET", "/api/v1/devices", params=params)
        return result

    @staticmethod
    def _all_pages(fetch: Callable[[str | None], dict[str, Any]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = fetch(cursor)
            rows.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return rows

    def device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/devices/{device_id}")
        return result

    def device_events(self, device_id: str, limit: int = 20) -> list[dict[str, Any]]:
        return list(
            self._request("GET", f"/api/v1/devices/{device_id}/events", params={"limit": limit})["data"]
        )

    def list_rollbacks(
        self,
        *,
        device: str | None = None,
        model: str | None = None,
        version: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"device": device, "model": model, "version": version}.items() if v}
        result: dict[str, Any] = self._request("GET", "/api/v1/rollbacks", params={**params, "limit": limit})
        return list(result["data"])

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
        selector: dict[str, str] | str | None = None,
        trial_policy: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``selector``: ``{key: value}`` pairs, or a selector's text such as ``"site in (a,b),!retired"``;
        ``trial_policy``: how the devices judge the version's trial (model_tools.trial_policy)."""
        if bool(devices) == bool(selector):
            raise HubError("assign needs either device ids or a label selector, not both and not neither")
        body: dict[str, Any] = {"model": model, "version": version}
        if devices:
            body["devices"] = devices
        else:
            body["selector"] = selector
        if trial_policy is not None:
            body["trial_policy"] = trial_policy
        result: dict[str, Any] = self._request("POST", "/api/v1/assignments", json=body)
        return result

    # --- experiments and bundles (the optimization pipeline) -------------------------------

    def record_experiment(self, record: dict[str, Any]) -> dict[str, Any]:
        """Record a training run (idempotent for the same record)."""
        result: dict[str, Any] = self._request("PUT", f"/api/v1/experiments/{record['run_id']}", json=record)
        return result

    def list_experiments(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"name": name} if name else {})
        return list(self._request("GET", "/api/v1/experiments", params=params)["data"])

    def experiment(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/experiments/{run_id}")
        return result

    def push_bundle(self, directory: Path) -> dict[str, Any]:
        """Upload a bundle folder: its manifest.json and every file the manifest pins."""
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise HubError(f"not a bundle folder: {manifest_path} is missing")
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
            names = [v["file"] for v in manifest["variants"]] + [manifest["profile"]["file"]]
        except (ValueError, KeyError, TypeError) as e:
            raise HubError(f"{manifest_path} is not a bundle manifest: {e}") from e
        with contextlib.ExitStack() as stack:
            manifest_file = stack.enter_context(manifest_path.open("rb"))
            parts: list[tuple[str, tuple[str, Any, str]]] = [
                ("manifest", ("manifest.json", manifest_file, "application/json"))
            ]
            for name in names:
                fh = stack.enter_context((directory / Path(name).name).open("rb"))
                parts.append(("file", (Path(name).name, fh, "application/octet-stream")))
            result: dict[str, Any] = self._request("POST", "/api/v1/bundles", files=parts)
        return result

    def bundle(self, name: str, version: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/models/{name}/{version}/bundle")
        return result

    # --- rollouts ------------------------------------------------------------------------

    def create_rollout(
        self, plan: str | bytes, *, content_type: str = "application/yaml", supersede: bool = False
    ) -> dict[str, Any]:
        """Start a rollout from a plan's YAML or JSON text; the answer is the rollout's full view."""
        result: dict[str, Any] = self._request(
            "POST",
            "/api/v1/rollouts",
            content=plan.encode("utf-8") if isinstance(plan, str) else plan,
            headers={"Content-Type": content_type},
            params={"supersede": "true"} if supersede else {},
        )
        return result

    def list_rollouts(
        self, *, state: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page, newest first: ``data``, ``count`` and ``next_cursor`` (None on the last page)."""
        params = {k: v for k, v in {"state": state, "limit": limit, "cursor": cursor}.items() if v}
        result: dict[str, Any] = self._request("GET", "/api/v1/rollouts", params=params)
        return result

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/rollouts/{rollout_id}")
        return result

    def rollout_action(self, rollout_id: str, action: str, *, reason: str = "") -> dict[str, Any]:
        """pause, resume, approve, abort or rollback; the answer is the rollout's view afterwards."""
        result: dict[str, Any] = self._request(
            "POST", f"/api/v1/rollouts/{rollout_id}/{action}", json={"reason": reason}
        )
        return result

    # --- device labels and cohorts ------------------------------------------------------------

    def set_device_labels(
        self,
        device_id: str,
        *,
        set_labels: dict[str, str | None] | None = None,
        remove: list[str] | None = None,
    ) -> dict[str, Any]:
        """Set operator labels (None or "-" hides a reported one) and drop others; returns all three sets."""
        body = {"set": set_labels or {}, "remove": remove or []}
        result: dict[str, Any] = self._request("PATCH", f"/api/v1/devices/{device_id}/labels", json=body)
        return result

    def replace_device_labels(self, device_id: str, labels: dict[str, str | None]) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "PUT", f"/api/v1/devices/{device_id}/labels", json={"labels": labels}
        )
        return result

    def create_cohort(
        self,
        name: str,
        *,
        selector: str | None = None,
        devices: list[str] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "description": description}
        if selector is not None:
            body["selector"] = selector
        if devices:
            body["devices"] = devices
        result: dict[str, Any] = self._request("POST", "/api/v1/cohorts", json=body)
        return result

    def cohorts_page(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """One page of cohorts: ``data``, ``count`` and ``next_cursor`` (None on the last page)."""
        params = {k: v for k, v in {"limit": limit, "cursor": cursor}.items() if v}
        result: dict[str, Any] = self._request("GET", "/api/v1/cohorts", params=params)
        return result

    def list_cohorts(self) -> list[dict[str, Any]]:
        return self._all_pages(lambda cursor: self.cohorts_page(cursor=cursor))

    def cohort(self, name: str, *, members: int | None = None) -> dict[str, Any]:
        """A cohort with its member count and first ``members`` members."""
        params = {"members": members} if members else {}
        result: dict[str, Any] = self._request("GET", f"/api/v1/cohorts/{name}", params=params)
        return result

    def cohort_members_page(
        self, name: str, *, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        params = {k: v for k, v in {"limit": limit, "cursor": cursor}.items() if v}
        result: dict[str, Any] = self._request("GET", f"/api/v1/cohorts/{name}/members", params=params)
        return result

    def delete_cohort(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/cohorts/{name}")

    def drift_report(self, *, cohort: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """The newest scores per cohort and model version (``cohort="@fleet"``: the whole fleet)."""
        params = {k: v for k, v in {"cohort": cohort, "model": model}.items() if v}
        result: dict[str, Any] = self._request("GET", "/api/v1/drift", params=params)
        return list(result["data"])

    def drift_series(self, metric: str, *, model: str, **filters: Any) -> list[dict[str, Any]]:
        params = {"metric": metric, "model": model, **{k: v for k, v in filters.items() if v is not None}}
        result: dict[str, Any] = self._request("GET", "/api/v1/drift/series", params=params)
        return list(result["data"])


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        detail = body["errors"]  # a validation problem: one sentence per field beats its summary
    if isinstance(detail, list) and detail and all(isinstance(d, dict) and "msg" in d for d in detail):
        return "; ".join(validation_sentence(d) for d in detail)[:1000]
    return str(detail)[:1000]


# Where a request carried the value: a query parameter is what the CLI calls an --option.
_LOCATIONS = ("query", "body", "path", "header", "form")


def validation_sentence(error: dict[str, Any]) -> str:
    """One FastAPI/pydantic validation error as a sentence: what was expected and what came.

    ``{"loc": ["query", "state"], "msg": "Input should be 'online' or 'offline'", "input": "bogus"}``
    becomes ``--state: expected 'online' or 'offline'; got 'bogus'``.
    """
    loc = [str(part) for part in error.get("loc", [])]
    where = loc[0] if loc and loc[0] in _LOCATIONS else ""
    path = loc[1:] if where else loc
    if where == "query" and len(path) == 1:
        field = "--" + path[0].replace("_", "-")
    else:
        field = ".".join(path) or where or "request"
    msg = str(error.get("msg", "invalid"))
    for lead in ("Input should be ", "Value error, "):
        if msg.startswith(lead):
            msg = ("expected " if lead.startswith("Input") else "") + msg[len(lead) :]
            break
    else:
        msg = msg[:1].lower() + msg[1:]
    if "input" in error and error.get("type") != "missing":
        return f"{field}: {msg}; got {error['input']!r}"
    return f"{field}: {msg}"
