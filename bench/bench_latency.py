#!/usr/bin/env python3
"""Does named keep answering while it signs through a slow token? Query latency during a re-sign.

For each token profile and ZSK placement: a fresh state dir, `setup-inline` of a zone with
`--hosts` A records (glue and addresses on 127.0.0.x) on that token; once named's first signing
pass is over, every host's address changes and named reloads the zone, so it must re-sign all of them,
while a client on loopback asks for random host names at `--qps` queries a second. Reported: how
long the re-sign took (`bindpkcs11 named reload` until it saw the changes served signed), the queries
sent, lost (no answer within 1 s), p50/p99/max latency during the re-sign, and the same figures for a quiet period before it.

    .venv/bin/python bench/bench_latency.py --profiles softhsm tpm2 --hosts 2000

Results: docs/benchmarks.md (section `latency-while-signing`) and bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from bench_setup_inline import machine
from benchdoc import replace_section

REPO = Path(__file__).resolve().parent.parent
BINDPKCS11 = [sys.executable, "-m", "bindpkcs11"]
SECTION = "latency-while-signing"
ZONE = "latency.test"
LOST_AFTER = 1.0
TOKENS = {"softhsm": "bindpkcs11", "tpm2": "dnssec", "opensc": "OpenPGP card (User PIN)"}
# The emulated device each profile needs, started before and stopped after its cases.
SIMULATORS = {"tpm2": ("tpm2", "simulator"), "opensc": ("card", "simulator")}
# An OpenPGP card signs RSA only and holds one key per token: the KSK on its first token, a token
# ZSK on its second (`--zsk-token`).
ALGORITHMS = {"opensc": "RSASHA256"}
ZSK_TOKENS = {"opensc": "OpenPGP card (User PIN (sig))"}
RESULTS = REPO / "bench" / "results" / "latency.json"


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def zone_text(hosts: int, serial: int = 1, octet: int = 0) -> str:
    lines = [f"$ORIGIN {ZONE}.", "$TTL 300",
             f"@ IN SOA ns1 hostmaster {serial} 3600 600 1209600 300",
             "@ IN NS ns1", "ns1 IN A 127.0.0.1"]
    lines += [f"host{i} IN A 127.{octet + ((i >> 16) & 0x3F)}.{(i >> 8) & 0xFF}.{i & 0xFF}"
              for i in range(hosts)]
    return "\n".join(lines) + "\n"


class Cli:
    def __init__(self, state: Path, env: dict, profile: str) -> None:
        self.state, self.env, self.profile = state, env, profile

    def __call__(self, *args: str, timeout: float = 900) -> str:
        result = subprocess.run([*BINDPKCS11, "--state-dir", str(self.state), "--profile",
                                 self.profile, *args], capture_output=True, text=True,
                                env=self.env, cwd=REPO, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
        return result.stdout


class Querier(threading.Thread):
    """Asks for random host names at a fixed rate; records (time sent, latency or None)."""

    def __init__(self, port: int, hosts: int, qps: float, prefix: str = "host",
                 zone: str = ZONE) -> None:
        super().__init__(daemon=True)
        self.port, self.hosts, self.interval = port, hosts, 1.0 / qps
        self.prefix, self.zone = prefix, zone
        self.samples: list[tuple[float, float | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            name = f"{self.prefix}{random.randrange(self.hosts)}.{self.zone}."
            query = dns.message.make_query(name, "A", want_dnssec=True)
            sent = time.monotonic()
            try:
                response = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=LOST_AFTER)
                ok = response.rcode() == dns.rcode.NOERROR and response.answer
                self.samples.append((sent, time.monotonic() - sent if ok else None))
            except dns.exception.Timeout:
                self.samples.append((sent, None))
            next_at += self.interval
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def window(self, start: float, end: float) -> dict:
        inside = [latency for sent, latency in self.samples if start <= sent <= end]
        answered = sorted(latency for latency in inside if latency is not None)
        if not answered:
            return {"queries": len(inside), "lost": len(inside)}
        return {"queries": len(inside), "lost": len(inside) - len(answered),
                "p50_ms": round(statistics.median(answered) * 1000, 2),
                "p99_ms": round(answered[min(len(answered) - 1, int(len(answered) * 0.99))] * 1000, 2),
                "max_ms": round(answered[-1] * 1000, 2)}


def signing(cli: Cli) -> bool:
    output = cli("rndc", "--zone", ZONE, "--", "signing", "-list", ZONE)
    return any(line.startswith("Signing with key") for line in output.splitlines())


def resign_every_rrset(cli: Cli, zone_file: Path, hosts: int) -> bool:
    """A full re-sign named cannot skip: every host's address changes (127.0.x.y -> 127.64.x.y)
    under serial 2, then `bindpkcs11 named reload`, which returns once named serves the changed
    RRsets signed and the signed zone caught up. (`rndc sign` would measure an idle named: it
    skips every RRset already signed by an active key.) True if it returned in time."""
    zone_file.write_text(zone_text(hosts, serial=2, octet=64))
    try:
        cli("named", "reload", ZONE, "--timeout", "1800", timeout=1900)
    except RuntimeError as error:
        print(f"named reload: {error}", file=sys.stderr)
        return False
    return True


def one_case(base: Path, env: dict, profile: str, zsk_on: str, hosts: int, qps: float,
             quiet: float) -> dict:
    state = base / f"{profile}-{zsk_on}"
    cli = Cli(state, env, profile)
    token = TOKENS[profile]
    if profile in SIMULATORS:
        cli(*SIMULATORS[profile], "start")
        cli("token", "init", "--label", token, "--generate-pins")
    zone_file = base / f"{profile}-{zsk_on}.zone"
    zone_file.write_text(zone_text(hosts))
    port = free_port()
    zsk_token = ("--zsk-token", ZSK_TOKENS[profile]) if zsk_on == "token" and profile in ZSK_TOKENS else ()
    load_before, began = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    try:
        started = time.monotonic()
        cli("setup-inline", ZONE, "--token", token, "--zone-file", str(zone_file), "--zsk-on",
            zsk_on, *zsk_token, "--algorithm", ALGORITHMS.get(profile, "ECDSAP256SHA256"),
            "--port", str(port), "--rndc-port", str(free_port()))
        setup_seconds = time.monotonic() - started
        # setup-inline returns once the answers validate; on a slow token named may still be in
        # its first signing pass: let it finish, so that the quiet baseline is quiet and the
        # re-sign below is one full pass.
        initial_deadline = time.monotonic() + 1800
        while signing(cli) and time.monotonic() < initial_deadline:
            time.sleep(1)
        initial_seconds = time.monotonic() - started - setup_seconds
        querier = Querier(port, hosts, qps)
        querier.start()
        quiet_start = time.monotonic()
        time.sleep(quiet)  # the quiet baseline: queries only
        quiet_end = sign_start = time.monotonic()
        seen = resign_every_rrset(cli, zone_file, hosts)
        sign_end = time.monotonic()
        time.sleep(0.5)
        querier.stop.set()
        querier.join()
        return {"profile": profile, "zsk_on": zsk_on, "hosts": hosts, "qps": qps,
                "algorithm": ALGORITHMS.get(profile, "ECDSAP256SHA256"),
                "measured": {"utc": began,
                             "load_before": [round(x, 2) for x in load_before],
                             "load_after": [round(x, 2) for x in os.getloadavg()]},
                "setup_seconds": round(setup_seconds, 2),
                "initial_pass_seconds": round(initial_seconds, 2),
                "resign_seconds": round(sign_end - sign_start, 2), "resign_seen": seen,
                "quiet": querier.window(quiet_start, quiet_end),
                "during": querier.window(sign_start, sign_end)}
    finally:
        subprocess.run([*BINDPKCS11, "--state-dir", str(state), "named", "stop", ZONE], env=env,
                       cwd=REPO, capture_output=True)
        if profile in SIMULATORS:
            subprocess.run([*BINDPKCS11, "--state-dir", str(state), "--profile", profile,
                            *SIMULATORS[profile], "stop"], env=env, cwd=REPO, capture_output=True)


def merged(previous: list[dict], new: list[dict]) -> list[dict]:
    """Earlier results (bench/results/latency.json) with this run's cases replacing theirs, so a
    run for one profile keeps the other profiles' rows; ordered by profile, then ZSK place."""
    key = lambda r: (r["profile"], r["zsk_on"])  # noqa: E731
    rows = {key(r): r for r in previous} | {key(r): r for r in new}
    order = {"softhsm": 0, "tpm2": 1, "opencryptoki": 2, "opensc": 3}
    return sorted(rows.values(), key=lambda r: (order.get(r["profile"], 9), r["profile"],
                                                r["zsk_on"] != "token"))


