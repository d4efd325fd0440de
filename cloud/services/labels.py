"""Device labels: selectors in Kubernetes syntax, effective labels, and matching in SQL.

A device reports labels (``Device.labels``); an operator may set others (``Device.operator_labels``).
The effective labels are the reported ones with the operator's laid over them: an operator value
wins, and an operator value of None (typed as ``-``) hides the reported label of that key. Removing
the operator's entry brings the reported value back. The effective labels are kept in the
``DeviceLabel`` table, rewritten only when they change, and selectors are compiled to IN /
NOT EXISTS subqueries over it, so matching a fleet never reads every device into Python.

Selector syntax (comma = AND; a selector with no requirement matches every device)::

    site=lab   site==lab   site!=lab   site in (lab,office)   site notin (lab)   site   !site

As in Kubernetes, ``!=`` and ``notin`` also match devices that have no such label.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, exists, insert, true
from sqlmodel import Session, col, select

from cloud.errors import InvalidInputError, NotFoundError
from cloud.models import Device, DeviceLabel
from cloud.sql_lists import in_list

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_VALUE_LENGTH",
    "Op",
    "Requirement",
    "Selector",
    "SelectorError",
    "as_selector",
    "check_label",
    "effective_labels",
    "parse_selector",
    "rewrite_labels",
    "selector_clause",
    "sync_labels",
]

# The DeviceLabel columns' widths: a longer reported label is not stored, so it cannot be selected.
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
_ROWS_PER_INSERT = 300  # 3 parameters a row: stays under SQLite's bound-parameter limit
# The value an operator gives to hide a reported label.
HIDDEN = "-"
_PUNCTUATION = "-_./"


class SelectorError(InvalidInputError):
    """A selector that does not parse; says where, what was expected and what came."""

    def __init__(self, text: str, position: int, expected: str, got: str) -> None:
        self.text = text
        self.position = position
        self.expected = expected
        self.got = got
        super().__init__(
            f"invalid label selector {text!r} at position {position}: expected {expected}, got {got}"
        )


class Op(enum.StrEnum):
    EQ = "="
    NE = "!="
    IN = "in"
    NOTIN = "notin"
    EXISTS = "exists"
    NOT_EXISTS = "!exists"


@dataclass(frozen=True, slots=True, order=True)
class Requirement:
    key: str
    op: Op
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.op is Op.EXISTS:
            return self.key
        if self.op is Op.NOT_EXISTS:
            return f"!{self.key}"
        if self.op in (Op.EQ, Op.NE):
            return f"{self.key}{self.op.value}{self.values[0]}"
        return f"{self.key} {self.op.value} ({','.join(self.values)})"

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op is Op.EXISTS:
            return value is not None
        if self.op is Op.NOT_EXISTS:
            return value is None
        if self.op in (Op.EQ, Op.IN):
            return value in self.values
        return value not in self.values  # NE, NOTIN: a device without the label matches


@dataclass(frozen=True, slots=True)
class Selector:
    """Requirements that must all hold; ``str()`` is canonical (sorted, one spelling per operator)."""

    requirements: tuple[Requirement, ...] = ()

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c in _PUNCTUATION


@dataclass
class _Token:
    kind: str  # "word", "op" ("=", "==", "!=", "!"), "(", ")", ",", "end"
    text: str
    position: int

    def shown(self) -> str:
        return "the end" if self.kind == "end" else repr(self.text)


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif _is_word_char(c):
            start = i
            while i < len(text) and _is_word_char(text[i]):
                i += 1
            out.append(_Token("word", text[start:i], start))
        elif text.startswith(("==", "!="), i):
            out.append(_Token("op", text[i : i + 2], i))
            i += 2
        elif c in "=!":
            out.append(_Token("op", c, i))
            i += 1
        elif c in "(),":
            out.append(_Token(c, c, i))
            i += 1
        else:
            raise SelectorError(
                text, i, "a label key or value (letters, digits, '-', '_', '.', '/'), an operator, "
                "'(', ')' or ','", repr(c)
            )  # fmt: skip
    out.append(_Token("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, token: _Token, expected: str) -> SelectorError:
        return SelectorError(self.text, token.position, expected, token.shown())

    def word(self, what: str, limit: int) -> str:
        token = self.take()
        if token.kind != "word":
            raise self.fail(token, what)
        if len(token.text) > limit:
            raise SelectorError(self.text, token.position, f"{what} of at most {limit} characters",
                                f"{len(token.text)} characters")  # fmt: skip
        return token.text

    def selector(self) -> Selector:
        requirements: list[Requirement] = []
        if self.peek().kind == "end":
            return Selector()
        while True:
            requirements.append(self.requirement())
            token = self.take()
            if token.kind == "end":
                break
            if token.kind != ",":
                raise self.fail(token, "',' or the end of the selector")
        return Selector(tuple(sorted(set(requirements))))

    def requirement(self) -> Requirement:
        token = self.peek()
        if token.kind == "op" and token.text == "!":
            self.take()
            return Requirement(self.word("a label key after '!'", MAX_KEY_LENGTH), Op.NOT_EXISTS)
        key = self.word("a label key or '!'", MAX_KEY_LENGTH)
        token = self.peek()
        if token.kind in (",", "end"):
            return Requirement(key, Op.EXISTS)
        if token.kind == "op" and token.text in ("=", "==", "!="):
            self.take()
            op = Op.NE if token.text == "!=" else Op.EQ
            # An empty value is a value: `site=` matches devices whose site label is empty.
            value = "" if self.peek().kind in (",", "end") else self.word("a label value", MAX_VALUE_LENGTH)
            return Requirement(key, op, (value,))
        if token.kind == "word" and token.text in ("in", "notin"):
            self.take()
            return Requirement(key, Op.IN if token.text == "in" else Op.NOTIN, self.value_set(token.text))
        raise self.fail(token, f"'=', '==', '!=', 'in', 'notin', ',' or the end after label key {key!r}")

    def value_set(self, op: str) -> tuple[str, ...]:
        token = self.take()
        if token.kind != "(":
            raise self.fail(token, f"'(' after {op!r}")
        values = {self.word(f"a label value inside {op} (...)", MAX_VALUE_LENGTH)}
        while True:
            token = self.take()
            if token.kind == ")":
                return tuple(sorted(values))
            if token.kind != ",":
                raise self.fail(token, f"',' or ')' in the {op} (...) list")
            values.add(self.word(f"a label value after ',' inside {op} (...)", MAX_VALUE_LENGTH))


def parse_selector(text: str) -> Selector:
    """Parse a label selector (see the module's docstring); SelectorError says where it went wrong."""
    return _Parser(text).selector()


def as_selector(value: Selector | str | Mapping[str, str]) -> Selector:
    """A selector from its text, or from ``{key: value}`` pairs (each one ``key=value``)."""
    if isinstance(value, Selector):
        return value
    if isinstance(value, str):
        return parse_selector(value)
    return Selector(tuple(sorted(Requirement(k, Op.EQ, (v,)) for k, v in value.items())))


def selector_clause(selector: Selector) -> ColumnElement[bool]:
    """A WHERE clause over ``Device.id``: IN / NOT EXISTS over DeviceLabel, one per requirement."""
    if not selector.requirements:
        return true()
    return and_(*(_requirement_clause(r) for r in selector.requirements))


def _requirement_clause(r: Requirement) -> ColumnElement[bool]:
    where: list[ColumnElement[bool]] = [col(DeviceLabel.key) == r.key]
    if r.op in (Op.EQ, Op.NE):
        where.append(col(DeviceLabel.value) == r.values[0])
    elif r.op in (Op.IN, Op.NOTIN):
        where.append(col(DeviceLabel.value).in_(r.values))
    if r.op in (Op.EQ, Op.IN, Op.EXISTS):
        # Device.id IN (ids with the label), uncorrelated: the (key, value) index yields the few
        # matching devices, where a correlated EXISTS is probed once per device of the fleet (SQLite
        # does not turn it into a semi-join); 10x faster for a cohort's count on 10,000 devices.
        return col(Device.id).in_(select(DeviceLabel.device_id).where(*where))
    # A negation matches most devices: probing each in id order stops as soon as a page is full.
    return ~exists(select(DeviceLabel.device_id).where(col(DeviceLabel.device_id) == col(Device.id), *where))


# --- effective labels ------------------------------------------------------------------------


def check_label(key: str, value: str | None) -> None:
    """An operator's label must be selectable: a word as a selector reads it, within the columns' widths."""
    for what, text, limit in (("key", key, MAX_KEY_LENGTH), ("value", value, MAX_VALUE_LENGTH)):
        if text is None or (what == "value" and text == ""):
            continue
        if not text or len(text) > limit or not all(_is_word_char(c) for c in text):
            raise InvalidInputError(
                f"invalid label {what} {text!r}: expected 1-{limit} letters, digits, '-', '_', '.' or '/'"
            )


def effective_labels(reported: Mapping[str, str], operator: Mapping[str, str | None]) -> dict[str, str]:
    """The reported labels with the operator's laid over them; an operator None (or "-") hides a key."""
    merged = dict(reported)
    for key, value in operator.items():
        if value is None or value == HIDDEN:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _storable(labels: Mapping[str, str]) -> dict[str, str]:
    # A device may report a label too long for the columns; it is kept in Device.labels but cannot
    # be selected (and a selector refuses such long words anyway).
    return {k: v for k, v in labels.items() if 0 < len(k) <= MAX_KEY_LENGTH and len(v) <= MAX_VALUE_LENGTH}


def rewrite_labels(session: Session, labels_by_device: Mapping[str, Mapping[str, str]]) -> None:
    """Replace the DeviceLabel rows of each given device with these effective labels, in bulk.

    The devices' rows must be in the database (flushed) already: DeviceLabel refers to them.
    """
    if not labels_by_device:
        return
    ids = sorted(labels_by_device)
    session.exec(delete(DeviceLabel).where(in_list(DeviceLabel.device_id, ids)))
    rows = [
        {"device_id": device_id, "key": key, "value": value}
        for device_id in ids
        for key, value in sorted(_storable(labels_by_device[device_id]).items())
    ]
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        session.exec(insert(DeviceLabel).values(rows[start : start + _ROWS_PER_INSERT]))


def sync_labels(session: Session, devices: Iterable[Device]) -> None:
    """Write the effective labels of these devices (as their rows now hold them) to DeviceLabel."""
    session.flush()
    rewrite_labels(session, {d.id: effective_labels(d.labels, d.operator_labels) for d in devices})


def stored_labels(session: Session, device_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The effective labels DeviceLabel holds for these devices (devices without labels: absent)."""
    out: dict[str, dict[str, str]] = {}
    if not device_ids:
        return out
    query = select(DeviceLabel.device_id, DeviceLabel.key, DeviceLabel.value).where(
        in_list(DeviceLabel.device_id, device_ids)
    )
    for device_id, key, value in session.exec(query).all():
        out.setdefault(device_id, {})[key] = value
    return out


def sync_reported_changes(
    session: Session, changes: Mapping[str, tuple[Mapping[str, str], Mapping[str, str]]]
) -> int:
    """Rewrite DeviceLabel for devices whose reported labels went from ``old`` to ``new`` in this batch.

    Only those whose effective labels change are rewritten (an operator label may mask the change);
    returns how many. The operator labels are read afresh after the batch's device updates are
    flushed: on PostgreSQL those updates hold the rows' locks, so a label route that committed in
    between is seen, and one that comes later waits and then reads these reported labels.
    """
    if not changes:
        return 0
    session.flush()
    ids = sorted(changes)
    query = select(Device.id, Device.operator_labels).where(in_list(Device.id, ids))
    operator: dict[str, Mapping[str, str | None]] = {
        device_id: labels or {} for device_id, labels in session.exec(query).all()
    }
    rewrites: dict[str, dict[str, str]] = {}
    for device_id in ids:
        old, new = changes[device_id]
        theirs = operator.get(device_id, {})
        after = effective_labels(new, theirs)
        if after != effective_labels(old, theirs):
            rewrites[device_id] = after
    rewrite_labels(session, rewrites)
    return len(rewrites)


def update_operator_labels(
    session: Session,
    fleet: str,
    device_id: str,
    *,
    replace: Mapping[str, str | None] | None = None,
    set_labels: Mapping[str, str | None] | None = None,
    remove: Sequence[str] = (),
) -> Device:
    """Change a device's operator labels and, when its effective labels change, its DeviceLabel rows.

    ``replace`` swaps the whole set; ``set_labels`` adds or overrides keys (None or "-" hides the
    reported label of that key); ``remove`` drops the operator's entry, so the reported value, if
    any, counts again. Commits. Nothing changes when any key or value is invalid.
    """
    updates = dict(set_labels or {})
    both = sorted(set(updates) & set(remove))
    if both:
        raise InvalidInputError(
            f"labels {', '.join(both)} are both set and removed: expected one or the other"
        )
    for key, value in [*(replace or {}).items(), *updates.items()]:
        check_label(key, value)
    for key in remove:
        check_label(key, None)
    # Locked (PostgreSQL) so that ingest, rewriting the same device's labels, waits or is waited for.
    device = session.exec(
        select(Device)
        .where(col(Device.id) == device_id, col(Device.fleet) == fleet)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if device is None:
        raise NotFoundError(f"device {device_id!r} is not known in fleet {fleet!r}")
    before = effective_labels(device.labels, device.operator_labels)
    wanted: dict[str, str | None] = dict(device.operator_labels) if replace is None else dict(replace)
    wanted.update(updates)
    for key in remove:
        wanted.pop(key, None)
    # None is how a hidden label is stored; "-" is how it is typed.
    device.operator_labels = {k: None if v == HIDDEN else v for k, v in sorted(wanted.items())}
    session.add(device)
    after = effective_labels(device.labels, device.operator_labels)
    if after != before:
        session.flush()
        rewrite_labels(session, {device.id: after})
    session.commit()
    return device
