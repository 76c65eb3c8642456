"""What a recorder checks before it stores a block (``docs/evidence-format.md``, steps 1-4).

:func:`check_block` takes one line of a record message and the topic it came on, and
returns the block with its line-protocol lines, or a :class:`Refusal` saying why not. The
order matters for what the gateway is told: only a refusal made *after* the block proved
to come from its gateway (topic, register, signature) is reported to that gateway; before
that, anyone could have sent it, and a refusal reported on a stranger's word would make a
genuine gateway stop sending genuine blocks.

Each record is validated against its kind's model in one pydantic call per block
(``RECORDS_ADAPTER``: a few µs per record, strict types, the patterns of decimals and
timestamps); the hash check and the JSON parse are :func:`collector.chain.blocks.read`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from collector.chain import blocks, checkpoints
from collector.chain.blocks import Block, BlockError
from collector.chain.checkpoints import Checkpoint, CheckpointError
from collector.chain.keys import KeyRing, SignatureInvalid
from collector.inspection.models import RECORDS_ADAPTER
from collector.store.lineprotocol import lines_for_block

#: a block with more records than this is refused (the gateway's own bound is at most this);
#: it also bounds how far back the recorder looks for a stored block overlapping a new one
MAX_BLOCK_RECORDS = 10_000
_BLOCK_POINT = "block,"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a payload is not stored. ``reported``: tell the gateway (its signature proved it sent it)."""

    reason: str
    gateway: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    reported: bool = False


@dataclass(frozen=True, slots=True)
class Checked:
    """A block that passed every check of its own, with the lines that store it."""

    block: Block
    recorded_us: int
    record_lines: list[str]  # record points and lookup points
    block_lines: list[str]  # the block point (written after the records, so it never stands alone)

    @property
    def end_us(self) -> int:
        """Time of the block's last record."""
        return self.recorded_us + len(self.block.records) - 1


def check_block(
    text: str, where: tuple[str, str, str], keyring: KeyRing, *, require_signature: bool = True
) -> Checked | Refusal:
    """Steps 1-4 for one line that arrived on the record topic of ``where`` = (site, line, station)."""
    try:
        block = blocks.read(text)
    except BlockError as exc:
        return Refusal(f"not a valid block: {exc.reason}")
    gw, first, last = block.gateway, block.first_seq, block.last_seq
    site, line, station = where
    if (block.site, block.line, block.station) != (site, line, station):
        return Refusal(
            f"the block is of {block.site}/{block.line}/{block.station} but came on the topic of "
            f"{site}/{line}/{station}",
            gw,
            first,
            last,
        )
    entry = keyring.get(gw)
    if entry is None:
        return Refusal(f"gateway {gw!r} is not in the register {keyring.source}", gw, first, last)
    if entry.stations is not None and block.station not in entry.stations:
        return Refusal(f"the register does not bind gateway {gw!r} to station {block.station!r}", gw, first, last)
    if (entry.site is not None and entry.site != block.site) or (entry.line is not None and entry.line != block.line):
        return Refusal(f"the register binds gateway {gw!r} to another site or line", gw, first, last)
    if block.key_id is None:
        if require_signature:
            return Refusal("unsigned block (this recorder requires signatures)", gw, first, last)
    else:
        try:
            keyring.verify(gw, block.key_id, block.digest, block.signature)
        except SignatureInvalid as exc:
            return Refusal(str(exc), gw, first, last)
    # from here on the gateway is who it says it is: refusals are reported to it
    if len(block.records) > MAX_BLOCK_RECORDS:
        return Refusal(
            f"{len(block.records)} records in one block (at most {MAX_BLOCK_RECORDS})", gw, first, last, True
        )
    try:
        RECORDS_ADAPTER.validate_python(block.records)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = [str(p) for p in err["loc"]]
        if len(loc) >= 2:
            kind = block.records[int(loc[0])].get("kind") if loc[0].isdigit() else None
            loc = [f"records[{loc[0]}]", *(p for p in loc[1:] if p != kind)]
        reason = f"{'.'.join(loc)}: {err['msg']} ({exc.error_count()} problem(s))"
        return Refusal(reason, gw, first, last, True)
    recorded_us = block.recorded_us
    try:
        lines = lines_for_block(block)
    except ValueError as exc:
        return Refusal(f"cannot be written as line protocol: {exc}", gw, first, last, True)
    # the block point goes in last: a block point never stands without its records
    mine = [ln for ln in lines if ln.startswith(_BLOCK_POINT)]
    return Checked(block, recorded_us, [ln for ln in lines if not ln.startswith(_BLOCK_POINT)], mine)


def check_checkpoint(text: str, gateway: str, keyring: KeyRing, *, require_signature: bool = True) -> Checkpoint | str:
    """A checkpoint that came on ``gateway``'s checkpoint topic, or why it is refused."""
    try:
        cp = checkpoints.read(text)
    except CheckpointError as exc:
        return f"not a valid checkpoint: {exc.reason}"
    if cp.gateway != gateway:
        return f"a checkpoint of gateway {cp.gateway!r} on the topic of {gateway!r}"
    if gateway not in keyring:
        return f"gateway {gateway!r} is not in the register {keyring.source}"
    if cp.key_id is None:
        return "unsigned checkpoint (this recorder requires signatures)" if require_signature else cp
    try:
        keyring.verify(gateway, cp.key_id, cp.digest, cp.signature)
    except SignatureInvalid as exc:
        return str(exc)
    return cp
