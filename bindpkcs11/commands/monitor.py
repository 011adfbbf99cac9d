"""`bindpkcs11 monitor DOMAIN`: serial, RRSIG key tags, validity and expiry as a server serves them.

Exit codes follow the monitoring convention (cron, Nagios-style checks): 0 ok, 1 warning,
2 critical (see monitor.py for the rules). For a setup-inline instance, or with --unsigned FILE,
the served serial must also follow the unsigned zone's (serial_lag.py: warning after
--lag-warning, critical after --lag-critical), and for an instance named's own signing errors
are a warning. `--once` checks once; otherwise one line per check every
--interval until Ctrl-C, which exits with the last check's code. Invalid input also exits 2, as a
one-line error.
"""

from __future__ import annotations

import json
import time

from pathlib import Path

from bindpkcs11 import monitor, serial_lag
from bindpkcs11.bind import route, signing
from bindpkcs11.bind.instance import Instance
from bindpkcs11.dnssec.dnskey import parse_zone_name
from bindpkcs11.errors import BindPkcs11Error, UsageError
from bindpkcs11.output import print_json, print_table, to_plain
from bindpkcs11.state import StateDir
from bindpkcs11.timespec import parse_duration, parse_time

EXIT_CODES = {"ok": 0, "warning": 1, "critical": 2}


def register(commands, common) -> None:
    mon = commands.add_parser(
        "monitor", parents=[common],
        help="check the signatures a server serves for a zone (exit 0 ok, 1 warning, 2 critical)")
    mon.add_argument("domain")
    mon.add_argument("--server", help="server to ask (default: the zone's setup-inline instance "
                                      "address, else 127.0.0.1)")
    mon.add_argument("--port", type=int,
                     help=f"its port (default: the instance's port, else {monitor.DEFAULT_PORT})")
    mon.add_argument("--check", action="append", default=[], metavar="NAME/TYPE",
                     help="also check this RRset (www/A, @/MX; repeatable); SOA, DNSKEY, NS and a "
                          "nonexistent name's NSEC/NSEC3 proof are always checked")
    mon.add_argument("--once", action="store_true", help="check once, print a report, exit 0/1/2")
    mon.add_argument("--interval", default="60", metavar="S",
                     help="time between checks without --once (default 60 seconds; also 5mi, 1h)")
    mon.add_argument("--warn-days", type=int, default=monitor.DEFAULT_WARN_DAYS, metavar="N",
                     help=f"warn when a signature expires within N days (default "
                          f"{monitor.DEFAULT_WARN_DAYS})")
    mon.add_argument("--timeout", type=float, default=monitor.DEFAULT_TIMEOUT, metavar="S",
                     help=f"seconds to wait for each answer (default {monitor.DEFAULT_TIMEOUT:g}; "
                          "one retry)")
    mon.add_argument("--unsigned", metavar="FILE",
                     help="the unsigned zone file: the served serial must follow its SOA serial "
                          "(default for a setup-inline instance: the serial named loaded)")
    mon.add_argument("--lag-warning", default="5mi", metavar="D",
                     help="warn when the served zone has not followed the unsigned one for D "
                          "(default 5mi; dated from the unsigned file's or named's journal's "
                          "mtime: see docs/inline-signing.md)")
    mon.add_argument("--lag-critical", default="30mi", metavar="D",
                     help="critical when it has not for D (default 30mi)")
    mon.add_argument("--now", metavar="T",
                     help="validate as if at time T: now+3d asks whether the zone still validates "
                          "in 3 days (dnssec-settime forms)")
    mon.set_defaults(handler=_monitor)


def _monitor(args) -> int:
    interval = _interval(args.interval)
    check = _checker(args)
    if args.once:
        report = check()
        if args.json:
            print_json(report)
        else:
            _print_report(report)
        return EXIT_CODES[report.status]
    return _loop(check, interval, args.json)


def _instance_address(args, zone) -> tuple[str, int]:
    """--server/--port, defaulting to where setup-inline serves the zone (if it does)."""
    server, port = args.server, args.port
    instance = Instance.for_zone(StateDir.open(args.state_dir), zone)
    if instance.exists() and (server is None or port is None):
        settings = instance.load_settings()
        server = settings.listen if server is None else server
        port = settings.port if port is None else port
    return ("127.0.0.1" if server is None else server,
            monitor.DEFAULT_PORT if port is None else port)


def _checker(args):
    """Validate every option up front; return a function that runs one check."""
    zone = parse_zone_name(args.domain)
    args.server, args.port = _instance_address(args, zone)
    if not 0 < args.port < 65536:
        raise UsageError(f"invalid --port {args.port}: use 1-65535")
    if args.warn_days < 0:
        raise UsageError(f"invalid --warn-days {args.warn_days}: use 0 or more")
    if not args.timeout > 0:
        raise UsageError(f"invalid --timeout {args.timeout:g}: use a number of seconds above 0")
    names = [monitor.parse_check(text, zone) for text in args.check]
    server = monitor.resolve_server(args.server)
    if args.now is not None:
        parse_time(args.now)
    lag = _lag_checker(args, zone)

    def check() -> monitor.ZoneReport:
        now = parse_time(args.now) if args.now is not None else None
        report = monitor.check_zone(zone, server, args.port, args.warn_days, now=now, names=names,
                                    timeout=args.timeout)
        return lag(report) if lag else report

    return check


