"""What the hub checks before it starts anything: its listening ports, then its database.

A hub that starts must not leave half of itself behind when a later part cannot come
up: a second hub on the same ports used to bind gRPC, connect to the broker and
republish every desired state before it found the HTTP port taken. So the ports are
bound first (the HTTP socket is kept and handed to uvicorn; see :func:`probe_port` for
gRPC), then the database is opened and its schema checked (built when empty, refused when
at another revision), and only then does anything
talk to the broker. Each failure is one :class:`HubStartError` whose message names what
is wrong and the setting that controls it.
"""

from __future__ import annotations

import errno
import socket

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from cloud.db import DatabaseError, SchemaMismatchError, create_db_engine, prepare_schema
from cloud.errors import HubError

__all__ = ["HubStartError", "bind_http_socket", "hostport", "open_database", "probe_port"]

# What uvicorn asks for; asyncio listens again with it when the server starts.
_BACKLOG = 2048


class HubStartError(HubError):
    """A part of the hub did not come up; the message says which, why, and which setting to change."""


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_error(what: str, host: str, port: int, env: str, e: OSError) -> HubStartError:
    where = hostport(host, port)
    if e.errno == errno.EADDRINUSE:
        return HubStartError(f"{what} port {where} is in use ({env}_PORT)")
    if e.errno == errno.EACCES:
        return HubStartError(f"{what} port {where} needs privileges this user does not have ({env}_PORT)")
    reason = e.strerror or str(e)
    return HubStartError(f"cannot listen for {what} on {where}: {reason} ({env}_HOST, {env}_PORT)")


def _listening_socket(host: str, port: int) -> socket.socket:
    # The address family as uvicorn picks it, so that a host means what it meant before.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: accepted connections inherit it, and asyncio sets TCP_NODELAY
    # only on sockets that say they are TCP. Without it, a response written in two parts (headers,
    # then body) waits for the client's delayed ACK: ~40 ms on every API request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # A hub restarted at once finds its old connections in TIME_WAIT; that is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening (not only bound) is what makes a second bind on Linux fail even with SO_REUSEADDR.
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_http_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound now; uvicorn serves on it (no check-then-bind race)."""
    try:
        return _listening_socket(host, port)
    except OSError as e:
        raise _bind_error("HTTP", host, port, "EDGEFLEET_API", e) from e


def probe_port(host: str, port: int, *, what: str, env: str) -> None:
    """Raise HubStartError when ``host:port`` cannot be listened on now (``port=0``: nothing to check).

    For gRPC, whose Python API cannot adopt a socket bound elsewhere: a free port is
    released and gRPC binds it a moment later. gRPC's own failure would print a C-level
    log line to stderr and name no setting, so this check runs first.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise HubStartError(
            f"cannot listen for {what} on {hostport(host, port)}: unknown host ({env}_HOST)"
        ) from e
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
                sock.listen(1)
            except OSError as e:
                raise _bind_error(what, str(address[0]), port, env, e) from e


def _first_line(e: BaseException) -> str:
    cause = getattr(e, "orig", None) or e.__cause__ or e
    lines = str(cause).strip().splitlines()
    return lines[0].strip() if lines else type(cause).__name__


def open_database(url: str, *, auto_upgrade: bool = False) -> Engine:
    """An engine on ``url`` that has connected once and holds this hub's schema; HubStartError if not.

    An empty database is built; one at an older revision (or made before migrations existed)
    is upgraded only with ``auto_upgrade`` (EDGEFLEET_DB_AUTO_UPGRADE); one newer than this
    hub is always refused (see cloud.migrations.state).
    """
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = url.rsplit("@", maxsplit=1)[-1]
    try:
        engine = create_db_engine(url)
    except (SQLAlchemyError, ImportError) as e:
        raise HubStartError(
            f"cannot open the database {shown}: {_first_line(e)} (EDGEFLEET_DATABASE_URL)"
        ) from e
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as e:
        engine.dispose()
        raise HubStartError(
            f"cannot reach the database {shown}: {_first_line(e)} (EDGEFLEET_DATABASE_URL)"
        ) from e
    try:
        prepare_schema(engine, auto_upgrade=auto_upgrade)
    except SchemaMismatchError as e:
        engine.dispose()
        raise HubStartError(f"database {shown}: {e}") from e
    except (DatabaseError, SQLAlchemyError, OSError) as e:
        engine.dispose()
        raise HubStartError(
            f"the database {shown} is not usable: {_first_line(e)} (EDGEFLEET_DATABASE_URL)"
        ) from e
    return engine
