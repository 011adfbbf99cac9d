"""`bindpkcs11 tpm2 simulator start|stop|status`: a TPM to try the tpm2 profile on (see tpm2sim.py)."""

from __future__ import annotations

from bindpkcs11 import tpm2sim
from bindpkcs11.commands.common import Parser, state
from bindpkcs11.output import print_json

EXIT_NOT_RUNNING = 3  # as `systemctl status` does for a stopped unit


def register(commands, common) -> None:
    tpm2 = commands.add_parser("tpm2", help="TPM 2.0 helpers (the tpm2 profile)", parents=[common])
    sub = tpm2.add_subparsers(dest="tpm2_command", required=True, parser_class=Parser)
    simulator = sub.add_parser("simulator", parents=[common],
                               help="swtpm + tpm2-abrmd on a private bus, under the state dir")
    actions = simulator.add_subparsers(dest="simulator_command", required=True, parser_class=Parser)
    actions.add_parser("start", parents=[common], help="start it (or find it running)"
                       ).set_defaults(handler=_start)
    actions.add_parser("stop", parents=[common], help="stop everything it started"
                       ).set_defaults(handler=_stop)
    actions.add_parser("status", parents=[common], help="what runs (exit 3 when not running)"
                       ).set_defaults(handler=_status)


def _start(args) -> int:
    current, started = tpm2sim.start(state(args))
    if args.json:
        print_json({"started": started, **_plain(current)})
        return 0
    verb = "started" if started else "already running"
    print(f"TPM simulator {verb}: swtpm on 127.0.0.1:{current.port}, tpm2-abrmd on "
          f"{current.bus}")
    print("use it with --profile tpm2 (this state dir); stop it with 'bindpkcs11 tpm2 simulator stop'")
    return 0


def _stop(args) -> int:
    stopped = tpm2sim.stop(state(args))
    if args.json:
        print_json({"stopped": stopped})
    elif stopped:
        print(f"TPM simulator stopped ({', '.join(stopped)}); its TPM state is kept for the next start")
    else:
        print("no TPM simulator was running for this state dir")
    return 0


def _status(args) -> int:
    current = tpm2sim.status(state(args))
    if args.json:
        print_json(_plain(current))
    elif not current.processes:
        print("TPM simulator: not running")
    else:
        print(f"TPM simulator: {'running' if current.running else 'NOT RUNNING (partly gone)'}")
        for name, entry in current.processes.items():
            print(f"  {name}: pid {entry['pid']} {'running' if entry['running'] else 'gone'}")
        print(f"  swtpm port 127.0.0.1:{current.port}, bus {current.bus}, TCTI {current.tcti}")
        print(f"  TPM state {current.state}")
    return 0 if current.running else EXIT_NOT_RUNNING


def _plain(current: tpm2sim.SimulatorStatus) -> dict:
    return {"running": current.running, "processes": current.processes, "port": current.port,
            "bus": current.bus, "tcti": current.tcti, "tpm_state": current.state}