def _lag_checker(args, zone):
    """The serial-lag check (serial_lag.py) for --unsigned FILE or the zone's instance; None
    when there is nothing to compare with."""
    warning, critical = (_positive(args.lag_warning, "--lag-warning"),
                         _positive(args.lag_critical, "--lag-critical"))
    if critical < warning:
        raise UsageError(f"--lag-critical {args.lag_critical} is shorter than --lag-warning "
                         f"{args.lag_warning}: give a longer critical period")
    if args.unsigned:
        path = Path(args.unsigned)
        serial_lag.unsigned_file_serial(path, zone)  # a bad file is an input error, up front
        return lambda report: _file_lag(report, path, zone, warning, critical)
    state = StateDir.open(args.state_dir)
    instance = Instance.for_zone(state, zone)
    if not instance.exists():
        return None
    return lambda report: _instance_lag(report, state, instance, zone, warning, critical)


def _file_lag(report, path: Path, zone, warning: int, critical: int):
    try:
        unsigned, mtime = serial_lag.unsigned_file_serial(path, zone)
    except UsageError as error:
        return monitor.with_problem(report, "critical", str(error))
    lag = serial_lag.evaluate(report.serial, unsigned, f"{path}", False, mtime,
                              int(time.time()), warning, critical)
    return monitor.with_problem(report, lag.status, lag.problem, serial_lag=lag)


def _instance_lag(report, state: StateDir, instance: Instance, zone, warning: int, critical: int):
    """Compare with what named loaded; when named cannot be asked, the DNS checks already say so."""
    settings = instance.load_settings()
    zone_file = instance.zone_file(zone)
    report = _with_named_reason(report, instance, zone_file)
    try:
        sync = signing.sync_state(instance, route.installed(
            state, settings.bind, settings.bind_prefix, settings.bind_version).prefix,
                                  settings.zone, zone_file)
    except BindPkcs11Error:
        return report
    since = sync.pending_since
    if since is None:
        try:
            since = zone_file.stat().st_mtime
        except OSError:
            since = None
    lag = serial_lag.evaluate(report.serial, sync.raw_serial, f"instance {instance.root}",
                              sync.pending, since, int(time.time()), warning, critical)
    return monitor.with_problem(report, lag.status, lag.problem, serial_lag=lag)


def _with_named_reason(report, instance: Instance, zone_file: Path):
    """For an instance, named's own signing errors since the zone was last signed, as a problem:
    a warning at once (the lag check escalates with time; a stopped named is critical anyway)."""
    errors = signing.errors_since_success(instance, zone_file, monitor.last_signed(report))
    reason = signing.failure_reason(errors)
    return monitor.with_problem(report, "warning", f"named cannot sign: {reason}") if reason \
        else report


def _positive(text: str, option: str) -> int:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise UsageError(f"invalid {option} '{text}': use a duration above 0 (e.g. 300 or 5mi)")
    return seconds


def _interval(text: str) -> int:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise UsageError(f"invalid --interval '{text}': use a duration above 0 (e.g. 60 or 5mi)")
    return seconds


def _loop(check, interval: int, as_json: bool) -> int:
    """One line per check (JSON Lines with --json) until Ctrl-C; exit with the last status."""
    last = None
    next_at = time.monotonic()
    try:
        while True:
            report = check()
            last = EXIT_CODES[report.status]
            print(json.dumps(to_plain(report)) if as_json else summary_line(report), flush=True)
            next_at = max(next_at + interval, time.monotonic())
            time.sleep(next_at - time.monotonic())
    except KeyboardInterrupt:
        if last is None:
            raise
        return last


def summary_line(report: monitor.ZoneReport) -> str:
    """`<time> <zone> status=ok serial=N earliest-expiry=<time> problems=-|a; b`."""
    return (f"{monitor.iso_time(report.checked_at)} {report.zone} status={report.status} "
            f"serial={report.serial if report.serial is not None else '-'} "
            f"earliest-expiry={monitor.iso_time(report.earliest_expiration)} "
            f"problems={'; '.join(report.problems) or '-'}")


def _print_report(report: monitor.ZoneReport) -> None:
    left = ""
    if report.earliest_expiration is not None:
        days = (report.earliest_expiration - report.checked_at) / 86400
        left = f" (in {days:.1f} days)" if days >= 0 else f" ({-days:.1f} days ago)"
    keys = ", ".join(f"{k.key_tag} {k.role.upper()} alg {k.algorithm}" for k in report.dnskeys)
    print(f"zone      {report.zone} at {report.server}#{report.port}")
    print(f"status    {report.status}")
    print(f"serial    {report.serial if report.serial is not None else '-'}")
    print(f"checked   {monitor.iso_time(report.checked_at)}")
    print(f"earliest  {monitor.iso_time(report.earliest_expiration)}{left}")
    lag = report.serial_lag
    if lag is not None:
        state = (f"lagging for {lag.age} s" if lag.lagging else "follows")
        print(f"unsigned  serial {lag.unsigned_serial if lag.unsigned_serial is not None else '-'} "
              f"({lag.unsigned_source}): {state}")
    print(f"DNSKEY    {keys or '-'}")
    if report.rrsets:
        print()
        print_table(["NAME", "TYPE", "TTL", "KEY TAG", "ALG", "INCEPTION", "EXPIRATION", "VALID"],
                    [row for rrset in report.rrsets for row in _rows(rrset)])
    if report.problems:
        print()
        print("problems:")
        for problem in report.problems:
            print(f"  {problem}")


def _rows(rrset: monitor.RRsetStatus) -> list[list]:
    if not rrset.signatures:
        return [[rrset.name, rrset.rdtype, rrset.ttl, None, None, None, None, "no (unsigned)"]]
    return [[rrset.name, rrset.rdtype, rrset.ttl, s.key_tag, s.algorithm, monitor.iso_time(s.inception),
             monitor.iso_time(s.expiration), "yes" if s.valid else f"no ({s.problem})"]
            for s in rrset.signatures]
