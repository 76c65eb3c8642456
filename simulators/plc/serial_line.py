"""Modbus serial line framing for the simulator's slave side, written from the specification.

"MODBUS over Serial Line Specification and Implementation Guide V1.02":

* RTU (§2.5.1.1): ``address, PDU, CRC``; a frame is delimited by at least 3.5 character times
  of silence; the CRC (§2.5.1.2, generated as in Appendix B) goes low byte first.
* ASCII (§2.5.2.1): ``':'``, the address, PDU and LRC as two upper-case hexadecimal
  characters per byte, then CR LF; the LRC (§2.5.2.2, Appendix B) is the two's complement
  of the 8-bit sum of address and PDU bytes.

The request lengths come from the request layouts of the "MODBUS Application Protocol
Specification V1.1b3" §6 (a slave must know where a request ends without waiting for the
silence, or every answer would be 3.5 characters late). Deliberately no code from pymodbus's
framers or from the driver: this is the independent implementation the driver is tested
against.
"""

from __future__ import annotations

from typing import Final

#: PDU length (function code included) of the fixed-size requests, Application Protocol §6
_FIXED_REQUEST_PDU: Final[dict[int, int]] = {1: 5, 2: 5, 3: 5, 4: 5, 5: 5, 6: 5, 22: 7}
#: requests that carry a byte count: its offset in the PDU and the PDU bytes before the data
_COUNTED_REQUEST_PDU: Final[dict[int, int]] = {15: 5, 16: 5, 23: 9}


def crc16(data: bytes) -> int:
    """The Modbus CRC-16 of ``data`` (Serial Line V1.02 Appendix B, bit by bit as written there)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


def rtu_frame(address: int, pdu: bytes) -> bytes:
    body = bytes([address]) + pdu
    crc = crc16(body)
    return body + bytes([crc & 0xFF, crc >> 8])  # low byte first (§2.5.1.2)


def rtu_crc_ok(frame: bytes) -> bool:
    if len(frame) < 4:
        return False
    crc = crc16(frame[:-2])
    return frame[-2] == crc & 0xFF and frame[-1] == crc >> 8


def rtu_request_length(buffer: bytes) -> int | None:
    """Bytes of the RTU request that starts ``buffer``, or None while that is not known yet.

    ``-1`` for a function code whose layout this slave does not know: the frame then ends at
    the silence.
    """
    if len(buffer) < 2:
        return None
    fc = buffer[1]
    fixed = _FIXED_REQUEST_PDU.get(fc)
    if fixed is not None:
        return 1 + fixed + 2
    count_at = _COUNTED_REQUEST_PDU.get(fc)
    if count_at is not None:
        if len(buffer) < 1 + count_at + 1:
            return None
        return 1 + count_at + 1 + buffer[1 + count_at] + 2
    return -1


def lrc(data: bytes) -> int:
    """Serial Line V1.02 Appendix B: the two's complement of the 8-bit sum."""
    return (-sum(data)) & 0xFF


def ascii_frame(address: int, pdu: bytes) -> bytes:
    body = bytes([address]) + pdu
    return b":" + (body + bytes([lrc(body)])).hex().upper().encode("ascii") + b"\r\n"


def ascii_decode(line: bytes) -> tuple[int, bytes] | None:
    """``(address, PDU)`` of one ASCII frame (``:`` to LF), or None when it is not a sound frame."""
    if not line.startswith(b":") or not line.endswith(b"\r\n"):
        return None
    try:
        body = bytes.fromhex(line[1:-2].decode("ascii"))
    except ValueError:
        return None
    if len(body) < 3 or lrc(body[:-1]) != body[-1]:
        return None
    return body[0], body[1:-1]
