"""The read planner: every point covered, limits kept, and no plan with fewer requests exists."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.planner import (
    MAX_BITS,
    MAX_REGISTERS,
    Block,
    Limits,
    PlanError,
    Span,
    holes,
    plan_blocks,
)


def spans(*pairs: tuple[int, int]) -> list[Span]:
    return [Span(a, n) for a, n in pairs]


def check_plan(points: Sequence[Span], blocks: Sequence[Block], max_count: int, max_gap: int) -> None:
    """The plan's own validity, independent of how it was found."""
    assigned = sorted(i for b in blocks for i in b.members)
    assert assigned == list(range(len(points))), "every point in exactly one request"
    for b in blocks:
        assert 1 <= b.count <= max_count
        for i in b.members:
            assert b.start <= points[i].start and points[i].end <= b.end, "a point is read whole"
        # trimmed: the window starts and ends on its own points
        assert b.start == min(points[i].start for i in b.members)
        assert b.end == max(points[i].end for i in b.members)
        assert all(length <= max_gap for _, length in holes(points, b.start, b.end)), "no long hole is bridged"


def set_partitions(items: list[int]) -> Iterator[list[list[int]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        for k in range(len(partition)):
            yield [*partition[:k], [first, *partition[k]], *partition[k + 1 :]]
        yield [[first], *partition]


def brute_force_minimum(points: Sequence[Span], max_count: int, max_gap: int) -> int:
    """The fewest requests over every way of grouping the points (exponential; small maps only)."""

    def feasible(group: list[int]) -> bool:
        start = min(points[i].start for i in group)
        end = max(points[i].end for i in group)
        if end - start > max_count:
            return False
        return all(length <= max_gap for _, length in holes(points, start, end))

    best = len(points)
    for partition in set_partitions(list(range(len(points)))):
        if len(partition) < best and all(feasible(g) for g in partition):
            best = len(partition)
    return best


# -- examples ---------------------------------------------------------------------------------------


def test_one_point_one_request() -> None:
    assert plan_blocks(spans((100, 2)), 125, 0) == [Block(100, 2, (0,))]


def test_nothing_to_read() -> None:
    assert plan_blocks([], 125, 10) == []


def test_scattered_map_merges_into_the_minimum() -> None:
    # a typical station map: counter, status, serial, three floats, an ack counter
    points = spans((0, 2), (2, 1), (10, 10), (20, 2), (22, 2), (24, 2), (30, 2))
    assert plan_blocks(points, 125, 16) == [Block(0, 32, tuple(range(7)))]
    # holes of 7 (3..9) and 4 (26..29) registers: max_gap 5 bridges only the second
    blocks = plan_blocks(points, 125, 5)
    assert [(b.start, b.count) for b in blocks] == [(0, 3), (10, 22)]
    # never read an unmapped register
    blocks = plan_blocks(points, 125, 0)
    assert [(b.start, b.count) for b in blocks] == [(0, 3), (10, 16), (30, 2)]


def test_the_125_register_limit() -> None:
    points = [Span(a, 1) for a in range(0, 300)]
    blocks = plan_blocks(points, MAX_REGISTERS, 0)
    assert [(b.start, b.count) for b in blocks] == [(0, 125), (125, 125), (250, 50)]
    # exactly 125 apart fits; 126 does not
    assert len(plan_blocks(spans((0, 1), (124, 1)), 125, 200)) == 1
    assert len(plan_blocks(spans((0, 1), (125, 1)), 125, 200)) == 2


def test_the_2000_bit_limit() -> None:
    points = [Span(a, 1) for a in range(0, 4001, 100)]
    blocks = plan_blocks(points, MAX_BITS, 1000)
    assert [(b.start, b.count) for b in blocks] == [(0, 1901), (2000, 1901), (4000, 1)]


def test_a_lower_device_limit() -> None:
    points = [Span(a, 2) for a in range(0, 200, 2)]
    blocks = plan_blocks(points, 64, 0)
    assert all(b.count <= 64 for b in blocks)
    assert len(blocks) == 4  # 200 registers / 64, rounded up


def test_points_never_split_across_requests() -> None:
    # a float32 at 123..124 and one at 125..126: with 125 per request the second starts anew
    blocks = plan_blocks(spans((0, 2), (123, 2), (125, 2)), 125, 200)
    assert [(b.start, b.count) for b in blocks] == [(0, 125), (125, 2)]


def test_max_gap_counts_only_unmapped_addresses() -> None:
    # B (1..6) covers what lies between A and C, so the request [0, 6) with A and C bridges
    # no hole although B itself does not fit in it and is read by a second request
    points = spans((0, 2), (1, 6), (5, 1))
    blocks = plan_blocks(points, 6, 0)
    check_plan(points, blocks, 6, 0)
    assert [(b.start, b.count, b.members) for b in blocks] == [(0, 6, (0, 2)), (1, 6, (1,))]


def test_a_later_shorter_point_still_joins_the_window() -> None:
    """Stopping at the first point that does not fit would need three requests here."""
    points = spans((0, 1), (2, 9), (3, 1), (10, 1))
    blocks = plan_blocks(points, 10, 100)
    check_plan(points, blocks, 10, 100)
    assert len(blocks) == brute_force_minimum(points, 10, 100) == 2


def test_overlapping_and_identical_points() -> None:
    # bits of one status register, and a uint16 view of a uint32's low word
    points = spans((2, 1), (2, 1), (2, 1), (0, 2), (1, 1))
    blocks = plan_blocks(points, 125, 0)
    check_plan(points, blocks, 125, 0)
    assert len(blocks) == 1


def test_limits_and_errors() -> None:
    assert Limits().for_table("holding") == (125, 16)
    assert Limits().for_table("coil") == (2000, 256)
    assert Limits(max_registers=64, max_gap=0).for_table("input") == (64, 0)
    for bad in ({"max_registers": 126}, {"max_registers": 0}, {"max_bits": 2001}, {"max_gap": -1}):
        with pytest.raises(PlanError):
            Limits(**bad)
    with pytest.raises(PlanError, match="request may read 125"):
        plan_blocks(spans((0, 126)), 125, 0)
    with pytest.raises(PlanError, match="address space"):
        plan_blocks(spans((65535, 2)), 125, 0)
    with pytest.raises(PlanError, match="empty"):
        plan_blocks(spans((0, 0)), 125, 0)
    with pytest.raises(PlanError):
        plan_blocks(spans((0, 1)), 0, 0)


def test_holes() -> None:
    points = spans((0, 2), (5, 1), (4, 1))
    assert holes(points, 0, 6) == [(2, 2)]
    assert holes(points, 0, 10) == [(2, 2), (6, 4)]
    assert holes([], 3, 5) == [(3, 2)]


# -- properties -----------------------------------------------------------------------------------------


@st.composite
def small_maps(draw: st.DrawFn) -> tuple[list[Span], int, int]:
    max_count = draw(st.integers(1, 12))
    max_gap = draw(st.integers(0, 6))
    n = draw(st.integers(1, 7))
    points = [
        Span(draw(st.integers(0, 40)), draw(st.integers(1, max_count)))  # every point fits one request
        for _ in range(n)
    ]
    return points, max_count, max_gap


@settings(max_examples=400, deadline=None)
@given(small_maps())
def test_no_plan_with_fewer_requests_exists(case: tuple[list[Span], int, int]) -> None:
    points, max_count, max_gap = case
    blocks = plan_blocks(points, max_count, max_gap)
    check_plan(points, blocks, max_count, max_gap)
    assert len(blocks) == brute_force_minimum(points, max_count, max_gap)


@st.composite
def large_maps(draw: st.DrawFn) -> tuple[list[Span], int, int]:
    bits = draw(st.booleans())
    limit = MAX_BITS if bits else MAX_REGISTERS
    max_count = draw(st.integers(1, limit))
    max_gap = draw(st.integers(0, limit))
    sizes = [1] if bits else [1, 2, 4, 10, 20]
    n = draw(st.integers(0, 150))
    points = [
        Span(draw(st.integers(0, 65536 - 20)), draw(st.sampled_from([s for s in sizes if s <= max_count])))
        for _ in range(n)
    ]
    return points, max_count, max_gap


@settings(max_examples=200, deadline=None)
@given(large_maps())
def test_plans_cover_everything_and_keep_the_limits(case: tuple[list[Span], int, int]) -> None:
    points, max_count, max_gap = case
    blocks = plan_blocks(points, max_count, max_gap)
    check_plan(points, blocks, max_count, max_gap)
    # a lower bound any plan must meet: each request spans at most max_count addresses
    # and cannot cross a hole longer than max_gap
    assert len(blocks) >= _lower_bound(points, max_count, max_gap)


def _lower_bound(points: Sequence[Span], max_count: int, max_gap: int) -> int:
    """Requests no plan can do without: one per segment between long holes, and enough
    requests of max_count addresses to cover every mapped address once."""
    if not points:
        return 0
    mapped: set[int] = set()
    for s in points:
        mapped.update(range(s.start, s.end))
    ordered = sorted(mapped)
    segments = 1 + sum(1 for a, b in itertools.pairwise(ordered) if b - a - 1 > max_gap)
    return max(segments, -(-len(mapped) // max_count))
