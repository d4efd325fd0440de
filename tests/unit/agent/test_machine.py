"""The one engine under the update and firmware machines: tables are frozen and typed, errors share a root."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from edge_agent.firmware.machine import FirmwareEvent, FirmwareMachine, FirmwareState
from edge_agent.machine import IllegalTransitionError, StateMachine, freeze_table
from edge_agent.update_machine import TRANSITIONS, UpdateEvent, UpdateMachine, UpdateState


class Light(enum.Enum):
    OFF = "off"
    ON = "on"


class Switch(enum.Enum):
    FLIP = "flip"


def test_a_table_is_read_only_and_keeps_its_rows_in_order() -> None:
    table = freeze_table(
        Light, Switch, {(Light.OFF, Switch.FLIP): Light.ON, (Light.ON, Switch.FLIP): Light.OFF}
    )
    assert list(table) == [(Light.OFF, Switch.FLIP), (Light.ON, Switch.FLIP)]
    with pytest.raises(TypeError):
        table[(Light.ON, Switch.FLIP)] = Light.ON  # type: ignore[index]


def test_a_row_from_another_machine_is_refused_when_the_table_is_built() -> None:
    rows: dict[tuple[Any, Any], Any] = {
        **TRANSITIONS,
        (UpdateState.IDLE, FirmwareEvent.BOOTED): UpdateState.TRIAL,
    }
    with pytest.raises(TypeError, match=r"expected \(UpdateState, UpdateEvent\) -> UpdateState"):
        freeze_table(UpdateState, UpdateEvent, rows)


def test_both_machines_run_on_the_engine_and_raise_one_family_of_errors() -> None:
    update, firmware = UpdateMachine(), FirmwareMachine()
    assert isinstance(update, StateMachine) and isinstance(firmware, StateMachine)
    with pytest.raises(IllegalTransitionError, match="no transition from IDLE on PASS"):
        update.post(UpdateEvent.PASS)
    with pytest.raises(IllegalTransitionError, match="no firmware transition from IDLE on HEALTHY"):
        firmware.post(FirmwareEvent.HEALTHY)


def test_the_engine_walks_any_table_and_tells_listeners() -> None:
    table = freeze_table(
        Light, Switch, {(Light.OFF, Switch.FLIP): Light.ON, (Light.ON, Switch.FLIP): Light.OFF}
    )
    machine: StateMachine[Light, Switch] = StateMachine(Light.OFF, table)
    heard: list[Light] = []
    machine.add_listener(heard.append)
    assert [machine.post(Switch.FLIP) for _ in range(3)] == [Light.ON, Light.OFF, Light.ON]
    assert heard == machine.history[1:] and machine.can(Switch.FLIP)
    assert FirmwareMachine(FirmwareState.TRIAL).allowed() == ["FELL_BACK", "HEALTHY", "UNHEALTHY"]
