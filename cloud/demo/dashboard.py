"""The demo's dashboard: where to open it, and a token to log in with.

The demo's hub serves the dashboard like any hub (``/ui/``). The demo issues an operator token of its
own through the API, so that whoever watches can pause or approve the rollouts; the admin token stays
in the hub's data folder. It expires after a day.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from cloud.dashboard import UI_PATH

__all__ = ["DASHBOARD_TOKEN_NAME", "DASHBOARD_TOKEN_TTL_S", "DashboardLogin", "dashboard_login"]

DASHBOARD_TOKEN_NAME = "demo-dashboard"  # noqa: S105 (a name, not a secret)
# A demo run takes minutes; a day covers a --workdir hub started again to look around afterwards.
DASHBOARD_TOKEN_TTL_S = 24 * 3600


@dataclass(frozen=True)
class DashboardLogin:
    url: str
    token: str
    role: str


def dashboard_login(api_url: str, admin_token: str, *, role: str = "operator") -> DashboardLogin:
    """Issue a token with ``role`` through ``POST /api/v1/tokens``; raises RuntimeError when refused."""
    try:
        response = httpx.post(
            f"{api_url}/api/v1/tokens",
            json={"name": DASHBOARD_TOKEN_NAME, "role": role, "expires_in_s": DASHBOARD_TOKEN_TTL_S},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=10,
        )
    except httpx.HTTPError as e:
        raise RuntimeError(f"cannot reach the hub at {api_url}: {e}") from e
    if response.status_code != 201:
        raise RuntimeError(
            f"expected the hub to issue the dashboard's token (201), got {response.status_code}: "
            f"{response.text[:300]}"
        )
    return DashboardLogin(url=f"{api_url}{UI_PATH}/", token=str(response.json()["token"]), role=role)
