"""Modbus application data units: a PDU wrapped for TCP, RTU or ASCII, and unwrapped again.

Pure functions over bytes, no I/O (``link.py`` does that):

* TCP: the MBAP header of the "MODBUS Messaging on TCP/IP Implementation Guide V1.0b"
  §3.1.3: transaction identifier, protocol identifier (0), length (unit identifier and PDU
  bytes), unit identifier.
* RTU: "MODBUS over Serial Line Specification and Implementation Guide V1.02" §2.5.1.1:
  address, PDU, CRC-16 low byte first (§2.5.1.2; the CRC as generated in Appendix B, here
  with the usual 256-entry table built from the same polynomial, 0xA001 reflected).
* ASCII: the same document §2.5.2.1: ``':'``, address, PDU and LRC (§2.5.2.2, Appendix B)
  as upper-case hexadecimal pairs, CR LF.

A master reading an RTU answer must know where it ends without waiting for the silence that
delimits it: :func:`rtu_answer_length` gives the length from the first bytes, as the answer
layouts of the Application Protocol Specification V1.1b3 §6 and §7 define them.
"""

from __future__ import annotations

import struct
from typing import Final

MBAP: Final = struct.Struct(">HHHB")  # transaction, protocol, length, unit
MBAP_SIZE: Final = MBAP.size
#: largest PDU (Application Protocol §4.1)
MAX_PDU: Final = 253


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16(data: bytes) -> int:
    """The Modbus CRC-16 (initial value 0xFFFF, polynomial 0xA001 reflected)."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes((unit,)) + pdu
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def rtu_check(frame: bytes) -> bool:
    """True when the frame's last two bytes are the CRC of the others."""
    if len(frame) < 4:
        return False
    crc = crc16(frame[:-2])
    return frame[-2] == crc & 0xFF and frame[-1] == crc >> 8


#: answer lengths (address and CRC included) of the functions the master uses, §6
_FIXED_ANSWER: Final[dict[int, int]] = {5: 8, 6: 8, 15: 8, 16: 8, 22: 10}
_COUNTED_ANSWER: Final = frozenset({1, 2, 3, 4})


def rtu_answer_length(buffer: bytes | bytearray) -> int | None:
    """Length of the RTU answer at the start of ``buffer``; None while more bytes are needed;
    -1 for a function code whose answer layout is unknown (its end is the line's silence)."""
    if len(buffer) < 2:
        return None
    function = buffer[1]
    if function & 0x80:
        return 5  # address, function | 0x80, exception code, CRC (§7)
    if function in _COUNTED_ANSWER:
        if len(buffer) < 3:
            return None
        return 5 + buffer[2]  # address, function, byte count, data, CRC
    return _FIXED_ANSWER.get(function, -1)


_HEX_DIGITS: Final = b"0123456789ABCDEF"


def lrc(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def ascii_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes((unit,)) + pdu
    return b":" + (body + bytes((lrc(body),))).hex().upper().encode("ascii") + b"\r\n"


def ascii_unwrap(frame: bytes) -> bytes | None:
    """Address and PDU of an ASCII frame (``:`` .. CR LF) whose LRC checks; None otherwise."""
    if len(frame) < 9 or frame[:1] != b":" or frame[-2:] != b"\r\n" or len(frame) % 2 == 0:
        return None
    text = frame[1:-2]
    if text.translate(None, _HEX_DIGITS):
        return None  # §2.5.2.1: upper-case hexadecimal characters only
    try:
        body = bytes.fromhex(text.decode("ascii"))
    except ValueError:
        return None
    if lrc(body[:-1]) != body[-1]:
        return None
    return body[:-1]
