"""The prefix lookup's unit tests again, on SQLite and on the real PostgreSQL (``db_url`` here has both).

LIKE, its ESCAPE clause and ordering are where the two databases could differ.
"""

from __future__ import annotations

import pytest

from tests.unit.cloud.test_lookup import (  # noqa: F401  (collected here with this suite's db_url)
    test_a_unique_prefix_names_its_row,
    test_an_ambiguous_prefix_is_a_conflict_that_lists_candidates,
    test_an_underscore_prefix_still_finds_the_id_that_has_it,
    test_exact_match_wins_over_a_longer_id_it_starts,
    test_like_wildcards_in_the_typed_text_match_only_themselves,
    test_nothing_matching_is_not_found,
    test_the_where_clause_narrows_the_search,
)

pytestmark = pytest.mark.integration
