#!/usr/bin/env python3
"""Zone-signing throughput of BIND 9.18 and 9.20 with DNSSEC keys in a SoftHSM2 token.

Run with the project's venv python (see bench/README.md):

    .venv/bin/python bench/bench_signing.py --records 20000 --runs 3

What is measured, all in one run, for one deterministic zone (N A records + D delegations with
NS and glue), with an ECDSA P-256 and an RSA-2048 KSK+ZSK pair, each with `dnssec-signzone -n 1`
and `-n 2`, with `-P` (no post-sign self-check; the primary figure) and without it:

  shim    bindpkcs11's patched dnssec-signzone 9.18, KSK+ZSK in the token (libbp11 does C_Sign)
  soft    (a) the same patched dnssec-signzone with software keys
  shim920 bindpkcs11's patched dnssec-signzone 9.20 (`bind build --version 9.20`), same token keys
  soft920 the same patched 9.20 with the software keys
  provider920  stock BIND 9.20 + pkcs11-provider from bookworm-backports (privately extracted
          with dpkg -x into the work dir; OPENSSL_CONF, LD_PRELOAD of the module), the same
          token objects adopted by its own dnssec-keyfromlabel
  raw     (b) the token's raw C_SignInit+C_Sign rate for the ZSK, one session (and two), from a
          small C loop compiled here (bench/raw_csign.c), with the token object and with a
          session copy of it (what the shim and pkcs11-provider sign with); plus bp11_sign in a C loop
          (bench/raw_bp11.c) to separate the shim's cost from BIND's
  engine  (c) upstream 9.18.49, unpatched, rebuilt with -DOPENSSL_API_COMPAT=10100 into the work
          dir, signing the SAME token keys through the libp11 engine (dnssec-signzone -E pkcs11)
  stock   Debian's /usr/bin/dnssec-signzone with the software keys (reference only)

Rate = RRSIG records in the signed output / wall time of the dnssec-signzone process; median of
--runs (runs are interleaved across configurations).  Every signed output is checked once per
configuration with Debian's stock /usr/bin/dnssec-verify (not timed).

Results: JSON next to the work dir (<work>-results.json) and a Markdown section in
docs/benchmarks.md (between the bench_signing markers; the rest of that file is left alone).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's bindpkcs11, also for enginebuild

import enginebuild  # noqa: E402
from benchdoc import DOC, replace_section  # noqa: E402

BENCH = REPO / "bench"
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
ENGINE_PACKAGE = "libengine-pkcs11-openssl"
ENGINE_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
                     "/usr/lib/x86_64-linux-gnu/engines-3/libpkcs11.so")
STOCK_SIGNZONE = "/usr/bin/dnssec-signzone"
STOCK_VERIFY = "/usr/bin/dnssec-verify"
ENGINE_CFLAGS = enginebuild.CFLAGS
ENGINE_STATE = REPO / ".cache" / "engine-bind"  # shared with tests/enginebind.py
ORIGIN = "bench.test"
TOKEN = "bench"
ALGORITHMS = ("ECDSAP256SHA256", "RSASHA256")
SHORT = {"ECDSAP256SHA256": "ECDSA P-256", "RSASHA256": "RSA-2048"}
RAW_KIND = {"ECDSAP256SHA256": "ecdsa", "RSASHA256": "rsa"}
IMPL_TEXT = {
    "shim": "patched 9.18.49, token keys via the shim",
    "soft": "(a) patched 9.18.49, software keys",
    "shim920": "patched 9.20, token keys via the shim",
    "soft920": "patched 9.20, software keys",
    "provider920": "stock 9.20 (backports) + pkcs11-provider, token keys",
    "engine": "(c) upstream 9.18.49 + libp11 engine, token keys",
    "stock": "Debian 9.18.49 (stock), software keys",
}
IMPL_SHORT = {"shim": "9.18 shim", "shim920": "9.20 shim", "provider920": "9.20 provider"}
# Raw loops, selectable with --routes like the signing routes.
RAW_KINDS = ("csign", "csign-copy", "csign-2proc", "bp11")
SECTION = "bench_signing"
# An RRSIG record's type field followed by type covered, algorithm, labels, original TTL; an NSEC
# type bitmap ("A RRSIG NSEC") never matches.
RRSIG_LINE = re.compile(r"\sRRSIG\s+[A-Z0-9]+\s+\d+\s+\d+\s+\d+\b")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that changes OpenSSL or the loader, plus extra."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENSSL_CONF", "LD_LIBRARY_PATH", "LD_PRELOAD", "PKCS11_LIBRARY_PIN")}
    env["LC_ALL"] = "C"
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        log_path: Path | None = None) -> str:
    """Run a command, fail loudly with its output; return stdout."""
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True)
    if log_path:
        log_path.write_text(f"$ {' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def cli(state: Path, *args: str) -> str:
    return run([sys.executable, "-m", "bindpkcs11", "--state-dir", str(state), *args],
               env=clean_env())


# ---------------------------------------------------------------------------------------------
# Zone


def write_zone(path: Path, records: int, delegations: int) -> dict:
    """A deterministic zone: apex SOA/NS (+2 in-zone name servers), `records` A records,
    `delegations` delegations each with 2 NS and their 2 glue A records."""
    lines = [
        "$TTL 3600",
        f"$ORIGIN {ORIGIN}.",
        "@\tSOA\tns1 hostmaster 2024010101 7200 3600 1209600 3600",
        "@\tNS\tns1",
        "@\tNS\tns2",
        "ns1\tA\t192.0.2.1",
        "ns2\tA\t192.0.2.2",
    ]
    for i in range(records):
        lines.append(f"host{i:06d}\tA\t10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}")
    for d in range(delegations):
        for ns in (1, 2):
            lines.append(f"sub{d:04d}\tNS\tns{ns}.sub{d:04d}")
        for ns in (1, 2):
            lines.append(f"ns{ns}.sub{d:04d}\tA\t198.51.{d >> 8}.{(d & 255)}")
    path.write_text("\n".join(lines) + "\n")
    total = 3 + 2 + records + 4 * delegations
    return {
        "origin": ORIGIN, "a_records": records, "delegations": delegations,
        "ns_per_delegation": 2, "glue_per_delegation": 2, "apex_records": 5,
        "total_records": total,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def zone_with_keys(work: Path, zone: Path, name: str, keyset: dict) -> Path:
    """The zone plus the DNSKEYs of one KSK+ZSK pair (dnssec-signzone wants them at the apex)."""
    path = work / f"zone-{name}.db"
    path.write_text(f"$INCLUDE {zone}\n$INCLUDE {keyset['ksk']['stem']}.key\n"
                    f"$INCLUDE {keyset['zsk']['stem']}.key\n")
    return path


def count_rrsigs(path: Path) -> int:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return sum(1 for line in handle if RRSIG_LINE.search(line))


# ---------------------------------------------------------------------------------------------
# Builds


def patched_bind(state: Path) -> dict[str, str]:
    """Build (or reuse) bindpkcs11's patched BIND in the bench state dir; return its env."""
    log("patched BIND: bindpkcs11 bind build (idempotent; rebuilds when the shim or patch changed)")
    for attempt in range(3):
        proc = subprocess.run([sys.executable, "-m", "bindpkcs11", "--state-dir", str(state),
                               "bind", "build"], env=clean_env(), capture_output=True, text=True)
        if proc.returncode == 0:
            break
        # Another engineer may be mid-edit on bp11.c: wait and retry.
        log(f"bind build failed (attempt {attempt + 1}); retrying in 60 s:\n{proc.stderr[-1500:]}")
        time.sleep(60)
    else:
        raise SystemExit("bindpkcs11 bind build failed three times")
    return json.loads(cli(state, "--json", "bind", "env"))["variables"]


