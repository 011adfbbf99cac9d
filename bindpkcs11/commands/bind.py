"""`bindpkcs11 bind build|env|status|extract-backports|install-backports`: which BIND runs.

Two routes (bind/route.py): the patched BIND 9.18 or 9.20 (`bind build [--version]`,
bind/build.py) and a stock
BIND >= 9.20 with pkcs11-provider (bind/stock.py; on Debian 12 from bookworm-backports,
bind/backports.py).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from bindpkcs11 import pins
from bindpkcs11.bind import backports, build, route, stock
from bindpkcs11.bind.instance import Instance
from bindpkcs11.bind.programs import PATCHED, ROUTES, STOCK, lib_dirs
from bindpkcs11.commands.common import DEFAULT_TOKEN, Parser, profile_name, progress_printer, state
from bindpkcs11.errors import BindPkcs11Error, PinMissing, UsageError
from bindpkcs11.output import print_json
from bindpkcs11.state import StateDir
from bindpkcs11.token.labels import check_token_label
from bindpkcs11.token.profiles import get_profile


class InstallDeclined(UsageError):
    """Nothing installed (the answer was not "yes")."""


def register(commands, common) -> None:
    bind = commands.add_parser("bind", help="the BIND that signs: patched 9.18/9.20 or stock >= 9.20",
                               parents=[common])
    sub = bind.add_subparsers(dest="bind_command", required=True, parser_class=Parser)
    builder = sub.add_parser("build", help="fetch, patch, build and install BIND 9.18 or 9.20",
                             parents=[common])
    add_version_option(builder)
    builder.add_argument("--source", type=Path,
                         help="an ISC BIND tarball of that version (default: Debian's)")
    builder.add_argument("--force", action="store_true", help="rebuild even if up to date")
    builder.add_argument("--jobs", type=int, help="parallel make jobs (default: CPU count)")
    builder.set_defaults(handler=_bind_build)
    env = sub.add_parser("env", help="shell exports for running a route's BIND tools by hand",
                         parents=[common])
    add_version_option(env)
    env.add_argument("--token", default=DEFAULT_TOKEN,
                     help="token whose stored PIN file to name (never the PIN itself)")
    env.add_argument("--bind", choices=ROUTES, help="route (default: stock when found, else patched)")
    env.set_defaults(handler=_bind_env)
    status = sub.add_parser("status", help="which BIND each route has, the default, each instance's",
                            parents=[common])
    status.set_defaults(handler=_bind_status)
    extract = sub.add_parser(
        "extract-backports", parents=[common],
        help="download BIND 9.20 + pkcs11-provider from bookworm-backports and unpack them into "
             "the state directory (nothing installed)")
    extract.add_argument("--refresh", action="store_true", help="fetch the newest packages again")
    extract.set_defaults(handler=_bind_extract)
    install = sub.add_parser(
        "install-backports", parents=[common],
        help="Debian 12: add bookworm-backports and install BIND 9.20 + pkcs11-provider (asks first)")
    install.add_argument("--yes", action="store_true", help="do not ask (scripts)")
    install.add_argument("--print", dest="print_only", action="store_true",
                         help="only print the commands it would run")
    install.set_defaults(handler=_bind_install)


def add_version_option(parser, flag: str = "--version", default: str | None = build.DEFAULT_SERIES) -> None:
    """`--version 9.18|9.20` (`--bind-version` on commands where --version would be ambiguous):
    which patched BIND series (each has its own install)."""
    parser.add_argument(flag, dest="bind_version", choices=build.SERIES,
                        default=default,
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
    name = args.bind or (PATCHED if args.bind_version != build.DEFAULT_SERIES
                         else route.default_name(current))
    bind = route.installed(current, name, version=args.bind_version)
    profile = get_profile(profile_name(args), current, args.module)
    path = f"{bind.prefix / 'sbin'}:{bind.prefix / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"
    variables = {"PATH": path}
    if lib_dirs(bind.prefix):
        variables["LD_LIBRARY_PATH"] = ":".join(map(str, lib_dirs(bind.prefix)))
    variables |= profile.module_env()
    pin_file = args.pin_file or pins.stored_pin_path(current, check_token_label(args.token), pins.USER)
    if name == PATCHED:
        if pin_file.exists():
            variables["PKCS11_LIBRARY_PIN_FILE"] = str(pin_file)
    else:
        if not pin_file.exists():
            raise PinMissing(f"no PIN file {pin_file} for token '{args.token}': pass --pin-file "
                             "(pkcs11-provider reads the PIN from a file)")
        conf = stock.write_provider_config(
            current.root / f"openssl-{args.token}.cnf",
            stock.ProviderConfig(bind.provider, Path(profile.module_path), pin_file.resolve()))
        variables |= stock.extra_env(bind, Path(profile.module_path), conf)
    if args.json:
        print_json({"bind": name, "version": bind.version, "prefix": str(bind.prefix),
                    "variables": variables})
    else:
        print(f"# BIND {bind.version}, {name} route ({_origin_text(bind)}); for BIND's tools only")
        for variable, value in variables.items():
            print(f"export {variable}={shlex.quote(value)}")
    return 0


def _origin_text(bind) -> str:
    return {"built": f"built in {bind.prefix}",
            "private": f"bookworm-backports unpacked in {bind.prefix}",
            "system": "the system's, /usr",
            "configured": f"$BINDPKCS11_STOCK_PREFIX {bind.prefix}"}[bind.origin]


def _bind_status(args) -> int:
    current = state(args)
    found = stock.find(current)
    manifest = build.installed_manifest(current.bind_dir)
    default = STOCK if found else PATCHED
    report = {
        "default": default,
        "stock": ({**asdict(found), "prefix": str(found.prefix), "provider": str(found.provider)}
                  if found else None),
        "patched": ({"version": manifest.bind_version, "prefix": str(current.bind_dir)}
                    if manifest else None),
        "instances": _instances(current),
    }
    if args.json:
        print_json(report)
        return 0
    print(f"default route for new instances: {default}")
    if found:
        print(f"stock    BIND {found.version} + pkcs11-provider ({_origin_text(found)})")
    else:
        print(f"stock    not found: {stock.StockBindMissing.__doc__}")
    if manifest:
        print(f"patched  BIND {manifest.bind_version} with the bindpkcs11 patch, built in "
              f"{current.bind_dir}")
    else:
        print("patched  not built (bindpkcs11 bind build, about 3 minutes)")
    for zone, name in report["instances"].items():
        print(f"instance {zone}: {name}")
    return 0


def _instances(current: StateDir) -> dict[str, str]:
    """Each setup-inline instance's route."""
    found = {}
    for settings_file in sorted((current.root / "instances").glob("*/instance.json")):
        try:
            settings = Instance(settings_file.parent).load_settings()
            found[settings_file.parent.name] = settings.bind + (
                f" ({settings.bind_prefix})" if settings.bind_prefix else "")
        except (BindPkcs11Error, ValueError, TypeError, OSError):
            found[settings_file.parent.name] = "unreadable instance.json"
    return found


def _bind_extract(args) -> int:
    progress = progress_printer(args, "bind extract-backports")
    result = backports.extract(state(args), progress, args.refresh)
    if args.json:
        print_json(result)
    else:
        verb = "unpacked" if result.changed else "already unpacked"
        print(f"BIND {result.packages['bind9']} and pkcs11-provider "
              f"{result.packages['pkcs11-provider']} {verb} in {result.prefix} (nothing installed)")
    return 0


def _bind_install(args) -> int:
    plan = backports.install_plan()
    print("bindpkcs11 bind install-backports runs, as root:", file=sys.stderr)
    for line in plan:
        print(f"  {line}", file=sys.stderr)
    if args.print_only:
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise InstallDeclined('nothing installed: no terminal to ask; run the commands above '
                                  'yourself, or pass --yes')
        answer = input('type "yes" to install: ').strip()
        if answer != "yes":
            raise InstallDeclined(f'nothing installed (answer {answer!r}, expected exactly "yes")')
    installed = backports.install(lambda line: print(f"bind install-backports: {line}",
                                                     file=sys.stderr, flush=True))
    print(f"installed BIND {installed.version} + pkcs11-provider in /usr: new instances use the "
          "stock route")
    return 0
