"""`bindpkcs11 backup ...`: KEK shares, and DNSSEC keys wrapped between tokens (see backup/)."""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path

from bindpkcs11.backup import cardkek, kek, wrapkeys
from bindpkcs11.backup.shares import ShareError
from bindpkcs11.commands.common import DEFAULT_TOKEN, Parser, access, profile_name, state
from bindpkcs11.errors import UsageError
from bindpkcs11.fileio import read_secret_file
from bindpkcs11.output import print_json
from bindpkcs11.token.profiles import get_profile


def register(commands, common) -> None:
    backup = commands.add_parser("backup", help="KEK shares; wrap keys between tokens",
                                 parents=[common])
    sub = backup.add_subparsers(dest="backup_command", required=True, parser_class=Parser)

    make = sub.add_parser("make-shares", parents=[common],
                          help="a fresh 256-bit KEK split into password-protected shares")
    make.add_argument("--shares", type=int, required=True, metavar="N")
    make.add_argument("--threshold", type=int, metavar="T", help="shares needed (default N)")
    make.add_argument("--out", type=Path, required=True, help="directory for the share files")
    make.add_argument("--password-file", type=Path, action="append", default=[],
                      help="one per share, in order (else each password is prompted twice)")
    _log_option(make)
    make.set_defaults(handler=_make_shares)

    imp = sub.add_parser("import-share", parents=[common],
                         help="add a share for a token; at the threshold the KEK is created on it")
    imp.add_argument("file", type=Path)
    imp.add_argument("--token", default=DEFAULT_TOKEN)
    imp.add_argument("--password-file", type=Path, help="the share's password (else a prompt)")
    _log_option(imp)
    imp.set_defaults(handler=_import_share)

    wrap = sub.add_parser("wrap", parents=[common], help="wrap a token key under the token's KEK")
    wrap.add_argument("--token", default=DEFAULT_TOKEN)
    wrap.add_argument("--object", required=True, help="CKA_LABEL of the private key")
    wrap.add_argument("--out", type=Path, required=True, help="the wrap file to write")
    wrap.add_argument("--key-dir", type=Path, help="another key directory holding its key file")
    _reference_option(wrap)
    _log_option(wrap)
    wrap.set_defaults(handler=_wrap)

    unwrap = sub.add_parser("unwrap", parents=[common],
                            help="unwrap a wrap file onto a token holding the same KEK")
    unwrap.add_argument("file", type=Path)
    unwrap.add_argument("--token", required=True)
    unwrap.add_argument("--key-dir", type=Path,
                        help="where the copy's key files go (default STATE/keys/copies/TOKEN)")
    _reference_option(unwrap)
    _log_option(unwrap)
    unwrap.set_defaults(handler=_unwrap)

    verify = sub.add_parser("verify", parents=[common], help="check a wrap file (no token needed)")
    verify.add_argument("file", type=Path)
    verify.set_defaults(handler=_verify)


def _reference_option(parser) -> None:
    parser.add_argument("--key-reference", type=int, metavar="N",
                        help="SmartCard-HSM (--profile opensc-sc-hsm): the key's number on the card")


def _log_option(parser) -> None:
    parser.add_argument("--log", type=Path,
                        help="ceremony log to append to (default STATE/backup/ceremony.log)")


def log_path(args) -> Path:
    return args.log or state(args).root / "backup" / "ceremony.log"


def _make_shares(args) -> int:
    threshold = args.threshold or args.shares
    if args.password_file:
        passwords = [read_secret_file(path, "share password", ShareError) for path in args.password_file]
    else:
        passwords = [_prompt_new(index, args.shares) for index in range(1, args.shares + 1)]
    on_card = cardkek.uses_card_dkek(get_profile(profile_name(args), state(args), args.module))
    make = cardkek.make_shares if on_card else kek.make_shares
    result = make(args.out, args.shares, threshold, passwords, log_path(args))
    if args.json:
        print_json(result)
        return 0
    for share in result.files:
        print(f"share {share.index}: {share.path} fingerprint {share.fingerprint}")
    if on_card:
        print(f"{len(result.files)} SmartCard-HSM DKEK shares; the card needs all of them and shows "
              "the DKEK's KCV when the last is imported. Write the fingerprints down.")
    else:
        print(f"KEK check value (KCV): {result.kcv}; any {result.threshold} of "
              f"{len(result.files)} shares rebuild it. Write the fingerprints and the KCV down.")
    return 0


