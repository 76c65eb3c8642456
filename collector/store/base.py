"""The store interface every time-series backend implements.

Backends write line protocol and answer InfluxQL on ``/query``, which InfluxDB 1.x, 2.x
(with a database/retention-policy mapping) and 3.x all accept. Rows come back as dicts
with ``time`` as integer microseconds since the epoch and one key per tag and field.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

Row = dict[str, Any]


class Store(ABC):
    #: a short name for logs ("influxdb-v1 http://127.0.0.1:8086 db=qc")
    description: str = "store"

    @abstractmethod
    def ensure_database(self) -> None:
        """Create the database / check the bucket exists. Idempotent."""

    @abstractmethod
    def write_lines(self, lines: Sequence[str]) -> None:
        """Write line-protocol lines (precision: microseconds) in one request.

        Returns only when the server accepted every line; raises
        :class:`~collector.errors.StoreError` otherwise (``retryable`` says whether trying
        again can help: a 5xx or a connection error can, a 400 for bad data cannot).
        """

    @abstractmethod
    def iter_query(self, influxql: str) -> Iterator[Row]:
        """Run one InfluxQL statement and stream its rows (chunked, never all in memory).

        Each row carries ``measurement`` (the series name), ``time`` (µs since the epoch)
        and the selected tags and fields.
        """

    def query(self, influxql: str) -> list[Row]:
        return list(self.iter_query(influxql))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def quote_literal(value: str) -> str:
    """An InfluxQL string literal: single quotes, with ``\\`` and ``'`` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
