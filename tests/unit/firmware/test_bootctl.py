"""The boot-control file: round trips, atomic replacement, refusing damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import StateFileError
from edge_agent.firmware.bootctl import MAX_FAILED, BootControl, BootControlFile, SlotImage

IMAGE = SlotImage("fw", "1.0.0", "sim-board", "ab" * 32, 100)


def test_missing_file_is_a_fresh_device(tmp_path: Path) -> None:
    control = BootControlFile(tmp_path / "bootctl.json").load(bootlimit=5)
    assert control == BootControl(bootlimit=5)
    assert control.running is None
    assert control.inactive == "b"


def test_round_trip(tmp_path: Path) -> None:
    f = BootControlFile(tmp_path / "bootctl.json")
    control = BootControl(active="b", upgrade_available=True, boot_count=2).with_slot("b", IMAGE)
    control = control.with_failed("0.9.0")
    f.save(control)
    assert f.load() == control
    assert not list(tmp_path.glob("*.tmp")), "the temporary file is renamed into place"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "corrupt"),
        ('{"version": 1, "active": "c"}', "active: expected 'a' or 'b'"),
        ('{"version": 2}', "version: expected 1"),
    ],
)
def test_damaged_file_raises_instead_of_guessing_a_slot(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bootctl.json"
    path.write_text(text)
    with pytest.raises(StateFileError, match=message):
        BootControlFile(path).load()


def test_failed_versions_stay_bounded_and_unique() -> None:
    control = BootControl()
    for i in range(MAX_FAILED + 5):
        control = control.with_failed(f"1.0.{i}")
    control = control.with_failed("1.0.20")
    assert len(control.failed) == MAX_FAILED
    assert control.failed[-1] == "1.0.20"
    assert control.failed.count("1.0.20") == 1
