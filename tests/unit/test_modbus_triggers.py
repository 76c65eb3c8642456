"""The trigger handshake's state machine on its own: what the poll saw in, the next step out.

Time is a number the test advances (the only thing mocked); the machine does no I/O. The
driver tests run the same machine against the PLC simulator.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.triggers import Handshake, Phase, Step

ONE, ZERO = Decimal(1), Decimal(0)
TIMEOUT = 5.0


def bit(*, acknowledge: bool = True, reset: bool = True) -> Handshake:
    return Handshake(
        label="unit 1", point="done", rise=True, acknowledge=acknowledge, reset=reset, stall_timeout=TIMEOUT
    )


def counter(bits: int = 16) -> Handshake:
    return Handshake(
        label="unit 1", point="n", rise=False, acknowledge=True, reset=False, stall_timeout=TIMEOUT, counter_bits=bits
    )


def phase_of(hs: Handshake) -> Phase:
    return hs.phase  # through a call: mypy would narrow the attribute across the steps


def kinds(hs: Handshake) -> list[str]:
    return [n.kind for n in hs.take_notes()]


def test_four_phase_handshake() -> None:
    hs = bit()
    assert hs.poll(ZERO, 0.0) is Step.NONE
    assert hs.poll(ONE, 0.1) is Step.ACQUIRE
    assert hs.acquired(b"part-1", 0.1) is Step.WRITE_ACK
    assert hs.written(True, 0.1) is Step.NONE and phase_of(hs) is Phase.ACKED
    assert hs.poll(ZERO, 0.2) is Step.WRITE_RESET  # the PLC took it: reset the acknowledge
    assert hs.written(True, 0.2) is Step.NONE and phase_of(hs) is Phase.IDLE
    assert hs.poll(ONE, 0.3) is Step.ACQUIRE  # the next part
    assert not hs.take_notes()


def test_a_bit_set_at_start_up_fires() -> None:
    hs = bit()
    assert hs.poll(ONE, 0.0) is Step.ACQUIRE  # the PLC is still waiting for it


def test_the_plc_not_yet_done_with_the_acknowledge_is_waited_for() -> None:
    hs = bit()
    hs.poll(ONE, 0.0)
    hs.acquired(b"part-1", 0.0)
    hs.written(True, 0.0)
    assert hs.poll(ONE, 0.1) is Step.CHECK_IDENTITY
    assert hs.identity_read(b"part-1", 0.1) is Step.NONE  # the same part: the PLC has not reacted yet
    assert hs.poll(ZERO, 0.2) is Step.WRITE_RESET
    assert not hs.take_notes()


def test_a_drop_between_two_polls_is_not_a_deadlock() -> None:
    hs = bit()
    hs.poll(ONE, 0.0)
    hs.acquired(b"part-1", 0.0)
    hs.written(True, 0.0)
    # the PLC dropped part-done and raised it for the next part before the next poll
    assert hs.poll(ONE, 0.1) is Step.CHECK_IDENTITY
    assert hs.identity_read(b"part-2", 0.1) is Step.ACQUIRE
    assert kinds(hs) == ["overtaken"]
    # the acknowledge coil is still high: low first, high on the next poll
    assert hs.acquired(b"part-2", 0.1) is Step.WRITE_RESET
    assert hs.written(True, 0.1) is Step.NONE and phase_of(hs) is Phase.ACK_DUE
    assert hs.poll(ONE, 0.2) is Step.WRITE_ACK
    assert hs.written(True, 0.2) is Step.NONE and phase_of(hs) is Phase.ACKED
    assert hs.poll(ZERO, 0.3) is Step.WRITE_RESET


def test_without_reset_the_next_acknowledge_follows_at_once() -> None:
    hs = bit(reset=False)
    hs.poll(ONE, 0.0)
    hs.acquired(b"part-1", 0.0)
    hs.written(True, 0.0)
    hs.poll(ONE, 0.1)
    assert hs.identity_read(b"part-2", 0.1) is Step.ACQUIRE
    assert hs.acquired(b"part-2", 0.1) is Step.WRITE_ACK
    hs.written(True, 0.1)
    assert hs.poll(ZERO, 0.2) is Step.NONE and phase_of(hs) is Phase.IDLE  # nothing to reset


def test_a_stuck_handshake_stalls_after_its_timeout_repeats_the_acknowledge_and_resumes() -> None:
    hs = bit()
    hs.poll(ONE, 0.0)
    hs.acquired(b"part-1", 0.0)
    hs.written(True, 1.0)
    for t in (1.5, 3.0, 5.9):  # the PLC does not take the acknowledge
        assert hs.poll(ONE, t) is Step.CHECK_IDENTITY
        assert hs.identity_read(b"part-1", t) is Step.NONE
    assert not hs.stalled and not hs.take_notes()
    hs.poll(ONE, 6.0)
    assert hs.identity_read(b"part-1", 6.0) is Step.NONE
    notes = hs.take_notes()
    assert [n.kind for n in notes] == ["stalled"] and "handshake stalled for 5.0 s" in notes[0].detail
    hs.poll(ONE, 8.0)
    assert hs.identity_read(b"part-1", 8.0) is Step.NONE
    hs.poll(ONE, 11.0)
    assert hs.identity_read(b"part-1", 11.0) is Step.WRITE_ACK  # repeated every stall_timeout
    assert hs.written(True, 11.0) is Step.NONE and hs.stalled
    assert not hs.take_notes()  # one stall, one note
    assert hs.poll(ZERO, 12.0) is Step.WRITE_RESET
    notes = hs.take_notes()
    assert [n.kind for n in notes] == ["resumed"] and "resumed after 6.0 s" in notes[0].detail
    assert not hs.stalled


def test_a_failing_acknowledge_is_retried_without_reading_the_part_again_and_stalls() -> None:
    hs = bit()
    hs.poll(ONE, 0.0)
    assert hs.acquired(b"part-1", 0.0) is Step.WRITE_ACK
    assert hs.written(False, 0.0) is Step.NONE and phase_of(hs) is Phase.ACK_DUE
    assert hs.poll(ONE, 1.0) is Step.WRITE_ACK
    hs.written(False, 1.0)
    assert hs.poll(ONE, 5.0) is Step.WRITE_ACK
    assert kinds(hs) == ["stalled"]
    hs.written(True, 5.0)
    assert kinds(hs) == ["resumed"] and phase_of(hs) is Phase.ACKED


def test_a_part_that_cannot_be_read_stays_due_stalls_or_is_reported_missed() -> None:
    hs = bit()
    assert hs.poll(ONE, 0.0) is Step.ACQUIRE
    assert hs.failed(0.0) is Step.NONE and phase_of(hs) is Phase.DUE
    assert hs.poll(ONE, 5.0) is Step.ACQUIRE
    hs.failed(5.0)
    assert kinds(hs) == ["stalled"]
    assert hs.poll(ZERO, 6.0) is Step.NONE and phase_of(hs) is Phase.IDLE  # it dropped before it was read
    notes = hs.take_notes()
    assert [n.kind for n in notes] == ["resumed", "missed"] and notes[1].count == 1


def test_without_acknowledge_a_bit_fires_once_per_rise() -> None:
    hs = bit(acknowledge=False)
    assert hs.poll(ONE, 0.0) is Step.ACQUIRE
    assert hs.acquired(b"x", 0.0) is Step.NONE and phase_of(hs) is Phase.SEEN
    assert hs.poll(ONE, 0.1) is Step.NONE
    assert hs.poll(ZERO, 0.2) is Step.NONE
    assert hs.poll(ONE, 0.3) is Step.ACQUIRE


def test_counter_baseline_change_missed_parts_and_wrap() -> None:
    hs = counter(bits=16)
    assert hs.poll(Decimal(65534), 0.0) is Step.NONE  # the baseline
    assert hs.poll(Decimal(65535), 0.1) is Step.ACQUIRE
    assert hs.acquired(b"", 0.1) is Step.WRITE_ACK and hs.value == 65535
    hs.written(True, 0.1)
    assert phase_of(hs) is Phase.IDLE  # a counter handshake has no drop phase
    assert hs.poll(Decimal(0), 0.2) is Step.ACQUIRE  # 65535 -> 0 is one part
    assert not hs.take_notes()
    hs.acquired(b"", 0.2)
    hs.written(True, 0.2)
    assert hs.poll(Decimal(3), 0.3) is Step.ACQUIRE
    (note,) = hs.take_notes()
    assert note.kind == "missed" and note.count == 2 and "from 0 to 3" in note.detail


def test_a_counter_part_that_fails_to_read_is_counted_missed_once_overtaken() -> None:
    hs = counter()
    hs.poll(Decimal(1), 0.0)
    assert hs.poll(Decimal(2), 0.1) is Step.ACQUIRE
    hs.failed(0.1)
    assert hs.poll(Decimal(2), 0.2) is Step.ACQUIRE and not hs.take_notes()  # the same change, again
    hs.failed(0.2)
    assert hs.poll(Decimal(3), 0.3) is Step.ACQUIRE  # part 2 was never read
    (note,) = hs.take_notes()
    assert note.count == 1
    hs.acquired(b"", 0.3)
    assert hs.previous == 3


OBSERVATIONS = st.lists(
    st.tuples(
        st.booleans(),  # part-done
        st.booleans(),  # the part in hand is a new one
        st.booleans(),  # requests go through
        st.floats(min_value=0.0, max_value=3.0),  # seconds until the next poll
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(OBSERVATIONS, st.booleans())
def test_no_wait_outlives_its_timeout_without_a_stall(
    observations: list[tuple[bool, bool, bool, float]], reset: bool
) -> None:
    """Whatever the PLC and the bus do, a handshake that waits longer than stall_timeout says so."""
    hs = bit(reset=reset)
    now, part = 0.0, 0
    for done, new_part, ok, dt in observations:
        now += dt
        part += new_part
        step = hs.poll(ONE if done else ZERO, now)
        for _ in range(6):
            if step is Step.NONE:
                break
            if step is Step.ACQUIRE:
                step = hs.acquired(b"%d" % part, now) if ok else hs.failed(now)
            elif step is Step.CHECK_IDENTITY:
                step = hs.identity_read(b"%d" % part if ok else None, now)
            else:
                step = hs.written(ok, now)
        else:
            raise AssertionError("more than six steps in one poll")
        waiting = hs.phase not in (Phase.IDLE, Phase.SEEN)
        if waiting and now - hs.since >= TIMEOUT:
            assert hs.stalled, (hs.phase, now, hs.since)
        notes = hs.take_notes()
        assert [n.kind for n in notes].count("stalled") <= 1