def _import_share(args) -> int:
    token = access(args, args.token)
    if args.password_file:
        password = read_secret_file(args.password_file, "share password", ShareError)
    else:
        password = _prompt(f"password for share {args.file}: ")
    on_card = cardkek.uses_card_dkek(token.profile)
    result = (cardkek.import_share if on_card else kek.import_share)(token, args.file, password,
                                                                     log_path(args))
    if args.json:
        print_json(result)
    elif on_card:
        print(f"DKEK share imported into the SmartCard-HSM '{result.token}': {result.have} of "
              f"{result.threshold}" + (f"; DKEK complete, KCV {result.kcv}" if result.kek_created
                                       else f"; import {result.threshold - result.have} more"))
    elif result.kek_created:
        print(f"KEK {result.kcv} created on token '{result.token}' as '{result.kek_label}' "
              f"(non-extractable; pending shares wiped)")
    else:
        print(f"share {result.index} of KEK {result.kcv} held for token '{result.token}': "
              f"{result.have} of {result.threshold}; import {result.threshold - result.have} more")
    return 0


def _wrap(args) -> int:
    token = access(args, args.token)
    if cardkek.uses_card_dkek(token.profile):
        result = cardkek.wrap_key(token, args.object, args.key_reference, args.out, args.key_dir,
                                  log_path(args))
    else:
        _no_reference(args)
        result = wrapkeys.wrap_key(token, args.object, args.out, args.key_dir, log_path(args))
    if args.json:
        print_json(result)
    else:
        print(f"wrapped key {result.tag} of {result.zone} under KEK {result.kek_kcv} into "
              f"{result.out}; custody: {result.copies}")
    return 0


def _unwrap(args) -> int:
    token = access(args, args.token)
    if cardkek.uses_card_dkek(token.profile):
        result = cardkek.unwrap_key(token, args.file, args.key_reference, args.key_dir,
                                    log_path(args))
    else:
        _no_reference(args)
        result = wrapkeys.unwrap_key(token, args.file, args.key_dir, log_path(args))
    if args.json:
        print_json(result)
    else:
        print(result.key_file.name.removesuffix(".key"))
        print(f"key {result.tag} of {result.zone} unwrapped onto token '{result.token}' as "
              f"'{result.label}', proven by a signature; key file {result.key_file}; "
              f"custody: {result.copies}")
    return 0


def _verify(args) -> int:
    record = wrapkeys.verify_wrap_file(args.file)
    if args.json:
        print_json(record)
    else:
        print(f"{args.file}: intact; {record.role.upper()} {record.tag} of {record.zone} algorithm "
              f"{record.algorithm}, label '{record.label}', wrapped on '{record.source_token}' "
              f"under KEK {record.kek_kcv} ({record.mechanism}), made "
              f"{time.strftime('%Y-%m-%d', time.gmtime(record.timing.get('created', 0)))}")
    return 0


def _no_reference(args) -> None:
    if args.key_reference is not None:
        raise UsageError("--key-reference is for a SmartCard-HSM (--profile opensc-sc-hsm) only")


def _prompt_new(index: int, count: int) -> str:
    password = _prompt(f"password for share {index} of {count}: ")
    if getpass.getpass("again: ") != password:
        raise UsageError(f"the two entries for share {index} differ: nothing was written")
    return password


def _prompt(question: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError("no terminal to prompt for a share password on: use --password-file")
    return getpass.getpass(question)
