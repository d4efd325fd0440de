"""Training processes on SQLite and on the real PostgreSQL: the process opens the database the hub
runs on (a schema of its own here, named in the URL's options), claims progress, and is failed by the
hub when it is killed or stopped (see conftest.db_url)."""

from __future__ import annotations

import pytest

from tests.unit.cloud.test_ct_child import (  # noqa: F401  (fixtures, registered by import)
    listener,
    make_worker,
    queued,
    test_a_training_process_killed_mid_run_fails_the_run_naming_the_signal,
    test_stop_terminates_the_training_process_and_fails_the_run,
)

__all__ = [
    "test_a_training_process_killed_mid_run_fails_the_run_naming_the_signal",
    "test_stop_terminates_the_training_process_and_fails_the_run",
]

pytestmark = pytest.mark.integration
