#!/usr/bin/env python3
"""Offline KSK: the online signer's overhead over plain dnssec-signzone, and a year's ceremony.

1. A signer round (`bindpkcs11 signer run --once`, the whole CLI process: compile the unsigned
   zone, bump the serial, add the bundle's DNSKEY RRset, dnssec-signzone, splice the pre-signed
   DNSKEY RRSIG, check it, write atomically) against the plain `dnssec-signzone` it runs inside,
   on the same zone, with the same ZSK and the same flags (`-O full -z -N keep -s -e`, self-check
   on). Median of --runs, runs interleaved. Target: overhead <= 10 %.
2. `bindpkcs11 ksk presign` of 52 weekly periods on a SoftHSM2 token with four quarterly ZSKs:
   wall time and the number of on-token signatures (must equal the number of bundles).
3. dnspython's `sign_zone` against `dnssec-signzone` on small zones (20, 1,000, 5,000 hosts): the
   measurement behind the signer always using dnssec-signzone.

Results go to docs/benchmarks.md (section `offline-ksk`) and bench/results/signer.json.

    .venv/bin/python bench/bench_signer.py --hosts 100000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import dns.name  # noqa: E402

from bindpkcs11.dnssec.samplezone import sample_zone_text  # noqa: E402
from bindpkcs11.timespec import to_bind_timestamp  # noqa: E402
from benchdoc import replace_section  # noqa: E402

ZONE = "example.test"
WEEK = 7 * 86400
SECTION = "offline-ksk"
PASSPHRASE = "benchmark passphrase"


def cli(state: Path, env: dict, *args: str, json_output: bool = True):
    result = subprocess.run([sys.executable, "-m", "bindpkcs11", "--state-dir", str(state), *args,
                             *(["--json"] if json_output else [])],
                            capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode not in (0, 14):
        raise SystemExit(f"{' '.join(args[:3])} failed: {result.stderr}")
    return json.loads(result.stdout) if json_output else result


def setup_token(work: Path, env: dict) -> tuple[Path, dict]:
    """A fresh directory with a new token and a KSK on it (nothing left from an earlier run)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    state = work / "state"
    cli(state, env, "token", "init", "--label", "bindpkcs11", "--generate-pins", json_output=False)
    return state, cli(state, env, "keygen", ZONE, "--role", "ksk", "--algorithm", "13")


def zsk(state: Path, env: dict, key_dir: Path, **times: int) -> dict:
    args = ["keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software", "--key-dir",
            str(key_dir)]
    for name, value in times.items():
        args += [f"--{name}", str(value)]
    return cli(state, env, *args)


def presign(state: Path, env: dict, ksk: dict, zsk_dir: Path, out: Path, start: int, periods: int,
            *extra: str) -> tuple[dict, float]:
    shutil.rmtree(out, ignore_errors=True)
    (state.parent / "pass").write_text(PASSPHRASE)
    started = time.monotonic()
    result = cli(state, env, "ksk", "presign", ZONE, "--ksk", ksk["object_label"], "--zsk-dir",
                 str(zsk_dir), "--start", str(start), "--periods", str(periods), "--passphrase-file",
                 str(state.parent / "pass"), "--out", str(out), "--yes", *extra)
    return result, time.monotonic() - started


def bench_year(work: Path, env: dict) -> dict:
    """52 weekly bundles, ZSKs rolled quarterly (pre-published a week ahead, kept a week after)."""
    state, ksk = setup_token(work / "year", env)
    zsk_dir, start = work / "year" / "zsks", int(time.time())
    for quarter in range(4):
        times = {"publish": start + (13 * quarter - 1) * WEEK if quarter else start - 3600,
                 "activate": start + 13 * quarter * WEEK if quarter else start - 3600}
        if quarter < 3:
            times |= {"inactive": start + 13 * (quarter + 1) * WEEK,
                      "delete": start + (13 * (quarter + 1) + 1) * WEEK}
        zsk(state, env, zsk_dir, **times)
    result, wall = presign(state, env, ksk, zsk_dir, work / "year" / "bundles", start, 52,
                           "--period", "1w", "--overlap", "1w")
    return {"periods": 52, "bundles": len(result["bundles"]), "token_signatures":
            result["token_signatures"], "wall": wall, "ceremony_seconds": result["seconds"]}


