"""`bindpkcs11 systemd install DOMAIN`: unit files for an instance's named, its monitor, its signer."""

from __future__ import annotations

from pathlib import Path

from bindpkcs11 import services
from bindpkcs11.commands.common import Parser, state
from bindpkcs11.dnssec.dnskey import parse_zone_name
from bindpkcs11.errors import UsageError
from bindpkcs11.output import print_json

_SIGNER_OPTIONS = ("signer_unsigned", "signer_bundles", "signer_out", "signer_passphrase_file")


def register(commands, common) -> None:
    systemd = commands.add_parser("systemd", help="systemd units for a setup-inline instance",
                                  parents=[common])
    sub = systemd.add_subparsers(dest="systemd_command", required=True, parser_class=Parser)
    install = sub.add_parser(
        "install", parents=[common],
        help="write bindpkcs11-named@ZONE.service, bindpkcs11-monitor@ZONE.timer/.service and, with "
             "the --signer-* options, bindpkcs11-signer@ZONE.service")
    install.add_argument("domain")
    install.add_argument("--unit-dir", type=Path, default=services.DEFAULT_UNIT_DIR,
                         help=f"where to write the units (default {services.DEFAULT_UNIT_DIR})")
    install.add_argument("--signer-unsigned", type=Path, metavar="FILE", help="signer: the unsigned zone")
    install.add_argument("--signer-bundles", type=Path, metavar="DIR", help="signer: the bundle directory")
    install.add_argument("--signer-out", type=Path, metavar="FILE", help="signer: the signed zone it writes")
    install.add_argument("--signer-passphrase-file", type=Path, metavar="FILE",
                         help="signer: the bundle passphrase file (handed over with LoadCredential=)")
    install.set_defaults(handler=_install)


def _install(args) -> int:
    zone = parse_zone_name(args.domain)
    given = [getattr(args, name) for name in _SIGNER_OPTIONS]
    if any(given) and not all(given):
        raise UsageError("the signer unit needs all of --signer-unsigned, --signer-bundles, "
                         "--signer-out and --signer-passphrase-file")
    signer = services.SignerUnitRequest(*given) if all(given) else None
    written = services.install(state(args), zone, args.unit_dir, signer)
    if args.json:
        print_json({"zone": zone.to_text(), "units": [str(path) for path in written]})
    else:
        for path in written:
            print(f"wrote {path}")
        label = zone.to_text(omit_final_dot=True)
        print(f"then: bindpkcs11 named stop {label}; systemctl daemon-reload; "
              f"systemctl enable --now bindpkcs11-named@{label}.service bindpkcs11-monitor@{label}.timer")
    return 0
