"""``simulators``: run a device simulator on a pty until Ctrl-C.

Example::

    simulators mitutoyo --link /tmp/bench/caliper-1 --nominal 12.0 --noise 0.004 --interval 0.5

then point a gateway's device ``port:`` at ``/tmp/bench/caliper-1``.
"""

from __future__ import annotations

import argparse
import codecs
import datetime
import importlib
import signal
import sys
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from types import FrameType

from simulators.mitutoyo import MitutoyoSimulator, Scenario

#: every other simulator registers its own subcommand (``add_parser``)
SIMULATOR_MODULES = (
    "simulators.mitutoyo_idh",
    "simulators.mt_sics",
    "simulators.sartorius",
    "simulators.ascii_line",
    "simulators.scanner",
    "simulators.plc",
)


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1: {text}")
    return value


def _escaped(text: str) -> bytes:
    """Shells pass ``'1\\r'`` with a literal backslash; decode C-style escapes into bytes."""
    try:
        return codecs.escape_decode(text.encode("latin-1"))[0]
    except (ValueError, UnicodeEncodeError) as exc:
        raise argparse.ArgumentTypeError(f"bad escape in {text!r}: {exc}") from None


def _printer(out: Callable[[str], None]) -> Callable[[bytes, str], None]:
    def on_send(data: bytes, kind: str) -> None:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        out(f"{now} {kind:<7} {data!r}")

    return on_send


def _add_mitutoyo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mitutoyo", help="Digimatic interface adapter (01A+0000.123 + CR)")
    p.add_argument("--link", required=True, help="path of the symlink to the pty (the driver's port)")
    p.add_argument("--nominal", type=_decimal, default=Decimal("12.000"))
    p.add_argument("--noise", type=float, default=0.004, help="standard deviation")
    p.add_argument("--drift", type=float, default=0.0, help="added per reading")
    p.add_argument("--interval", type=float, default=0.5, help="push mode: seconds between readings")
    p.add_argument("--oot-rate", type=_rate, default=0.0, help="probability of an out-of-tolerance value")
    p.add_argument("--oot-offset", type=float, default=0.1)
    p.add_argument("--bad-rate", type=_rate, default=0.0, help="probability of a corrupted frame")
    p.add_argument("--decimals", type=int, default=3, help="3 for mm, 4 or 5 for inch")
    p.add_argument("--channel", default="01")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--mode", choices=("push", "request"), default="push")
    p.add_argument("--request", type=_escaped, default=b"1\r", help="request string, escapes allowed: '1\\r'")
    p.set_defaults(run=_run_mitutoyo)


def _run_mitutoyo(args: argparse.Namespace, out: Callable[[str], None], stop: threading.Event) -> int:
    try:
        scenario = Scenario(
            nominal=args.nominal,
            noise=args.noise,
            drift=args.drift,
            oot_rate=args.oot_rate,
            oot_offset=args.oot_offset,
            bad_rate=args.bad_rate,
            decimals=args.decimals,
            channel=args.channel,
            interval=args.interval,
            seed=args.seed,
        )
        sim = MitutoyoSimulator(args.link, scenario, mode=args.mode, request=args.request, on_send=_printer(out))
    except (ValueError, OSError) as exc:
        print(f"simulators mitutoyo: {exc}", file=sys.stderr)
        return 2
    with sim:
        out(f"mitutoyo simulator on {sim.link} -> {sim.port.slave_name} ({args.mode} mode); Ctrl-C stops")
        sim.start()
        stop.wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulators", description="Protocol-true device simulators.")
    sub = parser.add_subparsers(dest="simulator", required=True, metavar="SIMULATOR")
    _add_mitutoyo(sub)
    for module in SIMULATOR_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # SIGTERM too, so `kill` or a service manager removes the pty link like Ctrl-C does
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        code: int = args.run(args, out, stop)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
