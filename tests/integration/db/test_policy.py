"""The start-up policy as a table: what a hub does with each kind of database, told to upgrade or not.

The integration tests beside this one drive each row against real databases; this pins the table.
"""

from __future__ import annotations

import pytest

from cloud.migrations.state import POLICY, Action, SchemaState, action_for

# (state, told to upgrade, action)
CASES = [
    (SchemaState.EMPTY, False, Action.BUILD),
    (SchemaState.EMPTY, True, Action.BUILD),
    (SchemaState.CURRENT, False, Action.START),
    (SchemaState.CURRENT, True, Action.START),
    (SchemaState.BEHIND, False, Action.REFUSE),
    (SchemaState.BEHIND, True, Action.UPGRADE),
    (SchemaState.AHEAD, False, Action.REFUSE),
    (SchemaState.AHEAD, True, Action.REFUSE),  # never: its revisions are not in this hub
    (SchemaState.UNVERSIONED, False, Action.REFUSE),
    (SchemaState.UNVERSIONED, True, Action.ADOPT),
]


@pytest.mark.parametrize(("state", "upgrade", "action"), CASES)
def test_each_state_has_its_action(state: SchemaState, upgrade: bool, action: Action) -> None:
    assert action_for(state, upgrade=upgrade) is action


def test_the_table_covers_every_state_both_ways() -> None:
    assert set(POLICY) == {(state, upgrade) for state in SchemaState for upgrade in (False, True)}


def test_the_table_cannot_be_changed_at_run_time() -> None:
    with pytest.raises(TypeError):
        POLICY[(SchemaState.AHEAD, True)] = Action.UPGRADE  # type: ignore[index]
