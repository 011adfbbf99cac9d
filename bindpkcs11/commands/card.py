"""`bindpkcs11 card simulator start|stop|status`: an emulated OpenPGP card (see cardsim.py)."""

from __future__ import annotations

from bindpkcs11 import cardsim
from bindpkcs11.commands.common import Parser, state
from bindpkcs11.output import print_json

EXIT_NOT_RUNNING = 3


def register(commands, common) -> None:
    card = commands.add_parser("card", help="smart card helpers (the opensc profiles)",
                               parents=[common])
    sub = card.add_subparsers(dest="card_command", required=True, parser_class=Parser)
    simulator = sub.add_parser("simulator", parents=[common],
                               help="an emulated OpenPGP card in a private pcscd, under the state dir")
    actions = simulator.add_subparsers(dest="simulator_command", required=True, parser_class=Parser)
    actions.add_parser("start", parents=[common], help="start it (or find it running)"
                       ).set_defaults(handler=_start)
    actions.add_parser("stop", parents=[common], help="stop the card and its pcscd"
                       ).set_defaults(handler=_stop)
    actions.add_parser("status", parents=[common], help="what runs (exit 3 when not running)"
                       ).set_defaults(handler=_status)


def _start(args) -> int:
    current, started = cardsim.start(state(args))
    if args.json:
        print_json({"started": started, **_plain(current)})
        return 0
    print(f"card simulator {'started' if started else 'already running'}: pcscd socket "
          f"{current.socket}")
    print("use it with --profile opensc (this state dir); its token is 'OpenPGP card (User PIN)'; "
          "stop it with 'bindpkcs11 card simulator stop'")
    return 0


def _stop(args) -> int:
    stopped = cardsim.stop(state(args))
    if args.json:
        print_json({"stopped": stopped})
    elif stopped:
        print(f"card simulator stopped ({', '.join(stopped)}); the card's state is kept")
    else:
        print("no card simulator was running for this state dir")
    return 0


def _status(args) -> int:
    current = cardsim.status(state(args))
    if args.json:
        print_json(_plain(current))
    elif not current.processes:
        print("card simulator: not running")
    else:
        print(f"card simulator: {'running' if current.running else 'NOT RUNNING (partly gone)'}")
        for name, entry in current.processes.items():
            print(f"  {name}: pid {entry['pid']} {'running' if entry['running'] else 'gone'}")
        print(f"  pcscd socket {current.socket}; card state {current.card_state}")
    return 0 if current.running else EXIT_NOT_RUNNING


def _plain(current: cardsim.CardSimStatus) -> dict:
    return {"running": current.running, "processes": current.processes, "socket": current.socket,
            "card_state": current.card_state}
