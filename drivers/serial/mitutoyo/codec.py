"""The Digimatic interface adapter's output frame, as Mitutoyo documents it.

Source: Mitutoyo QM-Height User's Manual No. 99MAF600B, §6.3 "USB Data Output
Specification" (§6.3.2 data format, §6.3.4 examples; the same table is §5.3 of No. 99MAF029B):

====  ================================  =====================
D1    code number                       ``0``
D2    channel number                    ``1``
D3    measurement item                  ``A``
D4    sign                              ``+`` or ``-``
D5-12 data, floating decimal point      ``0000.123``
D13   carriage return                   CR
====  ================================  =====================

Examples from §6.3.4: ``01A+0000.123`` (mm, 0.001), ``01A+00.12345`` (inch, 0.00005),
``01A+000.1234`` (inch, 0.0001). Every example carries exactly one decimal point and
all eight data characters; so does every frame this codec accepts. The unit is not on the
wire. The manual fixes D1 D2 at ``01``; interfaces with several gauges (multiplexers)
number their channels in those two digits, which the manual at hand does not cover: any
two digits are read as the channel, and the driver's ``channel`` setting can insist on one.
"""

from __future__ import annotations

from decimal import Decimal

from drivers.base import FrameError

FRAME_LENGTH = 12  # D1..D12; D13 (CR) is the terminator
DATA_LENGTH = 8  # D5..D12
_DIGITS = frozenset(b"0123456789")


def parse_frame(frame: bytes) -> tuple[str, Decimal]:
    """Parse D1..D12 (the terminator already cut off) into ``(channel, value)``.

    The value keeps the gauge's resolution: ``01A-0012.340`` gives ``Decimal("-12.340")``.
    Anything not exactly the documented layout raises :class:`~drivers.base.FrameError`;
    nothing is stripped or tolerated.
    """
    if frame.startswith(b"#"):
        # seen from adapters that report their own faults this way; never a reading
        raise FrameError("adapter error line", frame)
    if len(frame) != FRAME_LENGTH:
        raise FrameError(f"expected {FRAME_LENGTH} characters before CR, got {len(frame)}", frame)
    channel, item, sign, data = frame[0:2], frame[2:3], frame[3:4], frame[4:]
    if not (channel[0] in _DIGITS and channel[1] in _DIGITS):
        raise FrameError("D1 D2 (code and channel number) are not two digits", frame)
    if item != b"A":
        raise FrameError(f"D3 (measurement item) is {item!r}, not 'A'", frame)
    if sign not in (b"+", b"-"):
        raise FrameError(f"D4 (sign) is {sign!r}, not '+' or '-'", frame)
    if data.count(b".") != 1:
        raise FrameError("D5-D12 (data) must hold exactly one decimal point", frame)
    if data.startswith(b".") or data.endswith(b"."):
        raise FrameError("D5-D12 (data): decimal point without digits on both sides", frame)
    if any(b not in _DIGITS for b in data.replace(b".", b"")):
        raise FrameError("D5-D12 (data) are not decimal digits", frame)
    return channel.decode("ascii"), Decimal((sign + data).decode("ascii"))
