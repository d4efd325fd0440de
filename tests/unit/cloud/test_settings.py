"""Settings: defaults resolve against data_dir, the environment overrides, bad values say why."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cloud.settings import MiB, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("EDGEFLEET_") and not key.startswith("EDGEFLEET_TEST_"):
            monkeypatch.delenv(key)


def test_defaults_resolve_against_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url() == f"sqlite:///{tmp_path / 'hub.db'}"
    assert s.resolved_artifact_dir() == tmp_path / "artifacts"
    assert s.admin_token_path() == tmp_path / "admin.token"
    assert (s.fleet, s.topic_prefix, s.mqtt_protocol, s.share_group) == (
        "default",
        "ef/v1",
        "5",
        "",
    )
    assert s.max_upload_bytes == 256 * MiB


def test_explicit_locations_win(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://u@db/x", artifact_dir=tmp_path / "a")
    assert s.resolved_database_url() == "postgresql+psycopg://u@db/x"
    assert s.resolved_artifact_dir() == tmp_path / "a"


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_FLEET", "plant-7")
    monkeypatch.setenv("EDGEFLEET_MQTT_PORT", "1999")
    monkeypatch.setenv("EDGEFLEET_MQTT_PASSWORD", "s3cret")
    s = Settings()
    assert (s.fleet, s.mqtt_port) == ("plant-7", 1999)
    assert s.mqtt_password is not None and s.mqtt_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_public_endpoint_defaults_to_bound_port() -> None:
    assert Settings(grpc_host="10.0.0.5").public_grpc_endpoint(43210) == "10.0.0.5:43210"
    assert Settings(grpc_public_endpoint="hub.example:443").public_grpc_endpoint(43210) == "hub.example:443"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("fleet", "a/b", "invalid fleet id"),
        ("fleet", "+", "invalid fleet id"),
        ("share_group", "g#", "invalid share group id"),
        ("topic_prefix", "ef/+/v1", "invalid topic prefix"),
        ("database_url", "mysql://x/y", "expected sqlite:///path or postgresql"),
        ("grpc_public_endpoint", "no-port", "expected host:port"),
        ("mqtt_protocol", "4", "'5' or '3.1.1'"),
        ("mqtt_port", 0, "greater than or equal to 1"),
        ("max_upload_bytes", 0, "greater than 0"),
    ],
)
def test_bad_values_say_what_was_expected(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**{field: value})  # type: ignore[arg-type]
