"""Pydantic's validation errors as sentences: ``path: expected ..., got ...``.

Each model names what its fields expect, in words, in an ``EXPECTED`` class mapping;
``render_errors`` walks an error's location through the models from the root to
find the field, so that ``stages[0].percent`` reads as the plan's author wrote it
(a tagged union's tag is left out of the path). Validators that find several
problems at once raise :func:`problems_error`, which renders as one line each.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

__all__ = ["is_number", "problems_error", "render_errors", "show"]


def problems_error(found: list[tuple[str, str]]) -> PydanticCustomError:
    """One pydantic error carrying several ``(path suffix, sentence)`` problems, for a validator to raise."""
    text = "; ".join(f"{suffix.lstrip('.') or 'value'}: {sentence}" for suffix, sentence in found)
    return PydanticCustomError("plan_problems", text, {"problems": found})


def render_errors(error: ValidationError, root: type[BaseModel], *, source: str) -> list[str]:
    """Pydantic's errors about ``root`` as ``path: expected ..., got ...`` sentences.

    ``source`` names the whole input, for errors about it rather than one of its fields.
    """
    lines: list[str] = []
    for item in error.errors():
        lines.extend(_render(item, root, source))
    return lines


def show(value: object) -> str:
    """A value as a message quotes it: text in quotes, numbers bare, containers by their shape."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, Mapping):
        keys = ", ".join(str(key) for key in list(value)[:8])
        return f"a mapping with keys {keys}" if value else "an empty mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}" if value else "an empty list"
    return type(value).__name__


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _models_in(annotation: object) -> dict[str, type[BaseModel]]:
    """The models an annotation can hold, by their ``kind`` (or by name when there is one)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get("kind")
        return {str(field.default) if field is not None else annotation.__name__: annotation}
    found: dict[str, type[BaseModel]] = {}
    for arg in getattr(annotation, "__args__", ()):
        found.update(_models_in(arg))
    for meta in getattr(annotation, "__metadata__", ()):
        found.update(_models_in(meta))
    return found


def _locate(
    loc: tuple[int | str, ...], root: type[BaseModel]
) -> tuple[str, type[BaseModel] | None, str | None]:
    """The dotted path of ``loc``, and the model and field its last key names (None if unknown)."""
    path = ""
    options: dict[str, type[BaseModel]] = {"": root}
    owner: type[BaseModel] | None = None
    name: str | None = None
    for key in loc:
        if isinstance(key, int):
            path += f"[{key}]"
            continue
        if len(options) > 1 and key in options:  # a tagged union's tag: not part of the path
            options = {key: options[key]}
            continue
        model = next(iter(options.values())) if len(options) == 1 else None
        owner, name = model, key
        field = model.model_fields.get(key) if model is not None else None
        options = _models_in(field.annotation) if field is not None else {}
        path = f"{path}.{key}" if path else key
    return path, owner, name


def _expected(owner: type[BaseModel] | None, name: str | None, item: Mapping[str, Any]) -> str:
    wanted: Mapping[str, str] = getattr(owner, "EXPECTED", {})
    if name is not None and name in wanted:
        return wanted[name]
    message = str(item["msg"])
    for prefix in ("Input should be ", "Value error, "):
        message = message.removeprefix(prefix)
    return message


def _render(item: Mapping[str, Any], root: type[BaseModel], source: str) -> list[str]:
    kind = item["type"]
    path, owner, name = _locate(tuple(item["loc"]), root)
    where = path or source
    got = show(item.get("input"))
    if kind == "plan_problems":
        return [f"{where}{suffix}: {sentence}" for suffix, sentence in item["ctx"]["problems"]]
    if kind == "extra_forbidden":
        expected = ", ".join(owner.model_fields) if owner is not None else "nothing"
        return [f"{where}: unknown field; expected one of {expected}"]
    if kind == "missing":
        return [f"{where}: expected {_expected(owner, name, item)}, got nothing (the field is required)"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = item.get("ctx", {})
        if "tag" in ctx:
            tags = str(ctx.get("expected_tags", "")).replace("'", "")
            return [f"{where}.kind: expected one of {tags}, got {show(ctx['tag'])}"]
        return [f"{where}: expected {_expected(owner, name, item)}, got {got}"]
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return [f"{where}: expected a mapping, got {got}"]
    return [f"{where}: expected {_expected(owner, name, item)}, got {got}"]
