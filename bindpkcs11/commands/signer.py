"""`bindpkcs11 signer run DOMAIN ...`: the online signer of the offline-KSK setup (see signer.py)."""

from __future__ import annotations

import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from bindpkcs11.bind.instance import Instance
from bindpkcs11.commands.common import Parser, state
from bindpkcs11.dnssec.bundles import Unlocker
from bindpkcs11.dnssec.dnskey import parse_zone_name, zone_label_text
from bindpkcs11.errors import BindPkcs11Error, Terminated, UsageError
from bindpkcs11.output import print_json
from bindpkcs11.passphrase import read_passphrase
from bindpkcs11.run import run_tool
from bindpkcs11.signer import (RoundResult, SignerConfig, check_out_path, check_upcoming, rehearsing,
                               run_loop, run_round)
from bindpkcs11.signerwork import sweep_stale, work_root
from bindpkcs11.timespec import parse_duration, parse_time, to_bind_timestamp

EXIT_RUNWAY_LOW = 14
EXIT_TERMINATED = 143
# margin, ZSK signature validity, warning horizon, seconds between rounds
DEFAULTS = {"margin": "1d", "sig_validity": "7d", "warn": "14d", "interval": 300}
TEST_DEFAULTS = {"margin": "1mi", "sig_validity": "1h", "warn": "10mi", "interval": 10}


def register(commands, common) -> None:
    signer = commands.add_parser("signer", help="the online signer of an offline-KSK zone",
                                 parents=[common])
    sub = signer.add_subparsers(dest="signer_command", required=True, parser_class=Parser)
    run = sub.add_parser("run", parents=[common],
                         help="keep a zone signed with ZSKs and pre-signed DNSKEY bundles (no token)")
    run.add_argument("domain")
    run.add_argument("--unsigned", type=Path, required=True, help="the unsigned zone file")
    run.add_argument("--bundles", type=Path, required=True, help="directory of *.bundle files")
    run.add_argument("--out", type=Path, required=True, help="the signed zone file named serves")
    run.add_argument("--passphrase-file", type=Path,
                     help="bundle passphrase (else $BINDPKCS11_PASSPHRASE, else a prompt)")
    run.add_argument("--interval", type=float, help="seconds between rounds (default 300)")
    run.add_argument("--once", action="store_true", help="one round, then exit")
    run.add_argument("--now", metavar="T", help="pretend the clock reads T (tests, rehearsals)")
    run.add_argument("--margin", metavar="D",
                     help="the bundle and every signature must stay valid this long (default 1d)")
    run.add_argument("--sig-validity", metavar="D", help="ZSK signature lifetime (default 7d)")
    run.add_argument("--refresh", metavar="D",
                     help="re-sign when ZSK signatures expire within D (default sig-validity/2)")
    run.add_argument("--warn", metavar="D", help="warn when the bundles run out within D (default 14d)")
    run.add_argument("--full-verify", action="store_true",
                     help="also run stock dnssec-verify on every zone before publishing it")
    run.add_argument("--test-timings", action="store_true", help="minute-scale defaults for tests")
    reload = run.add_mutually_exclusive_group()
    reload.add_argument("--rndc", metavar="ARGS", help="run 'rndc ARGS reload DOMAIN' after publishing")
    reload.add_argument("--reload-named", metavar="INSTANCE",
                        help="reload DOMAIN in the named instance 'bindpkcs11 setup-inline "
                             "INSTANCE' manages (through its rndc.conf)")
    run.set_defaults(handler=_run)


class StoppedMidRound(BindPkcs11Error):
    """Stopped by SIGTERM before the round finished: the last good zone is still in place."""

    exit_code = EXIT_TERMINATED