def patched_bind_920(state: Path) -> dict[str, str]:
    """`bind build --version 9.20` in the bench state dir (beside 9.18); its `bind env`."""
    log("patched BIND 9.20: bindpkcs11 bind build --version 9.20 (idempotent)")
    run([sys.executable, "-m", "bindpkcs11", "--state-dir", str(state), "bind", "build",
         "--version", "9.20"], env=clean_env())
    return json.loads(cli(state, "--json", "bind", "env", "--version", "9.20"))["variables"]


def stock_920(work: Path) -> Path:
    """Debian's BIND 9.20 and pkcs11-provider from bookworm-backports, unpacked privately into
    <work>/stock920 by the same code `bindpkcs11 bind extract-backports` uses (nothing installed;
    reused while unpacked). Returns the tree whose usr/ is the prefix."""
    sys.path.insert(0, str(REPO))
    from bindpkcs11.bind import backports

    return backports.extract_to(work / "stock920", log).prefix.parent


def provider_env(work: Path, tree: Path, pin_file: Path, softhsm_conf: str) -> dict[str, str]:
    """What stock 9.20 needs for the provider route, as setup-inline renders it: its libraries,
    the OpenSSL config loading pkcs11-provider (PIN from the PIN file, never in a URI) and the
    module preloaded (bind/stock.py)."""
    from bindpkcs11.bind import stock

    route = stock.usable(tree / "usr", "bench")
    if route is None:
        raise SystemExit(f"the unpacked BIND 9.20 in {tree} does not run")
    module = Path(SOFTHSM_MODULE)
    cnf = stock.write_provider_config(work / "provider-openssl.cnf", stock.ProviderConfig(
        stock.provider_module(route.prefix), module, pin_file))
    return clean_env(**stock.program_env(route, module, cnf, {"SOFTHSM2_CONF": softhsm_conf}))


def make_provider_keys(tree: Path, keys: Path, shim_keys: dict, env: dict[str, str]) -> dict:
    """The shim's token keys again, adopted by stock 9.20's dnssec-keyfromlabel (provider)."""
    out: dict = {}
    for alg in ALGORITHMS:
        kdir = keys / f"provider920-{alg}"
        kdir.mkdir(parents=True, exist_ok=True)
        entry = {}
        for role in ("ksk", "zsk"):
            label = private_label(Path(shim_keys[("shim", alg)][role]["stem"] + ".private"))
            cmd = [tree / "usr" / "bin" / "dnssec-keyfromlabel", "-a", alg, "-l", label, "-K", kdir]
            if role == "ksk":
                cmd += ["-f", "KSK"]
            name = run([*cmd, ORIGIN], env=env).strip().splitlines()[-1]
            tag = int(name.rsplit("+", 1)[1])
            if tag != shim_keys[("shim", alg)][role]["tag"]:
                raise SystemExit(f"provider key {name} has another tag than the shim's token key")
            entry[role] = {"stem": str(kdir / name), "tag": tag, "uri": label}
        out[("provider920", alg)] = entry
    return out


def engine_module(allow_install: bool) -> tuple[str, bool]:
    """The libp11 engine .so, installing Debian's package if it is missing; (path, installed)."""
    for path in ENGINE_CANDIDATES:
        if Path(path).exists():
            return path, False
    if not allow_install:
        raise SystemExit(f"{ENGINE_PACKAGE} is not installed (and --no-install was given)")
    log(f"installing Debian package {ENGINE_PACKAGE} (the libp11 OpenSSL engine) with apt-get")
    run(["apt-get", "install", "-y", "--no-install-recommends", ENGINE_PACKAGE],
        env=clean_env(DEBIAN_FRONTEND="noninteractive"))
    for path in ENGINE_CANDIDATES:
        if Path(path).exists():
            return path, True
    raise SystemExit(f"{ENGINE_PACKAGE} installed but no engine .so found in {ENGINE_CANDIDATES}")


def compile_c(work: Path, bind_lib: Path) -> dict[str, Path]:
    out = {"raw_csign": work / "raw_csign", "raw_bp11": work / "raw_bp11"}
    run(["gcc", "-O2", "-Wall", "-I/usr/include/p11-kit-1", BENCH / "raw_csign.c", "-o",
         out["raw_csign"], "-ldl", "-lpthread"])
    run(["gcc", "-O2", "-Wall", f"-I{REPO / 'bindpkcs11' / 'shim'}", BENCH / "raw_bp11.c", "-o",
         out["raw_bp11"], f"-L{bind_lib}", "-lbp11", f"-Wl,-rpath,{bind_lib}", "-lpthread"])
    return out


# ---------------------------------------------------------------------------------------------
# Keys


def private_label(private_file: Path) -> str:
    """The Label: of a token key's .private (base64 of the URI including its trailing NUL)."""
    for line in private_file.read_text().splitlines():
        if line.startswith("Label:"):
            return base64.b64decode(line.split(":", 1)[1].strip()).rstrip(b"\0").decode()
    raise SystemExit(f"{private_file} has no Label:")


