"""`rollover zsk` and `status` on a setup-inline instance with token keys, watched through DNS.

A poller thread asks the patched named every ~0.2 s for the DNSKEY RRset (validated against the
KSK alone, the trust anchor), the SOA and www/A (validated against that DNSKEY RRset), and records
what signed what. The test then checks the RFC 7583 phases against the schedule the command
printed: the new DNSKEY appears first, the SOA switches to the new ZSK at Activate, the old
DNSKEY disappears at Delete; every poll validated; `status --json` matches DNS at each phase; delv
with the KSK as trust anchor validates at each phase.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from dnspoller import ValidatingPoller
from test_inline import ZONE, inline_cli, poll, setup, validated  # noqa: F401 - inline_cli is a fixture

ORIGIN = dns.name.from_text(ZONE)
PHASE_SLACK = 25.0  # named's key timer fires within a second; the rest is for a loaded machine


@dataclass
class Observation:
    at: float
    dnskeys: frozenset[int]
    soa_signers: frozenset[int]
    www_signers: frozenset[int]


@dataclass
class Poller(ValidatingPoller):
    """Validates every answer against the KSK; keeps what it saw and every failure."""

    port: int
    ksk: dns.rrset.RRset

    def ask(self, name: str, rdtype: dns.rdatatype.RdataType):
        owner = dns.name.from_text(name)
        response = dns.query.udp(dns.message.make_query(owner, rdtype, want_dnssec=True),
                                 "127.0.0.1", port=self.port, timeout=2)
        rrset = response.find_rrset(dns.message.ANSWER, owner, dns.rdataclass.IN, rdtype)
        sigs = response.find_rrset(dns.message.ANSWER, owner, dns.rdataclass.IN,
                                   dns.rdatatype.RRSIG, rdtype)
        return rrset, sigs

    def once(self) -> None:
        keys, key_sigs = self.ask(ZONE, dns.rdatatype.DNSKEY)
        dns.dnssec.validate(keys, key_sigs, {ORIGIN: self.ksk})  # the trust anchor only
        signers = {}
        for name, rdtype in ((ZONE, dns.rdatatype.SOA), (f"www.{ZONE}", dns.rdatatype.A)):
            rrset, sigs = self.ask(name, rdtype)
            dns.dnssec.validate(rrset, sigs, {ORIGIN: keys})
            signers[name] = frozenset(sig.key_tag for sig in sigs)
        self.seen.append(Observation(time.time(), frozenset(dns.dnssec.key_id(k) for k in keys),
                                     signers[ZONE], signers[f"www.{ZONE}"]))





def ksk_rrset(key_file: Path) -> dns.rrset.RRset:
    record = [line for line in key_file.read_text().splitlines() if not line.startswith(";")][0]
    owner, _, _, *rdata = record.split()  # OWNER IN DNSKEY FLAGS PROTOCOL ALGORITHM KEY
    return dns.rrset.from_text(owner, 3600, "IN", "DNSKEY", " ".join(rdata))


def delv_validates(anchor_file: Path, port: int, name: str, rdtype: str) -> str:
    result = subprocess.run(["delv", "-a", str(anchor_file), f"+root={ZONE}", "@127.0.0.1",
                             "-p", str(port), name, rdtype], capture_output=True, text=True,
                            timeout=30)
    assert "; fully validated" in result.stdout, result.stdout + result.stderr
    return result.stdout


def delv_anchor(ksk: dns.rrset.RRset) -> str:
    key = ksk[0]
    text = key.to_text().split(None, 3)
    return (f'trust-anchors {{ {ZONE}. static-key {text[0]} {text[1]} {text[2]} '
            f'"{"".join(text[3].split())}"; }};\n')


def status_of(cli, tag: int) -> dict:
    return next(k for k in cli.json("status", ZONE)["keys"] if k["tag"] == tag)


def status_matches_dns(cli, observation: Observation) -> dict:
    """Keys that status says are in the DNSKEY set / signing are those DNS shows."""
    status = cli.json("status", ZONE)
    by_tag = {k["tag"]: k for k in status["keys"]}
    published = {t for t, k in by_tag.items() if k["state"] in ("published", "active", "inactive")}
    assert published == set(observation.dnskeys), (status, observation)
    active_zsks = {t for t, k in by_tag.items() if k["role"] == "zsk" and k["state"] == "active"}
    assert active_zsks == set(observation.soa_signers), (status, observation)
    assert all(k["token_object"] == "present" for k in status["keys"])
    removed = sorted(t for t, k in by_tag.items() if k["state"] == "removed")
    assert [int(offer.split()[1]) for offer in status["cleanup"]] == removed
    return by_tag


def test_zsk_rollover_with_test_timings_watched_through_dns(inline_cli, tmp_path):
    report = json.loads(setup(inline_cli, "--json").stdout)
    port = inline_cli.ports[0]
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    ksk_file = next(Path(k["key_file"]) for k in report["keys"] if k["role"] == "ksk")
    ksk = ksk_rrset(ksk_file)
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(delv_anchor(ksk))
    poller = Poller(port, ksk)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        before = poller.latest()
        assert before.dnskeys == {tags["ksk"], tags["zsk"]}
        started = time.time()
        # With test timings the command returns after Activate, once named has re-signed the
        # zone with the new ZSK (rollover.py): phase 1 is watched while it runs.
        outcome: dict = {}
        command = threading.Thread(target=lambda: outcome.update(
            rolled=inline_cli.json("rollover", "zsk", ZONE, "--test-timings")), daemon=True)
        command.start()
        old = tags["zsk"]

        # Phase 1, published: the new DNSKEY is served, the old ZSK still signs.
        poll(lambda: poller.seen and len(poller.seen[-1].dnskeys) == 3, 30, "the new DNSKEY")
        now = poller.latest()
        (new,) = now.dnskeys - {tags["ksk"], old}
        states = status_matches_dns(inline_cli, now)
        activate = states[new]["next_event"]["time"]
        assert time.time() < activate, "phase 1 missed: the machine is too slow"
        assert now.dnskeys == {tags["ksk"], old, new} and now.soa_signers == {old}
        assert states[new]["state"] == "published" and states[old]["state"] == "active"
        assert states[new]["next_event"]["event"] == "activate"
        assert states[old]["next_event"] == {"event": "inactive", "time": activate}
        assert f" {old} {ZONE}." in delv_validates(anchors, port, ZONE, "SOA")
        command.join(120)
        rolled = outcome["rolled"]
        schedule = rolled["schedule"]
        assert rolled["predecessor"] == old and rolled["successor"] == new
        assert rolled["location"] == "token"
        assert rolled["uri"] == f"pkcs11:token=bindpkcs11;object={ZONE}-zsk-{new}"
        assert schedule["publish"] >= int(started) - 1 and schedule["activate"] == activate
        assert schedule["activate"] - schedule["publish"] == 15 + 5  # DNSKEY TTL + propagation
        assert schedule["inactive"] == schedule["activate"]
        assert schedule["delete"] - schedule["inactive"] == 5 + 15 + 15
        assert time.time() < schedule["delete"], "the command returned after Delete"
        assert poller.latest().www_signers >= {new}  # every RRset re-signed before Delete

        # Phase 2, at Activate: the SOA is signed by the new ZSK; both DNSKEYs served.
        poll(lambda: new in poller.seen[-1].soa_signers, schedule["activate"] - time.time()
             + PHASE_SLACK, "the SOA signed by the new ZSK")
        switched = poller.first(lambda o: new in o.soa_signers)
        assert switched.at >= schedule["activate"] - 1
        now = poller.latest()
        assert now.dnskeys == {tags["ksk"], old, new} and now.soa_signers == {new}
        states = status_matches_dns(inline_cli, now)
        assert states[old]["state"] == "inactive" and states[new]["state"] == "active"
        assert states[old]["next_event"] == {"event": "delete", "time": schedule["delete"]}
        assert f" {new} {ZONE}." in delv_validates(anchors, port, ZONE, "SOA")

        # Phase 3, at Delete: the old DNSKEY is gone and nothing is signed by it any more.
        poll(lambda: old not in poller.seen[-1].dnskeys, schedule["delete"] - time.time()
             + PHASE_SLACK, "the old DNSKEY removed")
        removed = poller.first(lambda o: old not in o.dnskeys)
        assert removed.at >= schedule["delete"] - 1
        poll(lambda: poller.seen[-1].www_signers == {new}, PHASE_SLACK, "www/A signed by the new ZSK")
        now = poller.latest()
        assert now.dnskeys == {tags["ksk"], new} and now.soa_signers == {new}
        states = status_matches_dns(inline_cli, now)
        assert states[old]["state"] == "removed" and states[old]["next_event"] is None
        delv_validates(anchors, port, f"www.{ZONE}", "A")
        # The old key's token object is offered for destruction, never destroyed by itself.
        offer = next(o for o in inline_cli.json("status", ZONE)["cleanup"] if f"ZSK {old} " in o)
        assert offer.endswith(f": bindpkcs11 rollover cleanup {ZONE}") and \
            f"type 'destroy {old}' when asked, or add --confirm {old}" in offer
        assert status_of(inline_cli, old)["token_object"] == "present"
        label = f"{ZONE}-zsk-{old}"
        assert label in inline_cli("token", "show", "--label", "bindpkcs11").stdout
        old_files = sorted(Path(status_of(inline_cli, old)["key_file"]).parent.glob(
            f"K{ZONE}.+*+{old:05d}.*"))
        assert len(old_files) == 2
        cleanup_started = time.monotonic()
        cleaned = inline_cli.json("rollover", "cleanup", ZONE, "--confirm", str(old))
        cleanup_took = time.monotonic() - cleanup_started
        assert [(d["tag"], d["public_destroyed"]) for d in cleaned["destroyed"]] == [(old, True)]
        assert label not in inline_cli("token", "show", "--label", "bindpkcs11").stdout
        retired = inline_cli.state_dir / "instances" / ZONE / "retired-keys"
        assert not any(path.exists() for path in old_files)
        assert sorted(Path(m).name for m in cleaned["destroyed"][0]["moved_to"]) == \
            [path.name for path in old_files]
        assert all((retired / path.name).is_file() for path in old_files)
        assert f"ZSK {old} " in (retired / "cleanup.log").read_text()
        after = inline_cli.json("status", ZONE)
        assert after["cleanup"] == [] and old not in {k["tag"] for k in after["keys"]}
        assert cleaned["served_dnskeys"] == sorted([tags["ksk"], new])
        assert validated(ZONE, "SOA", port)[1] == {new}
        delv_validates(anchors, port, f"www.{ZONE}", "A")
    finally:
        poller.stop.set()
        thread.join(10)
    # Order: the new DNSKEY was served before anything was signed by it.
    first_key = poller.first(lambda o: new in o.dnskeys)
    assert first_key.at <= switched.at
    assert not poller.failures, poller.failures[:5]
    assert len(poller.seen) > 50
    print(f"\nZSK rollover {old}->{new}: new DNSKEY seen {first_key.at - schedule['publish']:.1f} s "
          f"after Publish, SOA by new ZSK {switched.at - schedule['activate']:+.1f} s from "
          f"Activate, old DNSKEY gone {removed.at - schedule['delete']:+.1f} s from Delete; "
          f"{len(poller.seen)} polls, all validated; rollover cleanup took {cleanup_took:.1f} s")



def test_a_software_zsk_is_rolled_to_a_software_successor(inline_cli):
    report = json.loads(setup(inline_cli, "--zsk-on", "software", "--json").stdout)
    old = next(k["tag"] for k in report["keys"] if k["role"] == "zsk")
    rolled = inline_cli.json("rollover", "zsk", ZONE, "--test-timings")
    assert rolled["predecessor"] == old and rolled["location"] == "software"
    assert rolled["uri"] is None and rolled["published_now"]
    private = Path(rolled["key_file"]).with_suffix(".private").read_text()
    assert "PrivateKey:" in private and "Label:" not in private
    keys = {k["tag"]: k for k in inline_cli.json("status", ZONE)["keys"]}
    assert keys[rolled["successor"]]["location"] == "software"
    assert keys[rolled["successor"]]["token_object"] is None
    # test timings: the command returned after Activate, the zone re-signed by the successor
    assert keys[rolled["successor"]]["state"] == "active"
    served, _ = validated(ZONE, "DNSKEY", inline_cli.ports[0])
    assert {dns.dnssec.key_id(k) for k in served} >= {rolled["successor"], old}
    assert validated(ZONE, "SOA", inline_cli.ports[0])[1] == {rolled["successor"]}

