"""Domain errors to HTTP responses, in one place. The body is ``{"detail": "<what was expected>"}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from cloud import errors
from cloud.api.routes.tuf import SigningUnavailableError
from cloud.db import DatabaseError
from cloud.tuf.errors import NotInitializedError

log = logging.getLogger(__name__)

_STATUS: dict[type[errors.HubError], int] = {
    errors.InvalidInputError: 422,
    errors.InvalidArtifactError: 400,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.TooLargeError: 413,
    errors.AuthError: 401,
    errors.ForbiddenError: 403,
    errors.DeliveryError: 503,
    errors.PublishError: 503,
    DatabaseError: 503,
    SigningUnavailableError: 503,
    NotInitializedError: 503,
}


def status_for(exc: errors.HubError) -> int:
    """The most specific mapping along the exception's class hierarchy."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


async def _hub_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.HubError)
    status = status_for(exc)
    if status >= 500:
        log.error("request failed: %s", exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)
    return JSONResponse({"detail": "database unavailable; try again later"}, status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.HubError, _hub_error)
    app.add_exception_handler(OperationalError, _database_down)