def make_keys(state: Path, keys: Path) -> dict:
    """KSK+ZSK per algorithm, on the token (shim) and in software; file stems for signzone."""
    out: dict = {}
    for alg in ALGORITHMS:
        for kind, extra in (("shim", ["--token", TOKEN]), ("soft", ["--software"])):
            kdir = keys / f"{kind}-{alg}"
            kdir.mkdir(parents=True, exist_ok=True)
            entry = {}
            for role in ("ksk", "zsk"):
                info = json.loads(cli(state, "keygen", ORIGIN, "--role", role, "--algorithm", alg,
                                      *extra, "--key-dir", str(kdir), "--json"))
                entry[role] = {"stem": info["key_file"][:-len(".key")], "tag": info["tag"],
                               "uri": info.get("uri"), "object": info.get("object_label")}
            out[(kind, alg)] = entry
    return out


def make_engine_keys(prefix: Path, keys: Path, shim_keys: dict, env: dict[str, str]) -> dict:
    """The shim's token keys again, adopted by the engine build's dnssec-keyfromlabel."""
    out: dict = {}
    for alg in ALGORITHMS:
        kdir = keys / f"engine-{alg}"
        kdir.mkdir(parents=True, exist_ok=True)
        entry = {}
        for role in ("ksk", "zsk"):
            label = private_label(Path(shim_keys[("shim", alg)][role]["stem"] + ".private"))
            cmd = [prefix / "bin" / "dnssec-keyfromlabel", "-E", "pkcs11", "-a", alg,
                   "-l", label, "-K", kdir]
            if role == "ksk":
                cmd += ["-f", "KSK"]
            name = run([*cmd, ORIGIN], env=env).strip().splitlines()[-1]
            tag = int(name.rsplit("+", 1)[1])
            if tag != shim_keys[("shim", alg)][role]["tag"]:
                raise SystemExit(f"engine key {name} has another tag than the shim's token key")
            entry[role] = {"stem": str(kdir / name), "tag": tag, "uri": label}
        out[("engine", alg)] = entry
    return out


# ---------------------------------------------------------------------------------------------
# Measurements


# The machine may be shared (another engineer's test suite, a build): every measurement waits
# for a quiet machine, and one during which other processes used noticeable CPU is repeated.
CLK_TCK = os.sysconf("SC_CLK_TCK")
QUIET_FRACTION = 0.05      # "quiet": other processes use < 5 % of the machine
DISTURBED_FRACTION = 0.05  # "disturbed": others used > 5 % of one core over the measurement
RETRIES = 4
QUIET_WAIT = 180.0
QUIET_WAIT_S = [QUIET_WAIT]  # --quiet-wait
RETRIES_N = [RETRIES]  # --retries


def system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def wait_quiet() -> float:
    """Wait (up to QUIET_WAIT s) until the machine is idle over a 1 s window; seconds waited."""
    started = time.monotonic()
    cores = os.cpu_count() or 1
    while True:
        busy0, _ = system_cpu()
        time.sleep(1.0)
        busy1, _ = system_cpu()
        waited = time.monotonic() - started
        if (busy1 - busy0) / cores < QUIET_FRACTION or waited > QUIET_WAIT_S[0]:
            return round(waited, 1)


class Meter:
    """Wall time, CPU of the waited-for children, and CPU used meanwhile by everything else."""

    def __enter__(self) -> "Meter":
        self.busy0, self.steal0 = system_cpu()
        self.ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.monotonic() - self.t0
        busy1, steal1 = system_cpu()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        self.user = ru1.ru_utime - self.ru0.ru_utime
        self.sys = ru1.ru_stime - self.ru0.ru_stime
        mine = self.user + self.sys + (self1.ru_utime - self.self0.ru_utime) + (
            self1.ru_stime - self.self0.ru_stime)
        self.foreign = max(0.0, (busy1 - self.busy0) - mine)
        self.steal = steal1 - self.steal0

    def disturbed(self) -> bool:
        # /proc/stat ticks are 10 ms: allow two ticks of slack on short measurements.
        return self.foreign > max(0.02, DISTURBED_FRACTION * self.wall)


def measured(what: str, action):
    """Run action(meter) -> dict on a quiet machine; repeat it if others disturbed it."""
    best = None
    for attempt in range(1, RETRIES_N[0] + 1):
        waited = wait_quiet()
        load = os.getloadavg()[0]
        with Meter() as meter:
            result = action()
        result.update({"wall": round(meter.wall, 4), "user": round(meter.user, 3),
                       "sys": round(meter.sys, 3), "foreign_cpu": round(meter.foreign, 3),
                       "steal": round(meter.steal, 3), "waited_for_quiet": waited,
                       "attempts": attempt, "disturbed": meter.disturbed(),
                       "loadavg_1min": round(load, 2)})
        if best is None or result["foreign_cpu"] / meter.wall < best["foreign_cpu"] / best["wall"]:
            best = result
        if not result["disturbed"]:
            return result
        log(f"{what}: other processes used {meter.foreign:.2f} CPU s during the "
            f"{meter.wall:.2f} s measurement; repeating ({attempt}/{RETRIES_N[0]})")
    return best


def sign_once(signzone: str, pre: list[str], env: dict[str, str], zone: Path, keyset: dict,
              n: int, no_check: bool, out: Path) -> dict:
    cmd = [signzone, *pre, "-n", str(n)]
    if no_check:
        cmd.append("-P")
    cmd += ["-t", "-o", ORIGIN, "-f", str(out), "-k", keyset["ksk"]["stem"], str(zone),
            keyset["zsk"]["stem"]]
    def action() -> dict:
        out.unlink(missing_ok=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"signing failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-2000:]}")
        return {"stdout": proc.stdout}

    result = measured(out.name, action)
    stdout = result.pop("stdout")
    result["rrsigs"] = count_rrsigs(out)
    generated = re.search(r"Signatures generated:\s+(\d+)", stdout)
    result["signatures_generated"] = int(generated.group(1)) if generated else None
    result["rate"] = round(result["rrsigs"] / result["wall"], 1)
    result["cpu_rate"] = cpu_rate(result["rrsigs"], result)
    return result


def cpu_rate(count: int, result: dict) -> float:
    """Signatures per CPU-second (user + sys of the measured processes): on a shared machine the
    rate a CPU-bound process reaches with a core to itself, where wall time swings with others'
    load. At -n 2 it measures efficiency, not the speed-up from a second thread."""
    return round(count / max(result["user"] + result["sys"], 1e-3), 1)


def verify(out: Path) -> dict:
    start = time.monotonic()
    proc = subprocess.run([STOCK_VERIFY, "-o", ORIGIN, str(out)], env=clean_env(),
                          capture_output=True, text=True)
    return {"ok": proc.returncode == 0, "seconds": round(time.monotonic() - start, 2),
            "output": (proc.stdout + proc.stderr).strip()[-600:]}


