"""Resolving ids typed in full or as a unique prefix (cloud.services.lookup), on a real SQLite file."""

from __future__ import annotations

import pytest
from sqlmodel import col

from cloud.api.errors import status_for
from cloud.db import SessionFactory
from cloud.errors import NotFoundError
from cloud.models import ModelVersion
from cloud.services.lookup import SHOWN_CANDIDATES, AmbiguousPrefixError, escape_like, resolve


def _add(sessions: SessionFactory, name: str, *versions: str) -> None:
    with sessions() as s:
        for v in versions:
            s.add(ModelVersion(name=name, version=v, format="onnx", sha256="0" * 64, length=1))
        s.commit()


def _version(sessions: SessionFactory, name: str, typed: str) -> str:
    with sessions() as s:
        row = resolve(
            s,
            ModelVersion,
            ModelVersion.version,
            typed,
            what=f"model {name} version",
            where=[col(ModelVersion.name) == name],
        )
        return row.version


def test_exact_match_wins_over_a_longer_id_it_starts(sessions: SessionFactory) -> None:
    _add(sessions, "m", "1", "10", "11")
    assert _version(sessions, "m", "1") == "1"


def test_a_unique_prefix_names_its_row(sessions: SessionFactory) -> None:
    _add(sessions, "m", "20261203T062512-4d85aa", "20261203T071500-77cc01")
    assert _version(sessions, "m", "20261203T06") == "20261203T062512-4d85aa"


def test_the_where_clause_narrows_the_search(sessions: SessionFactory) -> None:
    _add(sessions, "a", "1.0.0")
    _add(sessions, "b", "1.0.1")
    assert _version(sessions, "a", "1.0") == "1.0.0"


def test_an_ambiguous_prefix_is_a_conflict_that_lists_candidates(sessions: SessionFactory) -> None:
    versions = [f"2.{i}.0" for i in range(SHOWN_CANDIDATES + 3)]
    _add(sessions, "m", *versions)
    with pytest.raises(AmbiguousPrefixError) as info:
        _version(sessions, "m", "2.")
    err = info.value
    assert status_for(err) == 409
    assert err.candidates == sorted(versions)[:SHOWN_CANDIDATES]
    assert f"start of {len(versions)} ids" in str(err) and "and 3 more" in str(err)
    assert "expected a longer prefix or the full id" in str(err)


def test_nothing_matching_is_not_found(sessions: SessionFactory) -> None:
    _add(sessions, "m", "1.0.0")
    with pytest.raises(NotFoundError, match="'9' is not known"):
        _version(sessions, "m", "9")
    with pytest.raises(NotFoundError):
        _version(sessions, "m", "")


@pytest.mark.parametrize(("typed", "stored"), [("1_", "10x"), ("1%", "1.0"), ("a\\", "ab")])
def test_like_wildcards_in_the_typed_text_match_only_themselves(
    sessions: SessionFactory, typed: str, stored: str
) -> None:
    _add(sessions, "m", stored)
    with pytest.raises(NotFoundError):
        _version(sessions, "m", typed)


def test_an_underscore_prefix_still_finds_the_id_that_has_it(sessions: SessionFactory) -> None:
    _add(sessions, "m", "1_0", "10x")
    assert _version(sessions, "m", "1_") == "1_0"


def test_escape_like() -> None:
    assert escape_like("a%b_c\\d") == "a\\%b\\_c\\\\d"
