"""Canonical JSON: the exact bytes that are hashed.

Keys sorted at every level, ``,`` and ``:`` as separators, no whitespace, non-ASCII written
as itself. Only strings, integers, booleans, ``None``, lists and string-keyed objects: a
float has no single canonical spelling, so it is refused (decimals travel as strings).

:func:`canonical_bytes` is the reference and checks what it encodes; :func:`dumps_sorted`
is the same encoder without the checks, for code that built its values itself.
"""

from __future__ import annotations

import json
from typing import Any

from collector.errors import CollectorError


class NotCanonical(CollectorError):
    """A value that has no canonical JSON form (a float, a non-string key, ...)."""


#: the encoder behind the canonical form; sort_keys sorts every level
dumps_sorted = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _check(value: Any, where: str) -> None:
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, int):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotCanonical(f"{where}: key {key!r} is not a string")
            _check(item, f"{where}.{key}")
        return
    raise NotCanonical(f"{where}: {type(value).__name__} has no canonical JSON form")


def canonical_text(value: Any) -> str:
    """The canonical JSON text of ``value`` (checked)."""
    _check(value, "$")
    try:
        text = dumps_sorted(value)
    except ValueError as exc:
        raise NotCanonical(str(exc)) from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate has no UTF-8 form
        raise NotCanonical(f"not encodable as UTF-8: {exc.reason}") from None
    return text


def canonical_bytes(value: Any) -> bytes:
    return canonical_text(value).encode("utf-8")
