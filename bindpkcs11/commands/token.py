"""`bindpkcs11 token ...`: administration of one token (see admin.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bindpkcs11 import admin
from bindpkcs11.commands.common import Parser, access
from bindpkcs11.errors import UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.output import print_json, print_table


def register(commands, common) -> None:
    token = commands.add_parser("token", help="token administration", parents=[common])
    sub = token.add_subparsers(dest="token_command", required=True, parser_class=Parser)

    init = sub.add_parser("init", help="create and initialise a token", parents=[common])
    init.add_argument("--label", required=True)
    init.add_argument("--generate-pins", action="store_true",
                      help="random user and SO PINs, stored 0600 in the state dir")
    init.set_defaults(handler=_token_init)

    listing = sub.add_parser("list", help="slots and tokens", parents=[common])
    listing.set_defaults(handler=_token_list)

    show = sub.add_parser("show", help="a token's flags and objects", parents=[common])
    show.add_argument("--label", required=True)
    show.add_argument("--key-dir", type=Path,
                      help="another key directory to match keys against (the default dir, every "
                           "instance's and every keygen --key-dir are always consulted)")
    show.set_defaults(handler=_token_show)

    delete = sub.add_parser("delete", help="destroy one object", parents=[common])
    delete.add_argument("--label", required=True)
    delete.add_argument("--object", required=True, help="CKA_LABEL of the object")
    delete.add_argument("--type", choices=["private", "public", "secret-key", "cert", "data"])
    delete.add_argument("--force", action="count", default=0,
                        help="required; twice to destroy the private key of an active key file")
    delete.add_argument("--key-dir", type=Path, help="another key directory to protect keys of")
    delete.set_defaults(handler=_token_delete)

    erase = sub.add_parser("erase", help="re-initialise a token (all objects gone)", parents=[common])
    erase.add_argument("--label", required=True)
    erase.add_argument("--force", action="store_true", help="required")
    erase.add_argument("--yes", action="store_true", help="do not ask to type the label")
    erase.add_argument("--key-dir", type=Path, help="another key directory to protect keys of")
    erase.add_argument("--destroy-active-keys", action="store_true",
                       help="erase even though active key files (listed in the refusal) use the token")
    erase.set_defaults(handler=_token_erase)

    rng = sub.add_parser("rng", help="random bytes from the token", parents=[common])
    rng.add_argument("--label", required=True)
    rng.add_argument("--bytes", type=int, required=True)
    rng.add_argument("--out", default="-", help="file, or - for stdout (hex on a terminal)")
    rng.add_argument("--feed-kernel", action="store_true", help="mix the bytes into the kernel pool")
    rng.set_defaults(handler=_token_rng)


def _token_init(args) -> int:
    result = admin.init_token(access(args, args.label), args.generate_pins)
    if args.json:
        print_json(result)
    else:
        print(f"initialised token '{result.label}' ({result.profile})")
        for path in result.generated_pin_files:
            print(f"generated PIN stored in {path} (mode 0600)")
    return 0


def _token_list(args) -> int:
    tokens = admin.list_tokens(access(args, ""))
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
    report = admin.show_token(access(args, args.label), args.key_dir, int(time.time()))
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
            key = f"{dnssec.role} tag {dnssec.tag} alg {dnssec.algorithm} ({dnssec.used_by}"
            key += ")" if dnssec.active else ", retired)"
            key += "" if dnssec.matches_token else " (KEY FILE MISMATCH)"
            key += f"; {dnssec.custody}" if dnssec.custody and obj.object_class == "private" else ""
        rows.append([obj.object_class, obj.key_type, size, obj.label, obj.id_hex,
                     _yes_no(obj.sensitive), _yes_no(obj.extractable), key])
    print_table(["class", "type", "size", "label", "id", "sensitive", "extractable", "dnssec"], rows)
    return 0


def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def _token_delete(args) -> int:
    kind = admin.delete_object(access(args, args.label), args.object, args.type, args.force,
                               args.key_dir, int(time.time()))
    if args.json:
        print_json({"destroyed": args.object, "class": kind, "token": args.label})
    else:
        print(f"destroyed {kind} object '{args.object}' on token '{args.label}'")
    return 0


def _token_erase(args) -> int:
    if not args.force:
        raise UsageError("erasing destroys every object on the token: add --force")
    token = access(args, args.label)
    now = int(time.time())
    if not args.destroy_active_keys:
        admin.refuse_erasing_active_keys(token, args.key_dir, now)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to confirm on: add --yes to erase without typing the label")
        typed = input(f"type the token label '{args.label}' to erase every object on it: ")
        if typed.strip() != args.label:
            raise UsageError("label not confirmed; nothing erased")
    dangling = admin.erase_token(token, args.key_dir, now, args.destroy_active_keys)
    if args.json:
        print_json({"erased": args.label, "dangling_key_files": dangling})
    else:
        print(f"erased token '{args.label}'")
        if dangling:
            print(f"warning: {dangling} key file(s) named keys on this token; they cannot sign any more")
    return 0


def _token_rng(args) -> int:
    data = admin.random_bytes(access(args, args.label), args.bytes)
    credited = admin.feed_kernel(data) if args.feed_kernel else None
    to_stdout = args.out == "-"
    if not to_stdout:
        write_atomic(Path(args.out), data, mode=0o600)
    if to_stdout and not (args.feed_kernel or args.json or sys.stdout.isatty()):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    elif args.json:
        print_json({"bytes": len(data), "hex": data.hex() if to_stdout else None,
                    "out": None if to_stdout else args.out,
                    "fed_kernel": args.feed_kernel, "credited": credited})
    elif args.feed_kernel:
        how = "credited as entropy" if credited else "mixed in, not credited (not root)"
        print(f"fed {len(data)} bytes from token '{args.label}' to the kernel pool ({how})")
    elif to_stdout:
        print(data.hex())
    return 0
