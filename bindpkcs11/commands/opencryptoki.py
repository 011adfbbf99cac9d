"""`bindpkcs11 opencryptoki sandbox start|stop|status`: a private pkcsslotd (see occsandbox.py)."""

from __future__ import annotations

from bindpkcs11 import occsandbox
from bindpkcs11.commands.common import Parser, state
from bindpkcs11.output import print_json

EXIT_NOT_RUNNING = 3  # as `systemctl status` does for a stopped unit


def register(commands, common) -> None:
    occ = commands.add_parser("opencryptoki", parents=[common],
                              help="opencryptoki helpers (the opencryptoki profile)")
    sub = occ.add_subparsers(dest="occ_command", required=True, parser_class=Parser)
    sandbox = sub.add_parser("sandbox", parents=[common],
                             help="a private pkcsslotd and soft token under the state dir (root)")
    actions = sandbox.add_subparsers(dest="sandbox_command", required=True, parser_class=Parser)
    actions.add_parser("start", parents=[common], help="start it (or find it running)"
                       ).set_defaults(handler=_start)
    actions.add_parser("stop", parents=[common], help="stop it; the token store is kept"
                       ).set_defaults(handler=_stop)
    actions.add_parser("status", parents=[common], help="whether it runs (exit 3 when not)"
                       ).set_defaults(handler=_status)


def _start(args) -> int:
    current, started = occsandbox.start(state(args))
    if args.json:
        print_json({"started": started, **_plain(current)})
        return 0
    verb = "started" if started else "already running"
    print(f"opencryptoki sandbox {verb}: pkcsslotd pid {current.pid}, token store {current.store}")
    print("use it with --profile opencryptoki (this state dir); stop it with "
          "'bindpkcs11 opencryptoki sandbox stop'")
    return 0


def _stop(args) -> int:
    stopped = occsandbox.stop(state(args))
    if args.json:
        print_json({"stopped": stopped})
    elif stopped:
        print("opencryptoki sandbox stopped; its token store is kept for the next start")
    else:
        print("no opencryptoki sandbox was running for this state dir")
    return 0


def _status(args) -> int:
    current = occsandbox.status(state(args))
    if args.json:
        print_json(_plain(current))
    elif current.holder is None:
        print("opencryptoki sandbox: not running")
    else:
        what = f"running, pkcsslotd pid {current.pid}" if current.running else \
            "NOT RUNNING (pkcsslotd gone)"
        print(f"opencryptoki sandbox: {what}, namespace held by pid {current.holder} "
              f"(nsenter -t {current.holder} -m -i), token store {current.store}")
    return 0 if current.running else EXIT_NOT_RUNNING


def _plain(current: occsandbox.SandboxStatus) -> dict:
    return {"running": current.running, "pid": current.pid, "holder": current.holder,
            "store": current.store}
