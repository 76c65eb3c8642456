"""The ``collector`` command: one sub-command per task, its options and its exit codes.

Why one module of this size: the parser and the thin command functions are the command
line's whole vocabulary; kept together, the same option means the same thing everywhere
(``--from``/``--to``, ``--station``, ``--config``, ``--keys``) and a test walks all of it.
The work itself lives in the packages each command imports when it runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from collector.errors import CollectorError, ConfigError

if TYPE_CHECKING:
    from collector import config as config_mod
    from collector.chain.keys import KeyRing
    from collector.evidence.trace import TraceFilter

log = logging.getLogger("collector")


class _LazyConfig:
    """``collector.config``, imported on first use: validating the whole configuration costs
    ~110 ms of imports (pydantic models of the inspection domain) that ``collector trace``,
    which reads the ``influxdb`` section alone, should not pay."""

    def __getattr__(self, name: str) -> Any:
        import collector.config

        return getattr(collector.config, name)


if not TYPE_CHECKING:
    config_mod = _LazyConfig()

EXIT_OK = 0
EXIT_FAILED = 1  # verification found a problem, or a command failed at run time
EXIT_CONFIG = 2  # invalid configuration or usage
#: the daemons ``check-config --role`` knows (``collector.config.ROLES``; a test keeps them equal)
DAEMON_ROLES = ("dashboard", "gateway", "recorder")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # paho and urllib3 are chatty at INFO about things we already log once, in our words
    for noisy in ("urllib3", "influxdb_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pymodbus logs an error of its own for every probe of a dead slave; the driver says it once
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class UsageError(CollectorError):
    """A mistake on the command line: one line on stderr naming the option, exit 2."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line (what was wrong, and where help is), exit 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _time(text: str) -> str:
    """An argparse type: a date or an RFC 3339 time, refused at once when it is neither."""
    from collector.evidence.trace import TraceFilter

    try:
        TraceFilter(start=text).start_us()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or an RFC 3339 time (e.g. 2026-11-21 or 2026-11-21T08:00:00Z)"
        ) from None
    return text


def _zone(text: str) -> dt.tzinfo | None:
    """An argparse type: an IANA time zone name (Europe/Berlin), or "local" (None: this
    machine's zone rules, applied per instant, so a summer value gets the summer offset)."""
    if text == "local":
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r} (an IANA name such as Europe/Berlin)") from None


def _load(path: str, *sections: str) -> config_mod.Config:
    cfg = config_mod.load(path)
    cfg.require(*sections)
    return cfg


def _load_role(path: str, role: str) -> config_mod.Config:
    """The configuration of a daemon, checked as ``check-config`` checks it (exit 2 if not usable)."""
    cfg = config_mod.load(path)
    config_mod.check_role(cfg, role)
    return cfg


