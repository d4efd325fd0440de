"""Every error the API answers, in one shape: RFC 9457 problem details.

A problem is ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` (a human
sentence that says what was expected and what came), ``instance`` (the request's path) and
``request_id`` (the one echoed in ``X-Request-ID``, to find the request in the hub's logs). Validation
errors add ``errors``: one ``{"loc", "msg", "type"}`` per failed field, never the value that came, so a
megabyte of bad input does not come back.

Domain errors map to statuses here and nowhere else. The database being down is a 503 that names no
host; anything unexpected is a 500 that is logged with its request id and says nothing about itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud import errors
from cloud.api.requestctx import current_request_id
from cloud.api.routes.tuf import SigningUnavailableError
from cloud.db import DatabaseError
from cloud.storage import StorageError
from cloud.tuf.errors import NotInitializedError

__all__ = [
    "PROBLEM_JSON",
    "ProblemMiddleware",
    "ProblemResponse",
    "allowed_methods",
    "install_error_handlers",
    "problem_for_exception",
    "problem_response",
    "status_for",
]

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

_STATUS: dict[type[errors.HubError], int] = {
    errors.InvalidInputError: 422,
    errors.InvalidArtifactError: 400,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.TooLargeError: 413,
    errors.AuthError: 401,
    errors.ForbiddenError: 403,
    errors.RateLimitedError: 429,
    errors.DeliveryError: 503,
    errors.PublishError: 503,
    DatabaseError: 503,
    SigningUnavailableError: 503,
    NotInitializedError: 503,
    StorageError: 503,
}

# Bounds on what a validation problem repeats of the request: field names can be the caller's own
# (an unknown key), and a caller can send thousands of them.
_MAX_ERRORS = 20
_MAX_LOC_PART = 64
_MAX_MSG = 200

_DB_DOWN = "the database is unavailable; try again later"
_INTERNAL = "internal error; quote the request id when reporting it"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        # ASCII with \u escapes: a detail that quotes the caller's input may hold a lone surrogate
        # (from a JSON "\ud8b0"), which UTF-8 cannot encode; the error must not become a 500.
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def problem_response(
    status: int,
    detail: str,
    *,
    instance: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """An RFC 9457 problem: ``type`` and ``title`` default to ``about:blank`` and the status's phrase.

    ``extra`` adds members (``errors``, or a ``type``/``title`` of its own) to the body.
    """
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": current_request_id(),
    }
    body.update(extra)
    # Every refusal is in the log, with the id the caller was given: a 413 or a 401 is often the only
    # trace of a misconfigured client. Whitespace is folded so a caller's input cannot forge log lines.
    log.log(
        logging.ERROR if status >= 500 else logging.WARNING,
        "refused request %s: %d %s: %s",
        body["request_id"],
        status,
        _clip(" ".join(instance.split()), 200),
        _clip(" ".join(detail.split()), 500),
    )
    return ProblemResponse(body, status_code=status, headers=dict(headers) if headers else None)


def status_for(exc: errors.HubError) -> int:
    """The most specific mapping along the exception's class hierarchy."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def _hub_error(request: Request, exc: errors.HubError) -> JSONResponse:
    status = status_for(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, errors.RateLimitedError):
        headers["Retry-After"] = str(exc.retry_after_s)
    if status >= 500:
        if isinstance(exc, DatabaseError):
            return _database_down(request, exc)
        if status == 500:  # a domain error nobody mapped: a bug, told like any other
            return _unexpected(request, exc)
        log.error("request %s failed: %s", current_request_id(), exc)
    return problem_response(
        status, _without_paths(request, str(exc)), instance=request.url.path, headers=headers
    )


def _without_paths(request: Request, text: str) -> str:
    """``text`` with every path under the hub's data folder, its store or the temp folder cut out.

    The services name artifacts by sha256 or file name; this is the backstop for a library's message
    that quotes a file the services did not think of.
    """
    hub = getattr(request.app.state, "hub", None)
    roots = {tempfile.gettempdir()}
    for root in (
        getattr(getattr(hub, "settings", None), "data_dir", None),
        getattr(getattr(hub, "store", None), "root", None),
    ):
        if isinstance(root, (str, os.PathLike)):
            roots |= {os.fspath(root), os.path.realpath(root)}
    for root in sorted(roots, key=len, reverse=True):
        text = re.sub(re.escape(root) + r"[^\s'\"]*", "<hub data>", text)
    return text


