"""A KSK rollover of an offline-KSK zone, end to end (double-KSK, RFC 7583 3.3.2): `rollover ksk
--ksk-dir` makes the successor on the token and schedules it in the KSK files, a first ceremony
(`ksk presign --ksk OLD --ksk NEW`) carries it into three bundles, `rollover ksk --ds-published`
records the parent's DS change, a second ceremony makes the bundles without the old KSK, the
token is removed, and `signer run` at each period's time publishes the zone a stock named serves.

At each phase the zone is validated from a trust anchor that follows the DS change (old DS;
both, each alone; new DS) with dnspython at the phase's time and with delv (real clock), the
signed file by dnspython (every RRSIG) and stock dnssec-verify, the served DNSKEY/CDS/CDNSKEY
sets and their KSK signers are exactly the phase's, and `status --json` shows the same keys,
CDS and DS. Periods are five minutes from one minute ago (as in test_signer_offline_ksk.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import dns.dnssec
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from bindpkcs11.dnssec.dnskey import ds_text
from bindpkcs11.dnssec.keyfile import read_key_pair
from conftest import Cli, clean_env
from test_rollover_offline import WWW, served
from test_signer_offline_ksk import (ORIGIN, PASSPHRASE, PERIOD, ZONE, ControlledNamed, Offline,
                                     dnssec_verify, online_for, validate_every_rrsig)


def ceremony(cli: Cli, ksks: list[str], zsks: Path, start: int, periods: int, out: Path,
             passphrase: Path, skr: Path | None = None) -> dict:
    args = ["ksk", "presign", ZONE, "--zsk-dir", str(zsks), "--start", str(start), "--periods",
            str(periods), "--test-timings", "--passphrase-file", str(passphrase), "--out", str(out),
            "--yes", "--json", *(["--skr", str(skr)] if skr else [])]
    for label in ksks:
        args += ["--ksk", label]
    return json.loads(cli(*args).stdout)


def check_skr_roll(skr: Path, expected: dict[int, tuple[set[int], set[int]]],
                   at: Callable[[int], int]) -> None:
    """The SKR of a roll's ceremony: per period the DNSKEY RRset signed by the period's KSKs and,
    in a period that announces a KSK, CDNSKEY and CDS RRsets naming it, signed by the same KSKs
    (dnssec-ksr's order: DNSKEY, CDNSKEY, CDS); each RRSIG validates at the period."""
    blocks = skr.read_text().split(";; SignedKeyResponse 1.0 ")[1:-1]
    assert len(blocks) == len(expected)
    for period, block in enumerate(blocks):
        ksks, cds = expected[period]
        records = [line for line in block.splitlines()[1:] if line.strip()]
        order = [line.split()[3] for line in records if line.split()[3] != "RRSIG"]
        assert order == sorted(order, key=["DNSKEY", "CDNSKEY", "CDS"].index)
        zone = dns.zone.from_text("\n".join(records), origin=ORIGIN, relativize=False,
                                  check_origin=False)
        dnskeys = zone.find_rrset(ORIGIN, "DNSKEY")
        for rdtype in ("DNSKEY", "CDNSKEY", "CDS"):
            rrset = zone.get_rrset(ORIGIN, rdtype)
            if rdtype != "DNSKEY" and not cds:
                assert rrset is None, f"period {period}: {rdtype} without a KSK to announce"
                continue
            assert rrset is not None, f"period {period}: no {rdtype} in the SKR"
            rrsigs = zone.find_rrset(ORIGIN, "RRSIG", rdtype)
            assert {r.key_tag for r in rrsigs} == ksks, (period, rdtype)
            dns.dnssec.validate(rrset, rrsigs, {ORIGIN: dnskeys}, now=at(period))
        if cds:
            assert {r.key_tag for r in zone.find_rrset(ORIGIN, "CDS")} == cds
            assert {dns.dnssec.key_id(k) for k in zone.find_rrset(ORIGIN, "CDNSKEY")} == cds


def anchor_of(pair) -> dns.rrset.RRset:
    """What a resolver holding this KSK's DS trusts: the DNSKEY the DS names."""
    rrset = dns.rrset.RRset(ORIGIN, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    rrset.add(pair.dnskey)
    return rrset


def validate_from_ds(named: ControlledNamed, anchor: dns.rrset.RRset, now: int) -> dict:
    """A validator holding one DS: DNSKEY RRset by that KSK, then SOA, www A, CDS, CDNSKEY (when
    served) by the keys of that RRset. Returns {type: (rrset, rrsigs)}."""
    dnskeys, sigs = served(named, ORIGIN, "DNSKEY")
    dns.dnssec.validate(dnskeys, sigs, {ORIGIN: anchor}, now=now)
    seen = {"DNSKEY": (dnskeys, sigs)}
    for name, rdtype in ((ORIGIN, "SOA"), (WWW, "A"), (ORIGIN, "CDS"), (ORIGIN, "CDNSKEY")):
        answer = named.query(name.to_text(), rdtype)
        if not answer.answer:
            continue
        rrset, rrsigs = served(named, name, rdtype)
        dns.dnssec.validate(rrset, rrsigs, {ORIGIN: dnskeys}, now=now)
        seen[rdtype] = (rrset, rrsigs)
    return seen


def delv_from_ds(tmp_path: Path, pair, port: int, rdtype: str) -> subprocess.CompletedProcess:
    ds = dns.dnssec.make_ds(ORIGIN, pair.dnskey, "SHA256")
    anchors = tmp_path / f"anchor-{ds.key_tag}.conf"
    anchors.write_text(f'trust-anchors {{ {ZONE}. static-ds {ds.key_tag} {ds.algorithm} '
                       f'{ds.digest_type} "{ds.digest.hex()}"; }};\n')
    return subprocess.run(["delv", "-a", str(anchors), f"+root={ZONE}", "@127.0.0.1", "-p",
                           str(port), ZONE, rdtype], capture_output=True, text=True, timeout=30)


def offline_zone(tmp_path: Path) -> tuple[Cli, int, dict, Path]:
    """A token KSK and a software ZSK of ZONE, both active for an hour before `start` (a
    minute ago): the CLI, start, the KSK's keygen report and the ZSK directory."""
    cli = Cli(tmp_path / "state", clean_env())
    cli("token", "init", "--label", "bindpkcs11", "--generate-pins")
    start = int(time.time()) - 60
    early = str(start - 3600)
    old = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13", "--no-backup",
                   "--publish", early, "--activate", early)
    zsks = tmp_path / "zsks"
    cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software", "--key-dir",
             str(zsks), "--publish", early, "--activate", early)
    return cli, start, old, zsks


