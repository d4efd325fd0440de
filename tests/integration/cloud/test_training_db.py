"""Continuous-training triggers and claims of the unit suite, on SQLite and on the real PostgreSQL.

On PostgreSQL the partial unique index and the fleet lock are what keep two replicas from queueing
two runs of one model or running two runs of one fleet (see conftest.db_url).
"""

from __future__ import annotations

import pytest

from tests.unit.cloud.test_ct_claims import TestClaims
from tests.unit.cloud.test_ct_triggers import TestTriggers

__all__ = ["TestClaims", "TestTriggers"]

pytestmark = pytest.mark.integration
