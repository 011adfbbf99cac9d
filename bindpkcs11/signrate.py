"""The signing loop of `bindpkcs11 bench`, run as its own process: `python -m bindpkcs11.signrate`.

It signs through the shim only (the code path named uses: one login, a pool of sessions, one per
thread here), never through python-pkcs11, which initialises the module without OS locking: two
of its threads on two sessions crash SoftHSM. The PIN arrives as the first line of stdin, so it
is on no command line and in no environment that a process inherits.

Usage: python -m bindpkcs11.signrate URI ALGORITHM_NUMBER SECONDS THREADS  (PIN on stdin)
Prints one JSON object: {"signatures": N, "seconds": S, "error": null | "one line"}.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time

# The input each DNSSEC algorithm hands the shim: a digest of the right size, or the message.
_INPUTS = {8: ("RSA_SHA256", 32), 10: ("RSA_SHA512", 64), 13: ("ECDSA", 32), 14: ("ECDSA", 48),
           15: ("EDDSA", 64)}


def measure(uri: str, algorithm: int, seconds: float, threads: int) -> dict:
    """Signatures made by `threads` threads in `seconds` (after one warm-up signature each)."""
    from bindpkcs11 import shim

    name, size = _INPUTS[algorithm]
    mechanism = shim.Mechanism[name]
    data = hashlib.sha512(b"bindpkcs11 bench").digest()[:size]
    counts = [0] * threads
    errors: list[str] = []
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def work(index: int) -> None:
        try:
            shim.sign(uri, mechanism, data)  # login and this thread's session, not timed
        except shim.ShimError as error:
            errors.append(error.message)
        start.wait()
        while not stop.is_set() and not errors:
            try:
                shim.sign(uri, mechanism, data)
            except shim.ShimError as error:
                errors.append(error.message)
                return
            counts[index] += 1

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.monotonic()
    stop.wait(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began
    return {"signatures": sum(counts), "seconds": elapsed, "error": errors[0] if errors else None}


def main() -> int:
    uri, algorithm, seconds, threads = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    pin = sys.stdin.readline().rstrip("\n")
    if pin:
        os.environ["PKCS11_LIBRARY_PIN"] = pin
    print(json.dumps(measure(uri, algorithm, seconds, threads)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