def test_ksk_rollover_through_presign_and_signer_validates_with_the_ds_at_every_phase(tmp_path):
    cli, start, old, zsks = offline_zone(tmp_path)
    ksk_dir = cli.key_dir

    step1 = cli.json("rollover", "ksk", ZONE, "--ksk-dir", str(ksk_dir), "--at",
                     str(start + PERIOD), "--test-timings")
    new_tag = step1["successor"]
    assert step1["predecessor"] == old["tag"] and step1["step"] == "waiting for DS"
    # test timings: DNSKEY TTL 60 + propagation 5 -> the CDS switch one 300 s period later
    assert (step1["publish"], step1["sync"]) == (start + PERIOD, start + 2 * PERIOD)
    new_pair = read_key_pair(next(ksk_dir.glob(f"K{ZONE}.+013+{new_tag:05d}.key")))
    old_pair = read_key_pair(next(ksk_dir.glob(f"K{ZONE}.+013+{old['tag']:05d}.key")))
    assert new_pair.label_uri and "token=bindpkcs11" in new_pair.label_uri
    assert step1["new_ds"] == ds_text(ORIGIN, new_pair.dnskey)
    new_label = new_pair.label_uri.split("object=")[1].split(";")[0]

    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE)
    passphrase.chmod(0o600)
    first = ceremony(cli, [old["object_label"], new_label], zsks, start, 3, tmp_path / "out1",
                     passphrase, skr=tmp_path / "roll.skr")
    # one signature per signing KSK and RRset: 1 (old), 2 (both), 2 x 3 (both; DNSKEY, CDS, CDNSKEY)
    assert first["token_signatures"] == 1 + 2 + 6 and first["ksk_tags"] == [old["tag"], new_tag]

    # the parent serves the new DS from start + 2P + 30: the old KSK retires 60 + 5 s later,
    # so the bundles drop it from the next period start (3)
    step2 = cli.json("rollover", "ksk", ZONE, "--ksk-dir", str(ksk_dir), "--ds-published", "--at",
                     str(start + 2 * PERIOD + 30), "--test-timings")
    assert step2["retire"] == start + 2 * PERIOD + 30 + 65
    second = ceremony(cli, [old["object_label"], new_label], zsks, start + 3 * PERIOD, 1,
                      tmp_path / "out2", passphrase)
    assert second["token_signatures"] == 3
    shutil.rmtree(cli.state_dir / "softhsm")  # the KSKs go back into the safe

    offline = Offline([Path(p) for p in first["bundles"] + second["bundles"]], start, old["tag"],
                      old_pair.dnskey.key, (0, 0), passphrase, cli.state_dir / "softhsm")
    online = online_for(offline, tmp_path)

    o, n = old["tag"], new_tag
    # period: (KSKs in the DNSKEY RRset = signing it, KSKs named by CDS, DS a resolver may hold)
    phases = {0: ({o}, set(), [old_pair]),
              1: ({o, n}, set(), [old_pair]),
              2: ({o, n}, {n}, [old_pair, new_pair]),
              3: ({n}, {n}, [new_pair])}
    check_skr_roll(tmp_path / "roll.skr", {p: phases[p][:2] for p in range(3)}, offline.at)
    states_dir = ["status", ZONE, "--zsk-dir", str(zsks), "--ksk-dir", str(ksk_dir)]
    result = online.publish(offline.at(0))
    with ControlledNamed(online.out, tmp_path / "named") as named:
        rndc = ["--rndc", f"-c {named.rndc_conf}"]
        named.wait_for_serial(result["serial"])
        for period, (ksks, cds, held) in phases.items():
            now = offline.at(period)
            if period:
                result = online.publish(now, *rndc, runway_low=period == 3)
                # the second ceremony's bundle is its own period 0
                assert result["published"] and result["period_index"] == period % 3
                named.wait_for_serial(result["serial"])
            validate_every_rrsig(online.out, now)
            dnssec_verify(online.out)
            for pair in held:  # each DS a resolver may hold validates the whole answer
                seen = validate_from_ds(named, anchor_of(pair), now)
                for rdtype in ("SOA", "DNSKEY", "CDS"):
                    checked = delv_from_ds(tmp_path, pair, named.port, rdtype)
                    if rdtype != "CDS" or cds:
                        assert "; fully validated" in checked.stdout, checked.stdout + checked.stderr
            dnskeys, dnskey_sigs = seen["DNSKEY"]
            assert {dns.dnssec.key_id(k) for k in dnskeys if k.flags == 257} == ksks
            assert {s.key_tag for s in dnskey_sigs} == ksks
            served_cds = {r.key_tag for r in seen["CDS"][0]} if "CDS" in seen else set()
            assert served_cds == cds
            if cds:
                assert {s.key_tag for s in seen["CDS"][1]} == ksks == \
                    {s.key_tag for s in seen["CDNSKEY"][1]}
                assert {dns.dnssec.key_id(k) for k in seen["CDNSKEY"][0]} == cds
            status = cli.json(*states_dir, "--at", str(now))
            rows = {row["tag"]: row for row in status["keys"] if row["role"] == "ksk"}
            assert {t for t, r in rows.items() if r["state"] in ("published", "active")} == ksks
            assert {t for t, r in rows.items() if r["state"] == "active"} == ksks
            assert {t for t, r in rows.items() if r["cds"]} == cds
            wanted = cds or {o}
            assert status["ds"] == [ds_text(ORIGIN, p.dnskey) for p in (old_pair, new_pair)
                                    if p.tag in wanted]
        # after the roll a resolver still holding only the old DS fails: the old KSK is gone
        stale = delv_from_ds(tmp_path, old_pair, named.port, "DNSKEY")
        assert "; fully validated" not in stale.stdout
        try:
            validate_from_ds(named, anchor_of(old_pair), offline.at(3))
        except dns.dnssec.ValidationFailure:
            pass
        else:
            raise AssertionError("the old KSK still validates the DNSKEY RRset after its Delete")
