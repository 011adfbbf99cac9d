"""Command-line parsing only: each subcommand calls one function of a module and prints its result."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from bindpkcs11 import __version__, admin
from bindpkcs11.access import TokenAccess
from bindpkcs11.dnssec import algorithms, keygen
from bindpkcs11.dnssec.dnskey import parse_zone_name
from bindpkcs11.dnssec.keyfile import Timing
from bindpkcs11.errors import BindPkcs11Error, UsageError
from bindpkcs11.output import print_json, print_table
from bindpkcs11.state import StateDir
from bindpkcs11.timespec import parse_duration, parse_time, to_bind_timestamp

EXIT_UNEXPECTED = 70
DEFAULT_TOKEN = "bindpkcs11"


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"bindpkcs11: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = _Parser(prog="bindpkcs11", parents=[_common_options(suppress=False)],
                     description="DNSSEC keys in PKCS#11 tokens, served by BIND.")
    parser.add_argument("--version", action="version", version=f"bindpkcs11 {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_token_commands(commands, common)
    _add_keygen(commands, common)
    _add_bind_commands(commands, common)
    return parser


def _common_options(suppress: bool = True) -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand (suppressed defaults in subparsers)."""
    parent = argparse.ArgumentParser(add_help=False)
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parent.add_argument("--state-dir", type=Path, default=default(None),
                        help="state directory (default $BINDPKCS11_STATE_DIR or ~/.local/share/bindpkcs11)")
    parent.add_argument("--json", action="store_true", default=default(False),
                        help="print machine-readable JSON")
    parent.add_argument("--debug", action="store_true", default=default(False),
                        help="show tracebacks and debug logs")
    parent.add_argument("--pin-file", type=Path, default=default(None),
                        help="file holding the user PIN (else $PKCS11_LIBRARY_PIN, else a prompt)")
    parent.add_argument("--so-pin-file", type=Path, default=default(None),
                        help="file holding the SO PIN (else $PKCS11_SO_PIN, else a prompt)")
    parent.add_argument("--profile", default=default("softhsm"),
                        help="device profile (default softhsm: the embedded token)")
    parent.add_argument("--module", default=default(None), help="PKCS#11 module path override")
    return parent


def _add_token_commands(commands, common) -> None:
    token = commands.add_parser("token", help="token administration", parents=[common])
    sub = token.add_subparsers(dest="token_command", required=True, parser_class=_Parser)

    init = sub.add_parser("init", help="create and initialise a token", parents=[common])
    init.add_argument("--label", required=True)
    init.add_argument("--generate-pins", action="store_true",
                      help="random user and SO PINs, stored 0600 in the state dir")
    init.set_defaults(handler=_token_init)

    listing = sub.add_parser("list", help="slots and tokens", parents=[common])
    listing.set_defaults(handler=_token_list)

    show = sub.add_parser("show", help="a token's flags and objects", parents=[common])
    show.add_argument("--label", required=True)
    show.add_argument("--key-dir", type=Path, help="BIND key directory to match keys against")
    show.set_defaults(handler=_token_show)

    delete = sub.add_parser("delete", help="destroy one object", parents=[common])
    delete.add_argument("--label", required=True)
    delete.add_argument("--object", required=True, help="CKA_LABEL of the object")
    delete.add_argument("--type", choices=["private", "public", "secret-key", "cert", "data"])
    delete.add_argument("--force", action="count", default=0,
                        help="required; twice to destroy the private key of an active key file")
    delete.add_argument("--key-dir", type=Path)
    delete.set_defaults(handler=_token_delete)

    erase = sub.add_parser("erase", help="re-initialise a token (all objects gone)", parents=[common])
    erase.add_argument("--label", required=True)
    erase.add_argument("--force", action="store_true", help="required")
    erase.add_argument("--yes", action="store_true", help="do not ask to type the label")
    erase.add_argument("--key-dir", type=Path)
    erase.set_defaults(handler=_token_erase)

    rng = sub.add_parser("rng", help="random bytes from the token", parents=[common])
    rng.add_argument("--label", required=True)
    rng.add_argument("--bytes", type=int, required=True)
    rng.add_argument("--out", default="-", help="file, or - for stdout (hex on a terminal)")
    rng.add_argument("--feed-kernel", action="store_true", help="mix the bytes into the kernel pool")
    rng.set_defaults(handler=_token_rng)


