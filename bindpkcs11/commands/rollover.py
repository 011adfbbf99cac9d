"""`bindpkcs11 status DOMAIN` (keystatus.py) and `bindpkcs11 rollover zsk DOMAIN` (rollover.py)."""

from __future__ import annotations

import sys

from bindpkcs11 import keystatus, rollover
from bindpkcs11.commands.common import Parser, state
from bindpkcs11.dnssec.dnskey import parse_zone_name
from bindpkcs11.errors import UsageError
from bindpkcs11.monitor import iso_time
from bindpkcs11.output import print_json, print_table
from bindpkcs11.timespec import parse_duration, parse_time


def register(commands, common) -> None:
    status = commands.add_parser(
        "status", parents=[common],
        help="every key of a setup-inline zone: role, place, state, next event, DS for the parent")
    status.add_argument("domain")
    status.set_defaults(handler=_status)

    roll = commands.add_parser("rollover", parents=[common],
                               help="roll a key of a setup-inline zone with RFC 7583 timing")
    sub = roll.add_subparsers(dest="role", required=True, parser_class=Parser)
    zsk = sub.add_parser("zsk", parents=[common],
                         help="pre-publication ZSK rollover: successor published now, active "
                              "after DNSKEY TTL + propagation delay, predecessor removed after "
                              "max TTL + re-sign interval")
    zsk.add_argument("domain")
    zsk.add_argument("--at", metavar="T", help="publish the successor at T instead of now "
                                               "(now+1d, YYYYMMDDHHMMSS, ...)")
    zsk.add_argument("--activate", metavar="T",
                     help="activate the successor at T (default: the earliest the rules allow)")
    zsk.add_argument("--delete", metavar="T",
                     help="remove the predecessor at T (default: the earliest the rules allow)")
    zsk.add_argument("--propagation-delay", metavar="D",
                     help=f"time for a change to reach every secondary (default "
                          f"{rollover.DEFAULT_PROPAGATION_DELAY} s)")
    zsk.add_argument("--test-timings", action="store_true",
                     help="shrink every interval to seconds (a whole rollover in about a minute; "
                          "loopback demos and tests only)")
    zsk.set_defaults(handler=_rollover_zsk)


def _status(args) -> int:
    result = keystatus.zone_status(state(args), parse_zone_name(args.domain))
    if args.json:
        print_json(result)
        return 0
    rows = [[k.role.upper(), k.algorithm, k.tag, k.uri if k.location == "token" else "software",
             k.state, f"{k.next_event.event} {iso_time(k.next_event.time)}" if k.next_event else "",
             k.token_object or ""] for k in result.keys]
    print_table(["ROLE", "ALGORITHM", "TAG", "WHERE", "STATE", "NEXT EVENT", "TOKEN OBJECT"], rows)
    for line in result.ds or ["(no active KSK: the parent should have no DS from this zone)"]:
        print(f"DS for the parent now: {line}")
    for problem in result.problems:
        print(f"problem: {problem}")
    return 1 if result.problems else 0


def _rollover_zsk(args) -> int:
    if args.test_timings and args.propagation_delay is not None:
        raise UsageError("--propagation-delay and --test-timings exclude each other: test timings "
                         "fix every interval")
    request = rollover.RolloverRequest(
        zone=parse_zone_name(args.domain),
        at=_time(args.at, "--at"), activate=_time(args.activate, "--activate"),
        delete=_time(args.delete, "--delete"),
        propagation_delay=parse_duration(args.propagation_delay)
        if args.propagation_delay is not None else None,
        test_timings=args.test_timings)
    progress = (lambda line: None) if args.json else (
        lambda line: print(f"rollover: {line}", file=sys.stderr, flush=True))
    result = rollover.rollover_zsk(state(args), request, progress)
    if args.json:
        print_json(result)
        return 0
    timings, schedule = result.timings, result.schedule
    where = result.uri or "software (seeded from the token)"
    print(f"ZSK rollover of {result.zone}: {result.predecessor} -> {result.successor} ({where})")
    print(f"  timings{' (--test-timings)' if timings.test else ''}: DNSKEY TTL {timings.dnskey_ttl} s, "
          f"max zone TTL {timings.max_zone_ttl} s, propagation delay {timings.propagation_delay} s, "
          f"re-sign interval {timings.resign_interval} s")
    print(f"  {iso_time(schedule.publish)}  publish ZSK {result.successor}"
          f"{' (served now)' if result.published_now else ''}")
    print(f"  {iso_time(schedule.activate)}  ZSK {result.successor} signs, ZSK {result.predecessor} "
          "inactive  (Publish + DNSKEY TTL + propagation delay)")
    print(f"  {iso_time(schedule.delete)}  ZSK {result.predecessor} removed from the DNSKEY set  "
          "(Inactive + propagation delay + re-sign interval + max zone TTL)")
    print(f"named follows this schedule by itself; 'bindpkcs11 status {result.zone}' shows progress")
    return 0


def _time(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    value = parse_time(text)
    if value is None:
        raise UsageError(f"{option} needs a time, not '{text}'")
    return value
