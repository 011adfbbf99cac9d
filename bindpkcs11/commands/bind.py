"""`bindpkcs11 bind build|env`: the patched BIND 9.18 or 9.20 (see bind/build.py)."""

from __future__ import annotations

import shlex
from pathlib import Path

from bindpkcs11 import pins
from bindpkcs11.bind import build
from bindpkcs11.commands.common import DEFAULT_TOKEN, Parser, state
from bindpkcs11.errors import UsageError
from bindpkcs11.output import print_json
from bindpkcs11.token.profiles import get_profile


def register(commands, common) -> None:
    bind = commands.add_parser("bind", help="the patched BIND 9.18 or 9.20", parents=[common])
    sub = bind.add_subparsers(dest="bind_command", required=True, parser_class=Parser)
    builder = sub.add_parser("build", help="fetch, patch, build and install BIND 9.18 or 9.20",
                             parents=[common])
    add_version_option(builder)
    builder.add_argument("--source", type=Path,
                         help="an ISC BIND tarball of that version (default: Debian's)")
    builder.add_argument("--force", action="store_true", help="rebuild even if up to date")
    builder.add_argument("--jobs", type=int, help="parallel make jobs (default: CPU count)")
    builder.set_defaults(handler=_bind_build)
    env = sub.add_parser("env", help="shell exports for running the patched tools by hand",
                         parents=[common])
    add_version_option(env)
    env.add_argument("--token", default=DEFAULT_TOKEN,
                     help="token whose stored PIN file to name (never the PIN itself)")
    env.set_defaults(handler=_bind_env)


def add_version_option(parser, flag: str = "--version") -> None:
    """`--version 9.18|9.20` (`--bind-version` on commands where --version would be ambiguous):
    which patched BIND series (each has its own install)."""
    parser.add_argument(flag, dest="bind_version", choices=build.SERIES,
                        default=build.DEFAULT_SERIES,
                        help=f"BIND series (default {build.DEFAULT_SERIES}); each installs apart")


def _bind_build(args) -> int:
    result = build.build(state(args), args.source, args.force, build.print_progress, args.jobs,
                         args.bind_version)
    if args.json:
        print_json(result)
    elif result.rebuilt:
        print(f"built BIND {result.manifest.bind_version} in {result.seconds:.0f} s: {result.prefix}")
    else:
        print(f"BIND {result.manifest.bind_version} already built: {result.prefix}")
    return 0


def _bind_env(args) -> int:
    current = state(args)
    prefix = build.prefix_for(current, args.bind_version)
    if build.installed_manifest(prefix) is None:
        raise UsageError(f"no patched BIND in {prefix}: run "
                         f"'bindpkcs11 bind build --version {args.bind_version}' first")
    variables = build.bind_env(prefix, get_profile(args.profile, current, args.module).module_env())
    pin_file = pins.stored_pin_path(current, args.token, pins.USER)
    if pin_file.exists():
        variables["PKCS11_LIBRARY_PIN_FILE"] = str(pin_file)
    if args.json:
        print_json(variables)
    else:
        for name, value in variables.items():
            print(f"export {name}={shlex.quote(value)}")
    return 0
