"""A zone watched through DNS while it changes (rollover tests): a thread asks every 0.2 s,
validates the answers, and keeps each observation and every failure."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from test_inline import poll

INTERVAL = 0.2


@dataclass
class ValidatingPoller:
    """Subclasses ask and validate in `once()` and append their observation to `seen`; anything
    `once()` raises is a finding kept in `failures`, never the end of the watch."""

    seen: list = field(default_factory=list, kw_only=True)
    failures: list[str] = field(default_factory=list, kw_only=True)
    stop: threading.Event = field(default_factory=threading.Event, kw_only=True)

    def once(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.once()
            except Exception as error:  # noqa: BLE001 - every failure is a finding
                self.failures.append(f"{time.time():.1f}: {type(error).__name__}: {error}")
            self.stop.wait(INTERVAL)

    def latest(self):
        """An observation made after this call."""
        count = len(self.seen)
        poll(lambda: len(self.seen) > count, 10, "a fresh poll")
        return self.seen[-1]

    def first(self, condition):
        return next(o for o in self.seen if condition(o))
