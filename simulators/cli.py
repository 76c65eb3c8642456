"""``simulators``: run a device simulator on a pty until Ctrl-C.

Example::

    simulators mitutoyo --link /tmp/bench/caliper-1 --nominal 12.0 --noise 0.004 --interval 0.5

then point a gateway's device ``port:`` at ``/tmp/bench/caliper-1``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
from collections.abc import Callable
from decimal import Decimal

from simulators.base import decimal_arg, escaped_arg, printer, rate_arg, run_until_signalled, serve
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


def _add_mitutoyo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mitutoyo", help="Digimatic interface adapter (01A+0000.123 + CR)")
    p.add_argument("--link", required=True, help="path of the symlink to the pty (the driver's port)")
    p.add_argument("--nominal", type=decimal_arg, default=Decimal("12.000"))
    p.add_argument("--noise", type=float, default=0.004, help="standard deviation")
    p.add_argument("--drift", type=float, default=0.0, help="added per reading")
    p.add_argument("--interval", type=float, default=0.5, help="push mode: seconds between readings")
    p.add_argument("--oot-rate", type=rate_arg, default=0.0, help="probability of an out-of-tolerance value")
    p.add_argument("--oot-offset", type=float, default=0.1)
    p.add_argument("--bad-rate", type=rate_arg, default=0.0, help="probability of a corrupted frame")
    p.add_argument("--decimals", type=int, default=3, help="3 for mm, 4 or 5 for inch")
    p.add_argument("--channel", default="01")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--mode", choices=("push", "request"), default="push")
    p.add_argument("--request", type=escaped_arg, default=b"1\r", help="request string, escapes allowed: '1\\r'")
    p.set_defaults(run=_run_mitutoyo)


def _run_mitutoyo(args: argparse.Namespace, out: Callable[[str], None], stop: threading.Event) -> int:
    def build() -> MitutoyoSimulator:
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
        return MitutoyoSimulator(
            args.link, scenario, mode=args.mode, request=args.request, on_send=printer(out, kind_width=7)
        )

    return serve("mitutoyo", build, out, stop, mode=args.mode)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulators", description="Protocol-true device simulators.")
    sub = parser.add_subparsers(dest="simulator", required=True, metavar="SIMULATOR")
    _add_mitutoyo(sub)
    for module in SIMULATOR_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_until_signalled(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