def _stop_on_signal() -> threading.Event:
    """SIGINT and SIGTERM set the returned event. Installed before a daemon starts anything, so
    that a stop request while it is starting is a clean stop too."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _wait(stop: threading.Event) -> None:
    while not stop.wait(0.5):
        pass


def cmd_check_config(args: argparse.Namespace) -> int:
    """Valid means: every daemon the file has a section for would start with it."""
    cfg = config_mod.load(args.file)
    roles = [args.role] if args.role else [r for r in config_mod.ROLES if getattr(cfg, r) is not None]
    if not roles and cfg.influxdb is None:
        raise ConfigError(
            args.file,
            [("(top level)", "no gateway, recorder, dashboard or influxdb section: nothing can run with this file")],
        )
    problems = [p for role in roles for p in config_mod.runtime_problems(cfg, role)]
    if problems:
        raise ConfigError(args.file, problems)
    sections = [s for s in ("gateway", "mqtt", "influxdb", "recorder", "dashboard") if getattr(cfg, s) is not None]
    print(
        f"{args.file}: valid ({', '.join(sections)}; {len(cfg.stations)} station(s), "
        f"{sum(len(s.devices) for s in cfg.stations)} device(s), {len(cfg.plans)} plan(s), "
        f"{len(cfg.gauges)} gauge(s))"
    )
    return EXIT_OK


def cmd_gateway(args: argparse.Namespace) -> int:
    from collector.gateway.daemon import Gateway

    cfg = _load_role(args.config, "gateway")
    assert cfg.gateway is not None
    stop = _stop_on_signal()
    gw = Gateway(cfg)
    gw.start()
    metrics = _metrics(cfg.gateway.metrics, lambda: _gateway_metrics(gw))
    try:
        _wait(stop)
    finally:
        if metrics is not None:
            metrics.stop()
        gw.stop()
    return EXIT_OK


def _gateway_metrics(gw: Any) -> Any:
    from collector.metrics import gateway_metrics

    return gateway_metrics(gw)


def _recorder_metrics(rec: Any) -> Any:
    from collector.metrics import recorder_metrics

    return recorder_metrics(rec)


def _metrics(settings: Any, collect: Any) -> Any:
    """A Prometheus endpoint when configured (``metrics: {bind, port}``)."""
    if settings is None:
        return None
    from collector.metrics import MetricsServer

    server = MetricsServer(settings.bind, settings.port, collect)
    server.start()
    log.info("metrics on http://%s:%d/metrics", settings.bind, server.port)
    return server


def cmd_status(args: argparse.Namespace) -> int:
    from collector.metrics import run_status

    return run_status(_load(args.config, "gateway"), as_json=args.json, max_age=args.max_age)


def cmd_recorder(args: argparse.Namespace) -> int:
    from collector.recorder.daemon import Recorder
    from collector.store.factory import open_store

    cfg = _load_role(args.config, "recorder")
    assert cfg.influxdb is not None
    assert cfg.recorder is not None
    stop = _stop_on_signal()
    rec = Recorder(cfg, open_store(cfg.influxdb))
    rec.start()
    metrics = _metrics(cfg.recorder.metrics, lambda: _recorder_metrics(rec))
    try:
        _wait(stop)
    finally:
        if metrics is not None:
            metrics.stop()
        rec.stop()
    return EXIT_OK


def _filter(args: argparse.Namespace) -> TraceFilter:
    from collector.evidence.trace import TraceFilter

    flt = TraceFilter(
        serial=args.serial,
        lot=args.lot,
        work_order=args.work_order,
        part_number=args.part_number,
        station=args.station,
        characteristic=getattr(args, "characteristic", None),
        gauge=getattr(args, "gauge", None),
        start=args.start,
        end=args.end,
    )
    try:
        flt.conditions()
    except ValueError as exc:
        raise UsageError("--from/--to", f"not a date or an RFC 3339 time: {exc}") from None
    return flt


def _keys(args: argparse.Namespace, cfg: config_mod.Config) -> KeyRing | None:
    """The register of gateways and their public keys: ``--keys DIR``, else the recorder's
    ``recorder.keys`` in the configuration, else None (signatures are then not checked)."""
    return _key_ring(args, cfg.recorder.keys if cfg.recorder is not None else None)


def _key_ring(args: argparse.Namespace, configured: Path | None) -> KeyRing | None:
    """:func:`_keys` with the configuration's ``recorder.keys`` given (or None)."""
    directory = getattr(args, "keys", None)
    option = "--keys"
    if not directory and configured is not None:
        directory = configured
        option = "recorder.keys"
    if not directory:
        return None
    from collector.chain.keys import KeyFileError, KeyRing

    try:
        return KeyRing.load(directory)
    except KeyFileError as exc:
        raise ConfigError(args.config if option != "--keys" else "command line", [(option, str(exc))]) from None


def cmd_dashboard(args: argparse.Namespace) -> int:
    from collector.dashboard.app import Dashboard
    from collector.store.factory import open_store

    cfg = _load(args.config, "dashboard", "influxdb")
    assert cfg.dashboard is not None and cfg.influxdb is not None
    dash = Dashboard(cfg, cfg.dashboard, open_store(cfg.influxdb), keys=_keys(args, cfg))
    stop = _stop_on_signal()
    dash.start()
    try:
        _wait(stop)
    finally:
        dash.stop()  # also closes the store
    return EXIT_OK


