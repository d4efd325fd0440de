"""Start a private server for the test run, or stop the run with the one line that says why."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, Protocol, TypeVar

import pytest

from tests._services.process import MissingBinary, ServiceFailed


class Server(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


S = TypeVar("S", bound=Server)


def _cannot_start(request: pytest.FixtureRequest, reason: str) -> NoReturn:
    # Every later test that needs the server would fail the same way: this test fails with the reason,
    # and the run stops after it ("Interrupted: <reason>"). Not a skip, which would let a run without
    # the server pass. (pytest.exit from a fixture would skip the report that tmp_path's teardown reads.)
    request.session.shouldstop = reason
    pytest.fail(reason, pytrace=False)


def _started(make: Callable[[], S]) -> S:
    server = make()
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


@contextmanager
def running(make: Callable[[], S], request: pytest.FixtureRequest) -> Iterator[S]:
    """``make()`` a server, start it, yield it; on the way out, however it goes, stop and remove it."""
    try:
        server = _started(make)
    except (MissingBinary, ServiceFailed) as e:
        reason = str(e)
    else:
        try:
            yield server
        finally:
            server.close()
        return
    _cannot_start(request, reason)  # outside the handler, so that the report is the reason alone
