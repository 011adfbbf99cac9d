"""Progress for one slow step (a key generated inside a TPM or a card): elapsed seconds, ticking.

An RSA key on a card or a real TPM takes seconds to minutes with no output of its own; a line that
keeps counting tells the operator the device is working, not hung.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import IO, Iterator

DEFAULT_INTERVAL = 2.0


@contextlib.contextmanager
def ticking(message: str, stream: IO[str] | None = None,
            interval: float = DEFAULT_INTERVAL) -> Iterator[None]:
    """Print `message`, then `... N s` every `interval` while the block runs, then the total.

    On a terminal the count rewrites one line; elsewhere (logs, tests) each tick is its own line.
    """
    out = stream or sys.stderr
    tty = out.isatty()
    start_of_line, end = ("\r", "") if tty else ("", "\n")
    started = time.monotonic()
    done = threading.Event()
    print(message, file=out, flush=True)

    def tick() -> None:
        while not done.wait(interval):
            elapsed = time.monotonic() - started
            print(f"{start_of_line}  ... still working, {elapsed:.0f} s", end=end, file=out,
                  flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        elapsed = time.monotonic() - started
        if elapsed >= interval:
            print(f"{start_of_line}  done in {elapsed:.1f} s", file=out, flush=True)
