"""Trigger-based acquisition: the part-done handshake as a state machine that cannot deadlock.

Pure logic, no I/O: the driver tells the :class:`Handshake` what it polled and what its
requests achieved; the handshake answers with the next :class:`Step` (read the part, check
which part is in hand, write the acknowledge or its reset). Notes for people (a stall, its
end, parts missed, a drop the poll never saw) collect in :attr:`Handshake.notes`.

A part-done bit (``rise``), with an acknowledge::

    IDLE --done=1--> DUE --part read and emitted--> ACK_DUE --ack written--> ACKED
    ACKED --done=0--> RESET_DUE --ack reset written--> IDLE       (four-phase handshake)
    ACKED --done=1, same part--> wait; after stall_timeout: stalled, acknowledge again
                                 every stall_timeout until the PLC answers
    ACKED --done=1, another part--> the drop was never seen (the PLC's cycle is not longer
                                 than the poll): read and emit that part, write the reset,
                                 and the acknowledge on the next poll (a PLC watching the
                                 coil's edge needs to see it low in between)

"Same part" compares the bytes of the trigger's ``part_id`` point, or by default of all its
``on_trigger`` points together, with those of the part acknowledged. A write that fails is
retried on the next poll without emitting the part again; a part whose read fails stays DUE
and is read on the next poll (if part-done drops first, the part is reported missed). Every
state but IDLE (and SEEN, without a handshake) waits for the PLC or for a request to go
through, and every such wait ends in a stall report after ``stall_timeout``: no combination
of lost edges, slow PLCs or failed requests can stop the station silently.

Without an acknowledge a bit fires on each 0 -> 1 seen by the poll (a pulse shorter than the
poll interval is lost: use a counter). A counter (``change``) fires on every new value, the
first one read being the baseline; a jump by more than one is reported as parts missed. Its
acknowledge (usually the counter written back) has no drop phase.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

_ONE = Decimal(1)


class Step(enum.Enum):
    NONE = "none"
    ACQUIRE = "acquire"  # read the on_trigger points; emit them; report acquired() or failed()
    CHECK_IDENTITY = "check identity"  # read the part identity; report identity()
    WRITE_ACK = "write acknowledge"  # report written()
    WRITE_RESET = "write acknowledge reset"  # report written()


class Phase(enum.Enum):
    IDLE = "idle"
    DUE = "due"  # a part is waiting to be read
    SEEN = "seen"  # a bit without acknowledge fired: waiting for it to drop
    ACK_DUE = "acknowledge due"
    ACKED = "acknowledged"
    RESET_DUE = "reset due"


NoteKind = Literal["missed", "stalled", "resumed", "overtaken"]


@dataclass(frozen=True, slots=True)
class Note:
    kind: NoteKind
    detail: str
    count: int = 0  # missed: parts missed


class Handshake:
    def __init__(
        self,
        *,
        label: str,
        point: str,
        rise: bool,
        acknowledge: bool,
        reset: bool,
        stall_timeout: float,
        counter_bits: int | None = None,
    ) -> None:
        self.label = label
        self.point = point
        self.rise = rise
        self.acknowledge = acknowledge
        self.reset = reset and acknowledge and rise
        self.stall_timeout = stall_timeout
        self.counter_bits = counter_bits
        self.notes: list[Note] = []
        self.restart()

    def restart(self) -> None:
        """Start afresh (a new connection: what happened while the driver was away is unknown)."""
        self.phase = Phase.IDLE
        #: the trigger value of the part in hand (a counter handshake writes it back)
        self.value: Decimal | None = None
        #: the last value seen (a counter's baseline)
        self.previous: Decimal | None = None
        self.identity: bytes | None = None
        self.since = 0.0  # when the step the handshake waits on began
        self.stalled = False
        self._stalled_at = 0.0
        self._reasserted = 0.0
        self._writing: Literal["ack", "reset"] | None = None
        self._overtaken = False

    def take_notes(self) -> list[Note]:
        notes, self.notes = self.notes, []
        return notes

    # -- what the poll saw ----------------------------------------------------------------------

    def poll(self, value: Decimal, now: float) -> Step:
        if self.rise:
            return self._poll_bit(value == _ONE, now)
        return self._poll_counter(value, now)

    def _poll_bit(self, done: bool, now: float) -> Step:
        phase = self.phase
        if phase is Phase.IDLE:
            if not done:
                return Step.NONE
            self._due(_ONE, now, overtaken=False)
            return Step.ACQUIRE
        if phase is Phase.DUE:
            if done:
                self._check_stall(now)
                return Step.ACQUIRE
            # the PLC dropped part-done before the part could be read: that part is lost, and said so
            self.phase = Phase.IDLE
            self._progress(now)
            self.notes.append(
                Note("missed", f"overrun: {self.label}: {self.point} dropped before the part could be read", 1)
            )
            return Step.NONE
        if phase is Phase.SEEN:
            if not done:
                self.phase = Phase.IDLE
            return Step.NONE
        if phase is Phase.ACKED:
            if done:
                return Step.CHECK_IDENTITY
            self._progress(now)
            if self.reset:
                self.phase = Phase.RESET_DUE
                self.since = now
                return self._write("reset")
            self.phase = Phase.IDLE
            return Step.NONE
        self._check_stall(now)
        return self._write("ack" if phase is Phase.ACK_DUE else "reset")

    def _poll_counter(self, value: Decimal, now: float) -> Step:
        if self.phase is Phase.ACK_DUE:
            self._check_stall(now)
            return self._write("ack")
        previous = self.previous
        if previous is None:
            self.previous = value  # a baseline: what happened before start-up is unknown
            return Step.NONE
        pending = self.phase is Phase.DUE
        if value == previous:
            self.phase = Phase.IDLE  # (a pending change was taken back)
            return Step.NONE
        if pending and value == self.value:
            self._check_stall(now)
            return Step.ACQUIRE  # the same change, not read yet
        last = self.value if pending and self.value is not None else previous
        if self.counter_bits is not None:
            step = (int(value) - int(last)) % (1 << self.counter_bits)
            missed = (step - 1 if 1 < step < (1 << (self.counter_bits - 1)) else 0) + (1 if pending else 0)
            if missed:
                self.notes.append(
                    Note(
                        "missed",
                        f"overrun: {self.label}: trigger {self.point} went from {last} to {value}; "
                        f"{missed} part(s) finished between two polls were not acquired",
                        missed,
                    )
                )
        if pending:
            self.value = value
            self._check_stall(now)
        else:
            self._due(value, now, overtaken=False)
        return Step.ACQUIRE

    # -- what the requests achieved ---------------------------------------------------------------

    def acquired(self, identity: bytes, now: float) -> Step:
        """The part was read and emitted."""
        self._progress(now)
        self.previous = self.value
        self.identity = identity
        if not self.acknowledge:
            self.phase = Phase.SEEN if self.rise else Phase.IDLE
            return Step.NONE
        self.phase = Phase.ACK_DUE
        self.since = now
        if self._overtaken and self.reset:
            # the acknowledge coil is still high from the previous part: low first, high on the next poll
            return self._write("reset")
        return self._write("ack")

    def failed(self, now: float) -> Step:
        """The part could not be read (the refusal is reported): the next poll tries again."""
        self._check_stall(now)
        return Step.NONE

    def identity_read(self, identity: bytes | None, now: float) -> Step:
        """The part in hand after the acknowledge (None: it could not be read this poll)."""
        if identity is None:
            self._check_stall(now)
            return Step.NONE
        if identity != self.identity:
            self._progress(now)
            self.notes.append(
                Note(
                    "overtaken",
                    f"{self.label}: {self.point} stayed set after the acknowledge but the part changed: "
                    "the drop between two parts fell between two polls; acquiring the new part",
                )
            )
            self._due(_ONE, now, overtaken=True)
            return Step.ACQUIRE
        self._check_stall(now)
        if self.stalled and now - self._reasserted >= self.stall_timeout:
            self._reasserted = now
            return self._write("ack")
        return Step.NONE

    def written(self, ok: bool, now: float) -> Step:
        writing, self._writing = self._writing, None
        if not ok:
            return Step.NONE  # the phase stays; the next poll writes again
        if writing == "ack":
            if self.phase is Phase.ACK_DUE:
                self._progress(now)
                if self.rise:
                    self.phase = Phase.ACKED
                    self.since = now
                else:
                    self.phase = Phase.IDLE
            return Step.NONE
        if self.phase is Phase.RESET_DUE:
            self._progress(now)
            self.phase = Phase.IDLE
        # ACK_DUE after an overtaken part: the reset is down, the acknowledge follows next poll
        return Step.NONE

    # -- stalls -------------------------------------------------------------------------------------

    def _due(self, value: Decimal, now: float, *, overtaken: bool) -> None:
        self.phase = Phase.DUE
        self.value = value
        self.since = now
        self._overtaken = overtaken

    def _write(self, what: Literal["ack", "reset"]) -> Step:
        self._writing = what
        return Step.WRITE_ACK if what == "ack" else Step.WRITE_RESET

    def _check_stall(self, now: float) -> None:
        if self.stalled or now - self.since < self.stall_timeout:
            return
        self.stalled = True
        self._stalled_at = self._reasserted = now
        waiting = {
            Phase.DUE: "the part's values could not be read; tried again every poll",
            Phase.ACK_DUE: "the acknowledge could not be written; retried every poll",
            Phase.ACKED: f"{self.point} is still set for the same part after the acknowledge (the PLC does "
            f"not take it); the acknowledge is repeated every {self.stall_timeout:g} s",
            Phase.RESET_DUE: "the acknowledge could not be reset; retried every poll",
        }.get(self.phase, str(self.phase.value))
        self.notes.append(Note("stalled", f"{self.label}: handshake stalled for {now - self.since:.1f} s: {waiting}"))

    def _progress(self, now: float) -> None:
        if self.stalled:
            self.stalled = False
            self.notes.append(
                Note("resumed", f"{self.label}: handshake resumed after {now - self._stalled_at:.1f} s stalled")
            )
