"""Find one row by an id the user typed, whole or as a unique prefix (the way git takes short hashes).

Every GET-one route resolves its key here, so `fleet ... show` accepts the short ids that
`fleet ... ls` prints. An exact match always wins, so an id that is also a prefix of a longer
one (``dev-1`` and ``dev-10``) still names its own row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement
from sqlmodel import Session, col, select

from cloud.errors import ConflictError, NotFoundError

__all__ = ["AmbiguousPrefixError", "escape_like", "resolve"]

Row = TypeVar("Row")

# How many candidates an ambiguous prefix lists: enough to see the pattern, short enough to read.
SHOWN_CANDIDATES = 5
_ESCAPE = "\\"


class AmbiguousPrefixError(ConflictError):
    """A prefix matches several rows; the message lists some so the user can type more characters."""

    def __init__(self, what: str, prefix: str, candidates: Sequence[str], total: int) -> None:
        self.what = what
        self.prefix = prefix
        self.candidates = list(candidates)
        more = f" and {total - len(candidates)} more" if total > len(candidates) else ""
        super().__init__(
            f"{what} {prefix!r} is ambiguous: it is the start of {total} ids "
            f"({', '.join(self.candidates)}{more}); expected a longer prefix or the full id"
        )


def escape_like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern: % and _ match only themselves."""
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")


def resolve(
    session: Session,
    model: type[Row],
    key: Any,
    typed: str,
    *,
    what: str,
    where: Sequence[ColumnElement[bool]] = (),
    not_found: str | None = None,
) -> Row:
    """The row whose ``key`` column equals ``typed``, else the one row whose key starts with it.

    ``where`` narrows the search (a model name, a fleet). Raises NotFoundError (with
    ``not_found`` as its message when given) when nothing matches, and AmbiguousPrefixError
    (a conflict) when several rows share the prefix.
    """
    column = col(key)
    exact = session.exec(select(model).where(column == typed, *where)).first()
    if exact is not None:
        return exact
    missing = not_found or f"{what} {typed!r} is not known: no id is or starts with it"
    if not typed:
        raise NotFoundError(missing)
    pattern = escape_like(typed) + "%"
    query = select(model).where(column.like(pattern, escape=_ESCAPE), *where)
    # Two rows are enough to know the prefix is ambiguous; the rest are fetched only to list them.
    rows = list(session.exec(query.order_by(column).limit(SHOWN_CANDIDATES + 1)).all())
    if not rows:
        raise NotFoundError(missing)
    if len(rows) == 1:
        return rows[0]
    total = _count(session, model, column, pattern, where)
    attribute: str = cast(Any, column).key
    names = [str(getattr(r, attribute)) for r in rows[:SHOWN_CANDIDATES]]
    raise AmbiguousPrefixError(what, typed, names, total)


def _count(
    session: Session, model: type[Any], column: Any, pattern: str, where: Sequence[ColumnElement[bool]]
) -> int:
    from sqlalchemy import func

    query = select(func.count()).select_from(model).where(column.like(pattern, escape=_ESCAPE), *where)
    return int(session.exec(query).one())
