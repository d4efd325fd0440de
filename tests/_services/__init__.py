"""Private servers for the test run: a Mosquitto and a PostgreSQL of its own, never the user's."""

from tests._services.mosquitto import Mosquitto, find_mosquitto
from tests._services.postgres import PostgreSQL, find_bindir
from tests._services.process import MissingBinary, ServiceFailed, free_port, restartable_port
from tests._services.running import running

__all__ = [
    "MissingBinary",
    "Mosquitto",
    "PostgreSQL",
    "ServiceFailed",
    "find_bindir",
    "find_mosquitto",
    "free_port",
    "restartable_port",
    "running",
]