def bench_round(work: Path, env: dict, hosts: int, runs: int) -> dict:
    """Signer round vs the plain dnssec-signzone it wraps, same zone, keys and flags."""
    base = work / "round"
    state, ksk = setup_token(base, env)
    zsk_dir = base / "zsks"
    key = zsk(state, env, zsk_dir, publish=int(time.time()) - 7200, activate=int(time.time()) - 7200)
    presign(state, env, ksk, zsk_dir, base / "bundles", int(time.time()) - 60, 2,
            "--period", "1d", "--overlap", "1d")
    unsigned = base / "unsigned.db"
    unsigned.write_text(sample_zone_text(dns.name.from_text(ZONE), hosts=hosts))
    plain_in = base / "plain.in"
    plain_in.write_text(unsigned.read_text() + _dnskey_lines(base))
    stem = Path(key["key_file"]).name.removesuffix(".key")
    signer, plain, internal = [], [], []
    for _ in range(runs):
        for path in (base / "out.signed", base / "out.signed.signer.json"):
            path.unlink(missing_ok=True)
        started = time.monotonic()
        result = cli(state, env, "signer", "run", ZONE, "--unsigned", str(unsigned), "--bundles",
                     str(base / "bundles"), "--out", str(base / "out.signed"), "--passphrase-file",
                     str(base / "pass"), "--once")
        signer.append(time.monotonic() - started)
        internal.append(result["seconds"])
        now = int(time.time())
        started = time.monotonic()
        subprocess.run(["dnssec-signzone", "-O", "full", "-z", "-N", "keep", "-o", ZONE, "-K",
                        str(zsk_dir), "-f", str(base / "plain.signed"), "-s",
                        to_bind_timestamp(now - 3600), "-e", to_bind_timestamp(now + 7 * 86400),
                        str(plain_in), stem], check=True, capture_output=True, cwd=base)
        plain.append(time.monotonic() - started)
    with open(base / "out.signed") as signed:
        rrsigs = sum(1 for line in signed if line.split(None, 4)[3:4] == ["RRSIG"])
    median_signer, median_plain = statistics.median(signer), statistics.median(plain)
    return {"hosts": hosts, "runs": runs, "rrsigs": rrsigs, "signer": signer, "plain": plain,
            "signer_internal": internal, "median_signer": median_signer,
            "median_plain": median_plain, "overhead": median_signer / median_plain - 1}


def bench_small_zones(work: Path, runs: int) -> list[dict]:
    """Why the signer always runs dnssec-signzone: dnspython's sign_zone against it, small zones."""
    import dns.dnssec
    import dns.zone
    from cryptography.hazmat.primitives.asymmetric import ec

    from bindpkcs11.dnssec.keyfile import read_key_pair

    base = work / "round"
    key_path = next((base / "zsks").glob("K*.key"))
    pair = read_key_pair(key_path)
    private = ec.derive_private_key(int.from_bytes(pair.private_fields["PrivateKey"], "big"),
                                    ec.SECP256R1())
    origin, rows = dns.name.from_text(ZONE), []
    for hosts in (20, 1000, 5000):
        text = sample_zone_text(origin, hosts=hosts)
        zone_in = base / f"small-{hosts}.in"
        zone_in.write_text(text + _dnskey_lines(base))
        python, signzone = [], []
        for _ in range(runs):
            started = time.monotonic()
            zone = dns.zone.from_text(zone_in.read_text(), origin=origin, relativize=False)
            with zone.writer() as txn:
                dns.dnssec.sign_zone(zone, txn=txn, keys=[(private, pair.dnskey)], lifetime=86400)
            zone.to_text()
            python.append(time.monotonic() - started)
            started = time.monotonic()
            subprocess.run(["dnssec-signzone", "-O", "full", "-z", "-N", "keep", "-o", ZONE, "-K",
                            str(key_path.parent), "-f", str(base / "small.signed"), str(zone_in),
                            key_path.name.removesuffix(".key")], check=True, capture_output=True,
                           cwd=base)
            signzone.append(time.monotonic() - started)
        rows.append({"hosts": hosts, "dnspython": statistics.median(python),
                     "dnssec_signzone": statistics.median(signzone)})
    return rows


