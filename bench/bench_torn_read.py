#!/usr/bin/env python3
"""Does a process that already signs through the shim fail signatures while others log in?

SoftHSM2 2.6.1 rewrites token.object on every successful C_Login of any process (truncate, unlock,
write at fclose: see the header of bindpkcs11/shim/bp11.c); a process reading the file in that
window sees an empty token.  One real signer process (tests/shim_helper.py `loop`, the cffi shim,
ECDSA P-256 on a session copy whose token object is re-checked every 100 ms) signs in a tight
loop (1, then 2 threads) while 1 (then 2) processes try `--logins` logins each to the same
SoftHSM token (python-pkcs11 through bindpkcs11.token, PIN from a file); a third case also
creates and destroys a token object per login, as keygen does (`--churn-logins` of them); a
fourth re-creates the signing key 10 times meanwhile, which makes the signer re-initialise.  Reported: signatures
made, signatures failed and their messages, failures per 1,000 logins, the slowest signing call.

    .venv/bin/python bench/bench_torn_read.py --logins 10000

Results: docs/benchmarks.md (section `torn-read`, or `--section`; not with --no-doc) and a JSON
line per case on stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from bench_setup_inline import machine  # noqa: E402
from benchdoc import replace_section  # noqa: E402
from bindpkcs11.shim import ErrorCode  # noqa: E402
from test_shim import HELPER, make_token, run_helper  # noqa: E402

SECTION = "torn-read"


def measure(work: Path, logins: int, login_procs: int, threads: int, churn: bool,
            regens: int = 0) -> dict:
    """One signer against login_procs x logins concurrent logins on a fresh token (each login
    also making and destroying a token object when `churn`; the signing key destroyed and made
    again `regens` times, 0.3 s apart, while they run: each makes the signer re-initialise)."""
    tok = make_token(work / "t", "torn")
    run_helper(["genkeys", tok.label], tok.env())
    signer = subprocess.Popen([sys.executable, str(HELPER), "loop", tok.uri("ec256"), str(threads)],
                              env=tok.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # signing has begun: the token is in use
            beat = json.loads(signer.stdout.readline())
            if beat.get("ok", 0) > 0:
                break
        else:
            raise SystemExit("the signer never signed")
        before = beat
        started = time.monotonic()
        loggers = [subprocess.Popen([sys.executable, str(HELPER), "logins", tok.label, str(logins),
                                     *(["churn"] if churn else [])],
                                    env=tok.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for _ in range(login_procs)]
        regen_failed = 0
        for _ in range(regens):
            time.sleep(0.3)  # pacing the re-creations, not synchronisation
            regen = subprocess.run([sys.executable, str(HELPER), "regen", tok.label, "ec256"],
                                   env=tok.env(), capture_output=True, text=True, timeout=120)
            regen_failed += regen.returncode != 0  # it logs in too, and can be torn itself
        login_results = []
        for proc in loggers:
            out, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise SystemExit(f"login process failed: {err[-1000:]}")
            login_results.append(json.loads(out))
        seconds = time.monotonic() - started
        signer.stdin.write("stop\n")
        signer.stdin.flush()
        beats, slowest = [], 0.0
        for line in signer.stdout:
            beat = json.loads(line)
            if beat.get("done"):
                break
            beats.append(beat)
            slowest = max(slowest, beat["max_call_s"])
        signer.wait(timeout=30)
    finally:
        if signer.poll() is None:
            signer.kill()
            signer.wait(timeout=10)
    last = beats[-1]
    failed = sum(last["errors"].values()) - sum(before["errors"].values())
    token_code = str(int(ErrorCode.TOKEN_NOT_FOUND))
    token_failed = last["errors"].get(token_code, 0) - before["errors"].get(token_code, 0)
    logged_in = sum(r["ok"] for r in login_results)
    login_failures: dict = {}
    for r in login_results:
        for msg, n in r["errors"].items():
            login_failures[msg] = login_failures.get(msg, 0) + n
    return {
        "logins": logged_in,
        "login_attempts_failed": sum(n for r in login_results for n in r["errors"].values()),
        "login_failures": login_failures,
        "login_seconds": round(seconds, 2),
        "signatures": last["ok"] - before["ok"],
        "failed": failed,
        "token_not_found": token_failed,
        "regens": regens,
        "regens_failed": regen_failed,
        "failed_per_1000_logins": round(1000 * failed / max(logged_in, 1), 2),
        "messages": last["messages"],
        "slowest_call_s": round(slowest, 3),
        "threads": threads,
        "login_procs": login_procs,
        "churn": churn,
    }


def case_name(r: dict) -> str:
    name = str(r["login_procs"])
    if r["churn"]:
        name += " + object churn"
    if r["regens"]:
        name += f" + key re-created {r['regens']} times"
    return name


def render(results: list, label: str) -> str:
    m = machine()
    where = f"{m['cpu']}, {m['cores']} cores, load average {m['load']:.2f} at the end"
    rows = "".join(
        f"| {r['threads']} | {case_name(r)} | {r['logins']} | {r['login_attempts_failed']} | "
        f"{r['login_seconds']} | {r['signatures']} | {r['failed']} | {r['token_not_found']} | "
        f"{r['failed_per_1000_logins']} | {r['slowest_call_s']} s |\n" for r in results)
    messages: dict = {}
    for r in results:
        for msg, n in r["messages"].items():
            messages[msg] = messages.get(msg, 0) + n
    return (
        "## A signing process while others log in (SoftHSM token.object torn reads)\n\n"
        f"`bench/bench_torn_read.py` ({label}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{where}): one shim process signs ECDSA P-256 in a loop (session copy, token object "
        "re-checked every 100 ms) while other processes log in to the same SoftHSM token again and "
        "again (python-pkcs11 via bindpkcs11.token; every successful C_Login rewrites token.object). "
        "With object churn each login also creates and destroys a token object (as keygen does), "
        "which rewrites the token's `generation` file too.  With a re-created key, the signing key "
        "is destroyed and made again every 0.3 s meanwhile, so the signer must re-initialise (it "
        "fails \"key not found\" while the key is absent: expected); \"token not found\" is the "
        "torn read.  Failed login attempts are the login processes tearing each other's reads "
        "(they re-initialise and go on); they do not count as logins.\n\n"
        "| signing threads | login processes | logins | failed login attempts | seconds | "
        "signatures | failed signatures | of which token not found | failed / 1,000 logins | "
        "slowest signing call |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        + rows + "\n"
        + "".join(f"- {n} x `{msg}`\n" for msg, n in sorted(messages.items())[:6])
        + "\nWhy logins alone cannot hurt a signer (strace): after start-up a signing process opens "
        "only the key's object file and the token's `generation` file (the 100 ms check, "
        "C_FindObjects); token.object is read by C_Initialize, C_GetSlotList, C_GetTokenInfo, "
        "C_Login and C_OpenSession, which the shim calls when it (re-)initialises or logs in again, "
        "and there a C_Initialize waiting on a login's file lock wakes into the truncated file.\n"
    )


# (signing threads, login processes, churn, key re-creations)
CASES = ((1, 1, False, 0), (2, 2, False, 0), (2, 1, True, 0), (2, 1, False, 10))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=10000, help="login attempts per login process")
    parser.add_argument("--churn-logins", type=int, default=2000,
                        help="logins in the object-churn case (each ~10 ms)")
    parser.add_argument("--label", default="this shim", help="what the docs call the shim measured")
    parser.add_argument("--section", default=SECTION,
                        help="docs section to write (e.g. torn-read-before for an older shim)")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    results = []
    for threads, login_procs, churn, regens in CASES:
        with tempfile.TemporaryDirectory(prefix="torn-read-") as work:
            count = args.churn_logins if churn else args.logins
            results.append(measure(Path(work), count, login_procs, threads, churn, regens))
        print(json.dumps(results[-1]), flush=True)
    if not args.no_doc:
        replace_section(args.section, render(results, args.label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
