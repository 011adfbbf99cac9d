"""Command-line entry point: global options, the command registry, and the one place errors print.

Each command family lives in bindpkcs11/commands/<family>.py with a `register(commands, common)`
that adds its subparsers; handlers call one core function and print its result.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from bindpkcs11 import __version__
from bindpkcs11.commands import (backup, bench, bind, card, inline, key, keygen, ksk, monitor,
                                 named, opencryptoki, rollover, signer, systemd, token, tpm2)
from bindpkcs11.commands.common import Parser
from bindpkcs11.errors import BindPkcs11Error, Terminated, os_error_message, raise_terminated
from bindpkcs11.output import printable

EXIT_UNEXPECTED = 70
EXIT_DATA = 65  # EX_DATAERR: input that is not text
EXIT_IO = 74  # EX_IOERR: a file could not be read or written
EXIT_TERMINATED = 143  # 128 + SIGTERM
COMMAND_FAMILIES = (token, keygen, bind, inline, named, monitor, ksk, signer, bench, tpm2, opencryptoki,
                    card, key, backup, rollover, systemd)



def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = Parser(prog="bindpkcs11", parents=[_common_options(suppress=False)],
                    description="DNSSEC keys in PKCS#11 tokens, served by BIND.")
    parser.add_argument("--version", action="version", version=f"bindpkcs11 {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for family in COMMAND_FAMILIES:
        family.register(commands, common)
    return parser


def _common_options(suppress: bool = True) -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand (suppressed defaults in subparsers)."""
    parent = argparse.ArgumentParser(add_help=False)
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parent.add_argument("--state-dir", type=Path, default=default(None),
                        help="state directory (default $BINDPKCS11_STATE_DIR, else ~/.local/share/bindpkcs11; "
                             "/var/lib/bindpkcs11 for root)")
    parent.add_argument("--json", action="store_true", default=default(False),
                        help="print machine-readable JSON")
    parent.add_argument("--debug", action="store_true", default=default(False),
                        help="show tracebacks and debug logs")
    parent.add_argument("--pin-file", type=Path, default=default(None),
                        help="file holding the user PIN (else $PKCS11_LIBRARY_PIN, else a prompt)")
    parent.add_argument("--so-pin-file", type=Path, default=default(None),
                        help="file holding the SO PIN (else $PKCS11_SO_PIN, else a prompt)")
    # None when not given, so setup-inline can tell "not given" (keep the instance's) from softhsm
    parent.add_argument("--profile", default=default(None),
                        help="device profile (default softhsm: the embedded token)")
    parent.add_argument("--module", default=default(None), help="PKCS#11 module path override")
    parent.add_argument("--tcti", default=default(None),
                        help="tpm2 profile: the TCTI to reach the TPM (sets TPM2_PKCS11_TCTI)")
    return parent


def main(argv: Sequence[str] | None = None) -> int:
    if sys.stdin is None:  # started with stdin closed: read as empty, never as a terminal
        sys.stdin = open(os.devnull)
    signal.signal(signal.SIGTERM, raise_terminated)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="bindpkcs11: %(message)s")
    handler: Callable = args.handler
    if args.tcti:  # the tpm2 profile (and named after setup-inline) read the TCTI from here
        os.environ["TPM2_PKCS11_TCTI"] = args.tcti
    try:
        return handler(args)
    except BindPkcs11Error as error:
        if args.debug:
            raise
        print(f"bindpkcs11: error: {printable(str(error))}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        return 0
    except OSError as error:
        if args.debug:
            raise
        print(f"bindpkcs11: error: {printable(os_error_message(error))}", file=sys.stderr)
        return EXIT_IO
    except UnicodeError as error:
        if args.debug:
            raise
        print(f"bindpkcs11: error: input is not UTF-8 text ({printable(str(error))}): convert it "
              "to UTF-8", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print("bindpkcs11: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("bindpkcs11: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as error:  # noqa: BLE001 - last resort: one line, traceback only with --debug
        if args.debug:
            raise
        print(f"bindpkcs11: unexpected error: {type(error).__name__}: {printable(str(error))} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_UNEXPECTED
