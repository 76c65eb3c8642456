"""The recorder's dead-letter file: every refused payload, whole, with who, what and why.

One JSON object per line: ``at`` (UTC), ``topic``, ``gateway``, ``first_seq``, ``last_seq``
(as the payload claims them: null when it is not even a block), ``reason``, ``reported``
(whether the gateway was told: only when its signature proved it sent the block) and
``payload`` (the complete line as received). Every entry is on disk (fsync) before the
message that carried it is acknowledged.

Bounded: at ``max_bytes`` the file is rotated (``dead-letter.jsonl.1``, ``.2`` ...) and at
most ``keep`` rotated files are kept. Dropping the oldest is logged as an error and
counted; the refused blocks themselves stay in their gateways' journals, marked refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class DeadLetters:
    def __init__(self, path: Path, max_bytes: int = 64 * 1024**2, keep: int = 4) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.rotations = 0
        self.dropped_files = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the daemon's life
        self._size = self._fh.tell()

    def write(self, entries: Sequence[dict[str, Any]]) -> None:
        for entry in entries:
            line = json.dumps(entry, ensure_ascii=False) + "\n"
            size = len(line.encode("utf-8"))
            if self._size and self._size + size > self.max_bytes:
                self._rotate()
            self._fh.write(line)
            self._size += size
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def _rotate(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        if oldest.exists():
            self.dropped_files += 1
            log.error(
                "dead-letter file %s dropped (%d bytes) to keep %d rotated file(s): copy dead letters away "
                "before they rotate out (the refused blocks stay in their gateways' journals)",
                oldest,
                oldest.stat().st_size,
                self.keep,
            )
            oldest.unlink()
        for n in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{n}")
            if src.exists():
                src.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = 0
        self.rotations += 1

    def close(self) -> None:
        self._fh.close()
