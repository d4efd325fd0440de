"""The hub client's calls for the signed-update channel: keys, rotations, firmware, root.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from cloud.client.hub import HubClient, HubError, HubUnreachableError

__all__ = ["SigningClient"]


class SigningClient(HubClient):
    def __enter__(self) -> SigningClient:
        return self

    def keys(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/api/v1/keys")
        return result

    def propose_rotation(
        self, role: str, *, root_keys: list[dict[str, Any]] | None = None, threshold: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"role": role}
        if root_keys is not None:
            body["root_keys"] = root_keys
        if threshold is not None:
            body["threshold"] = threshold
        result: dict[str, Any] = self._request("POST", "/api/v1/keys/rotations", json=body)
        return result

    def rotation(self, rotation_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/keys/rotations/{rotation_id}")
        return result

    def sign_rotation(self, rotation_id: int, signatures: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/api/v1/keys/rotations/{rotation_id}/signatures", json={"signatures": signatures}
        )
        return result

    def root_metadata(self, version: int | None = None) -> bytes:
        """The repository's root.json (latest, or one version): what devices are provisioned with."""
        name = "root.json" if version is None else f"{version}.root.json"
        try:
            response = self._http.get(f"/tuf/metadata/{name}")
        except httpx.TransportError as e:
            raise HubUnreachableError(f"cannot reach the hub at {self.base_url}: {e}") from e
        except httpx.HTTPError as e:
            raise HubError(f"request to the hub at {self.base_url} failed: {e}") from e
        if response.status_code != 200:
            raise HubError(f"hub answered {response.status_code} for {name}", status=response.status_code)
        return response.content

    def push_firmware(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise HubError(f"firmware bundle not found: {path}")
        with path.open("rb") as fh:
            result: dict[str, Any] = self._request(
                "POST", "/api/v1/firmware", files={"file": (path.name, fh, "application/octet-stream")}
            )
        return result

    def list_firmware(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every firmware image (of firmware ``name``), following the pages to the end."""
        params = {"name": name} if name else {}

        def page(cursor: str | None) -> dict[str, Any]:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            result: dict[str, Any] = self._request("GET", "/api/v1/firmware", params=query)
            return result

        return self._all_pages(page)

    def assign_firmware(
        self,
        *,
        name: str,
        version: str,
        hardware_id: str | None = None,
        devices: list[str] | None = None,
        selector: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if bool(devices) == bool(selector):
            raise HubError(
                "firmware assign needs either device ids or a label selector, not both and not neither"
            )
        body: dict[str, Any] = {"name": name, "version": version, "hardware_id": hardware_id}
        body["devices" if devices else "selector"] = devices or selector
        result: dict[str, Any] = self._request("POST", "/api/v1/firmware/assignments", json=body)
        return result
