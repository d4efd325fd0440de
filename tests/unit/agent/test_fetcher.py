"""GrpcFetcher against a real in-process grpc.aio ArtifactService (test-only, serving from a dict)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import (
    ArtifactNotFoundError,
    DownloadIncompleteError,
    DownloadProtocolError,
    DownloadStalledError,
    HubUnavailableError,
)
from edge_agent.fetcher import ChannelPool, GrpcFetcher, write_chunks_from
from edgefleet_proto.v1 import common_pb2
from tests.loop_turns import scheduled_callbacks_ran
from tests.unit.agent.artifact_server import DictArtifactService, start_artifact_server
from tests.unit.agent.fakes import ref_for

DATA = bytes(range(256)) * 4  # 1 KiB
REF = ref_for(DATA)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def with_hub(
    service: DictArtifactService, body: Callable[[GrpcFetcher, str], Awaitable[None]], **kw: Any
) -> None:
    server, endpoint = await start_artifact_server(service)
    pool = ChannelPool()
    fetcher = GrpcFetcher(pool, endpoint=endpoint, device_id="dev-1", chunk_size=128, **kw)
    try:
        await body(fetcher, endpoint)
    finally:
        await pool.close()
        await server.stop(None)


async def drain(fetcher: GrpcFetcher, ref: common_pb2.ModelRef, dest: Path, offset: int = 0) -> list[int]:
    return [held async for held in fetcher.fetch(ref, dest, offset)]


def test_fetch_streams_the_whole_artifact_and_reports_progress(tmp_path: Path) -> None:
    service = DictArtifactService()
    service.add(DATA)
    dest = tmp_path / "a.part"

    async def body(fetcher: GrpcFetcher, _: str) -> None:
        progress = await drain(fetcher, REF, dest)
        assert progress == list(range(64, len(DATA) + 1, 64))
        assert dest.read_bytes() == DATA
        (request,) = service.requests
        assert (request.sha256, request.offset, request.device_id, request.chunk_size) == (
            REF.sha256, 0, "dev-1", 128,
        )  # fmt: skip

    run(with_hub(service, body))


def test_fetch_resumes_from_the_offset_given(tmp_path: Path) -> None:
    service = DictArtifactService()
    service.add(DATA)
    dest = tmp_path / "a.part"
    dest.write_bytes(DATA[:300] + b"junk past the offset is cut off")

    async def body(fetcher: GrpcFetcher, _: str) -> None:
        await drain(fetcher, REF, dest, offset=300)
        assert service.requests[0].offset == 300
        assert dest.read_bytes() == DATA

    run(with_hub(service, body))


def test_a_broken_stream_keeps_what_arrived_and_a_second_fetch_finishes(tmp_path: Path) -> None:
    service = DictArtifactService(break_once={REF.sha256})
    service.add(DATA)
    dest = tmp_path / "a.part"

    async def body(fetcher: GrpcFetcher, endpoint: str) -> None:
        with pytest.raises(HubUnavailableError) as info:
            await drain(fetcher, REF, dest)
        held = dest.stat().st_size
        assert held == len(DATA) // 2
        assert f"hub {endpoint} at byte {held} of {REF.sha256}: stream failed: UNAVAILABLE" in str(info.value)
        await drain(fetcher, REF, dest, offset=held)
        assert dest.read_bytes() == DATA
        assert [r.offset for r in service.requests] == [0, held]

    run(with_hub(service, body))


def test_a_stalled_stream_fails_after_the_chunk_timeout(tmp_path: Path) -> None:
    service = DictArtifactService(stall={REF.sha256})
    service.add(DATA)

    async def body(fetcher: GrpcFetcher, _: str) -> None:
        with pytest.raises(DownloadStalledError, match=r"sent nothing for 0.2 s at byte 64"):
            await drain(fetcher, REF, tmp_path / "a.part")

    run(with_hub(service, body, chunk_timeout_s=0.2))


def test_a_busy_hub_is_asked_again_after_a_pause_without_a_failure(tmp_path: Path) -> None:
    service = DictArtifactService(busy_first=2)
    service.add(DATA)

    paused: list[float] = []

    async def pause(seconds: float) -> None:  # the device's clock, advanced by the test
        paused.append(seconds)

    async def body(fetcher: GrpcFetcher, _: str) -> None:
        progress = await drain(fetcher, REF, tmp_path / "a.part")
        assert progress[-1] == len(DATA)
        assert (tmp_path / "a.part").read_bytes() == DATA
        assert [r.offset for r in service.requests] == [0, 0, 0]
        # Two pauses, jittered into the upper half of a doubling step: [1, 2] s, then [2, 4] s.
        assert len(paused) == 2 and 1.0 <= paused[0] <= 2.0 and 2.0 <= paused[1] <= 4.0

    run(with_hub(service, body, busy_retry_s=(2.0, 30.0), pause=pause))


def test_a_hub_that_stays_busy_fails_the_download_as_unavailable(tmp_path: Path) -> None:
    service = DictArtifactService(busy_first=1_000)
    service.add(DATA)

    paused: list[float] = []

    async def pause(seconds: float) -> None:
        paused.append(seconds)

    async def body(fetcher: GrpcFetcher, endpoint: str) -> None:
        with pytest.raises(
            HubUnavailableError, match=rf"hub {endpoint} stayed busy for \d+ s at byte 0"
        ) as info:
            await drain(fetcher, REF, tmp_path / "a.part")
        assert "hub busy: 1 downloads in progress" in str(info.value)
        # It gave up before its pauses added up past the limit, each pause at most the longest.
        assert paused and sum(paused) <= 60.0 and max(paused) <= 30.0
        assert len(service.requests) == len(paused) + 1

    run(with_hub(service, body, busy_retry_s=(2.0, 30.0), busy_wait_max_s=60.0, pause=pause))


def test_an_unknown_artifact_is_not_found(tmp_path: Path) -> None:
    async def body(fetcher: GrpcFetcher, endpoint: str) -> None:
        with pytest.raises(ArtifactNotFoundError, match=f"hub {endpoint} has no artifact {REF.sha256}"):
            await drain(fetcher, REF, tmp_path / "a.part")

    run(with_hub(DictArtifactService(), body))


def test_a_length_that_differs_from_the_pinned_one_is_refused(tmp_path: Path) -> None:
    service = DictArtifactService()
    service.add(DATA)
    pinned = common_pb2.ModelRef(sha256=REF.sha256, length=len(DATA) - 1, format="onnx")

    async def body(fetcher: GrpcFetcher, _: str) -> None:
        with pytest.raises(
            DownloadProtocolError, match=f"is {len(DATA)} bytes; the desired state pins {len(DATA) - 1}"
        ):
            await drain(fetcher, pinned, tmp_path / "a.part")

    run(with_hub(service, body))


def test_an_artifact_over_the_device_limit_is_refused_before_asking(tmp_path: Path) -> None:
    service = DictArtifactService()
    service.add(DATA)

    async def body(fetcher: GrpcFetcher, _: str) -> None:
        with pytest.raises(
            DownloadProtocolError, match=f"artifact is {len(DATA)} bytes; the limit on this device is 100"
        ):
            await drain(fetcher, REF, tmp_path / "a.part")
        assert service.requests == []

    run(with_hub(service, body, max_bytes=100))


def test_an_unreachable_hub_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the fetch: nothing listens there

    async def scenario() -> None:
        pool = ChannelPool()
        fetcher = GrpcFetcher(pool, endpoint=f"127.0.0.1:{port}", device_id="dev-1")
        try:
            with pytest.raises(HubUnavailableError, match=f"hub 127.0.0.1:{port} at byte 0"):
                await drain(fetcher, REF, tmp_path / "a.part")
        finally:
            await pool.close()

    run(scenario())


def test_channels_are_shared_per_endpoint() -> None:
    async def scenario() -> None:
        pool = ChannelPool()
        try:
            assert pool.get("127.0.0.1:1") is pool.get("127.0.0.1:1")
            assert pool.get("127.0.0.1:1") is not pool.get("127.0.0.1:2")
        finally:
            await pool.close()

    run(scenario())


@pytest.mark.parametrize(
    ("chunks", "error", "message"),
    [
        ([(0, b"ab"), (3, b"cd")], DownloadProtocolError, "chunk out of order: expected offset 2, got 3"),
        ([(0, b"abcdef")], DownloadProtocolError, "hub sent more than the pinned 4 bytes"),
        ([(0, b"ab")], DownloadIncompleteError, "stream ended at 2 of 4 bytes"),
    ],
)
def test_chunk_checks(
    tmp_path: Path, chunks: list[tuple[int, bytes]], error: type[Exception], message: str
) -> None:
    ref = ref_for(b"abcd")

    async def source() -> Any:
        for chunk in chunks:
            yield chunk

    async def scenario() -> None:
        with pytest.raises(error, match=message):
            async for _ in write_chunks_from(source(), ref, tmp_path / "p", 0, 1 << 20):
                pass

    run(scenario())


def test_the_partial_file_is_opened_at_the_first_byte_and_cut_back_at_once(tmp_path: Path) -> None:
    # A device waiting on a busy hub holds no file: a fleet simulated in one process ran out of
    # open files with thousands of downloads waiting for their first chunk. A partial longer than
    # the offset asked for is still cut back before anything arrives.
    ref = ref_for(b"abcdef")
    fresh, longer = tmp_path / "fresh.part", tmp_path / "longer.part"
    longer.write_bytes(b"abXYZ")
    go = asyncio.Event()
    asked = {0: asyncio.Event(), 2: asyncio.Event()}

    async def source(start: int) -> Any:
        asked[start].set()  # the writer waits for its first chunk from here on
        await go.wait()
        yield start, b"abcdef"[start:]

    async def scenario() -> None:
        first = asyncio.ensure_future(anext(write_chunks_from(source(0), ref, fresh, 0, 1 << 20)))
        second = asyncio.ensure_future(anext(write_chunks_from(source(2), ref, longer, 2, 1 << 20)))
        await asyncio.wait_for(asyncio.gather(asked[0].wait(), asked[2].wait()), 5)
        assert not fresh.exists()
        assert longer.read_bytes() == b"ab"
        go.set()
        assert await first == 6 and await second == 6
        assert fresh.read_bytes() == longer.read_bytes() == b"abcdef"

    run(scenario())


def test_a_stream_that_ends_before_a_byte_leaves_the_partial_at_its_offset(tmp_path: Path) -> None:
    ref = ref_for(b"abcdef")
    dest = tmp_path / "p.part"

    async def nothing() -> Any:
        return
        yield

    async def scenario() -> None:
        with pytest.raises(DownloadIncompleteError, match="stream ended at 0 of 6 bytes"):
            async for _ in write_chunks_from(nothing(), ref, dest, 0, 1 << 20):
                pass

    run(scenario())
    assert dest.exists() and dest.read_bytes() == b""


def test_devices_sharing_download_slots_take_turns(tmp_path: Path) -> None:
    # A simulated fleet bounds the downloads its one event loop streams at once (edge_agent.sim);
    # a device waiting for a place has not asked the hub yet.
    service = DictArtifactService()
    service.add(DATA)
    slots = asyncio.Semaphore(1)

    async def body(fetcher: GrpcFetcher, _: str) -> None:
        first = fetcher.fetch(REF, tmp_path / "a.part", 0)
        assert await anext(first) == 64  # streaming, holding the one place
        second = asyncio.ensure_future(drain(fetcher, REF, tmp_path / "b.part"))
        await scheduled_callbacks_ran()
        assert not second.done() and len(service.requests) == 1
        assert [held async for held in first][-1] == len(DATA)
        assert (await asyncio.wait_for(second, 10))[-1] == len(DATA)
        assert len(service.requests) == 2
        assert (tmp_path / "b.part").read_bytes() == DATA

    run(with_hub(service, body, slots=slots))
