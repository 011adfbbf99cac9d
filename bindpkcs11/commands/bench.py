"""`bindpkcs11 bench --token L`: the token's signing rate through the shim (see bench.py)."""

from __future__ import annotations


from bindpkcs11 import bench
from bindpkcs11.commands.common import DEFAULT_TOKEN, access, progress_printer
from bindpkcs11.dnssec import algorithms
from bindpkcs11.output import print_json, print_table


def register(commands, common) -> None:
    parser = commands.add_parser(
        "bench", parents=[common],
        help="signatures per second of a token through the shim, per session count")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help=f"token label (default {DEFAULT_TOKEN})")
    parser.add_argument("--algorithm", default="ECDSAP256SHA256")
    parser.add_argument("--bits", type=int, help="RSA modulus size (default 2048)")
    parser.add_argument("--sessions", default="1,2,4", help="session counts (default 1,2,4)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per session count (default 3)")
    parser.set_defaults(handler=_bench)


def _bench(args) -> int:
    algorithm = algorithms.lookup(args.algorithm).with_bits(args.bits)
    sessions = bench.parse_sessions(args.sessions)
    progress = progress_printer(args, "bench")
    result = bench.run_bench(access(args, args.token), algorithm, sessions, args.seconds, progress)
    if args.json:
        print_json(result)
        return 0
    print(f"token '{result.token}' ({result.profile}), {result.algorithm}; key generated in "
          f"{result.keygen_seconds:.2f} s")
    print_table(["sessions", "signatures", "seconds", "signatures/s"],
                [[r.sessions, r.signatures, f"{r.seconds:.2f}", f"{r.per_second:,.0f}"]
                 for r in result.rates])
    return 0
