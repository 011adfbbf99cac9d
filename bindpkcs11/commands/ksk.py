"""`bindpkcs11 ksk presign DOMAIN ...`: the offline-KSK ceremony (see dnssec/ceremony.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import dns.name

from bindpkcs11.commands.common import DEFAULT_TOKEN, Parser, access, key_dir
from bindpkcs11.dnssec import algorithms, skr
from bindpkcs11.dnssec.bundles import Unlocker
from bindpkcs11.dnssec.ceremony import PresignRequest, PresignResult, run_presign
from bindpkcs11.dnssec.dnskey import parse_zone_name
from bindpkcs11.dnssec.keyfile import read_key_pair
from bindpkcs11.dnssec.policy import CeremonyPolicy
from bindpkcs11.dnssec.presign import make_schedule
from bindpkcs11.errors import InvalidUri, KeyFileError, UsageError
from bindpkcs11.output import print_json
from bindpkcs11.passphrase import read_passphrase
from bindpkcs11.timespec import parse_duration, parse_time, to_bind_timestamp
from bindpkcs11.token.uri import parse_uri

# period, overlap, DNSKEY TTL, maximum signature lifetime, and the zone's largest TTL and
# propagation delay (ZSK rollover rules). `rollover zsk --zsk-dir` schedules with the same values.
# The parent's DS TTL and propagation delay (KSK rollover rules) match `rollover ksk`'s.
DEFAULTS = {"period": "7d", "overlap": "7d", "dnskey_ttl": "1h", "max_validity": "21d",
            "max_zone_ttl": "1d", "propagation_delay": "5mi", "parent_ds_ttl": "1d",
            "parent_propagation_delay": "1h"}
TEST_DEFAULTS = {"period": "5mi", "overlap": "5mi", "dnskey_ttl": "60", "max_validity": "1d",
                 "max_zone_ttl": "60", "propagation_delay": "5", "parent_ds_ttl": "60",
                 "parent_propagation_delay": "5"}


def register(commands, common) -> None:
    ksk = commands.add_parser("ksk", help="offline KSK ceremonies", parents=[common])
    sub = ksk.add_subparsers(dest="ksk_command", required=True, parser_class=Parser)
    presign = sub.add_parser(
        "presign", parents=[common],
        help="sign each future period's DNSKEY RRset with the token KSK into encrypted bundles")
    presign.add_argument("domain")
    presign.add_argument("--token", default=DEFAULT_TOKEN, help="token holding the KSK")
    presign.add_argument("--ksk", required=True, metavar="LABEL_OR_KEYFILE", action="append",
                         help="the KSK's .key file, or its object label on the token; twice "
                              "(old and new) during a KSK rollover (docs/rollover.md)")
    presign.add_argument("--key-dir", type=Path, help="where to look for the KSK file of a label")
    presign.add_argument("--zsk-dir", type=Path, required=True, help="software ZSK key files")
    presign.add_argument("--start", required=True, metavar="T", help="start of the first period")
    presign.add_argument("--periods", type=int, required=True, metavar="N")
    presign.add_argument("--period", metavar="D", help="length of a period (default 7d)")
    presign.add_argument("--validity", metavar="D",
                         help="KSK signature lifetime from its period's start (default period+overlap)")
    presign.add_argument("--overlap", metavar="D",
                         help="how long a signature outlives its period (default 7d)")
    presign.add_argument("--dnskey-ttl", metavar="D", help="TTL of the DNSKEY RRset (default 1h)")
    presign.add_argument("--max-zone-ttl", metavar="D",
                         help="the zone's largest TTL: a retired ZSK stays published this long + "
                              "the propagation delay (default 1d)")
    presign.add_argument("--propagation-delay", metavar="D",
                         help="time for a change to reach every secondary (default 5mi)")
    presign.add_argument("--parent-ds-ttl", metavar="D",
                         help="KSK rollover: the parent's DS TTL (default 1d)")
    presign.add_argument("--parent-propagation-delay", metavar="D",
                         help="KSK rollover: time for the parent's DS change to reach all its "
                              "servers (default 1h)")
    presign.add_argument("--max-validity", metavar="D", help="policy: longest signature (default 21d)")
    presign.add_argument("--algorithms", metavar="LIST",
                         help="policy: allowed algorithms, comma separated (default all supported)")
    presign.add_argument("--min-rsa-bits", type=int, default=2048, help="policy: smallest RSA key")
    presign.add_argument("--passphrase-file", type=Path,
                         help="bundle passphrase (else $BINDPKCS11_PASSPHRASE, else a prompt)")
    presign.add_argument("--out", type=Path, required=True, help="directory for the bundles")
    presign.add_argument("--skr", type=Path, help="also write the signed RRsets as a BIND 9.20 SKR")
    presign.add_argument("--log", type=Path, help="ceremony log (default OUT/ceremony-<time>.log)")
    presign.add_argument("--yes", action="store_true", help="do not ask for the typed 'yes'")
    presign.add_argument("--test-timings", action="store_true",
                         help="minute-scale defaults (5mi periods, 60 s TTL) for tests and demos")
    presign.set_defaults(handler=_presign)


def _presign(args) -> int:
    zone = parse_zone_name(args.domain)
    defaults = TEST_DEFAULTS if args.test_timings else DEFAULTS
    duration = lambda name: parse_duration(getattr(args, name) or defaults[name])  # noqa: E731
    now = int(time.time())
    start = parse_time(args.start, now)
    if start is None:
        raise UsageError("--start needs a time, e.g. 20270101 or now+1d")
    schedule = make_schedule(
        start=start, periods=args.periods, period=duration("period"),
        validity=parse_duration(args.validity) if args.validity else None,
        overlap=parse_duration(args.overlap) if args.overlap else (
            None if args.validity else duration("overlap")),
        dnskey_ttl=duration("dnskey_ttl"), propagation_delay=duration("propagation_delay"),
        max_zone_ttl=duration("max_zone_ttl"), parent_ds_ttl=duration("parent_ds_ttl"),
        parent_propagation_delay=duration("parent_propagation_delay"),
    )
    if len(args.ksk) > 2:
        raise UsageError("--ksk at most twice: the old and the new KSK of a rollover")
    request = PresignRequest(
        zone=zone, ksk_files=tuple(_ksk_file(args, zone, given) for given in args.ksk),
        zsk_dir=args.zsk_dir, schedule=schedule,
        policy=_policy(args, duration("max_validity")), out_dir=args.out,
        log_path=args.log or args.out / f"ceremony-{to_bind_timestamp(now)}.log",
        skr_path=args.skr, assume_yes=args.yes,
    )
    if args.skr is not None and (warning := skr.overlap_warning(schedule.overlap)):
        print(f"warning: {warning}", file=sys.stderr)
    result = run_presign(request, access(args, args.token),
                         lambda: Unlocker(read_passphrase(args.passphrase_file, new=True)),
                         _show, _ask)
    _print(args, result)
    return 0


def _policy(args, max_validity: int) -> CeremonyPolicy:
    allowed = CeremonyPolicy().algorithms
    if args.algorithms:
        allowed = tuple(algorithms.lookup(name).number for name in args.algorithms.split(","))
    return CeremonyPolicy(max_validity=max_validity, algorithms=allowed,
                          min_rsa_bits=args.min_rsa_bits)


def _ksk_file(args, zone: dns.name.Name, text: str) -> Path:
    """--ksk as a key file (path or K... stem), else the key file whose Label names that object."""
    given, directory = Path(text), key_dir(args)
    for candidate in (given, Path(f"{given}.key"), directory / given, directory / f"{given}.key"):
        if candidate.name.endswith(".key") and candidate.is_file():
            return candidate
    for key_path in sorted(directory.glob(f"K{zone.to_text()}+*.key")):
        try:
            pair = read_key_pair(key_path)
            uri = parse_uri(pair.label_uri) if pair.label_uri else None
        except (InvalidUri, KeyFileError):
            continue
        if uri and uri.object == text and uri.token in (None, args.token):
            return pair.key_path
    raise UsageError(f"--ksk {text}: no such key file, and no key file in {directory} names a "
                     f"key labelled so on token '{args.token}' (pass the .key file or --key-dir)")


def _show(summary: str) -> None:
    print(summary, file=sys.stderr, flush=True)


def _ask() -> str:
    """The operator's exact answer, read from stdin (a script may pipe it)."""
    print('Sign these DNSKEY RRsets with the KSK? Type "yes" exactly to proceed: ',
          end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        print(file=sys.stderr, flush=True)  # nobody typed the newline that ends the prompt line
    return answer


def _print(args, result: PresignResult) -> None:
    if args.json:
        print_json(result)
        return
    for path in result.bundles:
        print(path)
    print(f"{len(result.bundles)} bundles for {result.zone} (KSK "
          f"{', '.join(map(str, result.ksk_tags))}, ZSKs "
          f"{', '.join(map(str, result.zsk_tags))}), valid {to_bind_timestamp(result.first_start)} "
          f"to {to_bind_timestamp(result.last_expiration)}")
    print(f"on-token signatures: {result.token_signatures} in {result.seconds:.1f} s; "
          f"ceremony log: {result.log}")
