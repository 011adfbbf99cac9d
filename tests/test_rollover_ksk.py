"""`rollover ksk` through "waiting for DS" to completion, with --test-timings, on token keys.

The test plays the parent: it holds the DS set a validator would get from the parent (the trust
anchor), switches it to the new KSK's DS only after `rollover ksk` said so, and serves it from a
stock named as the parent zone for --parent-server. A poller validates the DNSKEY RRset against
that DS set at every poll, the SOA against the DNSKEY RRset, and checks that the CDS/CDNSKEY named
serves are those of the KSK that `status` says the parent should have.
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
import dns.rdtypes.ANY.DS

from conftest import one_line_error
from dnspoller import ValidatingPoller
from namedproc import NamedProcess
from test_inline import ZONE, inline_cli, poll, setup  # noqa: F401 - inline_cli is a fixture

ORIGIN = dns.name.from_text(ZONE)
SLACK = 25.0


@dataclass
class Seen:
    at: float
    dnskeys: frozenset[int]
    dnskey_signers: frozenset[int]
    cds: frozenset[int]
    cdnskey: frozenset[int]


@dataclass
class DsPoller(ValidatingPoller):
    port: int
    anchor: list  # DS rdatas the parent serves now; replaced (never mutated) when it changes

    def ask(self, rdtype):
        response = dns.query.udp(dns.message.make_query(ORIGIN, rdtype, want_dnssec=True),
                                 "127.0.0.1", port=self.port, timeout=2)
        rrset = response.find_rrset(dns.message.ANSWER, ORIGIN, dns.rdataclass.IN, rdtype)
        sigs = response.find_rrset(dns.message.ANSWER, ORIGIN, dns.rdataclass.IN,
                                   dns.rdatatype.RRSIG, rdtype)
        return rrset, sigs

    def once(self) -> None:
        keys, sigs = self.ask(dns.rdatatype.DNSKEY)
        anchor = self.anchor
        trusted = [k for k in keys for ds in anchor
                   if dns.dnssec.make_ds(ORIGIN, k, ds.digest_type) == ds]
        assert trusted, f"no DNSKEY matches the parent's DS {[ds.key_tag for ds in anchor]}"
        errors = []
        for key in trusted:  # validates if one DS-matched key signed the DNSKEY RRset
            try:
                dns.dnssec.validate(keys, sigs, {ORIGIN: [key]})
                break
            except dns.dnssec.ValidationFailure as error:
                errors.append(str(error))
        else:
            raise AssertionError(f"DNSKEY RRset not signed by a key of the parent's DS: {errors}")
        signed = {}
        for rdtype in (dns.rdatatype.SOA, dns.rdatatype.CDS, dns.rdatatype.CDNSKEY):
            rrset, rrsigs = self.ask(rdtype)
            dns.dnssec.validate(rrset, rrsigs, {ORIGIN: keys})
            signed[rdtype] = rrset
        self.seen.append(Seen(
            time.time(), frozenset(dns.dnssec.key_id(k) for k in keys),
            frozenset(s.key_tag for s in sigs),
            frozenset(ds.key_tag for ds in signed[dns.rdatatype.CDS]),
            frozenset(dns.dnssec.key_id(k) for k in signed[dns.rdatatype.CDNSKEY])))




def ds_rdata(ds_line: str):
    return dns.rdata.from_text("IN", "DS", ds_line.split(" IN DS ", 1)[1])


def parent_zone(ds_line: str) -> str:
    return (f"$TTL 15\n@ IN SOA ns hostmaster 1 3600 600 86400 15\n@ IN NS ns\n"
            f"ns IN A 127.0.0.1\n{ZONE}. IN NS ns1.{ZONE}.\nns1.{ZONE}. IN A 127.0.0.1\n"
            f"{ds_line}\n")


def delv_with_ds(tmp_path: Path, ds_line: str, port: int) -> str:
    ds = ds_rdata(ds_line)
    anchors = tmp_path / f"anchor-{ds.key_tag}.conf"
    anchors.write_text(f'trust-anchors {{ {ZONE}. static-ds {ds.key_tag} {ds.algorithm} '
                       f'{ds.digest_type} "{ds.digest.hex()}"; }};\n')
    result = subprocess.run(["delv", "-a", str(anchors), f"+root={ZONE}", "@127.0.0.1", "-p",
                             str(port), ZONE, "DNSKEY"], capture_output=True, text=True, timeout=30)
    assert "; fully validated" in result.stdout, result.stdout + result.stderr
    return result.stdout


def test_ksk_rollover_through_waiting_for_ds_with_cds_and_a_following_trust_anchor(
        inline_cli, tmp_path):
    report = json.loads(setup(inline_cli, "--json").stdout)
    port = inline_cli.ports[0]
    old = next(k["tag"] for k in report["keys"] if k["role"] == "ksk")
    old_ds = report["ds"]
    poller = DsPoller(port, [ds_rdata(old_ds)])
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        assert poller.latest().cds == {old}
        # Step 1: the new KSK signs beside the old one; CDS still the old KSK's.
        step1 = inline_cli.json("rollover", "ksk", ZONE, "--test-timings")
        new, new_ds, sync = step1["successor"], step1["new_ds"], step1["sync"]
        assert step1["step"] == "waiting for DS" and step1["predecessor"] == old
        assert step1["uri"] == f"pkcs11:token=bindpkcs11;object={ZONE}-ksk-{new}"
        assert sync - step1["publish"] == 15 + 5
        now = poller.latest()
        assert time.time() < sync, "phase missed: the machine is too slow"
        assert {old, new} <= now.dnskeys and {old, new} <= now.dnskey_signers
        assert now.cds == now.cdnskey == {old}
        status = inline_cli.json("status", ZONE)
        assert status["ds"] == [old_ds]
        keys = {k["tag"]: k for k in status["keys"]}
        assert keys[new]["state"] == keys[old]["state"] == "active"
        assert keys[new]["next_event"] == {"event": "sync_publish", "time": sync}
        delv_with_ds(tmp_path, old_ds, port)
        # The parent may not switch yet: refused with the rule named.
        error = one_line_error(inline_cli("rollover", "ksk", ZONE, "--test-timings",
                                          "--ds-published", check=False))
        assert "double-KSK rule DS change >= Publish + DNSKEY TTL + propagation delay" in error
        # At SyncPublish the CDS/CDNSKEY switch to the new KSK; status says the parent should
        # now have the new DS.
        poll(lambda: poller.seen[-1].cds == {new}, sync - time.time() + SLACK, "the CDS switch")
        switched = next(s for s in poller.seen if new in s.cds)
        assert switched.at >= sync - 1 and switched.cdnskey == {new}
        status = inline_cli.json("status", ZONE)
        assert status["ds"] == [new_ds]
        # A parent that still serves the old DS: --ds-published is refused.
        with NamedProcess("test", _write(tmp_path / "old.db", parent_zone(old_ds)),
                          tmp_path / "parent-old") as parent:
            error = one_line_error(inline_cli(
                "rollover", "ksk", ZONE, "--test-timings", "--ds-published", "--parent-server",
                f"127.0.0.1:{parent.port}", check=False))
        assert f"serves DS {old} for {ZONE}., not the new KSK's DS {new}" in error
        # The parent switches: validators now start from the new DS.
        poller.anchor = [ds_rdata(new_ds)]
        with NamedProcess("test", _write(tmp_path / "new.db", parent_zone(new_ds)),
                          tmp_path / "parent-new") as parent:
            step2 = inline_cli.json("rollover", "ksk", ZONE, "--test-timings", "--ds-published",
                                    "--parent-server", f"127.0.0.1:{parent.port}")
        confirmed = time.time()
        retire = step2["retire"]
        assert step2["step"] == "retiring old KSK" and retire - confirmed <= 15 + 5 + 1
        keys = {k["tag"]: k for k in inline_cli.json("status", ZONE)["keys"]}
        assert keys[old]["next_event"]["time"] == retire
        delv_with_ds(tmp_path, new_ds, port)
        # At Inactive = Delete the old KSK leaves the DNSKEY RRset; only the new one signs it.
        poll(lambda: old not in poller.seen[-1].dnskeys, retire - time.time() + SLACK,
             "the old KSK removed")
        removed = next(s for s in poller.seen if old not in s.dnskeys)
        assert removed.at >= retire - 1
        now = poller.latest()
        assert now.dnskey_signers == {new} and now.cds == {new}
        keys = {k["tag"]: k for k in inline_cli.json("status", ZONE)["keys"]}
        assert keys[old]["state"] == "removed" and keys[new]["state"] == "active"
        assert inline_cli.json("status", ZONE)["ds"] == [new_ds]
        delv_with_ds(tmp_path, new_ds, port)
    finally:
        poller.stop.set()
        thread.join(10)
    assert not poller.failures, poller.failures[:5]
    print(f"\nKSK rollover {old}->{new}: CDS switched {switched.at - sync:+.1f} s from SyncPublish,"
          f" old KSK gone {removed.at - retire:+.1f} s from its Delete; {len(poller.seen)} polls"
          " validated against the parent's DS")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
