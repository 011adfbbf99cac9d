"""`bindpkcs11 setup-inline DOMAIN`: the main job (see inline.py)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bindpkcs11 import inline
from bindpkcs11.bind.instance import parse_listen, parse_secondary
from bindpkcs11.commands.bind import add_version_option
from bindpkcs11.commands.common import DEFAULT_PROFILE, progress_printer, state
from bindpkcs11.dnssec import algorithms
from bindpkcs11.dnssec.dnskey import parse_zone_name
from bindpkcs11.errors import UsageError
from bindpkcs11.output import print_json
from bindpkcs11.token.labels import check_token_label

DEFAULTS = {field.name: field.default for field in dataclasses.fields(inline.SetupRequest)}


def register(commands, common) -> None:
    setup = commands.add_parser(
        "setup-inline", parents=[common],
        help="keys on the token, named.conf from templates, named signing the zone inline")
    setup.add_argument("domain")
    # Options left out keep what the instance has (a re-run after a PIN change must not put the
    # sample zone, another port or another token in place of the operator's); for a new instance
    # they take the defaults shown.
    setup.add_argument("--zone-file", type=Path,
                       help="unsigned zone (default: the instance's; for a new one a sample zone)")
    setup.add_argument("--token", help=f"token label (default: the instance's, else {inline.DEFAULT_TOKEN})")
    setup.add_argument("--algorithm", help=f"DNSSEC algorithm (default: the instance's, else {inline.DEFAULT_ALGORITHM})")
    setup.add_argument("--bits", type=int, help="RSA modulus size")
    setup.add_argument("--listen", help=f"address named listens on (default: the instance's, else {DEFAULTS['listen']})")
    setup.add_argument("--port", type=int, help=f"DNS port (default: the instance's, else {DEFAULTS['port']})")
    setup.add_argument("--rndc-port", type=int,
                       help=f"rndc control port (default: the instance's, else {DEFAULTS['rndc_port']})")
    setup.add_argument("--secondary", action="append", metavar="HOST:PORT",
                       help="also-notify + allow-transfer for this secondary (repeatable; "
                            "default: the instance's, else none)")
    setup.add_argument("--zsk-on", choices=["token", "software"],
                       help="where the ZSK lives (default: as the instance has it; for a new one, "
                            "the token unless it signs too slowly for the zone)")
    setup.add_argument("--zsk-token", metavar="LABEL",
                       help="make the ZSK on this token of the same profile (an OpenPGP card's "
                            "other token); it must take the same user PIN")
    setup.add_argument("--bind", choices=["stock", "patched"],
                       help="stock BIND >= 9.20 + pkcs11-provider, or the patched 9.18 (default: "
                            "the instance's; for a new one stock when found, else patched)")
    setup.add_argument("--timeout", type=float, metavar="SECONDS",
                       help="wait this long for the signed zone (default: from the zone's size "
                            "and the ZSK's signing rate); named still signing then keeps running")
    add_version_option(setup, "--bind-version", default=None)
    setup.add_argument("--test-timings", action=argparse.BooleanOptionalAction,
                       help="30-minute signatures refreshed after 10 minutes (watch a cycle); "
                            "default: the instance's, else off")
    setup.set_defaults(handler=_setup_inline)


def timeout_seconds(value: float | None) -> float | None:
    """--timeout: seconds, more than 0 and at most a day (None: derived from the zone)."""
    if value is not None and not 0 < value <= 86400:  # also refuses nan
        raise UsageError(f"--timeout {value:g} is out of range: give seconds, more than 0 and "
                         "at most 86400")
    return value


def _port(value: int, option: str) -> int:
    if not 0 < value < 65536:
        raise UsageError(f"{option} must be between 1 and 65535")
    return value


def _setup_inline(args) -> int:
    zone = parse_zone_name(args.domain)
    previous = inline.previous_settings(state(args), zone)
    kept = lambda name, given: given if given is not None else (  # noqa: E731
        getattr(previous, name) if previous else DEFAULTS[name])
    profile = args.profile or (previous.profile if previous else DEFAULT_PROFILE)
    zone_file = args.zone_file
    if zone_file is None and previous and previous.zone_source:
        zone_file = Path(previous.zone_source)
    if args.algorithm is not None:
        algorithm = algorithms.lookup(args.algorithm).with_bits(args.bits)
    elif previous:
        algorithm = algorithms.by_number(previous.algorithm).with_bits(args.bits or previous.bits)
    else:
        algorithm = algorithms.lookup(inline.DEFAULT_ALGORITHM).with_bits(args.bits)
    secondaries = (tuple(parse_secondary(s) for s in args.secondary) if args.secondary is not None
                   else tuple(previous.secondaries) if previous else ())
    request = inline.SetupRequest(
        zone=zone, algorithm=algorithm, zone_file=zone_file,
        token=check_token_label(kept("token", args.token)), profile=profile, module=args.module,
        pin_file=args.pin_file, listen=parse_listen(kept("listen", args.listen)),
        port=_port(kept("port", args.port), "--port"),
        rndc_port=_port(kept("rndc_port", args.rndc_port), "--rndc-port"),
        secondaries=secondaries, test_timings=kept("test_timings", args.test_timings),
        zsk_on=args.zsk_on, bind=args.bind, timeout=timeout_seconds(args.timeout),
        bind_version=kept("bind_version", args.bind_version),
        zsk_token=check_token_label(args.zsk_token) if args.zsk_token is not None else None,
    )
    progress = progress_printer(args, "setup-inline")
    result = inline.setup_inline(state(args), request, progress)
    if args.json:
        print_json(result)
        return 0
    verb = "signed and served" if result.changed else "already signed and served (nothing changed)"
    print(f"zone {result.zone} {verb} by named (pid {result.pid}, BIND {result.bind_version}, "
          f"{result.bind} route) on {result.listen} port {result.port}, serial {result.serial}, "
          f"in {result.seconds:.1f} s")
    for key in result.keys:
        print(f"  {key.role.upper()} {key.tag} (algorithm {key.algorithm}) "
              f"{key.uri or 'software key ' + key.key_file}")
    print(f"try:  {result.dig}")
    print(f"DS for the parent zone:  {result.ds}")
    return 0
