"""model_tools.atomic: the one routine that replaces every small file the hub and the agent keep."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from model_tools.atomic import atomic_write


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_new_file_private_by_default(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "state.json"
    atomic_write(target, '{"a": 1}')
    assert target.read_text(encoding="utf-8") == '{"a": 1}'
    assert _mode(target) == 0o600


def test_replaces_existing_content_and_applies_mode(tmp_path: Path) -> None:
    target = tmp_path / "root.json"
    target.write_bytes(b"old")
    atomic_write(target, b"new", mode=0o644)
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o644


def test_private_folder_mode_for_new_folders(tmp_path: Path) -> None:
    target = tmp_path / "keys" / "k.pem"
    atomic_write(target, b"secret", folder_mode=0o700)
    assert _mode(target.parent) == 0o700


def test_failure_keeps_old_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    # A folder where the file should be: the rename fails after the temp file was written.
    target = tmp_path / "state.json"
    target.mkdir()
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
