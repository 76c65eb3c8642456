"""Modbus PDUs the master sends and the answers it accepts.

From the "MODBUS Application Protocol Specification V1.1b3": a PDU is the function code and
its data (§4.1, at most 253 bytes), every 16-bit field big-endian (§4.2). The requests are
those of §6.1-6.6 (functions 1-6), §6.11 (15), §6.12 (16) and §6.16 (22); an exception
response is the function code with its high bit set and one exception code (§7).

An answer is checked against its request before anything in it is used: the function code,
the byte count of a read (exactly the registers or bits asked for), the echo of a write. An
answer that does not match is a :class:`PduError`, never a value.
"""

from __future__ import annotations

import struct
from typing import Final

from drivers.base import DriverError

#: the function code that reads each table (§6.1-6.4)
READ_FUNCTION: Final[dict[str, int]] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}

#: §7: what each exception code means
EXCEPTION_MEANINGS: Final[dict[int, str]] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge (request accepted, still processing)",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

_HEADER: Final = struct.Struct(">BHH")  # function code, address, quantity (or value)


class PduError(DriverError):
    """An answer that does not fit its request (wrong function, byte count or echo)."""


def read_request(table: str, start: int, count: int) -> bytes:
    """§6.1-6.4: function code, starting address, quantity."""
    return _HEADER.pack(READ_FUNCTION[table], start, count)


def write_coil_request(address: int, on: bool) -> bytes:
    """§6.5: ON is 0xFF00, OFF is 0x0000."""
    return _HEADER.pack(5, address, 0xFF00 if on else 0x0000)


def write_register_request(address: int, value: int) -> bytes:
    """§6.6."""
    return _HEADER.pack(6, address, value)


def write_coils_request(address: int, bits: list[bool]) -> bytes:
    """§6.11: the bits packed eight to a byte, the first coil in the least significant bit."""
    packed = bytearray((len(bits) + 7) // 8)
    for i, on in enumerate(bits):
        if on:
            packed[i // 8] |= 1 << (i % 8)
    return _HEADER.pack(15, address, len(bits)) + bytes([len(packed)]) + bytes(packed)


def write_registers_request(address: int, data: bytes) -> bytes:
    """§6.12: ``data`` is the registers' bytes as they go on the wire."""
    if not data or len(data) % 2:
        raise ValueError(f"registers are two bytes each, got {len(data)} bytes")
    return _HEADER.pack(16, address, len(data) // 2) + bytes([len(data)]) + data


def mask_write_request(address: int, and_mask: int, or_mask: int) -> bytes:
    """§6.16: the register becomes ``(current AND and_mask) OR (or_mask AND NOT and_mask)``."""
    return struct.pack(">BHHH", 22, address, and_mask, or_mask)


def exception_code(answer: bytes, function: int) -> int | None:
    """The exception code if ``answer`` is an exception response to ``function`` (§7), else None."""
    if len(answer) == 2 and answer[0] == function | 0x80:
        return answer[1]
    return None


def read_data(answer: bytes, request: bytes) -> bytes:
    """The data bytes of a read answer (registers as on the wire, or packed bits), checked."""
    function = request[0]
    if answer[:1] != request[:1]:
        raise PduError(f"answer to function {function} carries function {answer[0] if answer else None}")
    count = (request[3] << 8) | request[4]
    expected = 2 * count if function in (3, 4) else (count + 7) // 8
    if len(answer) < 2 or answer[1] != expected or len(answer) != 2 + expected:
        got = answer[1] if len(answer) > 1 else None
        raise PduError(f"read of {count}: expected {expected} data bytes, byte count {got}, {len(answer) - 2} sent")
    return answer[2:]


def check_write_echo(answer: bytes, request: bytes) -> None:
    """§6.5/6.6/6.16 echo the request; §6.11/6.12 echo its address and quantity."""
    function = request[0]
    expected = request if function in (5, 6, 22) else request[:5]
    if answer != expected:
        raise PduError(f"answer to function {function} is not its echo: {answer.hex(' ')}")


def unpack_bits(data: bytes, count: int) -> list[int]:
    """§6.1/6.2: the first bit in the least significant bit of the first byte."""
    return [(data[i >> 3] >> (i & 7)) & 1 for i in range(count)]
