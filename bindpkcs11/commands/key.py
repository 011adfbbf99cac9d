"""`bindpkcs11 key import KEYFILE --token L [--token L2 ...]` (see backup/keyimport.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from bindpkcs11.backup import keyimport
from bindpkcs11.commands.backup import log_path
from bindpkcs11.commands.common import Parser, access, key_dir
from bindpkcs11.output import print_json


def register(commands, common) -> None:
    key = commands.add_parser("key", help="software keys into tokens", parents=[common])
    sub = key.add_subparsers(dest="key_command", required=True, parser_class=Parser)
    imp = sub.add_parser("import", parents=[common],
                         help="put a software key into one or more tokens, each copy proven")
    imp.add_argument("keyfile", type=Path, help="K<zone>+AAA+TTTTT.private (or .key)")
    imp.add_argument("--token", action="append", required=True,
                     help="token label; repeat for more copies")
    imp.add_argument("--label", help="CKA_LABEL (default <zone>-<role>-<tag>)")
    imp.add_argument("--key-dir", type=Path,
                     help="where the key files of the first copy go (default STATE/keys; further "
                          "copies in KEYDIR/copies/TOKEN)")
    imp.add_argument("--destroy-source", action="store_true",
                     help="after every copy is proven, overwrite and remove the software private key")
    imp.add_argument("--yes", action="store_true",
                     help="with --destroy-source: do not ask to type 'destroy'")
    imp.add_argument("--log", type=Path, help="ceremony log (default STATE/backup/ceremony.log)")
    imp.set_defaults(handler=_import)


def _import(args) -> int:
    accesses = [access(args, label) for label in args.token]
    result = keyimport.import_key(accesses, args.keyfile, key_dir(args), args.label,
                                  args.destroy_source, log_path(args),
                                  None if args.yes else _ask_destroy)
    if args.json:
        print_json(result)
        return 0
    for path in result.key_files:
        if path.endswith(".key"):
            print(path)
    print(f"key {result.tag} of {result.zone} imported as '{result.label}' into "
          f"{', '.join(result.tokens)}, each copy proven by a signature; custody: {result.copies}")
    if result.source_destroyed:
        print("the software private key was overwritten and removed")
    else:
        print(f"the software private key is still at {result.source_kept}: store it offline or "
              "remove it (--destroy-source does that after the proofs, on a typed \"destroy\")")
    return 0


def _ask_destroy(private: Path) -> str:
    """The operator's answer, read from stdin (a script may pipe it, or give --yes)."""
    print(f"every copy is proven; type \"destroy\" to overwrite and remove {private}: ",
          end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        print(file=sys.stderr, flush=True)
    return answer
