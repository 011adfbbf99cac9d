"""`bindpkcs11 keygen DOMAIN ...`: a DNSSEC key on a token or in software (see dnssec/keygen.py)."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import replace
from pathlib import Path

from bindpkcs11 import keydirs
from bindpkcs11.backup import cardkek, custody
from bindpkcs11.commands.common import DEFAULT_TOKEN, access, key_dir, state
from bindpkcs11.dnssec import algorithms, keygen
from bindpkcs11.dnssec.dnskey import parse_zone_name
from bindpkcs11.bind import route
from bindpkcs11.bind.programs import STOCK
from bindpkcs11.dnssec.keyfile import KEY_FORMATS, Timing, check_writable
from bindpkcs11.errors import UsageError
from bindpkcs11.output import print_json
from bindpkcs11.progress import ticking
from bindpkcs11.timespec import check_key_time, parse_time, parse_ttl, to_bind_timestamp


def register(commands, common) -> None:
    gen = commands.add_parser("keygen", help="generate a DNSSEC key (on a token by default)",
                              parents=[common])
    gen.add_argument("domain")
    gen.add_argument("--role", choices=["ksk", "zsk"], required=True)
    gen.add_argument("--algorithm", required=True,
                     help="RSASHA256, RSASHA512, ECDSAP256SHA256, ECDSAP384SHA384, ED25519 or a number")
    gen.add_argument("--bits", type=int, help="RSA modulus size (default 2048)")
    gen.add_argument("--token", default=None, help=f"token label (default {DEFAULT_TOKEN})")
    gen.add_argument("--software", action="store_true", help="a software key instead of a token key")
    gen.add_argument("--rng-from-token", action="store_true",
                     help="with --software: mix the token's C_GenerateRandom output into the key "
                          "(ECDSA, Ed25519)")
    gen.add_argument("--key-dir", type=Path, help="where to write K*.key/.private")
    gen.add_argument("--label", dest="object_label", help="CKA_LABEL (default <zone>-<role>-<tag>)")
    gen.add_argument("--extractable", action="store_true", help="allow wrapping the key off the token")
    gen.add_argument("--backup", action="store_true",
                     help="wrappable only under the token's KEK, for 'backup wrap' (needs a KEK)")
    gen.add_argument("--no-backup", action="store_true",
                     help="a KSK on one token is intended to be the only copy: no warning")
    gen.add_argument("--key-format", choices=KEY_FORMATS,
                     help="the BIND series that reads the key files: 9.18 (patched route, with "
                          "Engine:) or 9.20 (stock route, Label: only, as its dnssec-keyfromlabel "
                          "writes); default: the default route's")
    gen.add_argument("--ttl", help="DNSKEY TTL to write into the .key file")
    for name in ("publish", "activate", "inactive", "delete"):
        gen.add_argument(f"--{name}", metavar="T", help="time (YYYYMMDD[HHMMSS], now, +1d, ...)")
    gen.set_defaults(handler=_keygen)


def _keygen(args) -> int:
    zone = parse_zone_name(args.domain)
    algorithm = algorithms.lookup(args.algorithm).with_bits(args.bits)
    now = int(time.time())
    timing = Timing(
        created=now,
        publish=_time_or("publish", args.publish, now, now),
        activate=_time_or("activate", args.activate, now, now),
        inactive=_time_or("inactive", args.inactive, None, now),
        delete=_time_or("delete", args.delete, None, now),
    )
    _check_timing_order(timing)
    request = keygen.KeygenRequest(
        zone=zone, role=args.role, algorithm=algorithm, key_dir=key_dir(args), timing=timing,
        software=args.software, extractable=args.extractable, object_label=args.object_label,
        ttl=parse_ttl(args.ttl) if args.ttl else None, backup=args.backup,
        key_format=args.key_format or _default_key_format(args),
    )
    if args.backup and (args.no_backup or args.software):
        raise UsageError("--backup is for token keys, and contradicts --no-backup")
    if args.software:
        if (args.token and not args.rng_from_token) or args.extractable or args.object_label:
            raise UsageError("--software keys live in files: drop --token/--label/--extractable")
        state(args)
        result = _generate_software(args, request)
    else:
        if args.rng_from_token:
            raise UsageError("--rng-from-token is for --software keys (token keys use the token's RNG)")
        token = access(args, args.token or DEFAULT_TOKEN)
        if request.backup and cardkek.uses_card_dkek(token.profile):
            # a SmartCard-HSM wraps any of its keys under its DKEK: no PKCS#11 KEK to check
            request = replace(request, backup=False)
        if args.key_dir:
            # before the key exists, so that the token guard knows where its key file will be
            check_writable(request.key_dir)
            keydirs.record(token.state, request.key_dir)
        message = f"generating {algorithm.mnemonic} {args.role.upper()} on token '{token.label}' ..."
        with contextlib.nullcontext() if args.json else ticking(message):
            result = keygen.generate_on_token(request, token)
        known = custody.record_generated(token.state, result.key_file, token.label, args.backup)
        result = replace(result, extra={**result.extra, "custody": known.describe()})
    if args.json:
        print_json(result)
    else:
        print(result.key_file.name.removesuffix(".key"))
        print(result.ds)
        if "custody" in result.extra:
            print(f"custody: {result.extra['custody']}")
    if args.role == "ksk" and not (args.software or args.backup or args.no_backup):
        print(f"warning: KSK {result.tag} on token '{result.token}' is the only copy of this key: "
              "if the token is lost, so is the key. Make it with --backup (after importing KEK "
              "shares) or generate it in software and 'key import' it into two tokens; "
              "--no-backup silences this", file=sys.stderr)
    return 0


def _default_key_format(args) -> str:
    """9.20 when new instances would run a stock BIND >= 9.20, else 9.18 (bind/route.py)."""
    if args.software:
        return "9.18"  # software key files are the same for both
    return "9.20" if route.default_name(state(args)) == STOCK else "9.18"


def _generate_software(args, request: keygen.KeygenRequest) -> keygen.GeneratedKey:
    """A software key; with --rng-from-token, token randomness is mixed into it (the demo's hgenzsk)."""
    if not args.rng_from_token:
        return keygen.generate_software(request)
    return keygen.generate_software_with_token_rng(request, access(args, args.token or DEFAULT_TOKEN))


def _time_or(name: str, text: str | None, default: int | None, now: int) -> int | None:
    """The parsed --NAME time, checked against what BIND can keep, before anything is generated."""
    if text is None:
        return default
    value = parse_time(text, now)
    return None if value is None else check_key_time(f"--{name} {text}", value, now)


def _check_timing_order(timing: Timing) -> None:
    order = [("publish", timing.publish), ("activate", timing.activate),
             ("inactive", timing.inactive), ("delete", timing.delete)]
    set_times = [(name, t) for name, t in order if t is not None]
    for (first, a), (second, b) in zip(set_times, set_times[1:]):
        if a > b:
            raise UsageError(
                f"--{second} ({to_bind_timestamp(b)}) is before --{first} ({to_bind_timestamp(a)})"
            )
