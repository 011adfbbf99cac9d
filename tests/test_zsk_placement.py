"""Where setup-inline puts a new instance's ZSK: the decision from the zone's size and the
profile's measured signing rate (no device is touched: only the profile's declared traits)."""

from __future__ import annotations

import dns.name

from bindpkcs11 import inline, zskplace
from bindpkcs11.bind.instance import Instance
from bindpkcs11.dnssec import algorithms
from bindpkcs11.state import StateDir


def place(tmp_path, profile: str, rrsets: int, zsk_on: str | None = None) -> tuple[str, list[str]]:
    state = StateDir.open(tmp_path / "state")
    zone = dns.name.from_text("example.test")
    request = inline.SetupRequest(zone=zone, algorithm=algorithms.lookup(13), profile=profile,
                                  zsk_on=zsk_on)
    notes: list[str] = []
    return zskplace.place(state, Instance.for_zone(state, zone), request, rrsets, notes.append), notes


def test_a_fast_token_keeps_the_zsk(tmp_path):
    assert place(tmp_path, "softhsm", 1_000_000) == ("token", [])


def test_a_slow_token_gets_a_software_zsk_for_a_big_zone_and_says_why(tmp_path):
    where, notes = place(tmp_path, "tpm2", 50_000)
    assert where == "software" and "signatures/s" in notes[0] and "--zsk-on token" in notes[0]
    assert place(tmp_path, "tpm2", 2_000) == ("token", [])


def test_the_operator_decides(tmp_path):
    assert place(tmp_path, "tpm2", 50_000, zsk_on="token")[0] == "token"
    assert place(tmp_path, "softhsm", 10, zsk_on="software")[0] == "software"


def test_named_gets_time_for_a_signing_pass_on_a_slow_token(tmp_path):
    from bindpkcs11.bind import named
    from bindpkcs11.token.profiles import get_profile

    state = StateDir.open(tmp_path / "state")
    tpm, soft = get_profile("tpm2", state), get_profile("softhsm", state)
    assert inline.start_timeout(soft, 100_000, "token") == named.START_TIMEOUT
    assert inline.start_timeout(tpm, 100, "token") == named.START_TIMEOUT
    assert inline.start_timeout(tpm, 10_000, "token") > 2 * 10_000 * 2 / 400
    assert inline.start_timeout(tpm, 10_000, "software") == named.START_TIMEOUT

