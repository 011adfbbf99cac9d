"""Issue 8 item 1: a key of another zone, or a DNSKEY RRset that does not chain to the ceremony's
KSK, never reaches a published zone.

`ksk presign` checks every key's owner name (policy KEY-OWNER-IS-ZONE). The signer treats the
bundle's authenticated header (zone, KSK tag) as its trust anchor and checks each bundle before
signing with it; the bundles below are sealed with the real passphrase, as an old or buggy
ceremony would have made them, so only those checks stand between them and named.
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import replace
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec

from bindpkcs11.dnssec import bundles
from bindpkcs11.dnssec.bundles import Unlocker, bundles_in, open_bundle
from conftest import one_line_error
import test_ksk_presign
from test_ksk_presign import ZONE, Ceremony
import test_signer_offline_ksk
from test_signer_offline_ksk import PASSPHRASE, Online

OTHER = "other.test"

ceremony = test_ksk_presign.ceremony  # the fixture, reused
offline = test_signer_offline_ksk.offline  # the fixture, reused
online = test_signer_offline_ksk.online  # the fixture, reused


def test_presign_refuses_a_ksk_of_another_zone(ceremony: Ceremony):
    ceremony.rollover_zsks()
    other = ceremony.cli.json("keygen", OTHER, "--role", "ksk", "--algorithm", "13")
    error = one_line_error(ceremony.presign(check=False, ksk=other["key_file"]))
    assert "policy KEY-OWNER-IS-ZONE violated" in error and OTHER in error
    assert not bundles_in(ceremony.out)
    assert "SIGNED" not in ceremony.log_text()


def test_presign_refuses_a_zsk_of_another_zone_under_this_zones_file_name(ceremony: Ceremony, tmp_path):
    ceremony.rollover_zsks()
    other = ceremony.cli.json("keygen", OTHER, "--role", "zsk", "--algorithm", "13", "--software",
                              "--key-dir", str(tmp_path / "other"), "--publish", "now-1h",
                              "--activate", "now-1h")
    source = Path(other["key_file"])
    renamed = ceremony.zsk_dir / source.name.replace(f"K{OTHER}.", f"K{ZONE}.")
    shutil.copy(source, renamed)
    shutil.copy(source.with_suffix(".private"), renamed.with_suffix(".private"))
    error = one_line_error(ceremony.presign(check=False))
    assert "policy KEY-OWNER-IS-ZONE violated" in error and str(renamed) in error
    assert not bundles_in(ceremony.out)


def zsk_private_key(bundle) -> ec.EllipticCurvePrivateKey:
    text = bundle.content.zsks[0].private_text
    scalar = base64.b64decode(text.split("PrivateKey: ")[1].split()[0])
    return ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())


def rrset_of(text: str) -> dns.rrset.RRset:
    lines = [line.split(None, 4) for line in text.splitlines() if line.strip()]
    return dns.rrset.from_text_list(lines[0][0], int(lines[0][1]), "IN", lines[0][3],
                                    [line[4] for line in lines])


def signed_by_zsk(bundle):
    """The period's DNSKEY RRset signed by its ZSK instead of the KSK (a self-consistent set that
    does not chain to the DS)."""
    dnskeys = rrset_of(bundle.content.dnskey_rrset)
    zsk = next(key for key in dnskeys if dns.dnssec.key_id(key) == bundle.content.zsks[0].tag)
    rrsig = dns.dnssec.sign(dnskeys, zsk_private_key(bundle), dnskeys.name, zsk,
                            inception=bundle.header.inception, expiration=bundle.header.expiration)
    rrsigs = dns.rrset.from_rdata(dnskeys.name, dnskeys.ttl, rrsig)
    return replace(bundle.content, rrsigs=rrsigs.to_text() + "\n")


def ksk_of_other_zone(bundle):
    """The KSK's key file as `keygen other.test` wrote it (same key, other owner)."""
    (text,) = bundle.content.ksk_keys
    assert f"{ZONE}. IN DNSKEY 257" in text
    return replace(bundle.content, ksk_keys=(text.replace(f"{ZONE}.", f"{OTHER}."),))


def zsk_of_other_zone(bundle):
    zsk = bundle.content.zsks[0]
    moved = replace(zsk, key_text=zsk.key_text.replace(f"{ZONE}.", f"{OTHER}."))
    return replace(bundle.content, zsks=(moved,))


CASES = {
    "dnskey-signed-by-zsk": (signed_by_zsk, "is signed by key"),
    "ksk-of-other-zone": (ksk_of_other_zone, f"of {OTHER}., not a KSK of {ZONE}"),
    "zsk-of-other-zone": (zsk_of_other_zone, f"of {OTHER}., not of {ZONE}"),
}


def crafted_bundle_dir(online: Online, path: Path, craft) -> Path:
    """A copy of the signer's bundle dir at `path` whose first bundle is re-sealed with the real
    passphrase from craft(bundle) -> (header, content)."""
    shutil.copytree(online.bundle_dir, path)
    first = path / online.offline.bundles[0].name
    bundle = open_bundle(first, Unlocker(PASSPHRASE))
    key = Unlocker(PASSPHRASE).key_for(bundle.header.kdf)
    bundles.write_bundle(first, bundles.seal(*craft(bundle), key))
    return path


def test_signer_refuses_bundles_that_do_not_chain_to_the_ceremony_ksk(online: Online, tmp_path):
    offline = online.offline
    good = online.publish(offline.at(0))
    published = online.out.read_bytes()
    first = offline.bundles[0].name
    for name, (craft, expected) in CASES.items():
        crafted = crafted_bundle_dir(online, tmp_path / name,
                                     lambda bundle: (bundle.header, craft(bundle)))
        online.out.unlink()  # force a re-sign with the crafted bundle
        error = one_line_error(online.run(offline.at(0, 20), bundles=crafted))
        assert first in error and expected in error, (name, error)
        assert not online.out.exists(), name
        online.out.write_bytes(published)
    # A bundle made for example.test is never used to sign other.test.
    other = online.cli("signer", "run", OTHER, "--unsigned", str(online.unsigned), "--bundles",
                       str(online.bundle_dir), "--out", str(tmp_path / "other.signed"), "--once",
                       "--now", str(offline.at(0)), "--test-timings", "--passphrase-file",
                       str(offline.passphrase_file), check=False)
    assert f"no bundles for {OTHER}." in one_line_error(other)
    assert not (tmp_path / "other.signed").exists() and good["published"]
