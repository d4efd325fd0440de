"""State file: atomic JSON, a damaged file never stops the agent, and sequence numbers never repeat."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.errors import StateFileError
from edge_agent.state import SEQ_BLOCK, AgentState, PersistentState, StateFile
from tests.unit.agent.fakes import FakeClock, ref_for


def test_state_round_trips_through_the_file(tmp_path: Path) -> None:
    file = StateFile(tmp_path / "state.json")
    state = AgentState(
        active=ref_for(b"a", version="2"),
        previous=ref_for(b"b", version="1"),
        applied_generation=7,
        next_event_seq=65,
        next_telemetry_seq=129,
    )
    file.save(state)
    loaded, problem = file.load()
    assert problem is None
    assert loaded == state
    # Nothing but the state file is left behind: the temp file was renamed over it.
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    data = json.loads((tmp_path / "state.json").read_text())
    assert data["active"]["length"] == 1 and data["version"] == 2


def test_a_missing_file_is_an_empty_state_without_complaint(tmp_path: Path) -> None:
    state, problem = StateFile(tmp_path / "state.json").load()
    assert state == AgentState() and problem is None


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "is corrupt"),
        ("[]", "expected a JSON object"),
        ('{"version": 99}', "version: expected one of [1, 2], got 99"),
        (
            '{"version": 1, "active": {"name": "m", "version": "1", "format": "onnx", "sha256": "../x",'
            ' "length": 3}, "applied_generation": 1, "next_event_seq": 1, "next_telemetry_seq": 1}',
            "active.sha256",
        ),
        (
            '{"version": 1, "applied_generation": -1, "next_event_seq": 1, "next_telemetry_seq": 1}',
            "applied_generation",
        ),
    ],
)
def test_a_damaged_file_gives_an_empty_state_and_is_kept_aside(
    tmp_path: Path, content: str, why: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    state, problem = StateFile(path).load()
    assert state == AgentState()
    assert problem is not None and why in problem and "starting with an empty state" in problem
    assert (tmp_path / "state.json.corrupt").read_text() == content
    assert not path.exists()


def test_sequence_numbers_are_reserved_ahead_and_never_repeat_after_a_crash(tmp_path: Path) -> None:
    clock = FakeClock()
    file = StateFile(tmp_path / "state.json")
    first = PersistentState(file, clock)
    handed = [first.next_event_seq() for _ in range(3)]
    assert handed == [1, 2, 3]
    # The file already covers the whole block: no save per number.
    assert file.load()[0].next_event_seq == 1 + SEQ_BLOCK
    # A crash now (no clean save) and a restart: numbering resumes past the reserved block.
    second = PersistentState(file, clock)
    assert second.next_event_seq() == 1 + SEQ_BLOCK
    assert second.next_telemetry_seq() == 1


def test_a_block_is_renewed_when_used_up(tmp_path: Path) -> None:
    file = StateFile(tmp_path / "state.json")
    state = PersistentState(file, FakeClock())
    seqs = [state.next_telemetry_seq() for _ in range(SEQ_BLOCK + 1)]
    assert seqs == list(range(1, SEQ_BLOCK + 2))
    assert file.load()[0].next_telemetry_seq == 1 + 2 * SEQ_BLOCK


def test_after_a_damaged_file_numbers_restart_from_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("garbage")
    clock = FakeClock(wall_ms=1_700_000_123_456)
    state = PersistentState(StateFile(path), clock)
    assert state.load_problem is not None
    assert state.next_event_seq() == 1_700_000_123_456
    assert state.next_telemetry_seq() == 1_700_000_123_456


def test_update_changes_memory_only_once_the_file_holds_it(tmp_path: Path) -> None:
    class BrokenFile(StateFile):
        def save(self, state: AgentState) -> None:
            raise StateFileError("disk full")

    state = PersistentState(BrokenFile(tmp_path / "state.json"), FakeClock())
    with pytest.raises(StateFileError):
        state.update(applied_generation=5)
    assert state.state.applied_generation == 0
    # Numbering still works while the disk refuses writes.
    assert state.next_event_seq() == 1
