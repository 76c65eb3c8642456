"""A PLC of an in-line assembly station, as a Modbus TCP server and an RTU/ASCII slave on a pty.

This docstring is the simulated PLC's manual: the driver's tests expect what is written here.

``station.py`` is the PLC program (process images, parts, handshake, churn, faults that are
not about the wire), ``serial_line.py`` the RTU and ASCII framing written from the serial
line specification, ``simulator.py`` the transports (pymodbus's TCP server, the pty loop and
the serial line fault injection) and ``cli.py`` the ``simulators plc`` command. Every
configured unit id (slave) has a process image of its own.

Station map (every unit; zero-based protocol addresses, "4xxxx" = address + 40001)
==========  ========  =========  ===========================================================
table       address   type       meaning
==========  ========  =========  ===========================================================
holding     0-1       uint32     part counter (ABCD), +1 per finished part
holding     2         uint16     status word: bit 0 running, bit 1 part done, bit 2 waiting
                                 for acknowledge (station blocked), bit 3 andon on, bit 4
                                 program stuck
holding     3         uint16     cycle time in ms
holding     10-19     string     serial number of the last part, 20 ASCII chars, NUL padded
holding     20-21     float32    press-in force, N          (word order: ``Scenario.word_order``)
holding     22-23     float32    tightening torque, N·m     (same word order)
holding     24-25     float32    measured length, mm        (same word order)
holding     30-31     uint32     acknowledged counter: the gateway writes back the part
                                 counter it collected; equal to the counter = acknowledged
input       0         int16      cabinet temperature, 0.1 °C
input       1         uint16     spindle speed, rpm
coil        0         bit        andon light (written by the gateway)
coil        1         bit        part acknowledge (see the handshake below)
discrete    0         bit        part done: set with each new part, cleared by its acknowledge
discrete    1         bit        running
any         100-      (free)     general-purpose area for tests and benchmarks
==========  ========  =========  ===========================================================

Parts
    Every ``Scenario.cycle_time`` seconds (a fixed grid, whatever the master does) each unit
    finishes a part: counter + 1, a new serial number, new force / torque / length (nominal
    + Gaussian noise, rounded to ``Scenario.decimals`` like a display), part-done set. With
    ``wait_for_ack`` a unit whose part is not yet acknowledged skips the cycle (counted in
    ``blocked_cycles``), as a real line waits for the quality gate; without it parts keep
    coming and a slow collector misses some. A cycle time equal to or shorter than the
    master's poll interval is allowed: the next part then comes as soon as the station may
    start one.

Handshake (``Scenario.handshake``)
    ``write`` (default): writing 1 to the acknowledge coil acknowledges the part in hand
    (part-done drops at once). The PLC acts on the *write*, not on the coil's level: the
    coil may stay 1, and the next part may set part-done again before the master ever saw
    it drop. Writing the part counter to holding 30-31 acknowledges as well.
    ``four_phase``: the PLC drops part-done when the acknowledge coil is 1, and starts the
    next part only once the master has written the coil back to 0.

Stuck program
    :meth:`PlcSimulator.set_stuck`: the unit ignores acknowledges (counted in
    ``ignored_acks``), starts no part and sets status bit 4. Released, a ``four_phase`` unit
    sees the coil's level at once; a ``write`` unit needs a new write (the ignored one is gone).

Churn
    ``Scenario.churn_every``: every so many seconds each holding register of
    ``churn_registers`` (default 100..299) is incremented, for benchmarks whose values change.
    :meth:`PlcSimulator.count_requests` makes one holding register count the read requests
    the unit answered (taken as each request arrives), so every answer carries its number.

Faults
    An exception code for a unit / table / address range, an unsupported function code
    (exception 1, e.g. 22 on PLCs without mask write), a dead unit (no reply at all), slow
    replies, a per-unit request size limit (devices that allow only 64 registers answer
    larger requests with exception 3), dropping every TCP connection, and stopping and
    restarting the listener on the same port. On the serial side also: answers with a
    corrupt CRC (LRC), answers carrying another unit's address (optionally followed by the
    right answer), and answers sent late (after the master's timeout) while the simulator
    keeps listening. Every request is logged with its arrival time (``requests``); on the
    serial side the silence before each request is recorded too (``frame_gaps``), so tests
    can check a master's bus pacing.

Linux ptys refuse parity settings (EINVAL): a master on the pty must use parity N (8N1),
whatever the real bus would use.

Command line (wired in by ``simulators.cli`` as ``simulators plc``; also ``python -m
simulators.plc``)::

    simulators plc --port 5020 --units 1,2 --cycle-time 2 [--rtu-link /tmp/bench/plc-rtu]
        [--handshake four_phase] [--churn-every 10 --churn-registers 100:200]
"""

from simulators.plc.cli import add_parser, main
from simulators.plc.simulator import PlcSimulator, SentLate
from simulators.plc.station import FC_TABLE, Addr, Part, RequestRecord, Scenario, Status

__all__ = [
    "FC_TABLE",
    "Addr",
    "Part",
    "PlcSimulator",
    "RequestRecord",
    "Scenario",
    "SentLate",
    "Status",
    "add_parser",
    "main",
]
