"""The device-identity part of the hub's HTTP API, for the CLI: provision, sign a CSR, revoke."""

from __future__ import annotations

from typing import Any

from cloud.client.hub import HubClient

__all__ = ["IdentityClient"]


class IdentityClient(HubClient):
    def __enter__(self) -> IdentityClient:
        return self

    def issue_credentials(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/api/v1/devices/{device_id}/credentials")
        return result

    def sign_csr(self, device_id: str, csr_pem: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/api/v1/devices/{device_id}/csr", json={"csr_pem": csr_pem}
        )
        return result

    def revoke_credentials(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/api/v1/devices/{device_id}/credentials/revoke")
        return result