def _add_keygen(commands, common) -> None:
    gen = commands.add_parser("keygen", help="generate a DNSSEC key (on a token by default)",
                              parents=[common])
    gen.add_argument("domain")
    gen.add_argument("--role", choices=["ksk", "zsk"], required=True)
    gen.add_argument("--algorithm", required=True,
                     help="RSASHA256, RSASHA512, ECDSAP256SHA256, ECDSAP384SHA384, ED25519 or a number")
    gen.add_argument("--bits", type=int, help="RSA modulus size (default 2048)")
    gen.add_argument("--token", default=None, help=f"token label (default {DEFAULT_TOKEN})")
    gen.add_argument("--software", action="store_true", help="a software key instead of a token key")
    gen.add_argument("--key-dir", type=Path, help="where to write K*.key/.private")
    gen.add_argument("--label", dest="object_label", help="CKA_LABEL (default <zone>-<role>-<tag>)")
    gen.add_argument("--extractable", action="store_true", help="allow wrapping the key off the token")
    gen.add_argument("--ttl", help="DNSKEY TTL to write into the .key file")
    for name in ("publish", "activate", "inactive", "delete"):
        gen.add_argument(f"--{name}", metavar="T", help="time (YYYYMMDD[HHMMSS], now, +1d, ...)")
    gen.set_defaults(handler=_keygen)


def _add_bind_commands(commands, common) -> None:
    bind = commands.add_parser("bind", help="the patched BIND 9.18", parents=[common])
    sub = bind.add_subparsers(dest="bind_command", required=True, parser_class=_Parser)
    build = sub.add_parser("build", help="fetch, patch, build and install BIND 9.18", parents=[common])
    build.add_argument("--source", type=Path, help="an ISC BIND 9.18.x tarball (default: Debian's)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--jobs", type=int, help="parallel make jobs (default: CPU count)")
    build.set_defaults(handler=_bind_build)
    env = sub.add_parser("env", help="shell exports for running the patched tools by hand",
                         parents=[common])
    env.set_defaults(handler=_bind_env)


def _bind_build(args) -> int:
    from bindpkcs11.bind import build

    result = build.build(_state(args), args.source, args.force, build.print_progress, args.jobs)
    if args.json:
        print_json(result)
    elif result.rebuilt:
        print(f"built BIND {result.manifest.bind_version} in {result.seconds:.0f} s: {result.prefix}")
    else:
        print(f"BIND {result.manifest.bind_version} already built: {result.prefix}")
    return 0


def _bind_env(args) -> int:
    import shlex

    from bindpkcs11.bind import build
    from bindpkcs11.token.profiles import get_profile

    state = _state(args)
    if build.installed_manifest(state.bind_dir) is None:
        raise UsageError(f"no patched BIND in {state.bind_dir}: run 'bindpkcs11 bind build' first")
    variables = build.bind_env(state, get_profile(args.profile, state, args.module).module_env())
    if args.json:
        print_json(variables)
    else:
        for name, value in variables.items():
            print(f"export {name}={shlex.quote(value)}")
    return 0


def _state(args) -> StateDir:
    return StateDir.open(args.state_dir)


def _access(args, label: str) -> TokenAccess:
    return TokenAccess.build(_state(args), args.profile, label, args.module,
                             args.pin_file, args.so_pin_file)


def _key_dir(args) -> Path:
    return Path(args.key_dir) if getattr(args, "key_dir", None) else _state(args).key_dir


def _token_init(args) -> int:
    result = admin.init_token(_access(args, args.label), args.generate_pins)
    if args.json:
        print_json(result)
    else:
        print(f"initialised token '{result.label}' ({result.profile})")
        for path in result.generated_pin_files:
            print(f"generated PIN stored in {path} (mode 0600)")
    return 0


def _token_list(args) -> int:
    tokens = admin.list_tokens(_access(args, ""))
    if args.json:
        print_json(tokens)
        return 0
    print_table(
        ["slot", "label", "manufacturer", "model", "serial", "flags"],
        [[t.slot_id, t.label, t.manufacturer, t.model, t.serial, _flags_text(t.flags)] for t in tokens],
    )
    return 0


def _flags_text(flags) -> str:
    notes = flags.warnings()
    state = ["initialized" if flags.initialized else "uninitialized"]
    if flags.has_rng:
        state.append("rng")
    return ",".join(state + [n.replace(" ", "-") for n in notes])


def _token_show(args) -> int:
    report = admin.show_token(_access(args, args.label), _key_dir(args))
    if args.json:
        print_json(report)
        return 0
    token = report.token
    print(f"token '{token.label}' slot {token.slot_id} ({token.manufacturer} {token.model}, serial {token.serial})")
    print(f"flags: {_flags_text(token.flags)}")
    rows = []
    for item in report.objects:
        obj, dnssec = item.object, item.dnssec
        size = obj.curve or (f"{obj.size} bits" if obj.size else "")
        key = ""
        if dnssec:
            key = f"{dnssec.role} tag {dnssec.tag} alg {dnssec.algorithm}"
            key += "" if dnssec.matches_token else " (KEY FILE MISMATCH)"
        rows.append([obj.object_class, obj.key_type, size, obj.label, obj.id_hex,
                     _yes_no(obj.sensitive), _yes_no(obj.extractable), key])
    print_table(["class", "type", "size", "label", "id", "sensitive", "extractable", "dnssec"], rows)
    return 0


