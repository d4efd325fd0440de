"""The firmware state machine's table, chain by chain."""

from __future__ import annotations

import pytest

from edge_agent.firmware.machine import (
    TRANSITIONS,
    FirmwareEvent,
    FirmwareMachine,
    FirmwareState,
    IllegalFirmwareTransitionError,
)

S, E = FirmwareState, FirmwareEvent


@pytest.mark.parametrize(
    ("start", "events", "chain"),
    [
        (
            "full install",
            [E.FETCH, E.DONE, E.FULL, E.DONE],
            [S.DOWNLOADING, S.VERIFYING, S.WRITING, S.REBOOT_PENDING],
        ),
        (
            "delta install",
            [E.FETCH, E.DONE, E.DELTA, E.DONE, E.DONE],
            [S.DOWNLOADING, S.VERIFYING, S.PATCHING, S.WRITING, S.REBOOT_PENDING],
        ),
        (
            "delta fails, full fallback",
            [E.FETCH, E.DONE, E.DELTA, E.DELTA_FAILED, E.DONE, E.FULL, E.DONE],
            [S.DOWNLOADING, S.VERIFYING, S.PATCHING, S.DOWNLOADING, S.VERIFYING, S.WRITING, S.REBOOT_PENDING],
        ),
        ("refused before I/O", [E.FAIL, E.RETRY], [S.FAILED, S.IDLE]),
        ("bad bundle", [E.FETCH, E.DONE, E.FAIL], [S.DOWNLOADING, S.VERIFYING, S.FAILED]),
    ],
)
def test_install_chains(start: str, events: list[FirmwareEvent], chain: list[FirmwareState]) -> None:
    m = FirmwareMachine()
    assert [m.post(e) for e in events] == chain, start


@pytest.mark.parametrize(
    ("events", "end"),
    [
        ([E.BOOTED, E.HEALTHY], S.IDLE),
        ([E.BOOTED, E.UNHEALTHY, E.BOOTED, E.HEALTHY], S.IDLE),
        ([E.BOOTED, E.UNHEALTHY, E.FELL_BACK], S.IDLE),
        ([E.BOOTED, E.FELL_BACK], S.IDLE),
    ],
)
def test_boot_chains(events: list[FirmwareEvent], end: FirmwareState) -> None:
    m = FirmwareMachine(S.REBOOT_PENDING)
    for e in events:
        m.post(e)
    assert m.state is end


def test_an_event_without_a_row_is_a_bug() -> None:
    with pytest.raises(IllegalFirmwareTransitionError, match="no firmware transition from IDLE on HEALTHY"):
        FirmwareMachine().post(E.HEALTHY)


def test_every_state_but_the_resting_ones_has_a_way_out() -> None:
    sources = {s for s, _ in TRANSITIONS}
    assert sources == set(S)
