"""The query module: quoting, and reading blocks at exact places (real influxd where it matters)."""

from __future__ import annotations

import pytest

from collector.store import queries
from collector.store.influx_v1 import InfluxV1Store
from collector.store.lineprotocol import lines_for_block
from collector.store.queries import BlockRef, _windows
from tests.store.chains import BASE_US, GatewayChain, measurement


def test_values_and_names_are_quoted_in_one_place() -> None:
    assert queries.eq("serial", "it's a \\ test") == "\"serial\" = 'it\\'s a \\\\ test'"
    assert queries.eq('we"ird', "x") == '"we\\"ird" = \'x\''
    assert queries.select(["payload", "gateway"], "block", ["a", "b"], limit=1, descending=True) == (
        'SELECT "payload", "gateway" FROM "block" WHERE a AND b ORDER BY time DESC LIMIT 1'
    )
    assert queries.time_range(5, 9) == ["time >= 5u", "time < 9u"] and queries.time_range() == []
    groups = list(queries.any_of("bucket", [f"b{i:03d}" for i in range(250)]))
    assert len(groups) == 3 and groups[0].count(" OR ") == 99 and "'b249'" in groups[2]


def test_windows_cover_the_asked_times_and_skip_long_runs_of_others() -> None:
    asked = {10, 11, 20, 200}
    times = sorted(set(range(0, 300)) | asked)
    # 8 unwanted between 11 and 20 are read along; 179 between 20 and 200 are not
    assert _windows(times, asked) == [(10, 20), (200, 200)]
    assert _windows([5], {5}) == [(5, 5)] and _windows([], set()) == []


def test_block_refs_are_identified_by_gateway_and_time() -> None:
    assert (
        BlockRef("gw-1", 5, "st-1") == BlockRef("gw-1", 5) and len({BlockRef("gw-1", 5, "a"), BlockRef("gw-1", 5)}) == 1
    )


@pytest.mark.services
def test_blocks_at_reads_exactly_the_asked_blocks(v1_store: InfluxV1Store, chain: GatewayChain) -> None:
    sealed = [chain.seal([measurement(f"SN-{n}")], station="st-10" if n % 3 else "st-20") for n in range(300)]
    far = chain.seal([measurement("SN-far")], station="st-10", at_us=BASE_US + 7_200_000_000)  # two hours later
    v1_store.write_lines([line for b in [*sealed, far] for line in lines_for_block(b)])
    asked = [sealed[1], sealed[2], sealed[4], sealed[250], far]
    # with the station (as the index names it) and without (as a bare reference might)
    for refs in (
        [BlockRef(b.gateway, b.recorded_us, b.station) for b in asked],
        [BlockRef(b.gateway, b.recorded_us) for b in asked],
    ):
        rows = list(queries.blocks_at(v1_store, refs))
        assert sorted(int(r["time"]) for r in rows) == sorted(b.recorded_us for b in asked)
        assert {r["payload"] for r in rows} == {b.text for b in asked}
    assert list(queries.blocks_at(v1_store, [BlockRef("gw-1", BASE_US + 1)])) == []  # nothing there
