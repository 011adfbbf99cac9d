"""Signing health of a running instance, for `named status`: is named keeping up, and if not, why?

Three facts, none of which needs state of our own:
  last signed     when named last signed successfully (the caller takes it from the served SOA
                  RRSIG: every signing run re-signs the SOA);
  pending         unsigned changes named has loaded but not signed (signing.SyncState), and since
                  when (the raw journal's mtime: named writes it when it takes a change);
  errors          named's signing error lines (the shim's and BIND's) logged after the last
                  successful signing.
Signing is stuck when changes are pending and named logged why, or they have been pending for
longer than STUCK_AFTER; it is failing when errors came after the last success (re-signing
that fails: the signatures will expire).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bindpkcs11.bind import signing
from bindpkcs11.bind.instance import Instance

STUCK_AFTER = 60
_ERRORS_KEPT = 5


@dataclass(frozen=True)
class SigningHealth:
    raw_serial: int | None
    signed_serial: int | None
    source_serial: int | None
    pending: bool
    pending_since: int | None
    last_signed: int | None
    errors: tuple[str, ...]
    problem: str | None


def signing_health(instance: Instance, prefix: Path, zone: str, zone_file: Path,
                   last_signed: int | None, now: float | None = None) -> SigningHealth:
    now = time.time() if now is None else now
    state = signing.sync_state(instance, prefix, zone, zone_file)
    errors = signing.errors_since_success(instance, zone_file, last_signed)[-_ERRORS_KEPT:]
    since = int(state.pending_since) if state.pending_since is not None else None
    return SigningHealth(state.raw_serial, state.signed_serial, state.source_serial, state.pending,
                         since, last_signed, tuple(errors),
                         _problem(state, since, errors, last_signed, now))


def _problem(state: signing.SyncState, since: int | None, errors: list[str],
             last_signed: int | None, now: float) -> str | None:
    reason = signing.failure_reason(errors)
    if state.pending:
        waiting = (f"unsigned serial {state.raw_serial} not signed (the signed zone still holds "
                   f"unsigned serial {state.source_serial})")
        if reason:
            return f"signing stuck: {waiting}: {reason}"
        if since is not None and now - since > STUCK_AFTER:
            return f"signing stuck: {waiting} for {int(now - since)} s"
        return None
    if reason:
        return f"signing failing since the last success ({_when(last_signed)}): {reason}"
    return None


def _when(unix_time: int | None) -> str:
    return "none in this run" if unix_time is None else \
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_time))
