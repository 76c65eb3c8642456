"""Verifying the evidence: completeness (no gaps) and integrity (nothing altered).

For every gateway found in the store, its records are read back in time order (which is
sequence order: the journal gives each gateway strictly increasing timestamps) and:

- each stored payload is re-hashed: ``sha256(prev_hash || canonical bytes)`` must equal
  its ``hash`` (and its HMAC signature must match when a key is given);
- each point's tags, fields and timestamp must agree with its payload, so an edited
  column is caught even though the payload itself is intact;
- sequence numbers must run on without a gap, and each ``prev_hash`` must be the hash of
  the record before it; a gap names the missing sequence numbers and the records on
  either side.

Without a time range, a gateway's chain must start at sequence number 1.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from collector.evidence.trace import TraceFilter, gateways, iter_gateway_rows
from collector.inspection.records import recompute_hash, sign
from collector.store.base import Store
from collector.store.lineprotocol import mismatches


@dataclass
class Finding:
    gateway: str
    kind: str  # gap, altered, broken_chain, unreadable, out_of_order, bad_signature
    seq: int | None
    detail: str

    def __str__(self) -> str:
        where = f"gateway {self.gateway}" + (f" seq {self.seq}" if self.seq is not None else "")
        return f"{self.kind.upper()}: {where}: {self.detail}"


@dataclass
class GatewayChain:
    gateway: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    first_at: str | None = None
    last_at: str | None = None
    stations: dict[str, int] = field(default_factory=dict)  # records per station
    kinds: dict[str, int] = field(default_factory=dict)  # records per kind


@dataclass
class Report:
    chains: list[GatewayChain] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    scope: dict[str, Any] = field(default_factory=dict)
    signatures_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "scope": self.scope,
            "signatures_checked": self.signatures_checked,
            "gateways": [vars(c) for c in self.chains],
            "findings": [vars(f) for f in self.findings],
        }


def verify(
    store: Store,
    flt: TraceFilter | None = None,
    *,
    key: bytes | None = None,
    only: list[str] | None = None,
    stations: list[str] | None = None,
) -> Report:
    """Verify every gateway's chain (or ``only`` those gateways, or those serving ``stations``).

    A chain is always verified whole within the time range: completeness cannot be judged
    from one station's records, since one gateway's sequence runs over all its stations.
    """
    flt = flt or TraceFilter()
    ranged = flt.start is not None or flt.end is not None
    report = Report(signatures_checked=key is not None)
    report.scope = {
        "store": store.description,
        "from": flt.start,
        "to": flt.end,
        "gateways": only or "all",
        "stations": stations or "all",
    }
    chain_filter = TraceFilter(start=flt.start, end=flt.end)
    for gw in gateways(store):
        if only and gw not in only:
            continue
        if stations and not _serves(store, gw, stations, chain_filter):
            continue
        chain = GatewayChain(gw)
        report.chains.append(chain)
        flt = chain_filter
        prev: dict[str, Any] | None = None
        for row in iter_gateway_rows(store, gw, flt):
            payload = row.get("payload")
            try:
                record = json.loads(payload) if isinstance(payload, str) else None
            except ValueError:
                record = None
            seq = row.get("seq")
            if not isinstance(record, dict):
                report.findings.append(
                    Finding(
                        gw,
                        "unreadable",
                        seq if isinstance(seq, int) else None,
                        f"point at time {row.get('time')} has no readable payload",
                    )
                )
                continue
            chain.records += 1
            rseq = int(record.get("seq", 0))
            station = str(record.get("station"))
            chain.stations[station] = chain.stations.get(station, 0) + 1
            kind = str(record.get("kind"))
            chain.kinds[kind] = chain.kinds.get(kind, 0) + 1
            chain.first_at = chain.first_at or str(record.get("recorded_at"))
            chain.last_at = str(record.get("recorded_at"))
            if recompute_hash(record) != record.get("hash"):
                report.findings.append(
                    Finding(gw, "altered", rseq, f"record {record.get('id')}: payload does not match its hash")
                )
            if key is not None and not hmac.compare_digest(
                str(record.get("signature") or ""), sign(key, str(record.get("hash")))
            ):
                report.findings.append(Finding(gw, "bad_signature", rseq, f"record {record.get('id')}"))
            bad = mismatches(record, row)
            if bad:
                cols = ", ".join(f"{c} stored {row.get(c)!r}" for c in bad)
                report.findings.append(
                    Finding(gw, "altered", rseq, f"record {record.get('id')}: columns differ from the record: {cols}")
                )
            if prev is None:
                chain.first_seq = rseq
                if not ranged and rseq != 1:
                    report.findings.append(
                        Finding(gw, "gap", 1, f"records 1..{rseq - 1} missing before record {record.get('id')}")
                    )
            else:
                expected = int(prev["seq"]) + 1
                if rseq > expected:
                    report.findings.append(
                        Finding(
                            gw,
                            "gap",
                            expected,
                            f"records {expected}..{rseq - 1} missing between {prev.get('id')} "
                            f"({prev.get('recorded_at')}) and {record.get('id')} ({record.get('recorded_at')})",
                        )
                    )
                elif rseq < expected:
                    report.findings.append(
                        Finding(gw, "out_of_order", rseq, f"record {record.get('id')} follows seq {prev['seq']}")
                    )
                if rseq == expected and record.get("prev_hash") != prev.get("hash"):
                    report.findings.append(
                        Finding(gw, "broken_chain", rseq, f"prev_hash does not match the hash of seq {prev['seq']}")
                    )
            prev = record
            chain.last_seq = rseq
            chain.last_hash = str(record.get("hash"))
    return report


def _serves(store: Store, gateway: str, stations: list[str], flt: TraceFilter) -> bool:
    from collector.store.base import quote_literal

    conds = [f'"gateway" = {quote_literal(gateway)}', *flt.conditions()]
    wanted = " OR ".join(f'"station" = {quote_literal(s)}' for s in stations)
    q = f'SELECT "seq" FROM "event", "inspection", "part" WHERE {" AND ".join(conds)} AND ({wanted}) LIMIT 1'
    return any(True for _ in store.iter_query(q))


def format_report(report: Report) -> str:
    """A verification report in a form fit to hand to an auditor."""
    from collector import __version__

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    scope = report.scope
    lines = [
        "EVIDENCE VERIFICATION REPORT",
        f"generated    {now} by collector verify {__version__}",
        f"store        {scope.get('store', '?')}",
        f"time range   {scope.get('from') or 'beginning'} .. {scope.get('to') or 'now'}",
        f"gateways     {_list(scope.get('gateways'))}; stations {_list(scope.get('stations'))}",
        "checks       completeness (sequence numbers without gaps, from 1 unless a time range is given);",
        "             integrity (each record's sha256 over its predecessor's hash and its canonical JSON;",
        "             each stored column equal to the sealed record);",
        "             signatures ("
        + ("HMAC-SHA256 checked with the configured key" if report.signatures_checked else "not checked: no key")
        + ")",
        "",
    ]
    for c in report.chains:
        stations = ", ".join(f"{s} ({n})" for s, n in sorted(c.stations.items()))
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(c.kinds.items()))
        lines.append(
            f"gateway {c.gateway}: {c.records} record(s), seq {c.first_seq}..{c.last_seq}, "
            f"head {str(c.last_hash)[:16]}…"
        )
        lines.append(f"    recorded {c.first_at} .. {c.last_at}")
        lines.append(f"    stations {stations or '-'}")
        lines.append(f"    kinds    {kinds or '-'}")
        own = [f for f in report.findings if f.gateway == c.gateway]
        lines.append(f"    result   {'intact' if not own else f'{len(own)} problem(s)'}")
    if not report.chains:
        lines.append("no records found")
    if report.findings:
        lines.append("")
        lines.append("FINDINGS")
    lines.extend(str(f) for f in report.findings)
    lines.append("")
    lines.append("RESULT: intact" if report.ok else f"RESULT: {len(report.findings)} problem(s) found")
    lines.append(
        "note: records removed from the very end of a chain leave no gap; compare the last sequence "
        "number with the gateway's own (its retained status, or `collector status` on the gateway)."
    )
    return "\n".join(lines)


def _list(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)
