#!/usr/bin/env python3
"""`bindpkcs11 bench` on every token profile that can run here: signatures per second through
the shim (the path named uses) for ECDSA P-256 and RSA-2048 at 1, 2 and 4 sessions.

Each profile gets a fresh state dir and a fresh token (the emulated devices are started and
stopped by their own `bindpkcs11 ... simulator` commands). Results: docs/benchmarks.md (section
`token-rates`) and bench/results/token_rates.json.

    .venv/bin/python bench/bench_tokens.py --profiles softhsm tpm2 --seconds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_setup_inline import machine
from benchdoc import replace_section

REPO = Path(__file__).resolve().parent.parent
SECTION = "token-rates"
TOKEN = "bench"
# How each profile's device is brought up and down around the measurements (None: nothing to run).
DEVICES = {
    "softhsm": (None, None),
    "tpm2": (("tpm2", "simulator", "start"), ("tpm2", "simulator", "stop")),
    "opencryptoki": (("opencryptoki", "sandbox", "start"), ("opencryptoki", "sandbox", "stop")),
    "opensc": (("card", "simulator", "start"), ("card", "simulator", "stop")),
}
ALGORITHMS = {"softhsm": ["ECDSAP256SHA256", "RSASHA256"], "tpm2": ["ECDSAP256SHA256", "RSASHA256"],
              "opencryptoki": ["RSASHA256"], "opensc": ["RSASHA256"]}
# An OpenPGP card's tokens have fixed names and one key each: bench measures that key, so one is
# made first (the card has no room for bench's temporary key).
TOKENS = {"opensc": "OpenPGP card (User PIN)"}
MAKE_KEY_FIRST = {"opensc"}
# What a device cannot do at all, said in the table instead of a row of numbers.
NOT_OFFERED = {"opensc": [("ECDSAP256SHA256", "none: OpenSC offers no ECDSA on this card")]}
RESULTS = REPO / "bench" / "results" / "token_rates.json"
ORDER = ["softhsm", "tpm2", "opencryptoki", "opensc"]


def cli(state: Path, env: dict, profile: str, *args: str, check: bool = True) -> str:
    result = subprocess.run([sys.executable, "-m", "bindpkcs11", "--state-dir", str(state),
                             "--profile", profile, *args], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=1800)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def measure(base: Path, env: dict, profile: str, sessions: str, seconds: float) -> list[dict]:
    state = base / profile
    start, stop = DEVICES[profile]
    if start:
        cli(state, env, profile, *start)
    token = TOKENS.get(profile, TOKEN)
    load_before, began = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    try:
        cli(state, env, profile, "token", "init", "--label", token, "--generate-pins")
        keygen_seconds = None
        if profile in MAKE_KEY_FIRST:
            started = time.monotonic()
            cli(state, env, profile, "keygen", "bench.test", "--role", "ksk", "--algorithm",
                ALGORITHMS[profile][0], "--token", token, "--key-dir", str(base / "keys"))
            keygen_seconds = time.monotonic() - started  # bench measures this key: it makes none
        reports = [json.loads(cli(state, env, profile, "bench", "--token", token, "--algorithm",
                                  alg, "--sessions", sessions, "--seconds", str(seconds), "--json"))
                   for alg in ALGORITHMS[profile]]
        measured = {"utc": began, "seconds": seconds,
                    "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()]}
        for report in reports:
            report["measured"] = measured
            if keygen_seconds is not None:
                report["keygen_seconds"] = round(keygen_seconds, 2)
        return reports
    finally:
        if stop:
            cli(state, env, profile, *stop, check=False)


def load_text(measured: dict | None) -> str:
    """`06:10, 0.83 -> 1.20`: when, and the 1-minute load average before and after."""
    if not measured:
        return "-"
    after = f" -> {measured['load_after'][0]:.2f}" if measured.get("load_after") else ""
    return f"{measured['utc']}, {measured['load_before'][0]:.2f}{after}"


def write_section(results: dict, info: dict) -> None:
    lines = ["## Token signing rates through the shim (`bindpkcs11 bench`)", "",
             f"Measured on {info['cpu']}, {info['cores']} cores, Debian {info['debian']} with "
             "`bench/bench_tokens.py`: a temporary key on a fresh token (the OpenPGP card has no "
             "room for one: its own key, made by `keygen` first), 3 s of signing per session "
             "count by one worker process with that many threads (one session each) through the "
             "shim, the code path named uses. Each row says when, and the machine's 1-minute load "
             "average before and after (other developers' tests share the 2 cores).", "",
             "| token | algorithm | 1 session | 2 sessions | 4 sessions | key generation | measured (UTC), load |",
             "|---|---|---|---|---|---|---|"]
    for profile in sorted(results, key=lambda p: (ORDER.index(p) if p in ORDER else 99, p)):
        reports = results[profile]
        for report in reports:
            rates = {r["sessions"]: f"{r['per_second']:,.0f}/s" for r in report["rates"]}
            lines.append(f"| {profile} | {report['algorithm']} | {rates.get(1, '-')} | "
                         f"{rates.get(2, '-')} | {rates.get(4, '-')} | {report['keygen_seconds']:.2f} s | "
                         f"{load_text(report.get('measured'))} |")
        for algorithm, why in NOT_OFFERED.get(profile, []) if reports else []:
            lines.append(f"| {profile} | {algorithm} | {why} | | | | |")
    lines += ["", "What the rates mean for the mode to pick: see \"Which mode for which device\" "
              "below."]
    replace_section(SECTION, "\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=list(DEVICES))
    parser.add_argument("--sessions", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    info = machine()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PKCS11_", "TPM2_PKCS11"))}
    env["PYTHONPATH"] = str(REPO)
    base = Path(tempfile.mkdtemp(prefix="bench-tokens-"))
    try:
        results = {profile: measure(base, env, profile, args.sessions, args.seconds)
                   for profile in args.profiles}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results, indent=2))
    # earlier runs' profiles are kept: a run for one profile replaces only that profile's rows
    previous = json.loads(RESULTS.read_text())["results"] if RESULTS.exists() else {}
    results = previous | results
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    if not args.no_doc:
        write_section(results, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