def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def _token_delete(args) -> int:
    kind = admin.delete_object(_access(args, args.label), args.object, args.type, args.force,
                               _key_dir(args), int(time.time()))
    if args.json:
        print_json({"destroyed": args.object, "class": kind, "token": args.label})
    else:
        print(f"destroyed {kind} object '{args.object}' on token '{args.label}'")
    return 0


def _token_erase(args) -> int:
    if not args.force:
        raise UsageError("erasing destroys every object on the token: add --force")
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to confirm on: add --yes to erase without typing the label")
        typed = input(f"type the token label '{args.label}' to erase every object on it: ")
        if typed.strip() != args.label:
            raise UsageError("label not confirmed; nothing erased")
    dangling = admin.erase_token(_access(args, args.label), _key_dir(args))
    if args.json:
        print_json({"erased": args.label, "dangling_key_files": dangling})
    else:
        print(f"erased token '{args.label}'")
        if dangling:
            print(f"warning: {dangling} key file(s) in {_key_dir(args)} named keys on this token")
    return 0


def _token_rng(args) -> int:
    data = admin.random_bytes(_access(args, args.label), args.bytes)
    credited = admin.feed_kernel(data) if args.feed_kernel else None
    if args.out != "-":
        from bindpkcs11.fileio import write_atomic

        write_atomic(Path(args.out), data, mode=0o600)
    elif not args.feed_kernel:
        if sys.stdout.isatty() or args.json:
            pass
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            return 0
    if args.json:
        print_json({"bytes": len(data), "hex": data.hex() if args.out == "-" else None,
                    "out": None if args.out == "-" else args.out,
                    "fed_kernel": args.feed_kernel, "credited": credited})
    elif args.out == "-" and not args.feed_kernel:
        print(data.hex())
    elif args.feed_kernel:
        how = "credited as entropy" if credited else "mixed in, not credited (not root)"
        print(f"fed {len(data)} bytes from token '{args.label}' to the kernel pool ({how})")
    return 0


def _keygen(args) -> int:
    zone = parse_zone_name(args.domain)
    algorithm = algorithms.lookup(args.algorithm).with_bits(args.bits)
    now = int(time.time())
    timing = Timing(
        created=now,
        publish=_time_or(args.publish, now, now),
        activate=_time_or(args.activate, now, now),
        inactive=_time_or(args.inactive, None, now),
        delete=_time_or(args.delete, None, now),
    )
    _check_timing_order(timing)
    request = keygen.KeygenRequest(
        zone=zone, role=args.role, algorithm=algorithm, key_dir=_key_dir(args), timing=timing,
        software=args.software, extractable=args.extractable, object_label=args.object_label,
        ttl=parse_duration(args.ttl) if args.ttl else None,
    )
    if args.software:
        if args.token or args.extractable or args.object_label:
            raise UsageError("--software keys live in files: drop --token/--label/--extractable")
        _state(args)
        result = keygen.generate_software(request)
    else:
        if not args.json:
            print(f"generating {algorithm.mnemonic} {args.role.upper()} on token "
                  f"'{args.token or DEFAULT_TOKEN}' ...", file=sys.stderr, flush=True)
        result = keygen.generate_on_token(request, _access(args, args.token or DEFAULT_TOKEN))
    if args.json:
        print_json(result)
    else:
        print(result.key_file.name.removesuffix(".key"))
        print(result.ds)
    return 0


def _time_or(text: str | None, default: int | None, now: int) -> int | None:
    return default if text is None else parse_time(text, now)


def _check_timing_order(timing: Timing) -> None:
    order = [("publish", timing.publish), ("activate", timing.activate),
             ("inactive", timing.inactive), ("delete", timing.delete)]
    set_times = [(name, t) for name, t in order if t is not None]
    for (first, a), (second, b) in zip(set_times, set_times[1:]):
        if a > b:
            raise UsageError(
                f"--{second} ({to_bind_timestamp(b)}) is before --{first} ({to_bind_timestamp(a)})"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="bindpkcs11: %(message)s")
    handler: Callable = args.handler
    try:
        return handler(args)
    except BindPkcs11Error as error:
        if args.debug:
            raise
        print(f"bindpkcs11: error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("bindpkcs11: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - last resort: one line, traceback only with --debug
        if args.debug:
            raise
        print(f"bindpkcs11: unexpected error: {type(error).__name__}: {error} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_UNEXPECTED
