"""Issue 9, KSK and ZSK both on the emulated OpenPGP card: OpenSC shows the card as one token per
key slot, so setup-inline takes the ZSK's token with --zsk-token. The served zone is transferred
and checked by dnssec-verify, every RRSIG's key tag by dnspython, answers by delv and monitor;
then the re-run, the guard, `named stop/start` and monitor work from what the instance recorded.
The zone is the small sample zone: the card signs about 18 signatures/s."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import dns.query
import dns.rdatatype
import dns.zone

from card_fixtures import CARD_TOKEN, card_cli, card_token, sc  # noqa: F401 - fixtures
from conftest import one_line_error
from namedproc import free_port
from test_tpm2_inline import delv, delv_anchor

ZONE = "example.test"
SIG_TOKEN = "OpenPGP card (User PIN (sig))"


def served_zone(port: int) -> dns.zone.Zone:
    """The signed zone as named serves it (AXFR from loopback, allowed by --secondary)."""
    return dns.zone.from_xfr(dns.query.xfr("127.0.0.1", ZONE, port=port, timeout=20, lifetime=60,
                                           relativize=False),
                             relativize=False)


def unsigned_rrsets(zone: dns.zone.Zone) -> list[str]:
    """RRsets of the served zone without an RRSIG (the sample zone has no delegations)."""
    missing = []
    for name, node in zone.nodes.items():
        covered = {rdataset.covers for rdataset in node if rdataset.rdtype == dns.rdatatype.RRSIG}
        missing += [f"{name}/{dns.rdatatype.to_text(rdataset.rdtype)}" for rdataset in node
                    if rdataset.rdtype != dns.rdatatype.RRSIG and rdataset.rdtype not in covered]
    return missing


def fully_signed_zone(port: int, deadline: float = 180) -> dns.zone.Zone:
    """The served zone once named's signing pass has reached every RRset: setup-inline returns
    when the apex and a denial validate, and on the card (batches of one name) the rest of this
    small zone follows within seconds."""
    until = time.monotonic() + deadline
    while True:
        zone = served_zone(port)
        missing = unsigned_rrsets(zone)
        if not missing:
            return zone
        assert time.monotonic() < until, f"still unsigned after {deadline} s: {missing}"
        time.sleep(0.5)


KSK_SIGNED = {dns.rdatatype.DNSKEY, dns.rdatatype.CDS, dns.rdatatype.CDNSKEY}


def signer_tags(zone: dns.zone.Zone) -> dict[str, set[int]]:
    """Key tags of the RRSIGs over the key RRsets (DNSKEY, and CDS/CDNSKEY for the parent) and
    over everything else."""
    tags: dict[str, set[int]] = {"dnskey": set(), "other": set()}
    for _, rdataset in zone.iterate_rdatasets():
        for rrsig in rdataset if rdataset.rdtype == dns.rdatatype.RRSIG else ():
            tags["dnskey" if rrsig.type_covered in KSK_SIGNED else "other"].add(rrsig.key_tag)
    return tags


def test_ksk_and_zsk_on_the_card_sign_the_zone_and_the_instance_keeps_them(card_token, patched_bind,
                                                                          tmp_path):
    cli = card_token
    port, rndc_port = cli.ports
    args = ("setup-inline", ZONE, "--token", CARD_TOKEN, "--algorithm", "RSASHA256",
            "--port", str(port), "--rndc-port", str(rndc_port),
            "--secondary", f"127.0.0.1:{free_port()}", "--json")
    report = json.loads(sc(cli, *args, "--zsk-token", SIG_TOKEN, timeout=300).stdout)
    uris = {key["role"]: key["uri"] for key in report["keys"]}
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    assert uris == {
        "ksk": "pkcs11:token=OpenPGP%20card%20(User%20PIN);object=Authentication%20key",
        "zsk": "pkcs11:token=OpenPGP%20card%20(User%20PIN%20(sig));object=Signature%20key",
    }
    instance_dir = Path(report["instance_dir"])
    settings = json.loads((instance_dir / "instance.json").read_text())
    assert settings["zsk_on"] == "token" and settings["zsk_token"] == SIG_TOKEN
    assert all("PrivateKey" not in p.read_text() for p in (instance_dir / "keys").glob("*.private"))

    # What named serves: every RRSIG by the card's keys, DNSKEY (CDS) by the KSK, the rest by the ZSK
    zone = fully_signed_zone(port)
    signers = signer_tags(zone)
    assert tags["ksk"] in signers["dnskey"] and signers["other"] == {tags["zsk"]}
    signed = tmp_path / "served.zone"
    zone.to_file(str(signed), relativize=False)
    verify = subprocess.run(["dnssec-verify", "-o", ZONE, str(signed)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and "Zone fully signed" in verify.stdout + verify.stderr, verify
    ksk_file = next(p for p in (instance_dir / "keys").glob("*.key") if f"+{tags['ksk']:05d}" in p.name)
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(delv_anchor(ksk_file))
    for name, rdtype in ((ZONE, "DNSKEY"), (f"www.{ZONE}", "A")):
        checked = delv(anchors, port, name, rdtype)
        assert checked.returncode == 0 and "; fully validated" in checked.stdout, checked

    # A re-run without --zsk-token keeps the ZSK on the card's other token: nothing changes
    again = json.loads(sc(cli, *args, timeout=300).stdout)
    assert again["changed"] is False and {k["role"]: k["tag"] for k in again["keys"]} == tags

    # The guard sees the ZSK: deleting it, or resetting the card through its other token, is refused
    delete = sc(cli, "token", "delete", "--label", SIG_TOKEN, "--object", "Signature key",
                "--type", "private", "--force", check=False)
    assert "active key" in one_line_error(delete) and f"+{tags['zsk']:05d}" in delete.stderr
    erase = sc(cli, "token", "erase", "--label", CARD_TOKEN, "--force", "--yes", check=False)
    line = one_line_error(erase)
    assert "refusing to erase" in line and f"+{tags['zsk']:05d}" in line and f"+{tags['ksk']:05d}" in line

    # named restarted from the instance's record signs a new serial through both card tokens
    sc(cli, "named", "stop", ZONE)
    sc(cli, "named", "start", ZONE, timeout=300)  # returns once a new serial is served signed
    monitor = json.loads(sc(cli, "monitor", ZONE, "--once", "--json").stdout)
    assert monitor["status"] == "ok", monitor
    assert signer_tags(fully_signed_zone(port))["other"] == {tags["zsk"]}
