"""``column IN (a list)`` with the list bound as one parameter: one statement whatever its length.

SQLAlchemy's expanding IN renders a placeholder per item, so a statement is new for every list
length. On SQLite each is prepared and kept in the connection's statement cache: a batch path that
asks about 1 to 500 devices leaves up to 500 statements of up to 0.1 MiB each per pooled
connection. Bound as one parameter it is one statement:

- SQLite: ``column IN (SELECT value FROM json_each(?))``, the list as a JSON array (JSON1 is
  part of SQLite since 3.38);
- PostgreSQL: ``column = ANY(?)``, the list as a text array.

``in_list(Device.id, ids)`` reads as ``col(Device.id).in_(ids)``. Use it where a list of ids can
be long and its length varies from call to call (batches); a short fixed list reads better as a
plain ``in_``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import Boolean, String, bindparam
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator


class TextList(TypeDecorator[Collection[str]]):
    """A list of strings bound as one value: a JSON array on SQLite, a text array on PostgreSQL."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(String()))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Collection[str] | None, dialect: Dialect) -> Any:
        # in_list hands over a list; a bare string it refuses (it would read as its characters).
        if value is None or dialect.name == "postgresql":
            return value
        return json.dumps(list(value))


class InList(ColumnElement[bool]):
    """``column`` is one of the strings bound to ``param`` (see the module's docstring)."""

    __visit_name__ = "edgefleet_in_list"
    inherit_cache = True
    type = Boolean()
    # A comparison, not a boolean column: without this SQLite's compiler appends "= 1", which
    # hides the index on ``column``.
    _is_implicitly_boolean = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("param", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], param: BindParameter[Collection[str]]) -> None:
        self.column = column
        self.param = param


def in_list(column: Any, values: Iterable[str]) -> InList:
    """``column IN values``, as ``column.in_(values)`` reads, with the list bound as one parameter."""
    if isinstance(values, str):
        raise TypeError(f"in_list: expected a collection of strings, got str {values!r}")
    return InList(column, bindparam(None, value=list(values), type_=TextList(), unique=True))


@compiles(InList, "sqlite")
def _in_list_sqlite(element: InList, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    # Both parts are compiled SQL (a column, a bound placeholder); no value is written in.
    return f"{column} IN (SELECT value FROM json_each({compiler.process(element.param, **kw)}))"  # noqa: S608


@compiles(InList, "postgresql")
def _in_list_postgresql(element: InList, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} = ANY({compiler.process(element.param, **kw)})"


@compiles(InList)
def _in_list_other(element: InList, compiler: SQLCompiler, **kw: Any) -> str:
    # The hub runs on these two databases only (cloud.db); any other is refused as SQLAlchemy
    # refuses a construct a dialect cannot render.
    raise CompileError(f"in_list: expected a sqlite or postgresql database, got {compiler.dialect.name!r}")