def load_text(measured: dict | None) -> str:
    """`05:40, 1.15 -> 1.30` (1-minute load averages before setup-inline and after the re-sign)."""
    if not measured:
        return "-"
    after = f" -> {measured['load_after'][0]:.2f}" if measured.get("load_after") else ""
    return f"{measured['utc']}, {measured['load_before'][0]:.2f}{after}"


def write_section(results: list[dict], info: dict) -> None:
    lines = ["## Query latency while named re-signs through the token", "",
             f"Measured on {info['cpu']}, {info['cores']} cores, Debian {info['debian']}, patched "
             "BIND 9.18 (`bench/bench_latency.py`); each row says when, and the machine's 1-minute "
             "load average before setup-inline and after the re-sign (other developers' tests "
             "share the 2 cores). A zone of N A records set up inline, then "
             "every host's address changed and `bindpkcs11 named reload` (named re-signs all of them) while a loopback client asks for random names, one at a "
             f"time, at a fixed rate; lost = no answer within {LOST_AFTER:.0f} s. swtpm is the "
             "software TPM (through tpm2-abrmd), SoftHSM2 the default token, opensc the emulated "
             "OpenPGP card (RSA-2048; a token ZSK is on the card's second token, `--zsk-token`).", "",
             "| token | ZSK | records | re-sign | queries during | lost | p50 | p99 | max | quiet p50 / p99 | measured (UTC), load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d, q = r["during"], r["quiet"]
        resign = f"{r['resign_seconds']:.1f} s" if r["resign_seen"] else "not finished"
        lines.append(f"| {r['profile']} | {r['zsk_on']} | {r['hosts']} | {resign} | "
                     f"{d['queries']} | {d['lost']} | {d.get('p50_ms', '-')} ms | {d.get('p99_ms', '-')} ms | "
                     f"{d.get('max_ms', '-')} ms | {q.get('p50_ms', '-')} / {q.get('p99_ms', '-')} ms | "
                     f"{load_text(r.get('measured'))} |")
    lines += ["", "The re-sign is the `bindpkcs11 named reload` of the changed zone, until it saw "
              "every changed RRset served signed and the signed zone caught up. What the card rows mean: \"Query latency on a card\" "
              "below."]
    replace_section(SECTION, "\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["softhsm", "tpm2", "opensc"])
    parser.add_argument("--zsk-on", nargs="+", default=["token", "software"])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--qps", type=float, default=200)
    parser.add_argument("--quiet", type=float, default=3.0, help="seconds of baseline before signing")
    parser.add_argument("--bind-dir", type=Path, default=REPO / ".cache" / "bind-state" / "bind")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    info = machine()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PKCS11_", "TPM2_PKCS11"))}
    env.update({"BINDPKCS11_BIND_DIR": str(args.bind_dir), "PYTHONPATH": str(REPO)})
    base = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    base.chmod(0o711)  # named runs as bind when root: it must be able to enter the state dirs
    results = []
    try:
        for profile in args.profiles:
            for zsk_on in args.zsk_on:
                results.append(one_case(base, env, profile, zsk_on, args.hosts, args.qps, args.quiet))
                print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    previous = json.loads(RESULTS.read_text())["results"] if RESULTS.exists() else []
    results = merged(previous, results)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    if not args.no_doc:
        write_section(results, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
