#!/usr/bin/env python3
"""Where the CPU of one RRSIG goes, per signing route: instruction counts under callgrind.

Run after bench/bench_signing.py has set up its work dir (token, keys, builds, the unpacked
stock 9.20), with the project's venv python:

    .venv/bin/python bench/profile_signing.py --work /tmp/bindpkcs11-bench

Why instruction counts: the machine this project benchmarks on is shared, so wall time and even
CPU time swing with other processes' load; the number of instructions a process executes does
not. callgrind counts them per function and per shared object (it does not replace malloc, so
glibc's and jemalloc's costs are counted as they are).

Why two zone sizes: the whole-process count includes start-up, zone loading, key loading and
writing the output. Signing the same zone shape with R and 2R records and dividing the
difference by the difference in RRSIGs leaves the marginal cost of one RRSIG (each RRset adds
one RRSIG and the work of hashing, signing and writing it), free of the fixed costs.

Output: a Markdown table (instructions per RRSIG, by shared object group) on stdout and
<work>/profile-results.json. Routes: patched 9.18 + shim, patched 9.20 + shim, stock 9.20 +
pkcs11-provider, patched 9.20 with software keys (BIND's own floor), and the raw C_Sign loop on
a session copy of the key (the token's floor) for comparison.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import bench_signing as bs

# Shared objects grouped by who owns the work.
GROUPS = (
    ("SoftHSM (libsofthsm2 + libstdc++)", re.compile(r"libsofthsm2|libstdc\+\+")),
    ("libcrypto", re.compile(r"libcrypto")),
    ("libbp11 (the shim)", re.compile(r"libbp11")),
    ("pkcs11-provider", re.compile(r"ossl-modules/pkcs11|/pkcs11\.so")),
    ("BIND (libdns, libisc, dnssec-signzone)", re.compile(r"libdns|libisc|dnssec-signzone|libns")),
    ("malloc (jemalloc)", re.compile(r"jemalloc")),
    ("libc", re.compile(r"libc\.so|libc-")),
)
ROUTES = ("shim", "shim920", "provider920", "soft920")
ANNOTATE_LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)\s+\[(.+)\]\s*$")


def callgrind(cmd: list[str], env: dict[str, str], out: Path) -> dict[str, int]:
    """Run cmd under callgrind; self instructions per shared object."""
    out.unlink(missing_ok=True)
    bs.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--separate-threads=no",
            *cmd], env=env)
    text = bs.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out)])
    per_object: dict[str, int] = {}
    for line in text.splitlines():
        match = ANNOTATE_LINE.match(line)
        if match:
            obj = match.group(3)
            per_object[obj] = per_object.get(obj, 0) + int(match.group(1).replace(",", ""))
    return per_object


def grouped(per_object: dict[str, int]) -> dict[str, int]:
    out = {name: 0 for name, _ in GROUPS}
    out["other"] = 0
    for obj, count in per_object.items():
        name = next((n for n, rx in GROUPS if rx.search(obj)), "other")
        out[name] += count
    return out


def routes_of(work: Path) -> tuple[dict, dict]:
    """The routes and key sets of a bench_signing work dir (nothing rebuilt or regenerated)."""
    state, keys = work / "state", work / "keys"
    pin_file = state / "pins" / f"{bs.TOKEN}.pin"
    patched = json.loads(bs.cli(state, "--json", "bind", "env"))["variables"]
    env920 = json.loads(bs.cli(state, "--json", "bind", "env", "--version", "9.20"))["variables"]
    tree = work / "stock920" / "tree"
    provider = bs.provider_env(work, tree, pin_file, patched["SOFTHSM2_CONF"])
    shim_env = bs.clean_env(**patched, PKCS11_LIBRARY_PIN_FILE=str(pin_file))
    routes = {
        "shim": (shutil.which("dnssec-signzone", path=patched["PATH"]), shim_env),
        "shim920": (shutil.which("dnssec-signzone", path=env920["PATH"]),
                    bs.clean_env(**env920, PKCS11_LIBRARY_PIN_FILE=str(pin_file))),
        "provider920": (str(tree / "usr" / "bin" / "dnssec-signzone"), provider),
        "soft920": (shutil.which("dnssec-signzone", path=env920["PATH"]), bs.clean_env(**env920)),
    }
    keysets = {}
    for alg in bs.ALGORITHMS:
        for kind in ("shim", "soft", "provider920"):
            kdir = keys / f"{kind}-{alg}"
            stems = sorted(p.with_suffix("") for p in kdir.glob("K*.private"))
            entry = {}
            for stem in stems:
                role = "ksk" if " 257 " in Path(f"{stem}.key").read_text() else "zsk"
                entry[role] = {"stem": str(stem)}
            keysets[(kind, alg)] = entry
    return routes, {"keysets": keysets, "shim_env": shim_env}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bindpkcs11-bench"),
                        help="bench_signing.py's work dir (default /tmp/bindpkcs11-bench)")
    parser.add_argument("--records", type=int, default=300,
                        help="A records of the smaller zone; the larger has twice as many")
    parser.add_argument("--routes", default=",".join(ROUTES),
                        help="comma-separated routes")
    parser.add_argument("--algorithms", default=",".join(bs.ALGORITHMS))
    args = parser.parse_args()
    work = args.work.resolve()
    routes, extra = routes_of(work)
    prof = work / "profile"
    prof.mkdir(exist_ok=True)
    sizes = (args.records, 2 * args.records)
    zones = {}
    for size in sizes:
        zones[size] = prof / f"zone-{size}.db"
        bs.write_zone(zones[size], size, size // 50)
    keyset_of = {"shim920": "shim", "soft920": "soft"}
    results = []
    for alg in args.algorithms.split(","):
        for route in args.routes.split(","):
            signzone, env = routes[route]
            keyset = extra["keysets"][(keyset_of.get(route, route), alg)]
            counts, rrsigs = [], []
            for size in sizes:
                zone = bs.zone_with_keys(prof, zones[size], f"{route}-{alg}-{size}", keyset)
                signed = prof / f"signed-{route}-{alg}-{size}.db"
                cmd = [signzone, "-n", "1", "-P", "-t", "-o", bs.ORIGIN, "-f", str(signed),
                       "-k", keyset["ksk"]["stem"], str(zone), keyset["zsk"]["stem"]]
                bs.log(f"callgrind {route} {alg} {size} A records")
                counts.append(grouped(callgrind(cmd, env, prof / f"cg-{route}-{alg}-{size}.out")))
                rrsigs.append(bs.count_rrsigs(signed))
            delta = rrsigs[1] - rrsigs[0]
            per = {k: (counts[1][k] - counts[0][k]) / delta for k in counts[0]}
            results.append({"route": route, "alg": alg, "rrsigs": rrsigs,
                            "per_rrsig": {k: round(v) for k, v in per.items()},
                            "total_per_rrsig": round(sum(per.values())), "counts": counts})
            bs.log(f"{route} {alg}: {sum(per.values()):,.0f} instructions per RRSIG")
    raw = raw_profiles(work, extra, prof, args.algorithms.split(","))
    (work / "profile-results.json").write_text(
        json.dumps({"results": results, "raw": raw}, indent=2) + "\n")
    print(table(results, raw))
    return 0


def raw_profiles(work: Path, extra: dict, prof: Path, algs: list[str]) -> list[dict]:
    """The raw C_Sign loop on a session copy, under callgrind: the token's own instructions per
    signature (2 s and 4 s loops differenced, like the zones)."""
    out = []
    for alg in algs:
        label = bs.private_label(Path(extra["keysets"][("shim", alg)]["zsk"]["stem"] + ".private"))
        object_label = re.search(r"object=([^;?]+)", label).group(1)
        counts, sigs = [], []
        for seconds in ("2", "4"):
            cg = prof / f"cg-raw-{alg}-{seconds}.out"
            cg.unlink(missing_ok=True)
            text = bs.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}",
                           str(work / "raw_csign"), bs.SOFTHSM_MODULE, bs.TOKEN, object_label,
                           bs.RAW_KIND[alg], seconds, "1", "copy"], env=extra["shim_env"])
            sigs.append(json.loads(text.strip().splitlines()[-1])["signatures"])
            annotated = bs.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", str(cg)])
            per_object: dict[str, int] = {}
            for line in annotated.splitlines():
                match = ANNOTATE_LINE.match(line)
                if match:
                    per_object[match.group(3)] = per_object.get(match.group(3), 0) + int(
                        match.group(1).replace(",", ""))
            counts.append(grouped(per_object))
        delta = sigs[1] - sigs[0]
        per = {k: (counts[1][k] - counts[0][k]) / delta for k in counts[0]}
        out.append({"route": "raw-copy", "alg": alg, "signatures": sigs,
                    "per_rrsig": {k: round(v) for k, v in per.items()},
                    "total_per_rrsig": round(sum(per.values()))})
    return out


def table(results: list[dict], raw: list[dict]) -> str:
    names = [n for n, _ in GROUPS] + ["other"]
    lines = ["| route | algorithm | instructions per RRSIG | " + " | ".join(names) + " |",
             "|---|---|---:|" + "---:|" * len(names)]
    for r in [*results, *raw]:
        lines.append(f"| {r['route']} | {bs.SHORT[r['alg']]} | {r['total_per_rrsig']:,} | "
                     + " | ".join(f"{r['per_rrsig'][n]:,}" for n in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
