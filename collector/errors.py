"""One exception hierarchy for the whole collector.

Expected faults (a broker away, a gauge unplugged, a bad payload) are logged as one line
by the code that catches them; only programming errors should ever show a traceback.
"""

from __future__ import annotations


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""


class ConfigError(CollectorError):
    """An invalid configuration: names the file, the field path and the reason."""

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(self.format())

    def format(self) -> str:
        lines = [f"{self.file}: invalid configuration"]
        for where, reason in self.problems:
            lines.append(f"{self.file}: {where}: {reason}")
        return "\n".join(lines)


class JournalError(CollectorError):
    """The journal could not take or give a record (disk full, corrupt file)."""


class JournalFull(JournalError):
    """The disk (or the configured limit) is full: the reading could not be made durable."""


class StoreError(CollectorError):
    """The time-series store refused a write or a query, or could not be reached."""

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class PayloadError(CollectorError):
    """A message that is not a valid inspection record (dead-lettered by the recorder)."""


class SpecificationError(CollectorError):
    """A reading cannot be judged against its specification (e.g. incompatible units)."""