def _run(args) -> int:
    config = _config(args)
    unlocker = Unlocker(read_passphrase(args.passphrase_file))
    clock = _clock(args.now)
    if args.full_verify and rehearsing(clock()):
        raise UsageError("--full-verify runs dnssec-verify, which judges signatures by the real "
                         "clock: leave it out of a rehearsal with --now in the future")
    try:
        sweep_stale(config.work_root)
        check_upcoming(config, unlocker, clock())
        if args.once:
            result = run_round(config, unlocker, clock())
            _report(args, result)
            return EXIT_RUNWAY_LOW if result.runway_low else 0
        interval = args.interval or (TEST_DEFAULTS if args.test_timings else DEFAULTS)["interval"]
        run_loop(config, unlocker, clock, interval, lambda outcome: _report(args, outcome),
                 threading.Event())
    except (Terminated, KeyboardInterrupt) as stop:
        # The loop stops cleanly (exit 0, as systemd expects). A --once round cut short says
        # so: 143 for SIGTERM, and the CLI's own 130 for SIGINT.
        if not args.once:
            return 0
        if isinstance(stop, KeyboardInterrupt):
            raise
        raise StoppedMidRound() from None
    return 0


def _config(args) -> SignerConfig:
    defaults = TEST_DEFAULTS if args.test_timings else DEFAULTS
    margin = parse_duration(args.margin or defaults["margin"])
    sig_validity = parse_duration(args.sig_validity or defaults["sig_validity"])
    refresh = parse_duration(args.refresh) if args.refresh else sig_validity // 2
    if not margin < refresh < sig_validity:
        raise UsageError(f"need --margin ({margin} s) < --refresh ({refresh} s) < --sig-validity "
                         f"({sig_validity} s)")
    zone = parse_zone_name(args.domain)
    check_out_path(args.out)
    return SignerConfig(
        zone=zone, unsigned=args.unsigned, bundle_dir=args.bundles, out=args.out, margin=margin,
        sig_validity=sig_validity, refresh=refresh,
        warn=parse_duration(args.warn or defaults["warn"]), work_root=work_root(state(args).root),
        full_verify=args.full_verify,
        reload=_reloader(args, zone_label_text(zone)),
    )


def _reloader(args, zone: str) -> Callable[[], None] | None:
    """After publishing: stock `rndc ARGS reload ZONE`, or through a setup-inline instance's rndc.conf."""
    if args.rndc is not None:
        return _rndc_reload(["rndc", *shlex.split(args.rndc), "reload", zone])
    if args.reload_named:
        instance = Instance.for_zone(state(args), parse_zone_name(args.reload_named))
        if not instance.rndc_conf.exists():
            raise UsageError(f"no named instance '{args.reload_named}' in {instance.root.parent}: "
                             "set one up with 'bindpkcs11 setup-inline', or use --rndc ARGS")
        return _rndc_reload(["rndc", "-c", str(instance.rndc_conf), "reload", zone])
    return None


def _rndc_reload(command: list[str]) -> Callable[[], None]:
    def reload() -> None:
        run_tool(command, timeout=60, what="rndc reload")
    return reload


def _clock(now_text: str | None) -> Callable[[], int]:
    """The real clock, or one that started at --now and runs at the normal speed."""
    if now_text is None:
        return lambda: int(time.time())
    start = parse_time(now_text)
    if start is None:
        raise UsageError("--now needs a time, e.g. now+1d or 20270101")
    offset = start - time.time()
    return lambda: int(time.time() + offset)


def _report(args, outcome: RoundResult | BindPkcs11Error) -> None:
    if isinstance(outcome, BindPkcs11Error):
        print(f"signer: error: {outcome}", file=sys.stderr, flush=True)
        return
    for warning in outcome.warnings:
        print(f"signer: warning: {warning}", file=sys.stderr, flush=True)
    if args.json:
        print_json(outcome)
        sys.stdout.flush()
        return
    at = to_bind_timestamp(outcome.now)
    if outcome.published:
        print(f"{at} published serial {outcome.serial} of {outcome.zone} with {outcome.bundle} "
              f"(period {outcome.period_index}, ZSK {','.join(map(str, outcome.zsk_tags))}) in "
              f"{outcome.seconds:.2f} s: {outcome.reason}", flush=True)
    else:
        print(f"{at} {outcome.zone} up to date (serial {outcome.serial}, {outcome.bundle})",
              flush=True)
