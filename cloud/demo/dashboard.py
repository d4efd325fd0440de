"""The demo's dashboard: where to open it, and a token to log in with.

The demo's hub serves the dashboard like any hub (``/ui/``). The demo issues an operator token of its
own through the API, so that whoever watches can pause or approve the rollouts; the admin token stays
in the hub's data folder. It expires after a day.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud.client.auth import AuthClient
from cloud.client.hub import HubError
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
        with AuthClient(api_url, admin_token) as client:
            issued = client.create_token(DASHBOARD_TOKEN_NAME, role, expires_in_s=DASHBOARD_TOKEN_TTL_S)
    except HubError as e:
        raise RuntimeError(f"the hub at {api_url} did not issue the dashboard's token: {e}") from e
    return DashboardLogin(url=f"{api_url}{UI_PATH}/", token=str(issued["token"]), role=role)
