"""`bindpkcs11 status DOMAIN` (keystatus.py), `bindpkcs11 rollover zsk|ksk DOMAIN` (rollover.py,
kskroll.py) and `bindpkcs11 rollover cleanup DOMAIN` (commands/rollcleanup.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bindpkcs11 import keystatus, kskroll, offlinekskroll, offlineroll, rollover, stockroll
from bindpkcs11.commands import rollcleanup as rollcleanup_command
from bindpkcs11.commands.common import DEFAULT_TOKEN, Parser, access, progress_printer, state
from bindpkcs11.commands.ksk import DEFAULTS as PRESIGN_DEFAULTS, TEST_DEFAULTS as PRESIGN_TEST
from bindpkcs11.commands.signer import DEFAULTS as SIGNER_DEFAULTS, TEST_DEFAULTS as SIGNER_TEST
from bindpkcs11.dnssec import rollplan
from bindpkcs11.dnssec.dnskey import parse_zone_name
from bindpkcs11.errors import UsageError
from bindpkcs11.monitor import iso_time, resolve_server
from bindpkcs11.output import print_json, print_table, printable
from bindpkcs11.timespec import parse_duration, parse_time


def register(commands, common) -> None:
    status = commands.add_parser(
        "status", parents=[common],
        help="every key of a setup-inline zone: role, place, state, next event, DS for the parent")
    status.add_argument("domain")
    status.add_argument("--zsk-dir", type=Path,
                        help="an offline-KSK zone: the ZSKs in the ceremony's ZSK directory")
    status.add_argument("--ksk-dir", type=Path,
                        help="an offline-KSK zone: also its KSK files (states, CDS, the DS the "
                             "parent should have)")
    status.add_argument("--at", metavar="T", help="the states at T instead of now")
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
    zsk.add_argument("--key", metavar="TAG", type=_tag,
                     help="BIND 9.20 instances: the ZSK to roll (default: the zone's one ZSK)")
    zsk.add_argument("--propagation-delay", metavar="D",
                     help=f"time for a change to reach every secondary (default "
                          f"{rollover.DEFAULT_PROPAGATION_DELAY} s)")
    zsk.add_argument("--test-timings", action="store_true",
                     help="shrink every interval to seconds (a whole rollover in about a minute; "
                          "loopback demos and tests only)")
    offline = zsk.add_argument_group(
        "offline-KSK zones", "with --zsk-dir: schedule the rollover in the ceremony's ZSK key "
        "files; 'ksk presign' then carries it into the bundles (same durations as its own)")
    offline.add_argument("--zsk-dir", type=Path, help="the offline-KSK zone's software ZSK files")
    offline.add_argument("--period", metavar="D",
                         help=f"the ceremony's period (default {PRESIGN_DEFAULTS['period']}): "
                              "intervals are whole periods")
    offline.add_argument("--dnskey-ttl", metavar="D",
                         help=f"the DNSKEY TTL the ceremony signs (default "
                              f"{PRESIGN_DEFAULTS['dnskey_ttl']})")
    offline.add_argument("--max-zone-ttl", metavar="D",
                         help=f"the zone's largest TTL (default {PRESIGN_DEFAULTS['max_zone_ttl']})")
    offline.add_argument("--rng-from-token", action="store_true",
                         help="mix the token's randomness into the successor (token present)")
    offline.add_argument("--token", help=f"token for --rng-from-token (default {DEFAULT_TOKEN})")
    zsk.set_defaults(handler=_rollover_zsk)

    ksk = sub.add_parser("ksk", parents=[common],
                         help="double-KSK rollover: new KSK signs beside the old one, CDS/CDNSKEY "
                              "switch, the parent's DS changes, then --ds-published retires the "
                              "old KSK")
    ksk.add_argument("domain")
    ksk.add_argument("--at", metavar="T", help="publish the new KSK at T instead of now")
    ksk.add_argument("--ds-published", action="store_true",
                     help="step 2: the parent serves the new DS; retire the old KSK")
    ksk.add_argument("--parent-server", metavar="HOST[:PORT]",
                     help="with --ds-published: check that this server of the parent zone serves "
                          "the new DS first")
    ksk.add_argument("--key", metavar="TAG", type=_tag,
                     help="BIND 9.20 instances: the KSK to roll (default: the zone's one KSK)")
    ksk.add_argument("--parent-ds-ttl", metavar="D",
                     help=f"the parent's DS TTL (default {kskroll.DEFAULT_PARENT.ds_ttl} s)")
    ksk.add_argument("--propagation-delay", metavar="D",
                     help=f"time for a change to reach every secondary (default "
                          f"{rollover.DEFAULT_PROPAGATION_DELAY} s)")
    ksk.add_argument("--test-timings", action="store_true",
                     help="shrink every interval to seconds (loopback demos and tests only)")
    offline_ksk = ksk.add_argument_group(
        "offline-KSK zones", "with --ksk-dir: schedule the rollover in the KSK key files (the "
        "successor made on the KSK's token); 'ksk presign --ksk OLD --ksk NEW' then carries it "
        "into the bundles. With --ds-published, --at is when the parent started serving the DS")
    offline_ksk.add_argument("--ksk-dir", type=Path, help="the offline-KSK zone's KSK key files")
    offline_ksk.add_argument("--new-ksk", type=Path, metavar="KEYFILE",
                             help="step 1: use this token KSK (same token) as the successor "
                                  "instead of generating one")
    offline_ksk.add_argument("--period", metavar="D",
                             help=f"the ceremony's period (default {PRESIGN_DEFAULTS['period']})")
    offline_ksk.add_argument("--dnskey-ttl", metavar="D",
                             help=f"the DNSKEY TTL the ceremony signs (default "
                                  f"{PRESIGN_DEFAULTS['dnskey_ttl']})")
    offline_ksk.add_argument("--parent-propagation-delay", metavar="D",
                             help=f"time for the parent's DS change to reach all its servers "
                                  f"(default {PRESIGN_DEFAULTS['parent_propagation_delay']})")
    ksk.set_defaults(handler=_rollover_ksk)

    clean = sub.add_parser("cleanup", parents=[common],
                           help="destroy the token object of a key whose Delete has passed and "
                                "that named no longer serves (asks to type 'destroy TAG')")
    clean.add_argument("domain")
    clean.add_argument("--confirm", metavar="TAG", action="append", type=_tag, default=[],
                       help="destroy this key's object without asking (repeatable; for scripts)")
    clean.set_defaults(handler=rollcleanup_command.run)


def _status(args) -> int:
    zone, at = parse_zone_name(args.domain), _time(args.at, "--at")
    if args.ksk_dir is not None and args.zsk_dir is None:
        raise UsageError("--ksk-dir is for offline-KSK zones: give --zsk-dir too")
    result = keystatus.offline_status(zone, args.zsk_dir, at, args.ksk_dir) \
        if args.zsk_dir is not None else keystatus.zone_status(state(args), zone, at)
    if args.json:
        print_json(result)
        return 0
    rows = [[k.role.upper(), k.algorithm, k.tag, k.uri if k.location == "token" else "software",
             k.state, f"{k.next_event.event} {iso_time(k.next_event.time)}" if k.next_event else "",
             k.token_object or "", {True: "yes", False: "no"}.get(k.cds, "")] for k in result.keys]
    print_table(["ROLE", "ALGORITHM", "TAG", "WHERE", "STATE", "NEXT EVENT", "TOKEN OBJECT", "CDS"],
                rows)
    if args.zsk_dir is None or args.ksk_dir is not None:
        for line in result.ds or ["(no active KSK: the parent should have no DS from this zone)"]:
            print(f"DS for the parent now: {line}")
    for problem in result.problems:
        print(f"problem: {problem}")
    for offer in result.cleanup:
        print(f"cleanup: {offer}")
    return 1 if result.problems else 0


def _rollover_zsk(args) -> int:
    if args.zsk_dir is not None:
        return _rollover_zsk_offline(args)
    if args.period or args.dnskey_ttl or args.max_zone_ttl or args.rng_from_token or args.token:
        raise UsageError("--period, --dnskey-ttl, --max-zone-ttl, --rng-from-token and --token "
                         "are for offline-KSK zones: add --zsk-dir (a setup-inline zone's come "
                         "from named)")
    if stockroll.is_named_rolled(state(args), parse_zone_name(args.domain)):
        return _rollover_stock(args, "zsk", ("activate", "delete", "propagation_delay"))
    if args.key is not None:
        raise UsageError("--key is for BIND 9.20 instances (named rolls the key it is given): "
                         "drop it, bindpkcs11 rolls the zone's one active ZSK")
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
    progress = progress_printer(args, "rollover")
    result = rollover.rollover_zsk(state(args), request, progress)
    if args.json:
        print_json(result)
        return 0
    _print_schedule(result, result.uri or "software (seeded from the token)")
    print(f"named follows this schedule by itself; 'bindpkcs11 status {result.zone}' shows progress")
    _offer_cleanup(args, request.zone)
    return 0


def _rollover_zsk_offline(args) -> int:
    """The offline-KSK variant: key files only; the durations default to `ksk presign`'s."""
    defaults = PRESIGN_TEST if args.test_timings else PRESIGN_DEFAULTS
    duration = lambda name: parse_duration(getattr(args, name) or defaults[name])  # noqa: E731
    timings = rollplan.ZoneTimings(
        dnskey_ttl=duration("dnskey_ttl"), max_zone_ttl=duration("max_zone_ttl"),
        propagation_delay=duration("propagation_delay"),
        resign_interval=int((SIGNER_TEST if args.test_timings else SIGNER_DEFAULTS)["interval"]),
        test=args.test_timings)
    if duration("period") <= 0:
        raise UsageError("--period must be longer than zero: give the ceremony's period")
    request = offlineroll.OfflineRolloverRequest(
        zone=parse_zone_name(args.domain), zsk_dir=args.zsk_dir, timings=timings,
        period=duration("period"), at=_time(args.at, "--at"),
        activate=_time(args.activate, "--activate"), delete=_time(args.delete, "--delete"))
    token_rng = (lambda: access(args, args.token or DEFAULT_TOKEN)) if args.rng_from_token else None
    result = offlineroll.rollover_zsk_offline(request, token_rng)
    if args.json:
        print_json(result)
        return 0
    _print_schedule(result, "software, offline-KSK")
    print(f"  each interval rounded up to whole periods of {request.period} s; the signer's round "
          f"interval ({timings.resign_interval} s) counts as the re-sign interval")
    print(f"key files in {args.zsk_dir} carry this schedule; 'bindpkcs11 ksk presign "
          f"{result.zone} --zsk-dir {args.zsk_dir} ...' puts it into the bundles (each event "
          "takes effect at the first period start at or after it)")
    return 0


