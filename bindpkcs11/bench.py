"""`bindpkcs11 bench`: signatures per second of a token, per number of sessions, through the shim.

The operator's question before choosing a mode (both keys on the token, a software ZSK, an
offline KSK) is how fast the device signs on the path named uses. So: a temporary key pair is
generated on the token, a worker process signs with it through the shim with 1, 2, 4 ...
threads (one session each) for a few seconds each, and the key pair is destroyed afterwards,
whatever happens (OpenDNSSEC's ods-hsmspeed, Knot's `keymgr keystore-bench`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

from bindpkcs11 import pins
from bindpkcs11.access import TokenAccess
from bindpkcs11.dnssec.algorithms import Algorithm
from bindpkcs11.errors import BindPkcs11Error, UsageError
from bindpkcs11.run import child_env
from bindpkcs11.token import keys, library
from bindpkcs11.token.profiles import require_key_spec, traits_of
from bindpkcs11.token.uri import key_uri

MAX_SESSIONS = 64
MAX_SECONDS = 600.0
LABEL_PREFIX = "bindpkcs11-bench-"
Progress = Callable[[str], None]


class BenchFailed(BindPkcs11Error):
    """The token did not sign in the benchmark."""

    exit_code = 10


@dataclass(frozen=True)
class SessionRate:
    sessions: int
    signatures: int
    seconds: float
    per_second: float


@dataclass(frozen=True)
class BenchResult:
    token: str
    profile: str
    algorithm: str
    key_label: str
    keygen_seconds: float
    rates: list[SessionRate]


def parse_sessions(text: str) -> list[int]:
    """`1,2,4` -> [1, 2, 4]: each between 1 and MAX_SESSIONS."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(not 1 <= count <= MAX_SESSIONS for count in counts):
        raise UsageError(f"--sessions takes numbers from 1 to {MAX_SESSIONS}, comma separated "
                         "(e.g. 1,2,4)")
    return counts


def run_bench(access: TokenAccess, algorithm: Algorithm, sessions: list[int], seconds: float,
              progress: Progress) -> BenchResult:
    """Generate the temporary key, measure each session count, destroy the key."""
    if not 0 < seconds <= MAX_SECONDS:
        raise UsageError(f"--seconds must be above 0 and at most {MAX_SECONDS:.0f}")
    require_key_spec(access.profile, algorithm.spec)  # what the family cannot make: no device access
    with library.open_session(access.module_path, access.label) as session:
        keys.require_support(session, algorithm.spec)  # before any PIN is asked for or tried
    pin = pins.pin_source(access.state, access.pin_label, pins.USER, access.pin_file)()
    fixed = traits_of(access.profile).fixed_key_object(access.label)
    if fixed is not None:
        return _bench_fixed_slot(access, algorithm, sessions, seconds, pin, fixed[1], progress)
    label = LABEL_PREFIX + secrets.token_hex(4)
    progress(f"generating a temporary {algorithm.mnemonic} key '{label}' on token "
             f"'{access.label}' ...")
    started = time.monotonic()
    with library.open_session(access.module_path, access.label, lambda: pin, rw=True) as session:
        keys.generate_keypair(session, algorithm.spec, label, os.urandom(8),
                              omit_false_flags=traits_of(access.profile).omit_false_flags)
    keygen_seconds = time.monotonic() - started
    try:
        rates = []
        for count in sessions:
            progress(f"signing with {count} session{'s' if count > 1 else ''} for {seconds:g} s ...")
            rates.append(_measure(access, label, algorithm, count, seconds, pin))
            progress(f"{count} session{'s' if count > 1 else ''}: {rates[-1].per_second:,.0f} "
                     "signatures/s")
    finally:
        with library.open_session(access.module_path, access.label, lambda: pin, rw=True) as session:
            for obj in keys.find_objects(session, label, None):
                keys.destroy(obj)
        progress(f"destroyed the temporary key '{label}'")
    return BenchResult(access.label, access.profile.name, algorithm.mnemonic, label,
                       round(keygen_seconds, 3), rates)


def _bench_fixed_slot(access: TokenAccess, algorithm: Algorithm, sessions: list[int],
                      seconds: float, pin: str, label: str, progress: Progress) -> BenchResult:
    """A device with one key per token (an OpenPGP card) has no room for a temporary key and
    generating one would replace the operator's: its own key is measured, and left alone."""
    with library.open_session(access.module_path, access.label, lambda: pin) as session:
        found = keys.find_objects(session, label, "private")
        # read while the session is open: OpenSC 0.26 (Debian 13) invalidates the object with it
        kind = keys.read_public_key(found[0]).kind if found else None
    if not found:
        raise UsageError(f"token '{access.label}' has no key yet and no room for a temporary one: "
                         "generate its key with 'bindpkcs11 keygen' first, then bench it")
    if kind != algorithm.spec.kind:
        raise UsageError(f"the key on token '{access.label}' is not {algorithm.mnemonic}: "
                         "bench it with its own --algorithm")
    rates = []
    for count in sessions:
        progress(f"signing with the card's key '{label}', {count} session(s), {seconds:g} s ...")
        rates.append(_measure(access, label, algorithm, count, seconds, pin))
        progress(f"{count} session(s): {rates[-1].per_second:,.1f} signatures/s")
    return BenchResult(access.label, access.profile.name, algorithm.mnemonic, label, 0.0, rates)


def _measure(access: TokenAccess, label: str, algorithm: Algorithm, sessions: int, seconds: float,
             pin: str) -> SessionRate:
    """One worker process (bindpkcs11.signrate) with `sessions` threads; the PIN on its stdin."""
    env = child_env() | access.profile.module_env()
    env.pop("PKCS11_LIBRARY_PIN_FILE", None)
    uri = key_uri(access.label, label, kind="private")
    command = [sys.executable, "-m", "bindpkcs11.signrate", uri, str(algorithm.number),
               str(seconds), str(sessions)]
    try:
        result = subprocess.run(command, input=pin + "\n", capture_output=True, text=True, env=env,
                                timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        raise BenchFailed(f"the signing worker did not finish within {seconds + 120:.0f} s") from None
    try:
        report = json.loads(result.stdout)
    except ValueError:
        raise BenchFailed(f"the signing worker failed (exit {result.returncode}): "
                          f"{result.stderr.strip().splitlines()[-1:] or 'no output'}") from None
    if report["error"]:
        raise BenchFailed(f"the token did not sign with {sessions} sessions: {report['error']}")
    return SessionRate(sessions, report["signatures"], round(report["seconds"], 3),
                       round(report["signatures"] / report["seconds"], 1))