def cmd_hash_password(args: argparse.Namespace) -> int:
    import getpass

    from collector.people.accounts import hash_password, weak_secret_problem

    try:
        if args.stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("Password or PIN: ")
            if getpass.getpass("Again: ") != password:
                print("the passwords differ", file=sys.stderr)
                return EXIT_CONFIG
    except EOFError:  # the input ended before a line (no terminal, or Ctrl-D)
        print("\nno password given (the input ended)", file=sys.stderr)
        return EXIT_CONFIG
    if not password:
        print("an empty password cannot be used", file=sys.stderr)
        return EXIT_CONFIG
    problem = weak_secret_problem(password)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_CONFIG
    print(hash_password(password))
    return EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    from collector.config_file import load_store_section
    from collector.evidence.trace import trace_evidence, write_csv, write_json
    from collector.store.factory import open_store

    if args.out and args.format != "dfq":
        raise UsageError("--out", f"is a directory for --format dfq; {args.format} goes to standard output")
    # the influxdb section (and recorder.keys) alone: the whole configuration is read only
    # for a DFQ export, whose K1002 comes from the plans
    influx, register = load_store_section(args.config)
    flt = _filter(args)
    if flt.empty():
        raise UsageError(
            "filter",
            "give at least one of --serial, --lot, --work-order, "
            "--part-number, --station, --characteristic, --gauge, --from, --to",
        )
    keys = _key_ring(args, register)
    store = open_store(influx)
    try:
        # the complete history: invalidations and dispositions written without the part's
        # context are found by the ids they point at
        found = trace_evidence(store, flt, keys)
    finally:
        store.close()
    problems = found.problems()
    for line in problems:
        print(line, file=sys.stderr)
    if keys is None and found.records:
        print("signatures not checked (no --keys): every record is marked unverified", file=sys.stderr)
    if args.format == "dfq":
        code = _write_dfq(_load(args.config), found.records, args)
    else:
        (write_csv if args.format == "csv" else write_json)(found.records, sys.stdout)
        print(f"{len(found.records)} record(s) from {found.blocks} block(s)", file=sys.stderr)
        code = EXIT_OK
    return EXIT_FAILED if problems else code


def _write_dfq(cfg: config_mod.Config, records: list[dict[str, Any]], args: argparse.Namespace) -> int:
    from collector.evidence.dfq import dfq_files, encode_dfq, write_dfq_files

    descriptions = {p.part_number: p.description for p in cfg.plans if p.description}
    files = dfq_files(records, descriptions=descriptions, zone=args.time_zone)
    if not files:
        print("no measurement records match", file=sys.stderr)
        return EXIT_FAILED
    numbers = sorted({str(r.get("part_number")) for r in records if r.get("kind") == "measurement"})
    for number in (n for n in numbers if n not in descriptions):
        print(
            f"part number {number}: K1002 left out (the configuration has no plan description for it)", file=sys.stderr
        )
    if args.out:
        for path in write_dfq_files(files, Path(args.out), args.encoding):
            print(path)
        return EXIT_OK
    if len(files) > 1:
        raise UsageError("--out", f"the records make {len(files)} DFQ files ({', '.join(files)}): give --out DIR")
    sys.stdout.flush()
    sys.stdout.buffer.write(encode_dfq(next(iter(files.values())), args.encoding))
    sys.stdout.buffer.flush()
    return EXIT_OK


