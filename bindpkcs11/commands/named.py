"""`bindpkcs11 named start|stop|status|reload DOMAIN` and `bindpkcs11 rndc ...` (see control.py)."""

from __future__ import annotations


from bindpkcs11 import control
from bindpkcs11.commands.inline import timeout_seconds
from bindpkcs11.commands.common import Parser, progress_printer, state
from bindpkcs11.dnssec.dnskey import parse_zone_name
from bindpkcs11.errors import UsageError
from bindpkcs11.monitor import iso_time
from bindpkcs11.output import print_json, print_table

_RNDC_SHORTCUTS = {
    "sign": ("sign",),
    "signing-list": ("signing", "-list"),
    "loadkeys": ("loadkeys",),
    "zonestatus": ("zonestatus",),
}


def register(commands, common) -> None:
    named = commands.add_parser("named", help="control a setup-inline instance", parents=[common])
    sub = named.add_subparsers(dest="named_command", required=True, parser_class=Parser)
    for action, text in (("start", "start named and wait for the signed zone"),
                         ("stop", "stop named"),
                         ("status", "pid, serial, keys in use, signing health (exit 1 when stuck)"),
                         ("reload", "re-read the unsigned zone and the key files")):
        parser = sub.add_parser(action, help=text, parents=[common])
        parser.add_argument("domain")
        if action in ("start", "reload"):
            parser.add_argument("--timeout", type=float, metavar="SECONDS",
                                help="wait this long for the signed zone (default: from the "
                                     "zone's size and the ZSK's rate); named keeps signing after")
        parser.set_defaults(handler=_named, action=action)

    rndc_cmd = commands.add_parser("rndc", help="rndc with an instance's rndc.conf", parents=[common],
                                   usage="bindpkcs11 rndc {sign,signing-list,loadkeys,zonestatus} "
                                         "DOMAIN | bindpkcs11 rndc [--zone DOMAIN] -- ARGS")
    rndc_cmd.add_argument("--zone", help="instance to use for a pass-through command")
    rndc_cmd.add_argument("words", nargs="*", help="shortcut and DOMAIN, or rndc arguments after --")
    rndc_cmd.set_defaults(handler=_rndc)


def _named(args) -> int:
    zone = parse_zone_name(args.domain)
    current = state(args)
    progress = progress_printer(args, f"named {args.action}")
    if args.action == "start":
        pid = control.start(current, zone, timeout_seconds(args.timeout), progress)
        _report(args, {"zone": zone.to_text(), "running": True, "pid": pid},
                f"named for {zone} started (pid {pid}); the signed zone validates")
    elif args.action == "stop":
        stopped = control.stop(current, zone)
        _report(args, {"zone": zone.to_text(), "stopped": stopped},
                f"named for {zone} {'stopped' if stopped else 'was not running'}")
    elif args.action == "reload":
        output = control.reload(current, zone, timeout_seconds(args.timeout), progress)
        _report(args, {"zone": zone.to_text(), "rndc": output}, output)
    else:
        status = control.status(current, zone)
        if args.json:
            print_json(status)
        else:
            print(f"zone {status.zone}: {'running, pid ' + str(status.pid) if status.running else 'stopped'}"
                  f" on {status.listen} port {status.port}")
            if status.serial is not None:
                print(f"serial {status.serial}")
            if status.health:
                _print_health(status.health)
            if status.progress:
                print(status.progress.text())
            if status.problem:
                print(f"problem: {status.problem}")
            if status.signing:
                print_table(["key tag", "algorithm", "role", "signing"],
                            [[k.tag, k.algorithm, k.role, "yes" if k.signing else "no"]
                             for k in status.signing])
            for key in status.custody:
                print(f"custody   {key.role.upper()} {key.tag}: {key.copies}")
        return 0 if status.running and not status.problem else 1
    return 0


def _print_health(health) -> None:
    """Signing health: serials, last successful signing, pending changes, named's errors."""
    print(f"signing   unsigned serial {health.raw_serial}, signed serial {health.signed_serial}, "
          f"last signed {iso_time(health.last_signed)}")
    if health.pending:
        print(f"pending   unsigned serial {health.raw_serial} not signed yet (signed zone from "
              f"unsigned serial {health.source_serial}) since {iso_time(health.pending_since)}")
    for line in health.errors:
        print(f"named     {line}")


def _report(args, data: dict, text: str) -> None:
    if args.json:
        print_json(data)
    else:
        print(text)


def _rndc(args) -> int:
    current = state(args)
    words = list(args.words)
    if words and words[0] in _RNDC_SHORTCUTS:
        if len(words) != 2:
            raise UsageError(f"usage: bindpkcs11 rndc {words[0]} DOMAIN")
        zone = parse_zone_name(words[1])
        if words[0] == "signing-list":
            output, keys = control.signing_list(current, zone)
            if args.json:
                print_json({"zone": zone.to_text(), "keys": keys})
            else:
                print_table(["key tag", "algorithm", "role", "signing"],
                            [[k.tag, k.algorithm, k.role, "yes" if k.signing else "no"] for k in keys])
            return 0
        output = control.run_rndc(current, zone, *_RNDC_SHORTCUTS[words[0]], zone.to_text())
        if args.json:
            print_json({"zone": zone.to_text(), "output": output.strip()})
        else:
            print(output.rstrip())
        return 0
    if not words:
        raise UsageError("give a shortcut (sign, signing-list, loadkeys, zonestatus) or -- ARGS")
    zone = parse_zone_name(args.zone) if args.zone else control.only_instance_zone(current)
    print(control.run_rndc(current, zone, *words).rstrip())
    return 0
