"""One repository refresh answering every caller that asked while it ran, and none that asked before.

:class:`CoalescedRepository` wraps a :class:`~edge_agent.trust.channel.Repository` that many
callers share (the light simulator's devices, :mod:`edge_agent.sim_trust`). A caller of
:meth:`~CoalescedRepository.refresh` gets the outcome of a refresh that *began after it asked*,
so it sees metadata at least as new as if it had refreshed alone: a refresh already under way
when it arrives may have fetched the timestamp before the hub signed the version it is about
to verify, so it waits for the next one. Callers that arrive while that next one waits to start
share it. A thousand devices verifying at once cost one refresh per refresh's duration, not a
thousand.

Refreshes run one at a time; the underlying repository's own lock would serialise them anyway.
A refresh that fails fails for every caller it answers, each with its own copy of the error.
"""

from __future__ import annotations

import copy
import threading
from typing import TYPE_CHECKING

from edge_agent.trust.channel import Repository
from edge_agent.trust.director import DirectorKeys
from edge_agent.trust.targets import SignedTarget

if TYPE_CHECKING:
    from edge_agent.trust.repository import RefreshResult

__all__ = ["CoalescedRepository"]


class CoalescedRepository:
    """A :class:`~edge_agent.trust.channel.Repository` whose refreshes are shared by concurrent callers."""

    def __init__(self, inner: Repository) -> None:
        self._inner = inner
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        # Signalled when a caller starts waiting (wait_waiting); its own condition, so that a caller
        # who starts waiting wakes no other caller.
        self._arrivals = threading.Condition(lock)
        # Refreshes begun and ended; one runs at a time, so one is running exactly when they differ.
        self._begun = 0
        self._ended = 0
        self._waiting = 0
        self._outcome: RefreshResult | BaseException | None = None

    @property
    def refreshes(self) -> int:
        """Refreshes begun: what the callers cost the repository (the tests and the bench read it)."""
        return self._begun

    @property
    def waiting(self) -> int:
        """Callers waiting for a refresh to begin or end."""
        return self._waiting

    def wait_waiting(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` callers wait; False after ``timeout`` s (tests, diagnostics)."""
        with self._arrivals:
            return self._arrivals.wait_for(lambda: self._waiting >= count, timeout)

    def refresh(self) -> RefreshResult:
        with self._cond:
            # The first refresh to begin after this call; any with a lower number began before it.
            wanted = self._begun + 1
            while self._ended < wanted:
                if self._begun == self._ended:  # none running: begin the one this caller waits for
                    self._begun += 1
                    break
                self._waiting += 1
                self._arrivals.notify_all()
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
            else:
                return self._answer()
        try:
            outcome: RefreshResult | BaseException = self._inner.refresh()
        except BaseException as e:
            outcome = e
        with self._cond:
            self._outcome = outcome
            self._ended = self._begun
            self._cond.notify_all()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _answer(self) -> RefreshResult:
        outcome = self._outcome
        assert outcome is not None  # a refresh ended, so it left an outcome
        if isinstance(outcome, BaseException):
            # Each caller raises its own instance (same class, message and check code): one exception
            # object raised in several threads would have its traceback rewritten under the others.
            raise copy.copy(outcome) from outcome
        return outcome

    def target(self, path: str) -> SignedTarget | None:
        return self._inner.target(path)

    def root_version(self) -> int:
        return self._inner.root_version()

    def director_keys(self) -> DirectorKeys:
        return self._inner.director_keys()
