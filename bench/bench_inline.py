#!/usr/bin/env python3
"""Big zones: how long named takes to sign an inline zone through the token, against dnssec-signzone.

For each zone size (A records on 127.x, one NS) and ZSK place (on the SoftHSM token, or in
software with the KSK on the token): a fresh state dir, `setup-inline` of the sample zone (token,
keys, the rendered configuration with its sig-signing-* batch), `named stop`; then the big zone
replaces the unsigned copy (signed files and journals removed) and named is started by hand with
the instance's own configuration and environment, as `named start` would. Measured:

  first signed answer   named started -> the apex SOA is served with an RRSIG (named serves no
                        RRSIG at all until its first pass has built the NSEC chain);
  fully signed          named started -> `rndc signing -list` says "Done signing" for both keys;
  peak RSS              named's VmHWM when fully signed;
  query latency         a loopback client asks for random names at --qps while named signs
                        (p50/p99/lost: no answer within 1 s), as bench_latency.py does; it
                        waits up to 5 s, so a lost query is told apart as late (answered
                        after 1 s) or never answered, and when it was sent (seconds after
                        named started) is kept, with named's log (--keep-logs), to find why;
  dnssec-signzone       the patched dnssec-signzone -S with the same key files (same token
                        objects), same zone, in the same run: with its self-check, and with -P.

`--routes patched-9.18 patched-9.20 stock-9.20` runs each case on each BIND route (issue 11):
setup-inline `--bind patched` (9.18), `--bind patched --bind-version 9.20`, `--bind stock` (BIND
9.20 + pkcs11-provider, the backports packages unpacked privately in --stock-dir, nothing
installed); named and dnssec-signzone then run from that route's BIND with the environment
`bind env` gives it (the provider's config and preloaded module on stock). Several routes write the
section `inline-routes`; the 9.18 route alone, `inline-big-zones`.

`--batches 100 300 890 3000` repeats the named run with those sig-signing-signatures values
(sig-signing-nodes the same, at least 100) instead of the rendered one: the trade-off between
time to fully signed and query latency that chose config.SIGNING_SLICE.

    .venv/bin/python bench/bench_inline.py --records 10000 100000
    .venv/bin/python bench/bench_inline.py --records 100000 --algorithm RSASHA256 --batches 25 100
    .venv/bin/python bench/bench_inline.py --records 100000 --zsk-on token \
        --routes patched-9.18 patched-9.20 stock-9.20

Results: docs/benchmarks.md (section `inline-big-zones`, or `inline-routes`) and
bench/results/inline.json (or inline-routes.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from bench_latency import LOST_AFTER, Querier
from bench_setup_inline import machine
from benchdoc import replace_section

REPO = Path(__file__).resolve().parent.parent
BINDPKCS11 = [sys.executable, "-m", "bindpkcs11"]
SECTION = "inline-big-zones"
ROUTES_SECTION = "inline-routes"
# --routes: the setup-inline options that choose each BIND route
ROUTES = {"patched-9.18": ["--bind", "patched"],
          "patched-9.20": ["--bind", "patched", "--bind-version", "9.20"],
          "stock-9.20": ["--bind", "stock"]}
ZONE = "big.test"
TOKEN = "bindpkcs11"


GIVE_UP_AFTER = 5.0  # how long the client waits before a query counts as never answered


class PatientQuerier(Querier):
    """bench_latency's client, but waiting GIVE_UP_AFTER s: a query not answered within
    LOST_AFTER still counts as lost, and is told apart as late, answered with an error (the
    rcode, or NODATA) or never answered."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.errors: dict[float, str] = {}  # sent -> what the answer was, when not an address

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            name = f"{self.prefix}{random.randrange(self.hosts)}.{self.zone}."
            query = dns.message.make_query(name, "A", want_dnssec=True)
            sent = time.monotonic()
            try:
                response = dns.query.udp(query, "127.0.0.1", port=self.port,
                                         timeout=GIVE_UP_AFTER)
                latency = time.monotonic() - sent
                ok = response.rcode() == dns.rcode.NOERROR and response.answer
                if not ok:
                    self.errors[sent] = f"{dns.rcode.to_text(response.rcode())} after " \
                        f"{latency * 1000:.0f} ms"
                self.samples.append((sent, latency if ok else None))
            except dns.exception.Timeout:
                self.samples.append((sent, None))
            next_at += self.interval
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def window(self, start: float, end: float) -> dict:
        """Latency figures for queries answered within LOST_AFTER; the rest are lost."""
        inside = [(sent, latency) for sent, latency in self.samples if start <= sent <= end]
        on_time = [(sent, lat) for sent, lat in inside if lat is not None and lat <= LOST_AFTER]
        saved = self.samples
        self.samples = on_time + [(sent, None) for sent, lat in inside
                                  if lat is None or lat > LOST_AFTER]
        try:
            figures = super().window(start, end)
        finally:
            self.samples = saved
        lost = [(sent, lat) for sent, lat in inside if lat is None or lat > LOST_AFTER]
        figures["late"] = sum(1 for _, lat in lost if lat is not None)
        figures["error"] = sum(1 for sent, lat in lost if lat is None and sent in self.errors)
        figures["never"] = sum(1 for sent, lat in lost if lat is None and sent not in self.errors)
        figures["lost_at"] = [[round(sent - start, 2), self.errors.get(sent) or (
            f"late {lat:.2f} s" if lat is not None else "no answer")] for sent, lat in lost]
        served = min((sent for sent, _ in on_time), default=float("inf"))
        figures["lost_at_start"] = sum(1 for sent, _ in lost if sent < served)
        return figures


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def zone_text(records: int) -> str:
    lines = [f"$ORIGIN {ZONE}.", "$TTL 300", "@ IN SOA ns1 hostmaster 1 3600 600 1209600 300",
             "@ IN NS ns1", "ns1 IN A 127.0.0.1"]
    lines += [f"h{i} IN A 127.{(i >> 16) & 0xFF}.{(i >> 8) & 0xFF}.{i & 0xFF}"
              for i in range(records)]
    return "\n".join(lines) + "\n"


