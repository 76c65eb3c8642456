"""``simulators plc``: the station PLC on a TCP port and/or a pty until Ctrl-C."""

from __future__ import annotations

import argparse
import datetime
import sys
import threading
from collections.abc import Callable
from typing import get_args

from simulators.base import run_until_signalled
from simulators.plc.simulator import PlcSimulator
from simulators.plc.station import Addr, Handshake, Order, Part, Scenario


def _units(text: str) -> list[int]:
    try:
        units = [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of unit ids: {text!r}") from None
    if not units or not all(0 < u < 248 for u in units):
        raise argparse.ArgumentTypeError("unit ids are 1..247")
    return units


def _span(text: str) -> tuple[int, int]:
    try:
        start, count = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:COUNT, got {text!r}") from None
    return start, count


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``plc`` subcommand of ``simulators``."""
    p = sub.add_parser("plc", help="Modbus PLC of an assembly station (TCP, and RTU/ASCII on a pty)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=5020, help="Modbus TCP port (0: any free port)")
    p.add_argument("--no-tcp", action="store_true", help="serve only the serial side")
    p.add_argument("--rtu-link", help="also serve Modbus RTU on a pty published at this path")
    p.add_argument("--ascii", action="store_true", help="Modbus ASCII instead of RTU on the pty")
    p.add_argument("--baudrate", type=int, default=19200, help="serial side: sets the frame silence")
    p.add_argument("--units", type=_units, default=[1], help="comma-separated unit ids (default 1)")
    p.add_argument("--cycle-time", type=float, default=2.0, help="seconds per part (0: no parts)")
    p.add_argument("--word-order", choices=get_args(Order), default="CDAB", help="of the float32 values")
    p.add_argument("--no-ack-wait", action="store_true", help="keep producing parts without acknowledge")
    p.add_argument(
        "--handshake", choices=get_args(Handshake), default="write", help="how the PLC reads the acknowledge coil"
    )
    p.add_argument("--churn-every", type=float, default=0.0, help="ms between increments of the churning registers")
    p.add_argument(
        "--churn-registers",
        type=_span,
        default=(Addr.FREE, 200),
        metavar="START:COUNT",
        help=f"holding registers that churn (default {Addr.FREE}:200)",
    )
    p.add_argument("--dead", type=_units, default=[], help="unit ids that never answer")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run=_run_plc)


def _run_plc(args: argparse.Namespace, out: Callable[[str], None], stop: threading.Event) -> int:
    if args.no_tcp and not args.rtu_link:
        print("simulators plc: --no-tcp needs --rtu-link", file=sys.stderr)
        return 2
    try:
        scenario = Scenario(
            cycle_time=args.cycle_time or None,
            word_order=args.word_order,
            wait_for_ack=not args.no_ack_wait,
            handshake=args.handshake,
            churn_every=args.churn_every / 1000 if args.churn_every else None,
            churn_registers=args.churn_registers,
            seed=args.seed,
        )
        sim = PlcSimulator(
            args.units,
            scenario,
            host=args.host,
            port=None if args.no_tcp else args.port,
            rtu_link=args.rtu_link,
            serial_framer="ascii" if args.ascii else "rtu",
            baudrate=args.baudrate,
        )
    except ValueError as exc:
        print(f"simulators plc: {exc}", file=sys.stderr)
        return 2

    def on_part(part: Part) -> None:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        out(
            f"{now} unit {part.unit} part {part.counter} {part.serial} force {part.force} N "
            f"torque {part.torque} N·m length {part.length} mm"
        )

    sim.on_part = on_part
    for unit in args.dead:
        sim.set_dead(unit)
    try:
        sim.start()
    except (OSError, RuntimeError) as exc:
        print(f"simulators plc: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        where = [] if args.no_tcp else [f"tcp {args.host}:{sim.port}"]
        if args.rtu_link:
            where.append(f"{'ascii' if args.ascii else 'rtu'} {args.rtu_link}")
        out(f"plc simulator units {','.join(map(str, sim.units))} on {' and '.join(where)}; Ctrl-C stops")
        stop.wait()
    finally:
        sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m simulators.plc ...``: the subcommand on its own (same options)."""
    parser = argparse.ArgumentParser(prog="python -m simulators.plc", description="Modbus PLC simulator.")
    sub = parser.add_subparsers(dest="simulator", required=True, metavar="SIMULATOR")
    add_parser(sub)
    return run_until_signalled(parser.parse_args(["plc", *(argv if argv is not None else sys.argv[1:])]))
