"""The updater against in-memory peers: a fake hub (FakeFetcher), a fake clock, real onnxruntime.

Each table case starts with model v1 serving, asks for v2 with one fault injected,
and states the chain of machine states, the events reported, and what serves after.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.trust.errors import MetadataDownloadError
from edge_agent.update_machine import UpdateState
from edge_agent.verify import PinnedDigestVerifier
from edgefleet_proto.v1 import common_pb2, desired_pb2, event_pb2
from tests.unit.agent.fakes import linear_model, ref_for
from tests.unit.agent.harness import REF1, REF2, V2, Harness, desired, run

K = event_pb2.EventKind
S = UpdateState


# -- table of single attempts ---------------------------------------------------------------------


def _fresh(h: Harness) -> common_pb2.ModelRef:
    h.fetcher.add(V2)
    return REF2


def _cached(h: Harness) -> common_pb2.ModelRef:
    h.stored(V2)
    return REF2


def _cached_damaged(h: Harness) -> common_pb2.ModelRef:
    h.stored(V2).write_bytes(b"\0" * len(V2))
    h.fetcher.add(V2)
    return REF2


def _hub_sends_other_bytes(h: Harness) -> common_pb2.ModelRef:
    h.fetcher.add(b"\0" * len(V2), sha256=REF2.sha256)
    return REF2


def _hub_stream_ends_early(h: Harness) -> common_pb2.ModelRef:
    h.fetcher.add(V2[:100], sha256=REF2.sha256)
    return REF2


def _hub_sends_too_much(h: Harness) -> common_pb2.ModelRef:
    h.fetcher.add(V2 + b"trailing", sha256=REF2.sha256)
    return REF2


def _hub_unreachable(h: Harness) -> common_pb2.ModelRef:
    h.fetcher.unavailable = True
    return REF2


def _does_not_load(h: Harness) -> common_pb2.ModelRef:
    junk = b"verified, but not a model" * 10
    h.fetcher.add(junk)
    return ref_for(junk, version="2")


def _unknown_format(h: Harness) -> common_pb2.ModelRef:
    h.fetcher.add(V2)
    return ref_for(V2, version="2", fmt="torchscript")


def _state_file_refuses(h: Harness) -> common_pb2.ModelRef:
    h.fetcher.add(V2)
    h.state_file.refuse = True
    return REF2


def _full_disk(h: Harness) -> common_pb2.ModelRef:
    h.fetcher.add(V2)
    h.resources.disk = 1024
    return REF2


def _no_memory(h: Harness) -> common_pb2.ModelRef:
    h.fetcher.add(V2)
    h.resources.memory = 1024
    return REF2


INSTALL = [S.DOWNLOADING, S.VERIFYING, S.LOADING, S.ACTIVATING, S.TRIAL, S.COMMITTING, S.IDLE]
SERVED = [K.EVENT_KIND_ACTIVATED, K.EVENT_KIND_COMMITTED]


@dataclass(frozen=True)
class Case:
    prepare: Callable[[Harness], common_pb2.ModelRef]
    chain: list[UpdateState]
    kinds: list[int]
    serving: str
    reason: str = ""


CASES = {
    "fresh download": Case(
        _fresh,
        [S.IDLE, *INSTALL],
        [K.EVENT_KIND_DOWNLOAD_STARTED, K.EVENT_KIND_DOWNLOAD_COMPLETED, *SERVED],
        "2",
    ),
    "stored artifact is verified again, not fetched": Case(_cached, [S.IDLE, *INSTALL[1:]], SERVED, "2"),
    "damaged stored artifact is fetched again": Case(
        _cached_damaged,
        [S.IDLE, S.VERIFYING, *INSTALL],
        [
            K.EVENT_KIND_VERIFY_FAILED,
            K.EVENT_KIND_DOWNLOAD_STARTED,
            K.EVENT_KIND_DOWNLOAD_COMPLETED,
            *SERVED,
        ],
        "2",
        "stored artifact damaged, fetching it again: sha256 mismatch",
    ),
    "hub sends other bytes": Case(
        _hub_sends_other_bytes,
        [S.IDLE, S.DOWNLOADING, S.VERIFYING, S.FAILED],
        [K.EVENT_KIND_DOWNLOAD_STARTED, K.EVENT_KIND_DOWNLOAD_COMPLETED, K.EVENT_KIND_VERIFY_FAILED],
        "1",
        f"sha256 mismatch: expected {REF2.sha256} got {hashlib.sha256(bytes(len(V2))).hexdigest()}",
    ),
    "hub stream ends early (truncated)": Case(
        _hub_stream_ends_early,
        [S.IDLE, S.DOWNLOADING, S.FAILED],
        [K.EVENT_KIND_DOWNLOAD_STARTED, K.EVENT_KIND_DOWNLOAD_FAILED],
        "1",
        f"stream ended at 100 of {len(V2)} bytes",
    ),
    "hub sends more than pinned": Case(
        _hub_sends_too_much,
        [S.IDLE, S.DOWNLOADING, S.FAILED],
        [K.EVENT_KIND_DOWNLOAD_STARTED, K.EVENT_KIND_DOWNLOAD_FAILED],
        "1",
        f"hub sent more than the pinned {len(V2)} bytes",
    ),
    "hub unreachable": Case(
        _hub_unreachable,
        [S.IDLE, S.DOWNLOADING, S.FAILED],
        [K.EVENT_KIND_DOWNLOAD_STARTED, K.EVENT_KIND_DOWNLOAD_FAILED],
        "1",
        "UNAVAILABLE",
    ),
    "verified bytes that do not load": Case(
        _does_not_load,
        [S.IDLE, S.DOWNLOADING, S.VERIFYING, S.LOADING, S.FAILED],
        [K.EVENT_KIND_DOWNLOAD_STARTED, K.EVENT_KIND_DOWNLOAD_COMPLETED, K.EVENT_KIND_INSTALL_FAILED],
        "1",
        "onnxruntime cannot load",
    ),
    "unknown format, refused before download": Case(
        _unknown_format,
        [S.IDLE, S.FAILED],
        [K.EVENT_KIND_INSTALL_FAILED],
        "1",
        "unknown model format 'torchscript': this device runs ['onnx'",
    ),
    "state file refuses the checkpoint": Case(
        _state_file_refuses,
        [S.IDLE, S.DOWNLOADING, S.FAILED],
        [K.EVENT_KIND_INSTALL_FAILED],
        "1",
        "cannot save the update state before DOWNLOADING",
    ),
    "full disk, refused before the download": Case(
        _full_disk,
        [S.IDLE, S.DOWNLOADING, S.FAILED],
        [K.EVENT_KIND_INSTALL_FAILED],
        "1",
        "not enough disk",
    ),
    "not enough memory to load beside the serving model": Case(
        _no_memory,
        [S.IDLE, S.DOWNLOADING, S.VERIFYING, S.LOADING, S.FAILED],
        [K.EVENT_KIND_DOWNLOAD_STARTED, K.EVENT_KIND_DOWNLOAD_COMPLETED, K.EVENT_KIND_INSTALL_FAILED],
        "1",
        "not enough memory",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_one_attempt_walks_the_expected_chain(tmp_path: Path, name: str) -> None:
    case = CASES[name]

    async def scenario() -> None:
        h = Harness(tmp_path)
        await h.serve_v1()
        ref = case.prepare(h)
        ok = await h.updater.apply(desired(ref, 2))
        assert h.updater.machine.history == case.chain
        assert h.kinds() == case.kinds
        assert h.serving_version() == case.serving
        assert all(e.generation == 2 and e.model == ref for e in h.events)
        if case.reason:
            assert any(case.reason in e.reason for e in h.events), [e.reason for e in h.events]
        saved = h.state.state
        if case.serving == "2":
            assert ok and (saved.active, saved.previous, saved.applied_generation) == (ref, REF1, 2)
            assert h.store.has(ref.sha256) and h.store.has(REF1.sha256)
            assert h.updater.last_failure == ""
        else:
            assert not ok and (saved.active, saved.applied_generation) == (REF1, 1)
            assert h.updater.last_failure
            # The serving model is untouched and still answers.
            assert h.serving.current is not None and h.serving.current.ref == REF1

    run(scenario())


def test_a_broken_download_resumes_from_the_bytes_held(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        await h.serve_v1()
        h.fetcher.add(V2)
        h.fetcher.break_at[REF2.sha256] = 100
        assert not await h.updater.apply(desired(REF2, 2))
        failed = [e for e in h.events if e.kind == K.EVENT_KIND_DOWNLOAD_FAILED]
        assert failed[0].details == {"offset": 128}  # two 64-byte chunks arrived before the break
        assert await h.updater.apply(desired(REF2, 2))
        assert [offset for _, offset, _ in h.fetcher.calls] == [0, 128]
        done = [e for e in h.events if e.kind == K.EVENT_KIND_DOWNLOAD_COMPLETED]
        assert done[0].details["resumed_from"] == 128
        assert h.updater.machine.history == [S.IDLE, S.DOWNLOADING, S.FAILED, S.IDLE, *INSTALL]
        assert h.serving_version() == "2"

    run(scenario())


def test_a_desired_state_without_a_model_or_with_the_serving_one_only_records_the_generation(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        await h.serve_v1()
        changes = h.changes
        assert await h.updater.apply(desired(None, 2))
        assert await h.updater.apply(desired(REF1, 3))
        assert h.state.state.applied_generation == 3
        assert h.fetcher.calls == [] and h.events == []
        assert h.changes == changes + 2
        assert h.serving_version() == "1"

    run(scenario())


def test_the_artifact_endpoint_of_a_desired_state_reaches_the_fetcher(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        h.fetcher.add(V2)
        assert await h.updater.apply(desired(REF2, 1, artifact_endpoint="hub-b:50051"))
        assert h.fetcher.calls == [(REF2.sha256, 0, "hub-b:50051")]

    run(scenario())


# -- intake and the retry loop --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (desired(REF2, 2, device_id="dev-9").SerializeToString(), "is for device 'dev-9'"),
        (desired(REF2, 2, fleet="f9").SerializeToString(), "is for fleet 'f9'"),
        (desired(REF2, 0).SerializeToString(), "generation 0"),
        (b"\xff\x00garbage", "malformed desired state"),
    ],
)
def test_submit_rejects_what_cannot_be_applied(tmp_path: Path, payload: bytes, reason: str) -> None:
    h = Harness(tmp_path)
    h.updater.submit(payload)
    assert h.kinds() == [K.EVENT_KIND_DESIRED_REJECTED]
    assert reason in h.events[0].reason


def test_submit_rejects_a_replayed_generation_and_ignores_the_retained_copy(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        await h.serve_v1()
        h.updater.submit(desired(REF1, 1).SerializeToString())  # the retained copy after a reconnect
        h.updater.submit(b"")  # the hub cleared the topic
        assert h.events == []
        await h.updater.apply(desired(None, 5))
        h.updater.submit(desired(REF2, 4).SerializeToString())
        assert h.kinds() == [K.EVENT_KIND_DESIRED_REJECTED]
        assert "generation 4 is older than the applied generation 5" in h.events[0].reason

    run(scenario())


def test_the_loop_retries_a_failure_after_back_off_and_then_serves(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path, backoff_s=0.01)
        await h.serve_v1()
        h.fetcher.add(V2)
        h.fetcher.unavailable = True
        loop = asyncio.create_task(h.updater.run())
        try:
            h.updater.submit(desired(REF2, 2).SerializeToString())
            await h.reported(K.EVENT_KIND_DOWNLOAD_FAILED)
            assert h.serving_version() == "1"
            h.fetcher.unavailable = False
            await h.serving.wait_for(REF2.sha256, timeout=5)
        finally:
            loop.cancel()
        assert h.kinds()[0] == K.EVENT_KIND_DESIRED_RECEIVED
        assert h.kinds().count(K.EVENT_KIND_DESIRED_RECEIVED) == 1
        assert h.kinds()[-1] == K.EVENT_KIND_COMMITTED
        assert h.updater.last_failure == ""

    run(scenario())


def test_retry_now_skips_the_back_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path, backoff_s=60.0)
        await h.serve_v1()
        h.fetcher.add(V2)
        h.fetcher.unavailable = True
        loop = asyncio.create_task(h.updater.run())
        try:
            h.updater.submit(desired(REF2, 2).SerializeToString())
            await h.reported(K.EVENT_KIND_DOWNLOAD_FAILED)
            h.fetcher.unavailable = False
            h.updater.retry_now()
            await h.serving.wait_for(REF2.sha256, timeout=5)
        finally:
            loop.cancel()

    run(scenario())


def test_the_newest_pending_generation_wins(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        v3 = linear_model(3.0)
        ref3 = ref_for(v3, version="3")
        h.fetcher.add(V2)
        h.fetcher.add(v3)
        h.updater.submit(desired(REF2, 2).SerializeToString())
        h.updater.submit(desired(ref3, 3).SerializeToString())
        loop = asyncio.create_task(h.updater.run())
        try:
            await h.serving.wait_for(ref3.sha256, timeout=5)
        finally:
            loop.cancel()
        assert [sha for sha, _, _ in h.fetcher.calls] == [ref3.sha256]
        assert h.state.state.applied_generation == 3

    run(scenario())


def test_the_applied_generation_is_applied_again_when_its_model_does_not_serve(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        h.state.update(applied_generation=2)  # e.g. its artifact failed verification at start
        h.fetcher.add(V2)
        loop = asyncio.create_task(h.updater.run())
        try:
            h.updater.submit(desired(REF2, 2).SerializeToString())
            await h.serving.wait_for(REF2.sha256, timeout=5)
        finally:
            loop.cancel()

    run(scenario())


class _MetadataOnceUnreachable:
    """The signed-update verifier's failure when the hub delivers no metadata, once; then the digest check.

    A unit-test stand-in for edge_agent.trust's verifier: what matters here is how the updater
    reports an error of that kind, not how TUF produces it (tests/integration/trust does that).
    """

    name = "sha256+tuf"

    def __init__(self) -> None:
        self.calls = 0

    def verify(self, path: Path, ref: common_pb2.ModelRef, desired: desired_pb2.DesiredState) -> None:
        self.calls += 1
        if self.calls == 1:
            raise MetadataDownloadError(
                "cannot fetch repository metadata (hub 127.0.0.1:1 failed: CANCELLED)"
            )
        PinnedDigestVerifier().verify(path, ref, desired)


def test_metadata_the_hub_did_not_deliver_is_a_failed_download_and_keeps_the_bytes(tmp_path: Path) -> None:
    # In a rollout storm the hub may cancel a metadata fetch. Nothing was judged: the hub's
    # update-failure gate must not count it (it counts install/verify failures), and the
    # bytes already fetched stay for the retry instead of being fetched again.
    async def scenario() -> None:
        h = Harness(tmp_path)
        await h.serve_v1()
        h.fetcher.add(V2)
        verifier = _MetadataOnceUnreachable()
        h.updater.steps.verifier = verifier
        assert not await h.updater.apply(desired(REF2, 2))
        assert h.kinds() == [
            K.EVENT_KIND_DOWNLOAD_STARTED,
            K.EVENT_KIND_DOWNLOAD_COMPLETED,
            K.EVENT_KIND_DOWNLOAD_FAILED,
        ]
        failed = h.events[-1]
        assert "cannot fetch repository metadata" in failed.reason
        assert failed.details == {"offset": len(V2), "check": "metadata_download"}
        assert h.store.partial_size(REF2.sha256) == len(V2)
        assert await h.updater.apply(desired(REF2, 2))
        # The retry starts where the bytes end: a fetcher asks the hub for nothing more.
        assert [offset for _, offset, _ in h.fetcher.calls] == [0, len(V2)]
        assert verifier.calls == 2
        assert h.serving_version() == "2"

    run(scenario())