def cli(state: Path, env: dict, *args: str) -> str:
    result = subprocess.run([*BINDPKCS11, "--state-dir", str(state), *args], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def signed_soa(port: int) -> bool:
    query = dns.message.make_query(ZONE + ".", "SOA", want_dnssec=True)
    try:
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
    except dns.exception.Timeout:
        return False
    return any(rrset.rdtype == dns.rdatatype.RRSIG for rrset in response.answer)


def both_done(rndc: list[str], env: dict) -> bool:
    result = subprocess.run([*rndc, "signing", "-list", ZONE], capture_output=True, text=True,
                            env=env)
    lines = result.stdout.splitlines()
    return len([line for line in lines if line.startswith("Done signing")]) >= 2 and \
        not any(line.startswith("Signing with") for line in lines)


def cpu_seconds(pid: int) -> float:
    """named's user + system CPU time so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_named(instance: Path, prefix: Path, env: dict, port: int, limit: float, records: int,
              qps: float) -> dict:
    """Start named (from the route's `prefix`) on the instance's files; time the first signed SOA
    and both keys done, while a client queries random names."""
    rndc = [str(prefix / "sbin" / "rndc"), "-c", str(instance / "rndc.conf")]
    args = [str(prefix / "sbin" / "named"), "-f", "-c", str(instance / "named.conf")]
    if os.geteuid() == 0:
        args += ["-u", "bind"]
    named_env = env | {"PKCS11_LIBRARY_PIN_FILE": str(instance / "token.pin")}
    with open(instance / "bench-named.out", "wb") as out:
        process = subprocess.Popen(args, env=named_env, cwd=instance, stdout=out, stderr=out)
    started = time.monotonic()
    first = full = None
    querier = PatientQuerier(port, records, qps, prefix="h", zone=ZONE) if qps else None
    wall_start = time.time()
    try:
        while time.monotonic() - started < limit:
            if process.poll() is not None:
                raise RuntimeError(f"named exited: {(instance / 'bench-named.out').read_text()[-500:]}")
            if first is None and signed_soa(port):
                first = time.monotonic() - started
            if querier and not querier.is_alive() and signed_soa_answered(port):
                querier.start()  # from named's first answer on
            if both_done(rndc, env):  # the route's env: a stock rndc needs its library path
                full = time.monotonic() - started
                first = first if first is not None else full
                break
            time.sleep(0.2)
        rss, cpu = peak_rss_mb(process.pid), cpu_seconds(process.pid)
        serial = subprocess.run([*rndc, "zonestatus", ZONE], capture_output=True,
                                text=True, env=env).stdout
    finally:
        if querier and querier.is_alive():
            querier.stop.set()
            querier.join()
        process.terminate()
        process.wait(timeout=60)
    signed = next((int(line.split(":")[1]) for line in serial.splitlines()
                   if line.startswith("signed serial:")), None)
    latency = querier.window(started, float("inf")) if querier else {}
    return {"first_signed_s": first and round(first, 2), "fully_signed_s": full and round(full, 2),
            "peak_rss_mb": round(rss, 1), "cpu_s": round(cpu, 2), "batches": signed - 1 if signed else None,
            "latency": latency, "started_utc": time.strftime("%H:%M:%S", time.gmtime(wall_start))}


def signed_soa_answered(port: int) -> bool:
    """named answers (signed or not yet)."""
    query = dns.message.make_query(ZONE + ".", "SOA")
    try:
        dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
    except dns.exception.Timeout:
        return False
    return True


def record_type(line: str) -> str | None:
    """The type of a zone file line (the first type word: an NSEC's bitmap lists RRSIG too)."""
    return next((word for word in line.split() if word in ("RRSIG", "NSEC", "A", "NS", "SOA",
                                                          "DNSKEY")), None)


def run_signzone(instance: Path, prefix: Path, zone_file: Path, env: dict, check: bool) -> dict:
    output = zone_file.with_suffix(".signed")
    args = [str(prefix / "bin" / "dnssec-signzone"), "-S", "-K", str(instance / "keys"),
            "-o", ZONE, "-f", str(output), *([] if check else ["-P"]), str(zone_file)]
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=zone_file.parent)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"dnssec-signzone: {result.stderr.strip()[-500:]}")
    rrsigs = sum(1 for line in output.read_text().splitlines() if record_type(line) == "RRSIG")
    output.unlink()
    return {"seconds": round(seconds, 2), "rrsigs": rrsigs}


def set_batch(instance: Path, batch: int) -> None:
    conf = instance / "zone.conf"
    lines = [f"\tsig-signing-signatures {batch};" if "sig-signing-signatures" in line else
             f"\tsig-signing-nodes {max(100, batch)};" if "sig-signing-nodes" in line else line
             for line in conf.read_text().splitlines()]
    conf.write_text("\n".join(lines) + "\n")


def fresh_zone(instance: Path, records: int) -> None:
    """The big zone as the unsigned copy, no signed state: named signs it from scratch."""
    zone_dir = instance / "zones"
    for leftover in zone_dir.iterdir():
        leftover.unlink()
    zone_file = zone_dir / f"{ZONE}.db"
    zone_file.write_text(zone_text(records))
    if os.geteuid() == 0:
        shutil.chown(zone_file, "bind", "bind")


def one_case(base: Path, env: dict, records: int, zsk_on: str, algorithm: str, bind_route: str,
             limit: float, batches: list[int | None], qps: float, signzone: bool,
             keep_logs: Path | None) -> list[dict]:
    name = f"{records}-{zsk_on}-{algorithm}-{bind_route}"
    state = base / name
    port = free_port()
    bits = ["--bits", "2048"] if algorithm.startswith("RSA") else []
    cli(state, env, "setup-inline", ZONE, "--zsk-on", zsk_on, "--algorithm", algorithm, *bits,
        *ROUTES[bind_route], "--port", str(port), "--rndc-port", str(free_port()))
    cli(state, env, "named", "stop", ZONE)
    instance = state / "instances" / ZONE
    rendered = rendered_batch(instance)
    route_args = ["--version" if arg == "--bind-version" else arg for arg in ROUTES[bind_route]]
    exports = json.loads(cli(state, env, "bind", "env", "--token", TOKEN, "--json", *route_args))
    prefix, tool_env = Path(exports["prefix"]), env | exports["variables"]
    rows = []
    for batch in batches:
        set_batch(instance, batch or rendered)
        fresh_zone(instance, records)
        (instance / "named.log").write_bytes(b"")  # this run's lines only (kept with --keep-logs)
        row = {"records": records, "zsk_on": zsk_on, "algorithm": algorithm,
               "route": bind_route, "bind_version": exports["version"], "batch": batch or rendered,
               "rendered": batch in (None, rendered), "load_before": round(os.getloadavg()[0], 2)}
        row["named"] = run_named(instance, prefix, tool_env, port, limit, records, qps)
        row["load_after"] = round(os.getloadavg()[0], 2)
        if keep_logs:
            keep_logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(instance / "named.log",
                        keep_logs / f"{name}-{batch or rendered}.log")
        rows.append(row)
        print(json.dumps(row), flush=True)
    if signzone:
        work = base / f"sz-{name}"
        work.mkdir()
        unsigned = work / "zone.db"
        unsigned.write_text(zone_text(records))
        check = run_signzone(instance, prefix, unsigned, tool_env, check=True)
        plain = run_signzone(instance, prefix, unsigned, tool_env, check=False)
        for row in rows:
            row["signzone_check"], row["signzone_p"] = check, plain
            full = row["named"]["fully_signed_s"]
            if full:
                row["ratio_check"] = round(full / check["seconds"], 2)
                row["ratio_p"] = round(full / plain["seconds"], 2)
        shutil.rmtree(work, ignore_errors=True)
        print(json.dumps({"signzone_check": check, "signzone_p": plain}), flush=True)
    return rows


def rendered_batch(instance: Path) -> int:
    conf = (instance / "zone.conf").read_text()
    return int(conf.split("sig-signing-signatures", 1)[1].split(";", 1)[0])


def lost_cell(latency: dict) -> str:
    """Lost queries, those before named first answered a name told apart."""
    if "lost" not in latency:
        return "-"
    at_start = latency.get("lost_at_start",
                           sum(1 for _, what in latency.get("lost_at", []) if "SERVFAIL" in what))
    return f"{latency['lost'] - at_start} + {at_start} at start"


def write_section(results: list[dict], info: dict, section: str) -> None:
    by_route = section == ROUTES_SECTION
    title = ("Big zones on each BIND route: named's inline signing" if by_route else
             "Big zones: named's inline signing against dnssec-signzone")
    bind = ("the BIND route in each row (patched 9.18 / 9.20 + shim, stock 9.20 + pkcs11-provider; "
            "named and dnssec-signzone of that route)" if by_route else "patched BIND 9.18")
    lines = [f"## {title}", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {info['cpu']}, "
             f"{info['cores']} cores, Debian {info['debian']} (load average per row), {bind}, "
             "SoftHSM2, "
             "KSK and ZSK of the algorithm in each row (`bench/bench_inline.py`). Zone: N A records + 1 NS, NSEC. "
             "named is started on the instance setup-inline rendered (its `sig-signing-*` batch "
             "from the ZSK's rate) with the big zone and no signed state; first = the apex SOA "
             "served with an RRSIG, full = both keys \"Done signing\", CPU = named's user + "
             "system seconds until then (full minus CPU: named idle). dnssec-signzone: the "
             "route's own, `-S` with the same key files (same token objects), same zone, right "
             "after named in the same run; \"check\" = with its default self-check, `-P` without. "
             "Ratio = named full / dnssec-signzone. \"software\": the ZSK in software, the KSK "
             "on the token. Queries: random names at 200/s from named's first answer until fully "
             "signed, one at a time over UDP; lost = no answer within 1 s; \"at start\" = before "
             "the first name was answered (named answers SERVFAIL, at 1M names for a while "
             "not at all, until it has loaded the signed zone: start-up, not signing).", "",
             f"| records | {'route | ' if by_route else ''}algorithm | ZSK | batch | named first signed | named fully signed | named CPU | batches | "
             "named peak RSS | queries (lost) | p50 / p99 / max | signzone (check) | signzone -P | "
             "ratio (check) | ratio (-P) | load |",
             "|---|" + ("---|" if by_route else "") + "---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        n, q = r["named"], r["named"].get("latency", {})
        lines.append(
            f"| {r['records']:,} | "
            + (f"{r['route']} ({r['bind_version']}) | " if by_route else "")
            + f"{r.get('algorithm', 'ECDSAP256SHA256')} | {r['zsk_on']} | "
            f"{r['batch']} | {n['first_signed_s']} s | "
            f"{n['fully_signed_s']} s | {n.get('cpu_s', '-')} s | {n['batches']} | {n['peak_rss_mb']:.0f} MB | "
            f"{q.get('queries', '-')} ({lost_cell(q)}) | {q.get('p50_ms', '-')} / "
            f"{q.get('p99_ms', '-')} / {q.get('max_ms', '-')} ms | "
            f"{r.get('signzone_check', {}).get('seconds', '-')} s | "
            f"{r.get('signzone_p', {}).get('seconds', '-')} s | "
            f"{r.get('ratio_check', '-')} | {r.get('ratio_p', '-')} | "
            f"{r['load_before']} / {r['load_after']} |")
    replace_section(section, "\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument("--zsk-on", nargs="+", default=["token", "software"])
    parser.add_argument("--algorithm", nargs="+", default=["ECDSAP256SHA256"],
                        help="one case per algorithm (RSASHA256: 2048 bits)")
    parser.add_argument("--keep-logs", type=Path, help="copy each run's named.log here")
    parser.add_argument("--limit", type=float, default=1800, help="give up on named after S s")
    parser.add_argument("--batches", nargs="+", default=["rendered"],
                        help="sig-signing-signatures values, one named run each ('rendered': "
                             "what bindpkcs11 renders)")
    parser.add_argument("--qps", type=float, default=200, help="queries/s while named signs (0: none)")
    parser.add_argument("--no-signzone", action="store_true", help="named runs only")
    parser.add_argument("--routes", nargs="+", choices=list(ROUTES), default=["patched-9.18"],
                        help="BIND routes, one case each (default: the patched 9.18)")
    parser.add_argument("--bind-dir", type=Path, default=REPO / ".cache" / "bind-state" / "bind",
                        help="the patched BINDs (9.20 beside it, as `bind build` puts it)")
    parser.add_argument("--stock-dir", type=Path, default=REPO / ".cache" / "bind-stock",
                        help="the privately unpacked stock 9.20 + pkcs11-provider "
                             "(`bind extract-backports`; $BINDPKCS11_STOCK_DIR)")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: rewrite the docs section from a results JSON")
    args = parser.parse_args()
    section = SECTION if args.routes == ["patched-9.18"] else ROUTES_SECTION
    if args.render:
        saved = json.loads(args.render.read_text())
        section = ROUTES_SECTION if any("route" in r for r in saved["results"]) else SECTION
        write_section(saved["results"], saved["machine"], section)
        return 0
    info = machine()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PKCS11_", "TPM2_PKCS11"))}
    env.update({"BINDPKCS11_BIND_DIR": str(args.bind_dir), "PYTHONPATH": str(REPO),
                "BINDPKCS11_STOCK_DIR": str(args.stock_dir)})
    base = Path(tempfile.mkdtemp(prefix="bench-inline-"))
    base.chmod(0o711)  # named runs as bind when root: it must be able to enter the state dirs
    results = []
    try:
        batches = [None if b == "rendered" else int(b) for b in args.batches]
        for records in args.records:
            for algorithm in args.algorithm:
                for zsk_on in args.zsk_on:
                    for bind_route in args.routes:
                        results += one_case(base, env, records, zsk_on, algorithm, bind_route,
                                            args.limit, batches, args.qps, not args.no_signzone,
                                            args.keep_logs)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    results_file = {SECTION: "inline.json", ROUTES_SECTION: "inline-routes.json"}[section]
    (REPO / "bench" / "results" / results_file).write_text(
        json.dumps({"machine": info, "results": results}, indent=2))
    if not args.no_doc:
        write_section(results, info, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