def cmd_impact(args: argparse.Namespace) -> int:
    from decimal import Decimal, InvalidOperation

    from collector.evidence.impact import format_impact, impact, impact_json
    from collector.store.factory import open_store

    if args.start is None:
        raise UsageError("--from", "give the date the gauge is suspect from")
    cfg = _load(args.config, "influxdb")
    assert cfg.influxdb is not None
    offset = None
    if args.offset is not None:
        try:
            offset = Decimal(args.offset)
        except InvalidOperation:
            raise UsageError("--offset", f"not a number: {args.offset!r}") from None
    keys = _keys(args, cfg)
    store = open_store(cfg.influxdb)
    try:
        report = impact(store, args.gauge, args.start, offset, args.end, offset_unit=args.offset_unit, keys=keys)
    finally:
        store.close()
    if args.json:
        print(json.dumps(impact_json(report), indent=2, ensure_ascii=False))
    else:
        print(format_impact(report), end="")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from collector.evidence import signoff
    from collector.evidence.report import part_report_html
    from collector.evidence.trace import TraceFilter, trace
    from collector.evidence.verify import verify
    from collector.store.factory import open_store

    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise UsageError("--out", f"the folder of {args.out} does not exist")
    cfg = _load(args.config, "influxdb")
    assert cfg.influxdb is not None
    keys = _keys(args, cfg)
    store = open_store(cfg.influxdb)
    try:
        records = trace(store, TraceFilter(serial=args.serial), keys)
        if not records:
            print(f"no records for serial {args.serial!r}", file=sys.stderr)
            return EXIT_FAILED
        process = signoff.process_capability(store, records, keys, days=args.capability_days)
        gws = sorted({str(r["gateway"]) for r in records})
        # the whole chains of the gateways involved: gaps show only there
        verification = None if args.no_verify else verify(store, keys=keys, only=gws, grace=args.grace)
    finally:
        store.close()
    html = part_report_html(records, verification=verification, process=process)
    if args.out:
        try:
            Path(args.out).write_text(html, encoding="utf-8")
        except OSError as exc:
            raise UsageError("--out", f"cannot write {args.out}: {exc.strerror}") from None
        print(args.out)
    else:
        sys.stdout.write(html)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from collector.evidence.trace import TraceFilter
    from collector.evidence.verify import format_report, verify
    from collector.store.factory import open_store

    cfg = _load(args.config, "influxdb")
    assert cfg.influxdb is not None
    flt = TraceFilter(start=args.start, end=args.end)
    keys = _keys(args, cfg)
    store = open_store(cfg.influxdb)
    try:
        report = verify(
            store, flt, keys=keys, only=args.gateway or None, stations=args.station or None, grace=args.grace
        )
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(format_report(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    from collector.demo import run_demo

    return run_demo(config_path=args.config, duration=args.duration, workdir=args.workdir)


def cmd_keygen(args: argparse.Namespace) -> int:
    from collector.chain.keys import generate

    private, public, key_id = generate(args.gateway, Path(args.out))
    print(f"key {key_id} for gateway {args.gateway}")
    print(f"private key: {private} (mode 0600: the gateway's gateway.signing.key_file; it never leaves the gateway)")
    print(f"public key:  {public} (copy it into every recorder's and verifier's key directory)")
    return EXIT_OK


def cmd_schemas(args: argparse.Namespace) -> int:
    from collector.schemas import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return EXIT_OK


def _period(p: argparse.ArgumentParser, what: str = "records recorded") -> None:
    """``--from``/``--to``, the same in every command."""
    p.add_argument(
        "--from",
        dest="start",
        type=_time,
        metavar="TIME",
        help=f"{what} from this date or RFC 3339 time on (inclusive; UTC without an offset)",
    )
    p.add_argument(
        "--to",
        dest="end",
        type=_time,
        metavar="TIME",
        help=f"{what} before this date or RFC 3339 time (exclusive; default: now)",
    )


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--serial", help="only this part's records (its serial number)")
    p.add_argument("--lot", help="only records of this lot")
    p.add_argument("--work-order", help="only records of this work order")
    p.add_argument("--part-number", help="only records of this part number")
    p.add_argument("--station", help="only records of this station")
    _period(p)


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="the configuration file (YAML)")


def _keys_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--keys",
        metavar="DIR",
        help="the key directory: <gateway>.pub (or .hmac) per gateway, and register.yaml "
        "(default: the configuration's recorder.keys); without one, signatures and the register are not checked",
    )


