"""named 9.20's .state files decide what a key does under a dnssec-policy, not its timing.

The key files in tests/data/named920-keys are real: named 9.20.23 (stock route) wrote them for a
KSK whose roll came due while the token was away (found by an outside probe): its Inactive and
Delete times passed, yet named still signed the DNSKEY RRset with it (KRRSIGState omnipresent)
because it could not make a successor. Judged by the timing, `named start` found no KSK and
setup-inline made a new one (and a DS for the parent) that named deleted 25 s later. The .state
of an old KSK waiting for the parent's DS past its Removed time is built from it: by the timing
`rollover ksk --ds-published` was refused there and a second roll accepted (three KSKs).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bindpkcs11 import instancekeys, keydirs
from bindpkcs11.keyuse import KeyUse
from bindpkcs11.dnssec import keystate
from bindpkcs11.dnssec.keyfile import read_key_pair

DATA = Path(__file__).parent / "data" / "named920-keys"
KSK = "Kexample.test.+013+34645"


def _copy(tmp_path: Path, **states: str) -> Path:
    """The real KSK's files in tmp_path, its .state records set to `states` (DNSKEYState=...)."""
    for path in DATA.glob(f"{KSK}.*"):
        shutil.copy(path, tmp_path / path.name)
    state = tmp_path / f"{KSK}.state"
    lines = state.read_text().splitlines()
    for name, value in states.items():
        lines = [f"{name}: {value}" if line.startswith(f"{name}:") else line for line in lines]
    state.write_text("\n".join(lines) + "\n")
    return tmp_path / f"{KSK}.key"


def test_a_ksk_named_still_signs_with_is_active_though_its_timing_says_retired(tmp_path):
    pair = read_key_pair(_copy(tmp_path))
    assert pair.timing.is_retired(2_000_000_000)  # by the key file: long gone
    state = keystate.read_state(pair)
    assert state.signing("ksk") and not state.retired("ksk") and state.leaving()
    found = instancekeys._active([pair], 13, "bindpkcs11", "ksk", True, under_policy=True)
    # without a policy (9.18 auto-dnssec) a .state is a stale leftover: the timing decides
    assert instancekeys._active([pair], 13, "bindpkcs11", "ksk", True) is None
    assert found is not None and found.tag == 34645
    # the token guard sees it active too: `token delete --force` (once) refuses its private key
    assert KeyUse(pair, keydirs.KeyDir(tmp_path, "test"), "example.test-ksk-34645",
                  None).is_active(2_000_000_000)


def test_an_old_ksk_waiting_for_the_ds_past_its_removed_time_is_still_leaving(tmp_path):
    state = keystate.read_state(read_key_pair(_copy(tmp_path, DSState="omnipresent")))
    assert state.times["delete"] < 1_800_000_000 and state.leaving()
    assert state.cds  # named publishes CDS by the DS state under a policy


def test_a_key_named_has_removed_or_never_published_is_not_leaving(tmp_path):
    gone = keystate.read_state(read_key_pair(_copy(
        tmp_path, DNSKEYState="hidden", KRRSIGState="hidden", DSState="hidden")))
    assert not gone.leaving() and gone.retired("ksk") and not gone.cds and gone.retiring
    waiting = tmp_path / "waiting"
    waiting.mkdir()
    key = _copy(waiting, DNSKEYState="hidden", KRRSIGState="hidden", DSState="hidden")
    state_file = key.with_suffix(".state")
    state_file.write_text("".join(line + "\n" for line in state_file.read_text().splitlines()
                                  if not line.startswith(("Published:", "Active:"))))
    unused = keystate.read_state(read_key_pair(key))
    assert not unused.published and not unused.leaving() and not unused.retired("ksk")
    assert not unused.retiring


def test_a_state_time_that_is_not_a_time_is_left_out(tmp_path):
    state = keystate.read_state(read_key_pair(_copy(tmp_path, Retired="20261399999999 (x)")))
    assert "inactive" not in state.times and state.signing("ksk")
