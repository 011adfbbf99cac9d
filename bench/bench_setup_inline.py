#!/usr/bin/env python3
"""Time from `bindpkcs11 setup-inline` start to the first validated answer, BIND already built.

Each run uses a fresh state dir (token created, KSK and ZSK generated on it, named started, the
zone's answers validated by setup-inline itself), and is timed twice: the wall clock of the whole
CLI process, and setup-inline's own figure (start of the command to the validated answer).
A second, idempotent run on the same state dir is timed as well. Results go to
docs/benchmarks.md (section `setup-inline`) and to a JSON file in the work dir.

    .venv/bin/python bench/bench_setup_inline.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdoc import replace_section

REPO = Path(__file__).resolve().parent.parent
BINDPKCS11 = [sys.executable, "-m", "bindpkcs11"]
SECTION = "setup-inline"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(state: Path, env: dict, *args: str) -> dict:
    result = subprocess.run([*BINDPKCS11, "--state-dir", str(state), *args, "--json"],
                            capture_output=True, text=True, env=env, cwd=REPO, check=True)
    return json.loads(result.stdout)


def one_round(base: Path, env: dict, algorithm: str) -> dict:
    state = base / f"state-{algorithm}-{time.monotonic_ns()}"
    port, rndc_port = str(free_port()), str(free_port())
    args = ("setup-inline", "example.test", "--algorithm", algorithm, "--port", port,
            "--rndc-port", rndc_port)
    started = time.monotonic()
    first = run(state, env, *args)
    wall = time.monotonic() - started
    started = time.monotonic()
    second = run(state, env, *args)
    again = time.monotonic() - started
    run(state, env, "named", "stop", "example.test")
    assert not second["changed"]
    return {"wall": wall, "internal": first["seconds"], "idempotent_wall": again}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    debian = Path("/etc/debian_version").read_text().strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory, "kernel": platform.release(),
            "debian": debian, "load": os.getloadavg()[0]}


def write_section(results: dict, info: dict, runs: int) -> None:
    lines = ["## setup-inline: time to the first validated answer", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {info['cpu']}, "
             f"{info['cores']} cores, {info['memory_gib']} GiB, kernel {info['kernel']}, Debian "
             f"{info['debian']} (load average {info['load']:.2f} at start), SoftHSM2 token, BIND "
             f"already built, sample zone, median of {runs} runs (`bench/bench_setup_inline.py`).",
             "", "| algorithm | whole command (wall) | setup-inline's own figure | second run (no change) |",
             "|---|---|---|---|"]
    for algorithm, rows in results.items():
        median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        lines.append(f"| {algorithm} | {median['wall']:.2f} s | {median['internal']:.2f} s | "
                     f"{median['idempotent_wall']:.2f} s |")
    lines += ["", "The whole command includes creating the token (softhsm2-util), generating the KSK "
              "and ZSK on it, rendering and checking the configuration, starting named as `bind` and "
              "validating SOA, DNSKEY, NS and an NXDOMAIN proof with dnspython. Target: 10 s."]
    replace_section(SECTION, "\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--algorithms", nargs="+", default=["ECDSAP256SHA256", "RSASHA256"])
    parser.add_argument("--bind-dir", type=Path, default=REPO / ".cache" / "bind-state" / "bind",
                        help="a patched BIND built by `bindpkcs11 bind build`")
    args = parser.parse_args()
    info = machine()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKCS11_")}
    env.update({"BINDPKCS11_BIND_DIR": str(args.bind_dir), "PYTHONPATH": str(REPO)})
    subprocess.run([*BINDPKCS11, "--state-dir", str(args.bind_dir.parent), "bind", "build"],
                   env={**env, "BINDPKCS11_BIND_DIR": str(args.bind_dir)}, check=True, cwd=REPO)
    base = Path(tempfile.mkdtemp(prefix="bench-inline-"))
    base.chmod(0o711)  # named runs as bind when root: it must be able to enter the state dir
    try:
        results = {a: [one_round(base, env, a) for _ in range(args.runs)] for a in args.algorithms}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "setup_inline.json").write_text(
        json.dumps({"machine": info, "results": results}, indent=2))
    write_section(results, info, args.runs)
    print(json.dumps({a: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
                      for a, rows in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
