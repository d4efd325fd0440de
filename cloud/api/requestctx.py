"""What one API request is: its id and who makes it, readable anywhere below the route.

The request id comes from the caller's ``X-Request-ID`` header when it is a sane token (a load
balancer or the CLI may set one to follow a request across services), and is made up otherwise. It is
echoed on every response, written into every log record (cloud.logging) and into every audit row.
The actor is set by authentication once the token or session is known.

Both live in context variables, so that services, the audit recorder and the logger read them without
taking them as arguments, and a request handled in a worker thread (sync routes run in anyio's thread
pool, which copies the context) still sees its own.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID_HEADER",
    "Actor",
    "RequestIdMiddleware",
    "current_actor",
    "current_request_id",
    "set_actor",
]

REQUEST_ID_HEADER = "X-Request-ID"
# Accepted from a caller as is: short, and nothing that could forge a log line or a header.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a request: a token's name and role, and how it came (bearer token or session)."""

    name: str
    role: str
    via: str = "token"  # "token" | "session"


_request_id: ContextVar[str | None] = ContextVar("edgefleet_request_id", default=None)
_actor: ContextVar[Actor | None] = ContextVar("edgefleet_actor", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled, None outside a request (the scheduler, the CLI)."""
    return _request_id.get()


def current_actor() -> Actor | None:
    """Who makes the request being handled, None before authentication or outside a request."""
    return _actor.get()


def set_actor(actor: Actor | None) -> None:
    _actor.set(actor)


def _incoming_id(scope: Scope) -> str | None:
    wanted = REQUEST_ID_HEADER.lower().encode("latin-1")
    for name, value in scope.get("headers", []):
        if name == wanted:
            text = value.decode("latin-1").strip()
            return text if _SANE_ID.fullmatch(text) else None
    return None


class RequestIdMiddleware:
    """Gives every HTTP request an id (the caller's, or a new one) and echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        id_token = _request_id.set(request_id)
        actor_token = _actor.set(None)
        header = (REQUEST_ID_HEADER.lower().encode("latin-1"), request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != header[0]]
                message["headers"] = [*headers, header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _actor.reset(actor_token)
            _request_id.reset(id_token)
