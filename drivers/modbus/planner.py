"""The read planner: the fewest Modbus read requests that cover a register map.

A point occupies ``count`` consecutive addresses of one table (registers, or bits for coils
and discrete inputs) and must be read whole by one request: a 32-bit value split over two
requests could be torn by the PLC updating it in between. A request reads one contiguous
*window* of at most ``max_count`` addresses (125 registers for function codes 3 and 4, 2000
bits for 1 and 2, or less for devices that allow less). A window may bridge addresses that
belong to no point ("holes": read, then ignored), but only holes of at most ``max_gap``
addresses: some devices answer "illegal data address" for unmapped addresses, and on a slow
serial line unused registers cost time.

Holes are the addresses covered by none of the points planned together. An address that
belongs to some point is never a hole, even when that point is read by another request.

**The algorithm** (per table): cut the address line at every hole longer than ``max_gap``
into *segments* (no window can cross such a hole). In each segment, repeatedly take the
lowest start ``s`` among the points not yet planned and open the window ``[s, s +
max_count)``; every unplanned point lying entirely inside it joins the request; the window
is trimmed to end at the last address a member uses.

**Why this is the minimum.** Let ``O`` be any valid plan (each point inside one window of
at most ``max_count`` addresses that crosses no long hole) and ``s`` the lowest start of all
points. Some window ``W`` of ``O`` holds the point starting at ``s``, so ``W`` starts at or
before ``s``, lies in the segment of that point, and ends at or before ``s + max_count``.
Every point in ``W`` starts at or after ``s`` (``s`` is the lowest start) and ends within
``W``: it lies inside the greedy window ``G = [s, s + max_count)`` clipped to the segment,
so the greedy request takes every point ``W`` held, and maybe more. Replace ``W`` by ``G``
in ``O`` and drop the points ``G`` took from the other windows of ``O`` (a window that loses
points stays valid: holes do not depend on who reads an address; one left empty is deleted,
which would only make ``O`` smaller). The rest of ``O`` is a valid plan for the points the
greedy step left, with ``|O| - 1`` windows; by induction the greedy plans those with at most
that many. So the greedy plan never has more requests than ``O``. (Greedy left-to-right is
optimal for covering points on a line with windows of bounded length; the hole rule only
splits the line into independent pieces.) Tables are planned independently, so the sum over
tables is minimal too. ``tests/unit/test_modbus_planner.py`` checks this against a
brute-force optimum.

Note that taking the points in start order *and stopping at the first that does not fit*
would not be optimal: a point that starts later but ends earlier may still fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

Table = Literal["coil", "discrete", "holding", "input"]

#: protocol limits per read request
MAX_REGISTERS: Final = 125  # function codes 3 and 4
MAX_BITS: Final = 2000  # function codes 1 and 2
ADDRESS_SPACE: Final = 65536

#: the function code that reads each table
READ_FUNCTION: Final[dict[str, int]] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
BIT_TABLES: Final = frozenset({"coil", "discrete"})


class PlanError(ValueError):
    """A point that no request can read (too long for the limit, outside the address space)."""


@dataclass(frozen=True, slots=True)
class Span:
    """The addresses of one point: ``start`` .. ``start + count - 1``."""

    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: a window and the indexes (into the planned spans) of the points it carries."""

    start: int
    count: int
    members: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True, slots=True)
class Limits:
    max_registers: int = MAX_REGISTERS
    max_bits: int = MAX_BITS
    max_gap: int = 16  # registers
    max_bit_gap: int = 256  # bits

    def __post_init__(self) -> None:
        if not 1 <= self.max_registers <= MAX_REGISTERS:
            raise PlanError(f"max_registers must be 1..{MAX_REGISTERS}, got {self.max_registers}")
        if not 1 <= self.max_bits <= MAX_BITS:
            raise PlanError(f"max_bits must be 1..{MAX_BITS}, got {self.max_bits}")
        if self.max_gap < 0 or self.max_bit_gap < 0:
            raise PlanError("max_gap and max_bit_gap must not be negative")

    def for_table(self, table: Table) -> tuple[int, int]:
        """``(max_count, max_gap)`` for requests on ``table``."""
        if table in BIT_TABLES:
            return self.max_bits, self.max_bit_gap
        return self.max_registers, self.max_gap


def plan_blocks(spans: Sequence[Span], max_count: int, max_gap: int) -> list[Block]:
    """The fewest windows covering ``spans`` (see the module docstring for the proof).

    Blocks come out in address order of their start; ``members`` keep the spans' order of
    start address. Every span index appears in exactly one block.
    """
    if max_count < 1:
        raise PlanError(f"max_count must be positive, got {max_count}")
    if max_gap < 0:
        raise PlanError(f"max_gap must not be negative, got {max_gap}")
    for i, span in enumerate(spans):
        if span.count < 1:
            raise PlanError(f"span {i} is empty")
        if span.start < 0 or span.end > ADDRESS_SPACE:
            raise PlanError(f"span {i} ({span.start}+{span.count}) is outside the address space")
        if span.count > max_count:
            raise PlanError(f"span {i} has {span.count} addresses, a request may read {max_count}")
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end))
    blocks: list[Block] = []
    for segment in _segments(spans, order, max_gap):
        pending = segment  # start order
        while pending:
            s = spans[pending[0]].start
            limit = s + max_count
            taken: list[int] = []
            rest: list[int] = []
            for pos, i in enumerate(pending):
                span = spans[i]
                if span.start >= limit:
                    # nothing starting here or later fits; keep the order for the next windows
                    rest.extend(pending[pos:])
                    break
                (taken if span.end <= limit else rest).append(i)
            end = max(spans[i].end for i in taken)
            blocks.append(Block(s, end - s, tuple(taken)))
            pending = rest
    blocks.sort(key=lambda b: b.start)
    return blocks


def _segments(spans: Sequence[Span], order: list[int], max_gap: int) -> list[list[int]]:
    """Split spans (given in start order) where the hole to everything before is longer than max_gap."""
    segments: list[list[int]] = []
    covered_to = -1
    for i in order:
        span = spans[i]
        if not segments or span.start - covered_to > max_gap:
            segments.append([])
        segments[-1].append(i)
        covered_to = max(covered_to, span.end)
    return segments


def holes(spans: Sequence[Span], start: int, end: int) -> list[tuple[int, int]]:
    """Maximal runs ``(first, length)`` of addresses in ``[start, end)`` that no span covers."""
    found: list[tuple[int, int]] = []
    cursor = start
    for span in sorted(spans, key=lambda s: s.start):
        if span.end <= cursor or span.start >= end:
            continue
        if span.start > cursor:
            found.append((cursor, span.start - cursor))
        cursor = max(cursor, span.end)
    if cursor < end:
        found.append((cursor, end - cursor))
    return found
