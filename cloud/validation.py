"""Shapes of the names a user picks: model names and versions.

Both become parts of file names, URLs and log lines, so they are kept boring.
"""

from __future__ import annotations

import re

from cloud.errors import InvalidInputError

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9_.+-]{1,64}$"
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_VERSION_RE = re.compile(VERSION_PATTERN)


def check_model_name(name: str) -> str:
    if not _MODEL_NAME_RE.fullmatch(name):
        raise InvalidInputError(
            f"invalid model name {name!r}: expected 1-64 characters of lowercase letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return name


def check_version(version: str) -> str:
    if not _VERSION_RE.fullmatch(version):
        raise InvalidInputError(
            f"invalid model version {version!r}: expected 1-64 characters of letters, digits, "
            "'_', '.', '+' or '-'"
        )
    return version


def parse_label_selector(text: str) -> dict[str, str]:
    """``"site=berlin,tier=edge"`` -> ``{"site": "berlin", "tier": "edge"}``."""
    selector: dict[str, str] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"invalid label selector item {item!r}: expected key=value")
        selector[key.strip()] = value.strip()
    return selector