def raw_rate(binary: Path, args: list[str], env: dict[str, str], processes: int = 1) -> dict:
    """Rate of one raw loop, or the summed rate of `processes` copies running at once."""
    def once() -> dict | None:
        procs = [subprocess.Popen([str(binary), *args], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(processes)]
        total, signatures, failed = 0.0, 0, None
        for proc in procs:
            out, err = proc.communicate()
            if proc.returncode != 0:
                failed = err
            else:
                line = json.loads(out.strip().splitlines()[-1])
                total += line["rate"]
                signatures += line["signatures"]
        if failed is None:
            return {"rate": round(total, 1), "signatures": signatures}
        # SoftHSM processes started at the same instant can miss the token or fail C_Login
        # (facts.md): run them again.
        log(f"raw loop {Path(binary).name} failed ({failed.strip()[-120:]}); running it again")
        last_error[0] = failed
        return None

    last_error = [""]

    def action() -> dict:
        for _ in range(3):
            result = once()
            if result is not None:
                return result
        raise SystemExit(f"raw loop failed three times: {binary} {' '.join(args)}\n{last_error[0]}")

    result = measured(f"raw loop {Path(binary).name} {' '.join(args[-3:])}", action)
    result["cpu_rate"] = cpu_rate(result["signatures"], result)
    return result


# ---------------------------------------------------------------------------------------------
# Machine description


def read_first(path: str, pattern: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            match = re.match(pattern, line)
            if match:
                return match.group(1).strip()
    except OSError:
        pass
    return "unknown"


def version_of(cmd: list[str], env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        return (proc.stdout + proc.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def malloc_of(tool: str, env: dict[str, str]) -> str:
    """'jemalloc' when the tool links libjemalloc (BIND's default and Debian's build; bindpkcs11's
    builds since `bind build` dropped --without-jemalloc), else 'glibc': it moves the CPU per
    RRSIG by several per cent, so every report says which one was measured."""
    path = shutil.which(tool, path=env.get("PATH")) or tool
    try:
        out = subprocess.run(["ldd", path], env=env, capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return "jemalloc" if "libjemalloc" in out else "glibc"


def machine(patched_env: dict, engine_prefix: Path | None, env920: dict | None = None,
            provider: dict | None = None, stock_tree: Path | None = None) -> dict:
    mem_kib = int(read_first("/proc/meminfo", r"MemTotal:\s+(\d+)") or 0)
    info = {
        "cpu": read_first("/proc/cpuinfo", r"model name\s*:\s*(.*)"),
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": read_first("/etc/os-release", r'PRETTY_NAME="?([^"]*)"?'),
        "debian_version": Path("/etc/debian_version").read_text().strip()
        if Path("/etc/debian_version").exists() else "unknown",
        "bind_patched": version_of(["dnssec-signzone", "-V"], clean_env(**patched_env)),
        "bind_patched_malloc": malloc_of("dnssec-signzone", clean_env(**patched_env)),
        "bind_stock": version_of([STOCK_SIGNZONE, "-V"], clean_env()),
        "softhsm": version_of(["softhsm2-util", "--version"]),
        "openssl": version_of(["openssl", "version"]),
        "libp11_engine": version_of(["dpkg-query", "-W", "-f", "${Version}", ENGINE_PACKAGE]),
    }
    if env920 and provider and stock_tree:
        info["bind_920_patched"] = version_of(["dnssec-signzone", "-V"], clean_env(**env920))
        info["bind_920_patched_malloc"] = malloc_of("dnssec-signzone", clean_env(**env920))
        info["bind_920_stock_malloc"] = malloc_of(str(stock_tree / "usr/bin/dnssec-signzone"),
                                                  provider)
        info["bind_920_stock"] = version_of([str(stock_tree / "usr/bin/dnssec-signzone"), "-V"],
                                            provider)
        from bindpkcs11.bind import backports
        unpacked = backports.installed_manifest(stock_tree.parent) or {"packages": {}}
        info["pkcs11_provider"] = unpacked["packages"].get("pkcs11-provider", "unknown")
    if engine_prefix:
        info["bind_engine_build"] = version_of([str(engine_prefix / "bin" / "dnssec-signzone"),
                                                "-V"], clean_env())
    return info


# ---------------------------------------------------------------------------------------------
# Reporting


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def paired(numerators: list[float], denominators: list[float]) -> list[float]:
    """Run-by-run ratios: run i of both sides ran in the same interleaved pass, minutes apart at
    most, so a pair shares the machine's load of that moment where medians taken apart do not."""
    return [round(a / b, 4) for a, b in zip(numerators, denominators) if a and b]


def ratio_rows(results: list[dict], raw: dict, raw_cpu: dict | None = None,
               raw_cpu_runs: dict | None = None) -> list[dict]:
    """Targets, each computed at one -n on both sides (and the raw rate at as many sessions),
    from wall-time rates and, where measured, from CPU-second rates: the CPU ratio is the median
    of the paired per-run ratios (with their min and max), or the ratio of the medians for a
    results JSON written before pairs were kept."""
    med = {(r["impl"], r["alg"], r["n"], r["P"]): r["median_rate"] for r in results}
    med_cpu = {(r["impl"], r["alg"], r["n"], r["P"]): r.get("median_cpu_rate") for r in results}
    runs_cpu = {(r["impl"], r["alg"], r["n"], r["P"]): [x.get("cpu_rate") for x in r["runs"]]
                for r in results}
    raw_cpu = raw_cpu or {}
    raw_cpu_runs = raw_cpu_runs or {}
    rows = []
    for no_check in (True, False):
        for n in (1, 2):
            specs = [
                ("ECDSA shim >= 0.95 x software key", "ECDSAP256SHA256", 0.95,
                 ("shim", n), ("soft", n)),
                ("RSA shim >= 0.9 x raw token rate", "RSASHA256", 0.9, ("shim", n), ("raw", n)),
                ("ECDSA shim >= 1.2 x engine route", "ECDSAP256SHA256", 1.2, ("shim", n),
                 ("engine", n)),
                ("RSA shim >= 1.2 x engine route", "RSASHA256", 1.2, ("shim", n), ("engine", n)),
            ]
            for alg in ALGORITHMS:
                short = SHORT[alg].split()[0]
                specs += [
                    (f"{short} 9.20 shim >= 1.0 x 9.20 provider", alg, 1.0, ("shim920", n),
                     ("provider920", n)),
                    *[(f"{short} {IMPL_SHORT[impl]} >= 0.95 x raw (session copy)", alg, 0.95,
                       (impl, n), ("raw-copy", n)) for impl in ("shim", "shim920", "provider920")],
                    *[(f"{short} {IMPL_SHORT[impl]} >= 0.95 x raw (token object)", alg, 0.95,
                       (impl, n), ("raw", n)) for impl in ("shim", "shim920", "provider920")],
                ]
            for name, alg, target, (a, an), (b, bn) in specs:
                num = med.get((a, alg, an, no_check))
                den = (raw.get((alg, "csign", bn)) if b == "raw"
                       else raw.get((alg, "csign-copy", bn)) if b == "raw-copy"
                       else med.get((b, alg, bn, no_check)))
                if num is None or den is None:
                    continue
                value = num / den
                cnum = med_cpu.get((a, alg, an, no_check))
                cden = (raw_cpu.get((alg, "csign", bn)) if b == "raw"
                        else raw_cpu.get((alg, "csign-copy", bn)) if b == "raw-copy"
                        else med_cpu.get((b, alg, bn, no_check)))
                cpu_ratio = round(cnum / cden, 3) if cnum and cden else None
                pairs = paired(runs_cpu.get((a, alg, an, no_check), []),
                               raw_cpu_runs.get((alg, "csign", bn), []) if b == "raw"
                               else raw_cpu_runs.get((alg, "csign-copy", bn), []) if b == "raw-copy"
                               else runs_cpu.get((b, alg, bn, no_check), []))
                if len(pairs) >= 2:
                    cpu_ratio = round(statistics.median(pairs), 3)
                rows.append({"target": name, "alg": alg, "n": n, "P": no_check,
                             "numerator": num, "denominator": den,
                             "cpu_numerator": cnum, "cpu_denominator": cden,
                             "cpu_ratio": cpu_ratio, "cpu_pairs": pairs,
                             "cpu_met": None if cpu_ratio is None else cpu_ratio >= target,
                             "denominator_what": (f"raw C_Sign, {bn} session(s)" if b == "raw"
                                                  else f"raw C_Sign, session copy, {bn} session(s)"
                                                  if b == "raw-copy" else f"{b} -n {bn}"),
                             "ratio": round(value, 3), "wanted": target, "met": value >= target})
    return rows


def markdown(report: dict) -> str:
    m, z = report["machine"], report["zone"]
    lines = [f"## Zone signing: dnssec-signzone throughput ({report['date']})", ""]
    lines += [
        "Produced by `bench/bench_signing.py " + report["argv"] + "` (see `bench/README.md`).",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, kernel "
        f"{m['kernel']}, {m['os']} (debian_version {m['debian_version']})",
        f"- BIND: patched `{m['bind_patched']}`"
        + (f" ({m['bind_patched_malloc']} malloc)" if "bind_patched_malloc" in m else "")
        + f"; stock `{m['bind_stock']}`"
        + (f"; engine build `{m['bind_engine_build']}`" if "bind_engine_build" in m else "")
        + (f"; patched 9.20 `{m['bind_920_patched']}`"
           + (f" ({m['bind_920_patched_malloc']} malloc)" if "bind_920_patched_malloc" in m
              else "")
           + f"; stock 9.20 `{m['bind_920_stock']}` with `{m['pkcs11_provider']}`"
           + (f" ({m['bind_920_stock_malloc']} malloc)" if "bind_920_stock_malloc" in m else "")
           if "bind_920_patched" in m else ""),
        f"- SoftHSM {m['softhsm']}, {m['openssl']}, libp11 engine {m['libp11_engine']}",
        f"- Zone `{z['origin']}.`: {z['total_records']} records = {z['a_records']} A + "
        f"{z['delegations']} delegations (2 NS + 2 glue A each) + 5 apex records (SOA, 2 NS, "
        f"2 A), plus the 2 DNSKEYs ($INCLUDEd from the .key files); NSEC. KSK+ZSK of the same "
        "algorithm; the ZSK signs every RRset, the KSK also signs the DNSKEY RRset.",
        f"- RRSIGs in every signed output: {', '.join(str(c) for c in report['rrsig_counts'])} "
        "(lines whose record type is RRSIG; equals dnssec-signzone's \"Signatures generated\").",
        f"- Rate = RRSIGs / wall time of the whole dnssec-signzone process (load, sign, write), "
        f"median of {report['runs']} interleaved runs. `-P` = no post-sign self-check "
        "(the primary figure); \"no\" = BIND's default self-check included. Each measurement "
        f"waits up to {report.get('quiet_wait', QUIET_WAIT):.0f} s for a quiet machine and is "
        f"repeated (up to {report.get('retries', RETRIES)} times in all) if other processes used "
        "more than 5 % of a core meanwhile.",
        "- Every configuration's output passed Debian's stock `/usr/bin/dnssec-verify`: "
        + ("yes" if all(r["verify"]["ok"] for r in report["results"]) else "**NO (see JSON)**")
        + ".",
        f"- Raw JSON: `{report['json_path']}`",
        "",
        "### Rates",
        "",
        "| route | algorithm | -n | -P | median RRSIG/s | median wall s | runs RRSIG/s | "
        "CPU user+sys s | median RRSIG per CPU s |",
        "|---|---|---|---|---:|---:|---|---:|---:|",
    ]
    order = {"shim": 0, "shim920": 1, "provider920": 2, "soft": 3, "soft920": 4, "engine": 5,
             "stock": 6}
    rank = len(order)  # routes of an older results JSON (e.g. the retired shim920je) go last
    for r in sorted(report["results"], key=lambda r: (r["alg"] != "ECDSAP256SHA256", not r["P"],
                                                      order.get(r["impl"], rank), r["n"])):
        cpu = statistics.median(x["user"] + x["sys"] for x in r["runs"])
        runs_text = ", ".join(f"{x['rate']:,.0f}" for x in r["runs"])
        lines.append(
            f"| {r['route']} | {SHORT[r['alg']]} | {r['n']} | "
            f"{'yes' if r['P'] else 'no'} | **{r['median_rate']:,.0f}** | "
            f"{statistics.median(x['wall'] for x in r['runs']):.2f} | "
            f"{runs_text} | {cpu:.2f} | {num(r.get('median_cpu_rate'))} |")
    lines += ["", "Raw signing loops (no BIND; sig/s, median of runs):", "",
              "| loop | algorithm | sessions/threads | median sig/s | runs | median sig per CPU s |",
              "|---|---|---|---:|---|---:|"]
    for item in report["raw"]:
        what = {"csign": "(b) bare C_SignInit+C_Sign, threads in one process (bench/raw_csign.c)",
                "csign-2proc": "bare C_SignInit+C_Sign, two processes at once (sum)",
                "csign-copy": "bare C_SignInit+C_Sign on a session copy of the key (raw_csign.c copy)",
                "bp11": "bp11_sign() of the shim, threads in one process (bench/raw_bp11.c)",
                }[item["kind"]]
        lines.append(f"| {what} | {SHORT[item['alg']]} | {item['sessions']} | "
                     f"**{item['median']:,.0f}** | {', '.join(format(x, ',.0f') for x in item['runs'])} | "
                     f"{num(item.get('median_cpu'))} |")
    lines += ["", "### Ratios against the targets", "",
              "Each ratio compares like with like: the same `-n` on both sides, and the raw rate "
              "with as many sessions as signing threads (`-n 1` = one session). The `-n 1`, `-P` "
              "rows are the primary verdict. Wall ratios (of the medians) rank routes only on a "
              "quiet machine; CPU ratios (RRSIGs per CPU-second on both sides) hold under load but "
              "at `-n 2` compare efficiency, not the speed-up of the second thread. The CPU ratio "
              "is the median of the paired per-run ratios (run i of both sides in the same "
              "interleaved pass); min-max is their spread.", "",
              "| target | -n | -P | route RRSIG/s | vs | ratio (wall) | verdict (wall) | "
              "ratio (CPU) | CPU pairs min-max (n) | verdict (CPU) | wanted |",
              "|---|---|---|---:|---|---:|---|---:|---|---|---:|"]
    for row in report["ratios"]:
        lines.append(
            f"| {row['target']} | {row['n']} | {'yes' if row['P'] else 'no'} | "
            f"{row['numerator']:,.0f} | {row['denominator_what']}: {row['denominator']:,.0f} | "
            f"{row['ratio']:.3f} | {'met' if row['met'] else '**not met**'} | "
            f"{'-' if row.get('cpu_ratio') is None else format(row['cpu_ratio'], '.3f')} | "
            f"{spread(row.get('cpu_pairs') or [])} | "
            f"{'-' if row.get('cpu_met') is None else 'met' if row['cpu_met'] else '**not met**'} | "
            f"{row['wanted']} |")
    lines += ["", "### Notes (automatic)", ""]
    lines += [f"- {note}" for note in report["notes"]]
    lines += [""]
    return "\n".join(lines) + "\n"


def spread(pairs: list[float]) -> str:
    """'min-max (n)' of paired ratios; '-' with fewer than two pairs."""
    return "-" if len(pairs) < 2 else f"{min(pairs):.3f}-{max(pairs):.3f} ({len(pairs)})"


def num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def auto_notes(report: dict) -> list[str]:
    notes = []
    med = {(r["impl"], r["alg"], r["n"], r["P"]): r for r in report["results"]}
    raw_cpu = {(i["alg"], i["kind"], i["sessions"]): i.get("median_cpu") for i in report["raw"]}
    for alg in ALGORITHMS:
        # CPU per RRSIG at -n 1 (one thread signs): the token's share is the raw loop's CPU per
        # signature on a session copy, what every token route here signs with.
        token = raw_cpu.get((alg, "csign-copy", 1))
        for impl, soft in (("shim", "soft"), ("shim920", "soft920"), ("provider920", "soft920")):
            route, floor = med.get((impl, alg, 1, True)), med.get((soft, alg, 1, True))
            if not (route and floor and token and route.get("median_cpu_rate")
                    and floor.get("median_cpu_rate")):
                continue
            t_route, t_soft, t_tok = (1e6 / route["median_cpu_rate"],
                                      1e6 / floor["median_cpu_rate"], 1e6 / token)
            notes.append(f"{SHORT[alg]}, -n 1, -P, CPU per RRSIG: {IMPL_SHORT[impl]} "
                         f"{t_route:.1f} us = token C_Sign on the session copy {t_tok:.1f} us + "
                         f"{t_route - t_tok:.1f} us of BIND and the signing path; the same BIND "
                         f"with software keys {t_soft:.1f} us in all")
    for alg in ALGORITHMS:
        for impl in ("shim", "soft", "engine", "shim920", "soft920", "provider920"):
            one, two = med.get((impl, alg, 1, True)), med.get((impl, alg, 2, True))
            if one and two:
                notes.append(f"{impl} {SHORT[alg]} with -P: -n 2 / -n 1 = "
                             f"{two['median_rate'] / one['median_rate']:.2f}")
        for impl in ("shim", "soft"):
            p, nop = med.get((impl, alg, 1, True)), med.get((impl, alg, 1, False))
            if p and nop:
                notes.append(f"{impl} {SHORT[alg]} -n 1: the self-check (no -P) costs "
                             f"{100 * (1 - nop['median_rate'] / p['median_rate']):.0f}% of the rate")
    runs = [x for r in report["results"] for x in r["runs"]]
    runs += [x for i in report["raw"] for x in i["measurements"]]
    repeated = sum(x["attempts"] - 1 for x in runs)
    kept = sum(1 for x in runs if x["disturbed"])
    waited = sum(x["waited_for_quiet"] for x in runs)
    loads = [x["loadavg_1min"] for x in runs if "loadavg_1min" in x]
    if loads:
        notes.append(f"Load average (1 min) at the start of each measurement: median "
                     f"{statistics.median(loads):.2f}, min {min(loads):.2f}, max {max(loads):.2f} "
                     f"on {os.cpu_count()} cores.")
    notes.append(f"Shared-machine guard: {len(runs)} measurements, {repeated} repeated because "
                 f"other processes used CPU meanwhile, {kept} kept although still disturbed "
                 f"(flagged in the JSON), {waited:.0f} s spent waiting for a quiet machine; "
                 f"hypervisor steal over all measurements {sum(x['steal'] for x in runs):.2f} s.")
    if report.get("engine_package_installed"):
        notes.append(f"{ENGINE_PACKAGE} was installed by this run (apt-get).")
    if report.get("skip_engine"):
        notes.append("The engine route was skipped (--skip-engine).")
    if report.get("engine_build"):
        notes.append("Engine route: upstream 9.18.49 orig tarball, unpatched, CFLAGS "
                     f"'{ENGINE_CFLAGS}', same configure flags as `bindpkcs11 bind build`, only the "
                     "dnssec tools, cached in .cache/engine-bind (bench/enginebuild.py, the build the "
                     "tests use too); the libp11 engine is configured through an openssl.cnf "
                     "passed as OPENSSL_CONF to those processes only, on the very same token objects "
                     "the shim uses.")
    return notes


def write_doc(section: str) -> None:
    replace_section(SECTION, section)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000, help="A records (default 20000)")
    parser.add_argument("--delegations", type=int, default=200,
                        help="delegations with NS+glue (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per configuration")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bindpkcs11-bench"),
                        help="work dir (state, builds, keys, zones; default /tmp/bindpkcs11-bench)")
    parser.add_argument("--skip-engine", action="store_true",
                        help="skip the engine route (c): no upstream rebuild, no libp11")
    parser.add_argument("--skip-920", action="store_true",
                        help="skip the BIND 9.20 routes (patched 9.20 + shim, software keys on "
                             "9.20, stock 9.20 + pkcs11-provider)")
    parser.add_argument("--skip-stock", action="store_true",
                        help="skip the Debian stock dnssec-signzone reference rows")
    parser.add_argument("--check", choices=("all", "shim", "none"), default="all",
                        help="which routes to also time WITHOUT -P (default all)")
    parser.add_argument("--quiet-wait", type=float, default=QUIET_WAIT,
                        help="longest wait for a quiet machine before each measurement "
                             f"(default {QUIET_WAIT:.0f} s; on a machine that is never quiet, less)")
    parser.add_argument("--retries", type=int, default=RETRIES,
                        help=f"measurements per configuration and run when others disturb it "
                             f"(default {RETRIES}; 1 on a machine that is never quiet)")
    parser.add_argument("--raw-seconds", type=float, default=3.0,
                        help="duration of each raw signing loop")
    parser.add_argument("--no-install", action="store_true",
                        help=f"never apt-get install {ENGINE_PACKAGE}")
    parser.add_argument("--no-doc", action="store_true",
                        help="do not touch docs/benchmarks.md (JSON only)")
    parser.add_argument("--routes", metavar="LIST",
                        help="comma-separated subset to run (default all): signing routes "
                        f"{','.join(IMPL_TEXT)} and raw loops {','.join(RAW_KINDS)}; e.g. "
                        "shim,shim920,soft920,provider920,csign-copy for the issue-11 pairs")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: rewrite the docs section from an earlier results JSON")
    args = parser.parse_args()
    selected = None if args.routes is None else set(filter(None, args.routes.split(",")))
    unknown = sorted((selected or set()) - set(IMPL_TEXT) - set(RAW_KINDS))
    if unknown:
        parser.error(f"unknown route(s) {', '.join(unknown)}; choose from "
                     f"{', '.join([*IMPL_TEXT, *RAW_KINDS])}")

    def wanted(name: str) -> bool:
        return selected is None or name in selected
    QUIET_WAIT_S[0] = args.quiet_wait
    RETRIES_N[0] = max(1, args.retries)

    if args.render:
        report = json.loads(args.render.read_text())
        section = markdown(report)
        if not args.no_doc:
            write_doc(section)
            log(f"wrote {DOC} from {args.render}")
        print(section)
        return 0

    sys.path.insert(0, str(REPO))
    from bindpkcs11.bind.build import CONFIGURE_FLAGS as FLAGS_BY_SERIES
    CONFIGURE_FLAGS = FLAGS_BY_SERIES["9.18"]

    work = args.work.resolve()
    state = work / "state"
    keys = work / "keys"
    out_dir = work / "signed"
    json_path = work.parent / f"{work.name}-results.json"
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o700)
    state.mkdir(exist_ok=True)
    cache = state / "cache"
    prebuilt_cache = Path("/tmp/bstate/cache")
    if not cache.exists() and prebuilt_cache.is_dir():
        log(f"seeding the source cache from {prebuilt_cache}")
        shutil.copytree(prebuilt_cache, cache)

    # Fresh token and keys each run; builds and the source cache are kept.
    for stale in (state / "softhsm", state / "pins", keys, out_dir):
        shutil.rmtree(stale, ignore_errors=True)
    out_dir.mkdir()

    patched_env = patched_bind(state)
    bind_lib = Path(patched_env["LD_LIBRARY_PATH"])  # <state>/bind/lib, or $BINDPKCS11_BIND_DIR's

    log(f"token '{TOKEN}' and keys")
    cli(state, "token", "init", "--label", TOKEN, "--generate-pins")
    pin_file = state / "pins" / f"{TOKEN}.pin"
    keysets = make_keys(state, keys)

    shim_env = clean_env(**patched_env, PKCS11_LIBRARY_PIN_FILE=str(pin_file))
    soft_env = clean_env(**patched_env)
    binaries = compile_c(work, bind_lib)

    engine_prefix = None
    engine_env = None
    engine_installed = False
    if not args.skip_engine and wanted("engine"):
        engine_so, engine_installed = engine_module(not args.no_install)
        build_cache = bind_lib.parent.parent / "cache"  # where `bind build` keeps its tarballs
        # The very build the tests use (bench/enginebuild.py, cached in <repo>/.cache/engine-bind).
        engine_prefix = enginebuild.ensure_engine_bind(ENGINE_STATE, build_cache, log)
        cnf = enginebuild.engine_config(work / "engine-openssl.cnf", SOFTHSM_MODULE,
                                        pin_file.read_text().strip(), Path(engine_so))
        engine_env = clean_env(OPENSSL_CONF=str(cnf), SOFTHSM2_CONF=patched_env["SOFTHSM2_CONF"])
        keysets.update(make_engine_keys(engine_prefix, keys, keysets, engine_env))

    env920 = provider = None
    if not args.skip_920 and any(map(wanted, ("shim920", "soft920", "provider920"))):
        env920 = patched_bind_920(state)
        stock_tree = stock_920(work)
        provider = provider_env(work, stock_tree, pin_file, patched_env["SOFTHSM2_CONF"])
        keysets.update(make_provider_keys(stock_tree, keys, keysets, provider))

    zone = work / "zone.db"
    zone_info = write_zone(zone, args.records, args.delegations)
    log(f"zone: {zone_info['total_records']} records ({args.records} A, {args.delegations} "
        "delegations)")

    routes = {"shim": ("dnssec-signzone", [], shim_env),
              "soft": ("dnssec-signzone", [], soft_env)}
    if engine_env:
        routes["engine"] = (str(engine_prefix / "bin" / "dnssec-signzone"), ["-E", "pkcs11"],
                            engine_env)
    if not args.skip_stock and wanted("stock"):
        routes["stock"] = (STOCK_SIGNZONE, [], clean_env())
    # Patched tools are found through PATH from `bind env`.
    routes["shim"] = (shutil.which("dnssec-signzone", path=shim_env["PATH"]), [], shim_env)
    routes["soft"] = (routes["shim"][0], [], soft_env)
    if env920:
        shim920_env = clean_env(**env920, PKCS11_LIBRARY_PIN_FILE=str(pin_file))
        signzone920 = shutil.which("dnssec-signzone", path=env920["PATH"])
        routes["shim920"] = (signzone920, [], shim920_env)
        routes["soft920"] = (signzone920, [], clean_env(**env920))
        routes["provider920"] = (str(stock_tree / "usr" / "bin" / "dnssec-signzone"), [], provider)
    routes = {impl: route for impl, route in routes.items() if wanted(impl)}
    KEYSET_OF = {"stock": "soft", "soft920": "soft", "shim920": "shim"}

    configs = []
    for alg in ALGORITHMS:
        for impl in routes:
            keyset = keysets[(KEYSET_OF.get(impl, impl), alg)]
            for no_check in (True, False):
                if not no_check and not (args.check == "all" or
                                         (args.check == "shim" and impl == "shim")):
                    continue
                for n in (1, 2):
                    configs.append({"impl": impl, "alg": alg, "n": n, "P": no_check,
                                    "keyset": keyset, "runs": [],
                                    "zone": zone_with_keys(work, zone, f"{impl}-{alg}", keyset)})

    raw_items = []
    for alg in ALGORITHMS:
        zsk = keysets[("shim", alg)]["zsk"]
        raw_items.append({"kind": "csign-2proc", "alg": alg, "sessions": 2, "runs": [],
                          "measurements": [], "processes": 2,
                          "cmd": [binaries["raw_csign"], SOFTHSM_MODULE, TOKEN, zsk["object"],
                                  RAW_KIND[alg], str(args.raw_seconds), "1"]})
        for sessions in (1, 2):
            raw_items.append({"kind": "csign", "alg": alg, "sessions": sessions, "runs": [],
                              "measurements": [],
                              "cmd": [binaries["raw_csign"], SOFTHSM_MODULE, TOKEN, zsk["object"],
                                      RAW_KIND[alg], str(args.raw_seconds), str(sessions)]})
            raw_items.append({"kind": "csign-copy", "alg": alg, "sessions": sessions, "runs": [],
                              "measurements": [],
                              "cmd": [binaries["raw_csign"], SOFTHSM_MODULE, TOKEN, zsk["object"],
                                      RAW_KIND[alg], str(args.raw_seconds), str(sessions), "copy"]})
            raw_items.append({"kind": "bp11", "alg": alg, "sessions": sessions, "runs": [],
                              "measurements": [],
                              "cmd": [binaries["raw_bp11"], zsk["uri"], RAW_KIND[alg],
                                      str(args.raw_seconds), str(sessions)]})

    raw_items = [item for item in raw_items if wanted(item["kind"])]
    log(f"{len(configs)} signing configurations x {args.runs} runs, {len(raw_items)} raw loops")
    for run_index in range(args.runs):
        for item in raw_items:
            item["measurements"].append(raw_rate(item["cmd"][0], item["cmd"][1:], shim_env,
                                                 item.get("processes", 1)))
            item["runs"].append(item["measurements"][-1]["rate"])
        for cfg in configs:
            signzone, pre, env = routes[cfg["impl"]]
            out = out_dir / f"{cfg['impl']}-{cfg['alg']}-n{cfg['n']}-{'P' if cfg['P'] else 'check'}.db"
            result = sign_once(signzone, pre, env, cfg["zone"], cfg["keyset"], cfg["n"], cfg["P"], out)
            cfg["runs"].append(result)
            log(f"run {run_index + 1}: {cfg['impl']:6} {SHORT[cfg['alg']]:11} -n {cfg['n']} "
                f"{'-P' if cfg['P'] else '  '} {result['rrsigs']} RRSIGs in {result['wall']:.2f} s"
                f" = {result['rate']:,.0f}/s")
            if run_index == 0:
                cfg["verify"] = verify(out)
                if not cfg["verify"]["ok"]:
                    log(f"dnssec-verify FAILED for {out}: {cfg['verify']['output']}")

    results = []
    for cfg in configs:
        results.append({
            "impl": cfg["impl"], "route": IMPL_TEXT[cfg["impl"]], "alg": cfg["alg"], "n": cfg["n"],
            "P": cfg["P"], "runs": cfg["runs"],
            "median_rate": median([r["rate"] for r in cfg["runs"]]),
            "median_cpu_rate": median([r["cpu_rate"] for r in cfg["runs"]]),
            "rrsigs": cfg["runs"][0]["rrsigs"], "verify": cfg["verify"],
            "keys": {role: {"tag": k["tag"], "file": Path(k["stem"]).name, "uri": k.get("uri")}
                     for role, k in cfg["keyset"].items()},
        })
    raw_out = [{"kind": i["kind"], "alg": i["alg"], "sessions": i["sessions"],
                "runs": i["runs"], "median": median(i["runs"]),
                "median_cpu": median([m["cpu_rate"] for m in i["measurements"]]),
                "measurements": i["measurements"],
                "command": " ".join(map(str, i["cmd"]))} for i in raw_items]
    raw_med = {(i["alg"], i["kind"], i["sessions"]): i["median"] for i in raw_out}
    raw_cpu = {(i["alg"], i["kind"], i["sessions"]): i["median_cpu"] for i in raw_out}

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "argv": " ".join(sys.argv[1:]) or "(defaults)",
        "runs": args.runs,
        "quiet_wait": args.quiet_wait,
        "retries": RETRIES_N[0],
        "work_dir": str(work),
        "json_path": str(json_path),
        "machine": machine(patched_env, engine_prefix, env920, provider,
                           stock_tree if env920 else None),
        "zone": zone_info,
        "rrsig_counts": sorted({r["rrsigs"] for r in results}),
        "results": results,
        "raw": raw_out,
        "skip_engine": args.skip_engine,
        "engine_package_installed": engine_installed,
        "engine_build": {"prefix": str(engine_prefix), "cflags": ENGINE_CFLAGS,
                         "configure_flags": list(CONFIGURE_FLAGS),
                         "targets": list(enginebuild.TARGETS)} if engine_prefix else None,
    }
    raw_cpu_runs = {(i["alg"], i["kind"], i["sessions"]): [m["cpu_rate"] for m in i["measurements"]]
                    for i in raw_out}
    report["ratios"] = ratio_rows(results, raw_med, raw_cpu, raw_cpu_runs)
    report["notes"] = auto_notes(report)
    mismatched = [r for r in results for x in r["runs"]
                  if x["signatures_generated"] not in (None, x["rrsigs"])]
    if mismatched:
        report["notes"].append("RRSIG line count differs from 'Signatures generated' in "
                               f"{len(mismatched)} runs (see JSON).")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    section = markdown(report)
    if not args.no_doc:
        write_doc(section)
        log(f"wrote {DOC}")
    log(f"wrote {json_path}")
    print(section)
    return 0 if all(r["verify"]["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
