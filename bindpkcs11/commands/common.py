"""What every command module shares: the parser class, state/token lookup from parsed args."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from bindpkcs11.access import TokenAccess
from bindpkcs11.state import StateDir
from bindpkcs11.token.labels import check_token_label

DEFAULT_TOKEN = "bindpkcs11"
DEFAULT_PROFILE = "softhsm"


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"bindpkcs11: error: {message} (see --help)\n")


def state(args) -> StateDir:
    return StateDir.open(args.state_dir)


def profile_name(args) -> str:
    """--profile, or the embedded SoftHSM2 token's profile when it was not given."""
    return args.profile or DEFAULT_PROFILE


def access(args, label: str) -> TokenAccess:
    if label:
        check_token_label(label)
    return TokenAccess.build(state(args), profile_name(args), label, args.module,
                             args.pin_file, args.so_pin_file)


def key_dir(args) -> Path:
    return Path(args.key_dir) if getattr(args, "key_dir", None) else state(args).key_dir


def progress_printer(args, prefix: str) -> Callable[[str], None]:
    """Progress lines on stderr as `PREFIX: line`, flushed at once; silent with --json, whose
    stdout is the one document a script reads."""
    if args.json:
        return lambda line: None
    return lambda line: print(f"{prefix}: {line}", file=sys.stderr, flush=True)
