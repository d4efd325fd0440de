"""A coalesced refresh answers the callers that asked while it waited to begin, never one that asked
before it began. The repository under it is an in-memory fake (unit test) that blocks on events."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from edge_agent.trust.coalesced import CoalescedRepository
from edge_agent.trust.director import DirectorKeys
from edge_agent.trust.errors import MetadataDownloadError
from edge_agent.trust.repository import RefreshResult
from edge_agent.trust.targets import SignedTarget

TIMEOUT_S = 10.0


class GatedRepository:
    """Each refresh returns the next version, once the test opens its gate (refresh n waits on gates[n])."""

    def __init__(self, refreshes: int) -> None:
        self.gates = [threading.Event() for _ in range(refreshes)]
        self.begun = [threading.Event() for _ in range(refreshes)]
        self.calls = 0
        self.fail_with: Exception | None = None

    def refresh(self) -> RefreshResult:
        n = self.calls
        self.calls += 1
        self.begun[n].set()
        assert self.gates[n].wait(TIMEOUT_S), f"refresh {n + 1} was never let through"
        if self.fail_with is not None:
            raise self.fail_with
        return RefreshResult(1, n + 1, n + 1, n + 1)

    def target(self, path: str) -> SignedTarget | None:
        return None

    def root_version(self) -> int:
        return 1

    def director_keys(self) -> DirectorKeys:
        raise AssertionError("not asked in these tests")


def _ask_during_the_first(
    repo: CoalescedRepository, inner: GatedRepository, pool: ThreadPoolExecutor, callers: int
) -> list[Future[RefreshResult]]:
    """Refresh 1 begins; ``callers`` more ask while it runs; then it ends (version 1). Their futures."""
    first = pool.submit(repo.refresh)
    assert inner.begun[0].wait(TIMEOUT_S)
    later = [pool.submit(repo.refresh) for _ in range(callers)]
    assert repo.wait_waiting(callers, TIMEOUT_S), repo.waiting
    inner.gates[0].set()
    assert first.result(TIMEOUT_S).timestamp_version == 1
    return later


def test_callers_who_ask_during_a_refresh_share_the_next_one_and_not_the_running_one() -> None:
    inner = GatedRepository(2)
    repo = CoalescedRepository(inner)
    with ThreadPoolExecutor(4) as pool:
        # These ask while refresh 1 runs: it may have read the timestamp before what they wait for.
        later = _ask_during_the_first(repo, inner, pool, 3)
        assert inner.begun[1].wait(TIMEOUT_S)
        inner.gates[1].set()
        assert [f.result(TIMEOUT_S).timestamp_version for f in later] == [2, 2, 2]
    assert inner.calls == repo.refreshes == 2


def test_calls_one_after_another_each_refresh() -> None:
    inner = GatedRepository(3)
    for gate in inner.gates:
        gate.set()
    repo = CoalescedRepository(inner)
    assert [repo.refresh().timestamp_version for _ in range(3)] == [1, 2, 3]
    assert inner.calls == 3


def test_a_failed_refresh_fails_every_caller_it_answers_each_with_its_own_error() -> None:
    inner = GatedRepository(3)
    repo = CoalescedRepository(inner)
    with ThreadPoolExecutor(3) as pool:
        waiting = _ask_during_the_first(repo, inner, pool, 2)
        assert inner.begun[1].wait(TIMEOUT_S)
        inner.fail_with = MetadataDownloadError("cannot fetch repository metadata (hub busy)")
        inner.gates[1].set()
        errors = [f.exception(TIMEOUT_S) for f in waiting]
    for e in errors:
        assert isinstance(e, MetadataDownloadError)
        assert str(e) == "cannot fetch repository metadata (hub busy)"
        assert e.code == "metadata_download"
    assert errors[0] is not errors[1]
    # The next caller is not handed the old failure: it refreshes again.
    inner.fail_with = None
    inner.gates[2].set()
    assert repo.refresh().timestamp_version == 3
    assert inner.calls == 3
