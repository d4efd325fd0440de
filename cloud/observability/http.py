"""Timing every API request into the hub's metrics, and one access log line per request.

Added inside ``RequestIdMiddleware`` so that its log line carries the request id. The ``route``
label is the matched route's template (``/api/v1/devices/{device_id}``), read from the scope the
router fills in, never the raw path: one series per route, whatever ids callers send. A request no
route matched is labelled ``<unmatched>``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.observability.metrics import HttpMetrics

__all__ = ["ACCESS_LOGGER", "UNMATCHED", "HttpMetricsMiddleware", "route_template", "route_templates"]

ACCESS_LOGGER = "cloud.access"
UNMATCHED = "<unmatched>"

access_log = logging.getLogger(ACCESS_LOGGER)


def route_template(scope: Scope, templates: Mapping[int, str] | None = None) -> str:
    """The full template of the route that handled the request, ``<unmatched>`` when none did.

    FastAPI leaves the matched route in ``scope["route"]``, but a route of an included router knows
    only its own part of the path (``/devices/{device_id}``); ``templates`` maps each route to its
    whole template, as :func:`route_templates` reads it from the app.
    """
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    if templates is not None and id(route) in templates:
        return templates[id(route)]
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


def route_templates(app: Any) -> dict[int, str]:
    """Every route of ``app`` (by identity) and its full path template, prefixes of routers included."""
    found: dict[int, str] = {}
    for context in iter_route_contexts(getattr(app, "routes", [])):
        template = context.path_format or context.path
        if template:
            found.setdefault(id(context.original_route), template)
    return found


class HttpMetricsMiddleware:
    """Counts and times each HTTP request by method, route template and status class."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._templates: dict[int, str] | None = None  # read from the app at its first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before starting a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            method = str(scope.get("method", "")).upper()
            if self._templates is None and "app" in scope:
                self._templates = route_templates(scope["app"])
            route = route_template(scope, self._templates)
            self.metrics.observe(method, route, status, seconds)
            # Route template, not the path: the query string and path ids may hold what a log must not.
            access_log.info(
                "%s %s %d %.1f ms",
                method,
                route,
                status,
                seconds * 1000,
                extra={"method": method, "route": route, "status": status, "duration_ms": seconds * 1000},
            )