def _dnskey_lines(base: Path) -> str:
    """The first bundle's DNSKEY RRset: what the signer adds to the zone it hands dnssec-signzone."""
    from bindpkcs11.dnssec.bundles import Unlocker, bundles_in, open_bundle

    return open_bundle(bundles_in(base / "bundles")[0], Unlocker(PASSPHRASE)).content.dnskey_rrset


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory, "kernel": platform.release(),
            "debian": Path("/etc/debian_version").read_text().strip(),
            "bind": subprocess.run(["named", "-v"], capture_output=True, text=True).stdout.strip()}


def write_section(info: dict, loads: tuple[float, float], round_: dict, year: dict,
                  small: list[dict]) -> None:
    verdict = "met" if round_["overhead"] <= 0.10 else "not met"
    lines = [
        "## Offline KSK: signer round and a year's ceremony", "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {info['cpu']}, "
        f"{info['cores']} cores, {info['memory_gib']} GiB, kernel {info['kernel']}, Debian "
        f"{info['debian']}, {info['bind']}; the machine was shared with other benchmarks (load "
        f"average {loads[0]:.2f} at start, {loads[1]:.2f} at the end). `bench/bench_signer.py`.", "",
        f"**Signer round vs plain dnssec-signzone**: sample zone with {round_['hosts']:,} hosts "
        f"({round_['rrsigs']:,} RRSIGs, NSEC, ECDSAP256SHA256 software ZSK), median of "
        f"{round_['runs']} interleaved runs, both with dnssec-signzone's self-check "
        "(`-O full -z -N keep -s -e`, no `-P`).", "",
        "| | wall time |", "|---|---|",
        f"| plain `dnssec-signzone` | {round_['median_plain']:.2f} s |",
        f"| `bindpkcs11 signer run --once` (whole process) | {round_['median_signer']:.2f} s |",
        f"| of which the round itself | {statistics.median(round_['signer_internal']):.2f} s |", "",
        f"Overhead {round_['overhead'] * 100:+.1f} % (target <= 10 %: {verdict}). The extra work is "
        "named-compilezone (parse check, canonical text), the serial and DNSKEY edit, the splice "
        "of the pre-signed DNSKEY RRSIG with its dnspython check, the atomic write and the Python "
        "start-up, scrypt and decryption of one bundle.", "",
        "**Signing engine for small zones** (dnspython `sign_zone` in process, no verification, vs "
        "`dnssec-signzone` as a process with its self-check; the signer always uses the latter):", "",
        "| hosts | dnspython | dnssec-signzone |", "|---|---|---|",
        *[f"| {row['hosts']:,} | {row['dnspython'] * 1000:.0f} ms | "
          f"{row['dnssec_signzone'] * 1000:.0f} ms |" for row in small], "",
        f"**Presign of {year['periods']} weekly periods** (SoftHSM2 token, ECDSAP256SHA256 KSK, "
        f"four quarterly ZSKs): {year['wall']:.2f} s wall for the whole command "
        f"({year['ceremony_seconds']:.2f} s inside the ceremony), **{year['token_signatures']} "
        f"on-token signatures for {year['bundles']} bundles**: a token doing one signature per "
        f"second would need {year['token_signatures']} s of signing for the year.",
    ]
    replace_section(SECTION, "\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bindpkcs11-bench-signer"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PKCS11_", "BINDPKCS11_"))}
    env["PYTHONPATH"] = str(REPO)
    args.work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    year = bench_year(args.work, env)
    round_ = bench_round(args.work, env, args.hosts, args.runs)
    small = bench_small_zones(args.work, args.runs)
    loads = (load_start, os.getloadavg()[0])
    info = machine()
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "signer.json").write_text(json.dumps(
        {"machine": info, "load": loads, "round": round_, "year": year, "small": small}, indent=2))
    if not args.no_doc:
        write_section(info, loads, round_, year, small)
    print(json.dumps({"round": {k: v for k, v in round_.items() if not isinstance(v, list)},
                      "year": year, "small": small, "load": loads}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