def _does_not_fit(request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value the request carried (a NUL character in text for PostgreSQL, a
    # number past a column's range): the caller's input, not the hub, is at fault. The statement and
    # the driver's words stay in the log.
    log.warning("request %s: the database refused a value: %s", current_request_id(), exc)
    detail = "a value in the request cannot be stored: text with NUL characters, or a number out of range"
    return problem_response(422, detail, instance=request.url.path, errors=[])


def _database_down(request: Request, exc: Exception) -> JSONResponse:
    # The driver's message names hosts, users and statements: the log gets it, the caller does not.
    log.error("request %s: database error: %s", current_request_id(), exc)
    return problem_response(503, _DB_DOWN, instance=request.url.path, headers={"Retry-After": "5"})


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "request %s: unhandled %s in %s %s",
        current_request_id(),
        type(exc).__name__,
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return problem_response(500, _INTERNAL, instance=request.url.path)


def problem_for_exception(request: Request, exc: Exception) -> JSONResponse:
    """The problem answering any exception (used where no registered handler ran)."""
    if isinstance(exc, errors.HubError):
        return _hub_error(request, exc)
    if isinstance(exc, OperationalError):
        return _database_down(request, exc)
    if isinstance(exc, DataError):
        return _does_not_fit(request, exc)
    return _unexpected(request, exc)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _validation_errors(raw: Sequence[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for err in raw[:_MAX_ERRORS]:
        loc = [p if isinstance(p, int) else _clip(str(p), _MAX_LOC_PART) for p in err.get("loc", ())]
        out.append({"loc": loc, "msg": _clip(str(err.get("msg", "")), _MAX_MSG), "type": err.get("type", "")})
    return out


def _where(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    listed = _validation_errors(raw)
    first = listed[0] if listed else {"loc": [], "msg": "invalid request"}
    more = f" (and {len(raw) - 1} more)" if len(raw) > 1 else ""
    detail = f"invalid request: {_where(first['loc'])}: {first['msg']}{more}"
    return problem_response(422, detail, instance=request.url.path, errors=listed)


def _matching_routes(routes: Sequence[BaseRoute], scope: Scope) -> list[tuple[str, set[str]]]:
    """(path template, methods) of every route whose path matches the scope's, mounts opened."""
    found: list[tuple[str, set[str]]] = []
    # FastAPI keeps included routers unflattened; iter_route_contexts yields each route with its prefix.
    for route in iter_route_contexts(routes):
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if route.methods:
            found.append((route.path_format or route.path or "", set(route.methods)))
        elif isinstance(route.original_route, Mount):
            found += _matching_routes(route.original_route.routes, {**scope, **child})
    return found


def allowed_methods(app: ASGIApp, scope: Scope) -> list[str]:
    """The methods of the resource at the scope's path, for an ``Allow`` header.

    Starlette lists only the first matching route's methods, although several routes may serve one
    path (GET and POST on /cohorts). Where a literal path and a template both match
    (``/alert-rules/apply`` and ``/alert-rules/{name}``), the resource is the literal one.
    """
    found = _matching_routes(getattr(app, "routes", []), scope)
    if not found:
        return []
    fewest = min(template.count("{") for template, _ in found)
    return sorted({m for template, methods in found if template.count("{") == fewest for m in methods})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        listed = allowed_methods(request.app, request.scope)
        headers["Allow"] = ", ".join(listed)
        detail = f"method {request.method} is not allowed here; expected one of {', '.join(listed)}"
    elif exc.status_code == 404 and exc.detail == HTTPStatus.NOT_FOUND.phrase:
        detail = f"no such path: {_clip(request.url.path, 200)}"
    else:
        detail = str(exc.detail)
    return problem_response(exc.status_code, detail, instance=request.url.path, headers=headers)


async def _hub_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.HubError)
    return _hub_error(request, exc)


async def _database_down_handler(request: Request, exc: Exception) -> JSONResponse:
    return _database_down(request, exc)


async def _does_not_fit_handler(request: Request, exc: Exception) -> JSONResponse:
    return _does_not_fit(request, exc)


class ProblemMiddleware:
    """Answers any exception that escapes the routes and the middleware inside it with a problem.

    Starlette's own last resort runs outside every middleware, where the request id is gone; this one
    sits just inside RequestIdMiddleware, so the 500 (and a 503 when the database fails while a token
    is checked) carries the id and is logged with it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            response = problem_for_exception(Request(scope, receive), exc)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.HubError, _hub_error_handler)
    app.add_exception_handler(OperationalError, _database_down_handler)
    app.add_exception_handler(DataError, _does_not_fit_handler)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