def _print_schedule(result, where: str) -> None:
    timings, schedule = result.timings, result.schedule
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


def _offer_cleanup(args, zone) -> None:
    """Token objects of keys an earlier rollover removed: the command to destroy each, offered
    (never run: `token delete` applies the custody rules)."""
    for offer in keystatus.zone_status(state(args), zone).cleanup:
        print(f"cleanup: {offer}")


def _rollover_ksk(args) -> int:
    if args.ksk_dir is not None:
        return _rollover_ksk_offline(args)
    if args.period or args.dnskey_ttl or args.parent_propagation_delay or args.new_ksk:
        raise UsageError("--period, --dnskey-ttl, --parent-propagation-delay and --new-ksk are "
                         "for offline-KSK zones: add --ksk-dir")
    if args.test_timings and (args.propagation_delay or args.parent_ds_ttl):
        raise UsageError("--test-timings fixes every interval: drop --propagation-delay and "
                         "--parent-ds-ttl")
    if args.parent_server and not args.ds_published:
        raise UsageError("--parent-server checks the DS for --ds-published: add --ds-published")
    if args.ds_published and args.at:
        raise UsageError("--at is for step 1 (the new KSK's Publish): drop it with --ds-published")
    if stockroll.is_named_rolled(state(args), parse_zone_name(args.domain)):
        return _rollover_stock(args, "ksk", ("propagation_delay", "parent_ds_ttl"))
    if args.key is not None:
        raise UsageError("--key is for BIND 9.20 instances (named rolls the key it is given): "
                         "drop it, bindpkcs11 rolls the zone's one active KSK")
    request = kskroll.KskRequest(
        zone=parse_zone_name(args.domain), at=_time(args.at, "--at"),
        test_timings=args.test_timings, ds_published=args.ds_published,
        parent_server=_server(args.parent_server) if args.parent_server else None,
        propagation_delay=parse_duration(args.propagation_delay)
        if args.propagation_delay else None,
        parent_ds_ttl=parse_duration(args.parent_ds_ttl) if args.parent_ds_ttl else None)
    progress = progress_printer(args, "rollover")
    result = kskroll.rollover_ksk(state(args), request, progress)
    if args.json:
        print_json(result)
        return 0
    where = result.uri or "software"
    print(f"KSK rollover of {result.zone}: {result.predecessor} -> {result.successor} ({where}): "
          f"{result.step}")
    if result.retire is None:
        print(f"  {iso_time(result.publish)}  KSK {result.successor} published, signs the DNSKEY "
              f"RRset beside KSK {result.predecessor}")
        print(f"  {iso_time(result.sync)}  CDS/CDNSKEY switch to KSK {result.successor} "
              "(Publish + DNSKEY TTL + propagation delay)")
        print(f"hand the parent this DS from {iso_time(result.sync)} on (or let it follow the "
              f"CDS):\n  {result.new_ds}")
        print(f"once the parent serves it: bindpkcs11 rollover ksk {result.zone} --ds-published")
    else:
        print(f"  {iso_time(result.retire)}  KSK {result.predecessor} stops signing and leaves the "
              f"DNSKEY RRset (now + parent DS TTL {result.parent.ds_ttl} s + parent propagation "
              f"delay {result.parent.propagation_delay} s)")
    _offer_cleanup(args, request.zone)
    return 0


