"""Canonical JSON: the exact bytes that are hashed.

Keys sorted at every level, ``,`` and ``:`` as separators, no whitespace, non-ASCII written
as itself. Only strings, integers, booleans, ``None``, lists and string-keyed objects: a
float has no single canonical spelling, so it is refused (decimals travel as strings).

:func:`canonical_bytes` is the reference and checks what it encodes; :func:`dumps_sorted`
is the same encoder without the checks, for code that built its values itself.
"""

from __future__ import annotations

import json
import json.encoder
import operator
from collections.abc import Sequence
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


_encode_str = json.encoder.encode_basestring  # the string encoder of dumps_sorted (ensure_ascii=False)
_MARK = "\ue000"  # a private-use character: marks a slot while a template is made (and proved)


class TemplateEncoder:
    """:func:`dumps_sorted` for flat objects of one key set whose values mostly repeat.

    A gateway writes the same characteristic, gauge, part number and limits into every
    measurement record; only a few values change per reading. Encoding the repeating part
    once per combination (a template: the canonical text with a slot per changing value)
    and filling in the changing values leaves the bytes exactly those of
    :func:`dumps_sorted`: an object's canonical text is its sorted ``"key":value`` pairs one
    after the other, and a slot holds a value's own canonical text. Each template is proved
    when it is made (filled with the values it was made from, it must give the very text of
    :func:`dumps_sorted`), and anything not of the shape (another key set, a changing value
    that is not a string or ``None``, an unhashable repeating value) is encoded by
    :func:`dumps_sorted` itself. Templates are bounded (``max_templates``; past it they are
    dropped and made again).
    """

    def __init__(self, constant: Sequence[str], variable: Sequence[str], *, max_templates: int = 4096) -> None:
        if set(constant) & set(variable):
            raise ValueError("a key is either constant or variable")
        self._variable_keys = tuple(sorted(variable))  # slots in the order the text holds them
        self._constant = operator.itemgetter(*constant)
        self._variable = operator.itemgetter(*self._variable_keys)
        self._size = len(constant) + len(variable)
        self._templates: dict[Any, str] = {}
        self._max = max_templates
        self.made = 0  # templates made (each one proved)
        self.fallbacks = 0  # objects encoded by dumps_sorted

    def encode(self, value: dict[str, Any]) -> str:
        if len(value) != self._size:
            self.fallbacks += 1
            return dumps_sorted(value)
        try:
            key = self._constant(value)
            template = self._templates.get(key)
            slots = self._variable(value)
        except (KeyError, TypeError):  # another key set, or an unhashable value
            self.fallbacks += 1
            return dumps_sorted(value)
        if template is None:
            made = self._make(value)
            if made is None:
                self.fallbacks += 1
                return dumps_sorted(value)
            if len(self._templates) >= self._max:
                self._templates.clear()
            template = self._templates[key] = made
        try:
            # encode_basestring refuses anything but a string (a number, a bool): those fall back
            return template % tuple([_encode_str(v) if v is not None else "null" for v in slots])
        except TypeError:
            self.fallbacks += 1
            return dumps_sorted(value)

    def _make(self, value: dict[str, Any]) -> str | None:
        sample = dict(value)
        for i, k in enumerate(self._variable_keys):
            sample[k] = f"{_MARK}{i}{_MARK}"
        text = dumps_sorted(sample)
        pieces: list[str] = []
        rest = text
        for i in range(len(self._variable_keys)):
            mark = f'"{_MARK}{i}{_MARK}"'
            if rest.count(mark) != 1:
                return None  # the mark occurs in a value of its own: no template for this one
            before, rest = rest.split(mark)
            pieces.append(before)
        pieces.append(rest)
        # a %-format: the constant text with each % doubled, a %s per slot
        template = "%s".join(p.replace("%", "%%") for p in pieces)
        try:
            filled = template % tuple([_encode_str(v) if v is not None else "null" for v in self._variable(value)])
        except TypeError:
            return None  # a changing value that is not a string
        if filled != dumps_sorted(value):
            return None  # never happens by construction; the proof costs once per template
        self.made += 1
        return template
