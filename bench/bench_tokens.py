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
    try:
        cli(state, env, profile, "token", "init", "--label", token, "--generate-pins")
        if profile in MAKE_KEY_FIRST:
            cli(state, env, profile, "keygen", "bench.test", "--role", "ksk", "--algorithm",
                ALGORITHMS[profile][0], "--token", token, "--key-dir", str(base / "keys"))
        return [json.loads(cli(state, env, profile, "bench", "--token", token, "--algorithm", alg,
                               "--sessions", sessions, "--seconds", str(seconds), "--json"))
                for alg in ALGORITHMS[profile]]
    finally:
        if stop:
            cli(state, env, profile, *stop, check=False)


def write_section(results: dict, info: dict, seconds: float) -> None:
    lines = ["## Token signing rates through the shim (`bindpkcs11 bench`)", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {info['cpu']}, "
             f"{info['cores']} cores, Debian {info['debian']} (load {info['load']:.2f}) with "
             f"`bench/bench_tokens.py`: a temporary key on a fresh token, {seconds:g} s of signing "
             "per session count by one worker process with that many threads (one session "
             "each) through the shim, the code path named uses.", "",
             "| token | algorithm | 1 session | 2 sessions | 4 sessions | key generation |",
             "|---|---|---|---|---|---|"]
    for profile, reports in results.items():
        for report in reports:
            rates = {r["sessions"]: f"{r['per_second']:,.0f}/s" for r in report["rates"]}
            lines.append(f"| {profile} | {report['algorithm']} | {rates.get(1, '-')} | "
                         f"{rates.get(2, '-')} | {rates.get(4, '-')} | {report['keygen_seconds']:.2f} s |")
    lines += ["", "What the rates mean for the mode to pick: a zone re-signs each RRset (plus its "
              "NSEC) once per signature validity period, so a token that signs a few hundred per "
              "second (the TPM) keeps a zone of thousands of names signed online with KSK and ZSK "
              "on the token, while at tens per second (a smart card) only the DNSKEY RRset should "
              "be signed on the device: the KSK on the token and the ZSK in software "
              "(`setup-inline --zsk-on software`, chosen by itself for big zones), or an offline KSK "
              "(`ksk presign`: one signature per week)."]
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
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "token_rates.json").write_text(
        json.dumps({"machine": info, "results": results}, indent=2))
    if not args.no_doc:
        write_section(results, info, args.seconds)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