def _rollover_ksk_offline(args) -> int:
    """The offline-KSK variant: key files only (and the successor on the KSK's token); the
    durations default to `ksk presign`'s."""
    defaults = PRESIGN_TEST if args.test_timings else PRESIGN_DEFAULTS
    duration = lambda name: parse_duration(getattr(args, name, None) or defaults[name])  # noqa: E731
    if args.test_timings and (args.propagation_delay or args.parent_ds_ttl or args.period or
                              args.dnskey_ttl or args.parent_propagation_delay):
        raise UsageError("--test-timings fixes every interval: drop the durations")
    if args.parent_server and not args.ds_published:
        raise UsageError("--parent-server checks the DS for --ds-published: add --ds-published")
    if duration("period") <= 0:
        raise UsageError("--period must be longer than zero: give the ceremony's period")
    request = offlinekskroll.OfflineKskRequest(
        zone=parse_zone_name(args.domain), ksk_dir=args.ksk_dir, period=duration("period"),
        timings=rollplan.ZoneTimings(
            dnskey_ttl=duration("dnskey_ttl"), max_zone_ttl=duration("max_zone_ttl"),
            propagation_delay=duration("propagation_delay"), resign_interval=0,
            test=args.test_timings),
        parent=rollplan.ParentTimings(duration("parent_ds_ttl"),
                                      duration("parent_propagation_delay")),
        at=_time(args.at, "--at"), ds_published=args.ds_published,
        parent_server=_server(args.parent_server) if args.parent_server else None,
        new_ksk=args.new_ksk)
    if args.new_ksk and args.ds_published:
        raise UsageError("--new-ksk is for step 1: drop it with --ds-published")
    result = offlinekskroll.rollover_ksk_offline(request, lambda label: access(args, label))
    if args.json:
        print_json(result)
        return 0
    print(f"KSK rollover of {result.zone}: {result.predecessor} -> {result.successor} "
          f"({result.uri}, offline-KSK): {result.step}")
    if result.retire is None:
        print(f"  {iso_time(result.publish)}  KSK {result.successor} published, signs the DNSKEY "
              f"RRset beside KSK {result.predecessor}")
        print(f"  {iso_time(result.sync)}  CDS/CDNSKEY name KSK {result.successor} (Publish + "
              f"DNSKEY TTL + propagation delay, in whole periods of {request.period} s)")
        print(f"hand the parent this DS from {iso_time(result.sync)} on:\n  {result.new_ds}")
        print(f"next: bindpkcs11 ksk presign {result.zone} --ksk OLD --ksk NEW ... (both KSKs "
              "sign); once the parent serves the new DS: bindpkcs11 rollover ksk "
              f"{result.zone} --ksk-dir {args.ksk_dir} --ds-published")
    else:
        print(f"  {iso_time(result.retire)}  KSK {result.predecessor} stops signing and leaves the "
              f"DNSKEY RRset (DS confirmed + parent DS TTL {result.parent.ds_ttl} s + parent "
              f"propagation delay {result.parent.propagation_delay} s); bundles follow from the "
              "first period start at or after it")
        print("next: a ceremony with --ksk OLD --ksk NEW for the periods from then on")
    return 0