def _grace_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grace",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="records younger than this that are not stored yet are reported IN FLIGHT, not as gaps (default 300)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="collector", description="Shop-floor inspection data collector.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate a configuration file as the daemons would (exit 2 if invalid)")
    p.add_argument("file", help="the configuration file (YAML)")
    p.add_argument("--role", choices=DAEMON_ROLES, help="check only what this daemon needs")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("keygen", help="make a gateway's Ed25519 key pair (private .key, public .pub)")
    p.add_argument("--gateway", required=True, metavar="ID", help="the gateway's id (gateway.id in its configuration)")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write ID.key and ID.pub")
    p.set_defaults(func=cmd_keygen)

    for name, func, text in (
        ("gateway", cmd_gateway, "read devices, judge readings, journal and publish records"),
        ("recorder", cmd_recorder, "write records from MQTT into InfluxDB"),
        ("dashboard", cmd_dashboard, "serve the supervisors' live dashboard and traceability pages"),
    ):
        p = sub.add_parser(name, help=text)
        _config_option(p)
        if name == "dashboard":
            _keys_option(p)
        p.set_defaults(func=func)

    p = sub.add_parser("trace", help="print the history of a serial, lot, part number, station")
    _config_option(p)
    _filters(p)
    p.add_argument("--characteristic", help="only records of this characteristic (its id, e.g. D1)")
    p.add_argument("--gauge", help="only records measured with this gauge (its id in the gauge register)")
    p.add_argument("--format", choices=("json", "csv", "dfq"), default="json", help="output format (default json)")
    p.add_argument(
        "--out", metavar="DIR", help="dfq only: write one file per part number and revision into DIR (else stdout)"
    )
    p.add_argument(
        "--time-zone",
        type=_zone,
        default="local",
        metavar="ZONE",
        help="dfq: the site's time zone for K0004, as the statistics tools show local time "
        "(IANA name, e.g. Europe/Berlin; default: this machine's zone)",
    )
    _keys_option(p)
    p.add_argument(
        "--encoding",
        default="iso-8859-1",
        choices=("iso-8859-1", "cp1252", "utf-8"),
        help="dfq: file encoding (characters it cannot carry are refused, never replaced)",
    )
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("impact", help="every value a gauge measured since a date, and what its error changes")
    _config_option(p)
    p.add_argument("--gauge", required=True, help="the suspect gauge (its id in the gauge register)")
    _period(p, "values measured")
    # the names before --from/--to were made the same in every command; kept for scripts
    p.add_argument("--since", dest="start", type=_time, help=argparse.SUPPRESS)
    p.add_argument("--until", dest="end", type=_time, help=argparse.SUPPRESS)
    p.add_argument("--offset", metavar="DELTA", help="what the gauge read too high (negative: too low), e.g. 0.004")
    p.add_argument("--offset-unit", metavar="UNIT", help="unit of --offset (default: each reading's unit)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    _keys_option(p)
    p.set_defaults(func=cmd_impact)

    p = sub.add_parser("report", help="a printable HTML inspection report of one serial")
    _config_option(p)
    p.add_argument("--serial", required=True, help="the part's serial number")
    p.add_argument("--out", metavar="FILE", help="write the page here (default: stdout)")
    p.add_argument("--no-verify", action="store_true", help="skip verifying the gateways' whole chains")
    p.add_argument(
        "--capability-days",
        type=int,
        default=30,
        metavar="DAYS",
        help="capability from the part number's values of this many days up to the part (default 30)",
    )
    _keys_option(p)
    _grace_option(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("verify", help="check every gateway's chain for gaps and alterations (exit 1 if any)")
    _config_option(p)
    _period(p)
    p.add_argument("--gateway", action="append", metavar="ID", help="only this gateway (repeatable)")
    p.add_argument(
        "--station",
        action="append",
        metavar="STATION",
        help="only the gateways serving this station (repeatable); their chains are verified whole",
    )
    p.add_argument("--stations", dest="station", action="append", help=argparse.SUPPRESS)  # the former name
    p.add_argument("--json", action="store_true", help="machine-readable report")
    _keys_option(p)
    _grace_option(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("demo", help="run the whole local stack with simulated devices")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this many seconds")
    p.add_argument("--config", default=None, help="demo configuration (default: config/demo.yaml)")
    p.add_argument("--workdir", default=None, help="where services keep their data (default: ./var/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="a gateway's health from its journal (exit 1 if records wait too long)")
    _config_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable status")
    p.add_argument(
        "--max-age",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="exit 1 when the oldest unpublished record is older than this (default 300)",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("hash-password", help="print a password or PIN hash for a dashboard user or the user register")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_hash_password)

    p = sub.add_parser("schemas", help="write the JSON Schemas of the payloads and configuration")
    p.add_argument(
        "--out", default="config/schemas", metavar="DIR", help="where to write them (default config/schemas)"
    )
    p.set_defaults(func=cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(exc.format(), file=sys.stderr)
        return EXIT_CONFIG
    except CollectorError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
