"""A ZSK rollover of an offline-KSK zone, end to end: `rollover zsk --zsk-dir` schedules it in the
key files, `ksk presign` carries it into four bundles (the token then removed), `signer run` at
each period's time publishes the zone a stock named serves, and every phase is validated from the
KSK alone (dnspython, and delv with the KSK as trust anchor): the new ZSK's DNSKEY is served a whole period before it signs, the old one a whole
period after it stopped, and a resolver that cached the previous phase's DNSKEY RRset validates
the next phase's signatures (the point of RFC 7583 pre- and post-publication).

Periods are five minutes from one minute ago (as in test_signer_offline_ksk.py), so stock
dnssec-verify, which reads the real clock, agrees with dnspython validating at the injected time.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from bindpkcs11.dnssec.keyfile import read_key_pair
from conftest import Cli, clean_env
from test_signer_offline_ksk import (ORIGIN, PASSPHRASE, PERIOD, ZONE, ControlledNamed, Offline,
                                     dnssec_verify, online_for, validate_signed_zone)
from test_tpm2_inline import delv, delv_anchor

WWW = dns.name.from_text(f"www.{ZONE}")
PUBLISHED_STATES = ("published", "active", "inactive")


def served(named: ControlledNamed, name: dns.name.Name, rdtype: str) -> tuple[dns.rrset.RRset,
                                                                             dns.rrset.RRset]:
    """An RRset named serves and its RRSIGs."""
    answer = named.query(name.to_text(), rdtype)
    kind = dns.rdatatype.from_text(rdtype)
    return (answer.find_rrset(dns.message.ANSWER, name, dns.rdataclass.IN, kind),
            answer.find_rrset(dns.message.ANSWER, name, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                              kind))


def validate_from_ksk(named: ControlledNamed, ksk: dns.rrset.RRset, now: int):
    """What a validator holding only the KSK (the DS's key) accepts: the DNSKEY RRset signed by
    it, then the SOA and www A signed by a key of that RRset. Returns the validated DNSKEY RRset
    and the signed data with the key tags that signed it."""
    dnskeys, dnskey_sigs = served(named, ORIGIN, "DNSKEY")
    dns.dnssec.validate(dnskeys, dnskey_sigs, {ORIGIN: ksk}, now=now)
    data = {}
    for name, rdtype in ((ORIGIN, "SOA"), (WWW, "A")):
        rrset, sigs = served(named, name, rdtype)
        dns.dnssec.validate(rrset, sigs, {ORIGIN: dnskeys}, now=now)
        data[(name, rdtype)] = (rrset, sigs)
    return dnskeys, data


def test_zsk_rollover_through_presign_and_signer_validates_at_every_phase(tmp_path):
    cli = Cli(tmp_path / "state", clean_env())
    cli("token", "init", "--label", "bindpkcs11", "--generate-pins")
    ksk = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13")
    start = int(time.time()) - 60
    zsks = tmp_path / "zsks"
    old = cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software",
                   "--key-dir", str(zsks), "--publish", str(start - 3600),
                   "--activate", str(start - 3600))

    roll = cli.json("rollover", "zsk", ZONE, "--zsk-dir", str(zsks), "--at", str(start + PERIOD),
                    "--test-timings")
    new_tag = roll["successor"]
    assert roll["predecessor"] == old["tag"] and roll["location"] == "software"
    # test timings: DNSKEY TTL 60 + propagation 5 -> one 300 s period before it signs;
    # max zone TTL 60 + propagation 5 + signer interval 10 -> one period after it stopped
    assert roll["schedule"] == {"publish": start + PERIOD, "activate": start + 2 * PERIOD,
                                "inactive": start + 2 * PERIOD, "delete": start + 3 * PERIOD}
    again = cli("rollover", "zsk", ZONE, "--zsk-dir", str(zsks), "--at", str(start + PERIOD),
                "--test-timings", check=False)
    assert again.returncode != 0 and "rollover is under way" in again.stderr

    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE)
    passphrase.chmod(0o600)
    ceremony = json.loads(cli("ksk", "presign", ZONE, "--ksk", ksk["object_label"], "--zsk-dir",
                              str(zsks), "--start", str(start), "--periods", "4",
                              "--test-timings", "--passphrase-file", str(passphrase), "--out",
                              str(tmp_path / "out"), "--yes", "--json").stdout)
    assert ceremony["token_signatures"] == 4
    assert sorted(ceremony["zsk_tags"]) == sorted([old["tag"], new_tag])
    ksk_pair = read_key_pair(cli.key_dir / Path(ksk["key_file"]).name)
    anchor = dns.rrset.RRset(ORIGIN, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    anchor.add(ksk_pair.dnskey)
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(delv_anchor(ksk_pair.key_path))
    shutil.rmtree(cli.state_dir / "softhsm")  # the KSK goes back into the safe

    offline = Offline([Path(p) for p in ceremony["bundles"]], start, ksk["tag"],
                      ksk_pair.dnskey.key, (old["tag"], new_tag), passphrase,
                      cli.state_dir / "softhsm")
    online = online_for(offline, tmp_path)

    phases = {0: ({old["tag"]}, {old["tag"]}),
              1: ({old["tag"], new_tag}, {old["tag"]}),
              2: ({old["tag"], new_tag}, {new_tag}),
              3: ({new_tag}, {new_tag})}
    seen = {}
    first = online.publish(offline.at(0))
    with ControlledNamed(online.out, tmp_path / "named") as named:
        rndc = ["--rndc", f"-c {named.rndc_conf}"]
        named.wait_for_serial(first["serial"])
        for period, (published, signing) in phases.items():
            now = offline.at(period)
            if period:
                result = online.publish(now, *rndc, runway_low=period == 3)
                assert result["published"] and result["period_index"] == period
                named.wait_for_serial(result["serial"])
            assert validate_signed_zone(online.out, now, offline.ksk_tag) == signing
            dnssec_verify(online.out)
            dnskeys, data = validate_from_ksk(named, anchor, now)
            assert {dns.dnssec.key_id(k) for k in dnskeys} == published | {offline.ksk_tag}
            assert {s.key_tag for _, sigs in data.values() for s in sigs} == signing
            for name, rdtype in ((ZONE, "SOA"), (f"www.{ZONE}", "A"), (ZONE, "DNSKEY")):
                checked = delv(anchors, named.port, name, rdtype)  # independent, real clock
                assert "; fully validated" in checked.stdout, checked.stdout + checked.stderr
            status = cli.json("status", ZONE, "--zsk-dir", str(zsks), "--at", str(now))
            states = {row["tag"]: row["state"] for row in status["keys"]}
            assert {tag for tag, st in states.items() if st in PUBLISHED_STATES} == published
            assert {tag for tag, st in states.items() if st == "active"} == signing
            seen[period] = (now, dnskeys, data)

    # A resolver holding the previous phase's DNSKEY RRset (up to its TTL) validates what is
    # served now, and the previous phase's cached signatures validate with today's RRset.
    for period in (1, 2, 3):
        now, dnskeys, data = seen[period]
        _, cached_dnskeys, cached_data = seen[period - 1]
        for rrset, sigs in data.values():
            dns.dnssec.validate(rrset, sigs, {ORIGIN: cached_dnskeys}, now=now)
        for rrset, sigs in cached_data.values():
            dns.dnssec.validate(rrset, sigs, {ORIGIN: dnskeys}, now=now)
    # ...which is what the schedule bought: without the new DNSKEY in period 1 or the old one in
    # period 2, one of those checks fails.
    _, before_any, _ = seen[0]
    _, _, after_switch = seen[2]
    rrset, sigs = after_switch[(ORIGIN, "SOA")]
    try:
        dns.dnssec.validate(rrset, sigs, {ORIGIN: before_any}, now=seen[2][0])
    except dns.dnssec.ValidationFailure:
        pass
    else:
        raise AssertionError("period 0's DNSKEY RRset validated the new ZSK's signature")
