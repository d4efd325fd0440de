"""The agent's log lines: text by default, JSON per line with ``log_format = "json"``, device named."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.logs import JsonFormatter, configure_logging, device_logger, use_log_format

MINIMAL = 'device_id = "dev-1"\nfleet = "f1"\nstate_dir = "state"\n'


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.level, root.handlers[:])
    yield
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])


def test_the_config_key_defaults_to_text_and_refuses_other_formats(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL)
    assert load_config(path).log_format == "text"
    path.write_text('log_format = "json"\n' + MINIMAL)
    assert load_config(path).log_format == "json"
    path.write_text('log_format = "xml"\n' + MINIMAL)
    with pytest.raises(ConfigError, match="log_format: expected 'text' or 'json', got 'xml'"):
        load_config(path)


def test_json_lines_name_the_device_and_keep_a_traceback_on_one_line(root_handlers: None) -> None:
    configure_logging("INFO", "json")
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log = device_logger("edge_agent.test", "cam-7")
    log.info("installed %s", "digits:2")
    try:
        raise OSError("disk full")
    except OSError:
        log.exception("staging failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first == {**first, "level": "INFO", "logger": "edge_agent.test", "device": "cam-7"}
    assert first["msg"] == "device=cam-7 installed digits:2" and "ts" in first
    assert second["level"] == "ERROR" and "OSError: disk full" in second["exc"]


def test_the_format_switches_once_the_config_is_read(root_handlers: None) -> None:
    configure_logging("INFO")
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("edge_agent.test").info("as text")
    use_log_format("json")
    assert isinstance(handler.formatter, JsonFormatter)
    logging.getLogger("edge_agent.test").info("as json")
    text, as_json = stream.getvalue().splitlines()
    assert text.endswith("INFO edge_agent.test as text")
    assert json.loads(as_json)["msg"] == "as json"
    with pytest.raises(ValueError, match="expected text or json"):
        use_log_format("yaml")
