"""Serving the dashboard's files with security headers on every answer."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UI_PATH = "/ui"

# Everything comes from the hub itself: no inline script or style, no other origin, no framing.
# 'self' for connect-src covers the API calls; the charts are SVG built with DOM calls, not markup.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # The pages are small and change with the hub's version: always ask again, never serve stale code.
    (b"cache-control", b"no-cache"),
)


def static_dir() -> Path:
    """The folder of the dashboard's files, as installed with the package."""
    return Path(str(files("cloud.dashboard") / "static"))


class DashboardHeaders:
    """Adds the headers above to every answer under ``/ui`` (files, 404s and redirects alike).

    A middleware rather than a wrapper of the files: the 404 of a missing file is made by the app's
    error handlers, outside the mounted app, and must carry the headers too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != UI_PATH and not path.startswith(f"{UI_PATH}/"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in _HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = [*kept, *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/ui/`` (``/ui`` redirects there); left out of the OpenAPI document."""
    folder = static_dir()
    if not (folder / "index.html").is_file():
        raise RuntimeError(f"the dashboard's files are missing: expected {folder / 'index.html'}")

    @app.get(UI_PATH, include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/", status_code=308)

    app.mount(UI_PATH, StaticFiles(directory=folder, html=True), name="dashboard")
    app.add_middleware(DashboardHeaders)
