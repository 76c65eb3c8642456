"""Modbus framing and PDUs against the specifications' own examples and two other implementations.

The frames below are the worked examples of the "MODBUS Application Protocol Specification
V1.1b3" (§6.1-6.16, §7) and frames whose CRC is published with the "MODBUS over Serial Line
V1.02" (Appendix B) algorithm; the driver's table-driven CRC is also checked against the
simulator's bit-by-bit one and pymodbus's, which share no code with it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU

from drivers.modbus import framing, pdu
from simulators.plc import serial_line


def h(text: str) -> bytes:
    return bytes.fromhex(text)


@given(st.binary(max_size=256))
def test_crc_agrees_with_two_independent_implementations(data: bytes) -> None:
    crc = framing.crc16(data)
    assert crc == serial_line.crc16(data)
    assert FramerRTU.compute_CRC(data) == ((crc & 0xFF) << 8 | crc >> 8)  # pymodbus keeps it byte-swapped


@pytest.mark.parametrize(
    ("unit", "request_pdu", "frame"),
    [
        (1, "03 0000 0001", "01 03 00 00 00 01 84 0A"),
        (1, "03 0000 000A", "01 03 00 00 00 0A C5 CD"),
        (0x11, "03 006B 0003", "11 03 00 6B 00 03 76 87"),
    ],
)
def test_rtu_frames(unit: int, request_pdu: str, frame: str) -> None:
    assert framing.rtu_frame(unit, h(request_pdu)) == h(frame) == serial_line.rtu_frame(unit, h(request_pdu))
    assert framing.rtu_check(h(frame))
    broken = bytearray(h(frame))
    broken[-1] ^= 1
    assert not framing.rtu_check(bytes(broken))


def test_ascii_frame_and_lrc() -> None:
    frame = framing.ascii_frame(0x11, h("03 006B 0003"))
    assert frame == b":1103006B00037E\r\n" == serial_line.ascii_frame(0x11, h("03 006B 0003"))
    assert framing.ascii_unwrap(frame) == h("11 03 00 6B 00 03")
    assert framing.ascii_unwrap(b":1103006B00037F\r\n") is None  # LRC
    assert framing.ascii_unwrap(b":1103006b00037E\r\n") is None  # lower case is not the format
    assert framing.ascii_unwrap(b":1103 06B00037E\r\n") is None
    assert framing.ascii_unwrap(b"1103006B00037E\r\n") is None


@pytest.mark.parametrize(
    ("head", "length"),
    [
        ("01", None),
        ("01 83", 5),  # exception: address, function | 0x80, code, CRC
        ("01 03", None),
        ("01 03 06", 11),
        ("01 01 03", 8),
        ("01 05", 8),
        ("01 10", 8),
        ("01 16", 10),
        ("01 2B", -1),  # a layout this master does not know: ends at the silence
    ],
)
def test_rtu_answer_length(head: str, length: int | None) -> None:
    assert framing.rtu_answer_length(h(head)) == length


def test_requests_are_the_specification_examples() -> None:
    assert pdu.read_request("coil", 19, 19) == h("01 0013 0013")  # §6.1
    assert pdu.read_request("discrete", 196, 22) == h("02 00C4 0016")  # §6.2
    assert pdu.read_request("holding", 107, 3) == h("03 006B 0003")  # §6.3
    assert pdu.read_request("input", 8, 1) == h("04 0008 0001")  # §6.4
    assert pdu.write_coil_request(172, True) == h("05 00AC FF00")  # §6.5
    assert pdu.write_register_request(1, 3) == h("06 0001 0003")  # §6.6
    bits = [bool(int(b)) for b in "1011001110"]  # coils 20..29: CD 01 (§6.11)
    assert pdu.write_coils_request(19, bits) == h("0F 0013 000A 02 CD 01")
    assert pdu.write_registers_request(1, h("000A 0102")) == h("10 0001 0002 04 000A 0102")  # §6.12
    assert pdu.mask_write_request(4, 0x00F2, 0x0025) == h("16 0004 00F2 0025")  # §6.16


def test_answers_are_checked_against_their_request() -> None:
    request = pdu.read_request("holding", 107, 3)
    assert pdu.read_data(h("03 06 022B 0000 0064"), request) == h("022B 0000 0064")  # §6.3
    for wrong in ("03 04 022B 0000", "03 06 022B 0000", "04 06 022B 0000 0064", "03", ""):
        with pytest.raises(pdu.PduError):
            pdu.read_data(h(wrong), request)
    coils = pdu.read_request("coil", 19, 19)
    data = pdu.read_data(h("01 03 CD 6B 05"), coils)  # §6.1
    assert pdu.unpack_bits(data, 19) == [int(b) for b in "1011001111010110101"]
    assert pdu.exception_code(h("81 02"), 1) == 2  # §7
    assert pdu.exception_code(h("81 02"), 3) is None and pdu.exception_code(h("03 02 0000"), 3) is None
    pdu.check_write_echo(h("06 0001 0003"), pdu.write_register_request(1, 3))
    pdu.check_write_echo(h("10 0001 0002"), pdu.write_registers_request(1, h("000A 0102")))
    with pytest.raises(pdu.PduError):
        pdu.check_write_echo(h("06 0001 0004"), pdu.write_register_request(1, 3))


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=125))
def test_random_answers_never_pass_as_a_different_size(answer: bytes, count: int) -> None:
    request = pdu.read_request("holding", 0, count)
    try:
        data = pdu.read_data(answer, request)
    except pdu.PduError:
        return
    assert len(data) == 2 * count and answer[:2] == bytes([3, 2 * count])


@given(st.integers(min_value=1, max_value=247), st.binary(min_size=1, max_size=253), st.data())
def test_every_single_bit_error_is_caught_by_the_crc(unit: int, body: bytes, data: st.DataObject) -> None:
    frame = bytearray(framing.rtu_frame(unit, body))
    position = data.draw(st.integers(min_value=0, max_value=8 * len(frame) - 1))
    frame[position // 8] ^= 1 << (position % 8)
    assert not framing.rtu_check(bytes(frame))