def _rollover_stock(args, role: str, not_here: tuple[str, ...]) -> int:
    """A BIND 9.20 instance (stock, or patched with the successor made on the token first):
    named's key manager rolls (stockroll.py); options that would set timings bindpkcs11 no
    longer computes are refused."""
    for name in not_here:
        if getattr(args, name) is not None:
            option = "--" + name.replace("_", "-")
            raise UsageError(f"{option} does not apply to a stock-route or patched-9.20 "
                             "instance: named's dnssec-policy times the rollover; drop it")
    request = stockroll.StockRequest(
        zone=parse_zone_name(args.domain), role=role, key=args.key, at=_time(args.at, "--at"),
        ds_published=getattr(args, "ds_published", False),
        parent_server=_server(args.parent_server) if getattr(args, "parent_server", None)
        else None, test_timings=args.test_timings)
    result = stockroll.rollover_stock(state(args), request, progress_printer(args, "rollover"))
    if args.json:
        print_json(result)
        return 0
    new = f"{result.successor}" if result.successor else "(made by named at the rollover time)"
    print(f"{role.upper()} rollover of {result.zone} by named: {result.predecessor} -> {new}"
          f"{' (' + result.uri + ')' if result.uri else ''}: {result.step}")
    for command in result.rndc_commands:
        print(f"  asked named: {command}")
    print("named's schedule (its dnssec-policy, RFC 7583):")
    for when, event in result.schedule:
        print(f"  {iso_time(when)}  {event}")
    if result.new_ds and result.step == "rolling":
        print(f"hand the parent this DS (or let it follow the CDS):\n  {result.new_ds}")
        print(f"once the parent serves it: bindpkcs11 rollover ksk {result.zone} --ds-published")
    print("named reports (rndc dnssec -status):")
    for line in result.named_status.rstrip().splitlines():
        print(f"  {line}")
    return 0


def _tag(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"a key tag is a number 0-65535, not '{printable(text)}'")
    return int(text)


def _server(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "53")
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise UsageError(f"invalid --parent-server '{text}': use HOST or HOST:PORT")
    return resolve_server(host), int(port)


def _time(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    value = parse_time(text)
    if value is None:
        raise UsageError(f"{option} needs a time, not '{text}'")
    return value
