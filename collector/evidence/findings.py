"""What ``collector verify`` finds, and the auditor's report of it.

The kinds of finding are those of ``docs/evidence-format.md``; :class:`Report` holds them with
a summary of each gateway's chain, bounded (past :data:`MAX_DETAILS` of one kind for one
gateway the rest are counted), and :func:`format_report` prints it for an auditor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

ALTERED = "ALTERED"
FORGED = "FORGED"
UNKNOWN = "UNKNOWN"
BROKEN = "BROKEN"
GAP = "GAP"
DUPLICATE = "DUPLICATE"
TRUNCATED = "TRUNCATED"
REHASHED = "REHASHED"
MISSING = "MISSING"
ORPHAN = "ORPHAN"
IN_FLIGHT = "IN FLIGHT"
#: every finding, in the order of docs/evidence-format.md; all but IN FLIGHT are errors
KINDS = (ALTERED, FORGED, BROKEN, GAP, DUPLICATE, TRUNCATED, REHASHED, MISSING, UNKNOWN, ORPHAN, IN_FLIGHT)

#: how long a record may take from its gateway's journal into InfluxDB before its absence counts
DEFAULT_GRACE_S = 300.0
#: findings of one kind for one gateway reported in detail; the rest are counted
MAX_DETAILS = 50
NO_GATEWAY = "(no gateway)"


@dataclass
class Finding:
    gateway: str
    kind: str  # one of KINDS
    seq: int | None
    detail: str

    @property
    def error(self) -> bool:
        return self.kind != IN_FLIGHT

    def __str__(self) -> str:
        where = f"gateway {self.gateway}" + (f" seq {self.seq}" if self.seq is not None else "")
        return f"{self.kind}: {where}: {self.detail}"


@dataclass
class GatewayChain:
    gateway: str
    registered: bool | None = None  # None: no register given
    retired: bool = False
    blocks: int = 0
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    first_at: str | None = None
    last_at: str | None = None
    checkpoints: int = 0
    newest_checkpoint_seq: int | None = None
    signatures_verified: int = 0
    stations: dict[str, int] = field(default_factory=dict)  # records per station
    kinds: dict[str, int] = field(default_factory=dict)  # records per kind


@dataclass
class Report:
    chains: list[GatewayChain] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    scope: dict[str, Any] = field(default_factory=dict)
    signatures_checked: bool = False
    #: (gateway, kind) -> findings beyond MAX_DETAILS, counted only
    suppressed: dict[tuple[str, str], int] = field(default_factory=dict)
    _shown: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.error]

    @property
    def ok(self) -> bool:
        return not self.errors and not any(k != IN_FLIGHT for _, k in self.suppressed)

    def add(self, finding: Finding) -> None:
        key = (finding.gateway, finding.kind)
        shown = self._shown.get(key, 0)
        if shown >= MAX_DETAILS:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return
        self._shown[key] = shown + 1
        self.findings.append(finding)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        for (_, kind), n in self.suppressed.items():
            out[kind] = out.get(kind, 0) + n
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "scope": self.scope,
            "signatures_checked": self.signatures_checked,
            "counts": self.counts(),
            "gateways": [vars(c) for c in self.chains],
            "findings": [{**vars(f), "error": f.error} for f in self.findings],
            "suppressed": [{"gateway": g, "kind": k, "count": n} for (g, k), n in sorted(self.suppressed.items())],
        }


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
        f"register     {scope.get('register') or 'none given: signatures, unknown and missing gateways NOT checked'}",
        "checks       integrity (each block's SHA-256 over exactly its canonical text; every record point",
        "             and index entry equal to the record in its block);",
        "             completeness (sequence numbers without gaps or duplicates, from 1 or from the block just",
        "             before the time range; each prev_hash the previous block's hash; the chain reaching every",
        "             checkpoint with the hash the checkpoint names);",
        "             authenticity ("
        + (
            "each block and checkpoint signed by a key of its gateway in the register"
            if report.signatures_checked
            else "NOT CHECKED: no key directory"
        )
        + ")",
        f"grace        {scope.get('grace_seconds', DEFAULT_GRACE_S):g} s: younger records not stored yet are "
        "reported IN FLIGHT",
        "",
    ]
    for c in report.chains:
        stations = ", ".join(f"{s} ({n})" for s, n in sorted(c.stations.items()))
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(c.kinds.items()))
        status = "" if c.registered is None else (" (registered)" if c.registered else " (NOT IN THE REGISTER)")
        lines.append(
            f"gateway {c.gateway}{status}{' retired' if c.retired else ''}: {c.records} record(s) "
            f"in {c.blocks} block(s), "
            f"seq {c.first_seq}..{c.last_seq}, head {str(c.last_hash)[:16]}…"
        )
        lines.append(f"    recorded {c.first_at} .. {c.last_at}")
        lines.append(f"    stations {stations or '-'}")
        lines.append(f"    kinds    {kinds or '-'}")
        newest = f", newest names seq {c.newest_checkpoint_seq}" if c.newest_checkpoint_seq is not None else ""
        lines.append(
            f"    checkpoints {c.checkpoints}{newest}; signatures verified on {c.signatures_verified} block(s)"
        )
        own = [f for f in report.findings if f.gateway == c.gateway and f.error]
        own_more = sum(n for (g, k), n in report.suppressed.items() if g == c.gateway and k != IN_FLIGHT)
        problems = len(own) + own_more
        lines.append(f"    result   {'intact' if not problems else f'{problems} problem(s)'}")
    if not report.chains:
        lines.append("no gateways found")
    errors = [f for f in report.findings if f.error]
    flying = [f for f in report.findings if not f.error]
    if errors or report.suppressed:
        lines += ["", "FINDINGS"]
        lines.extend(str(f) for f in errors)
        for (g, k), n in sorted(report.suppressed.items()):
            lines.append(f"{k}: gateway {g}: {n} more not listed")
    if flying:
        lines += ["", "IN FLIGHT (not errors: younger than the grace period; verify again later)"]
        lines.extend(str(f) for f in flying)
    lines.append("")
    if report.ok:
        lines.append("RESULT: intact")
    else:
        counts = report.counts()
        named = ", ".join(f"{k} {counts[k]}" for k in KINDS if k in counts and k != IN_FLIGHT)
        lines.append(f"RESULT: {sum(n for k, n in counts.items() if k != IN_FLIGHT)} problem(s) found: {named}")
    lines.append(
        "note: records written after a gateway's newest checkpoint and removed from the end of its chain leave "
        "no trace until the next checkpoint (every 60 s by default) is stored."
    )
    return "\n".join(lines)


def _list(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)
