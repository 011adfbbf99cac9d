"""Bundle format version 2 (one or two KSKs, DS at the parent, CDS/CDNSKEY) at the signer:
version 1 bundles (one `ksk_tag`, made before KSK rollovers) still sign the zone, and bundles
whose KSK set, DS set or CDS/CDNSKEY do not hold together are refused in one line while the last
good zone stays. The crafted bundles are sealed with the real passphrase, as a buggy or old
ceremony would have made them, so only the signer's checks (dnssec/bundlecheck.py) stop them.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import replace

import dns.dnssec
import dns.rdata
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bindpkcs11.dnssec import bundles
from bindpkcs11.dnssec.bundles import Bundle, BundleKey, Unlocker, open_bundle
from conftest import one_line_error
from test_rel_offline_wrong_zone_key import crafted_bundle_dir
import test_signer_offline_ksk
from test_signer_offline_ksk import ORIGIN, PASSPHRASE, Online, dnssec_verify, validate_signed_zone

offline = test_signer_offline_ksk.offline  # the fixture, reused
online = test_signer_offline_ksk.online  # the fixture, reused


def as_version_1(bundle: Bundle, key: BundleKey) -> bytes:
    """The bundle as bindpkcs11 wrote it before KSK rollovers: header `ksk_tag`, content
    `ksk_key`, version 1 (the layout of bundles.py at commit 54033e9)."""
    (ksk_tag,) = bundle.header.ksk_tags
    plaintext = json.dumps({
        "dnskey_rrset": bundle.content.dnskey_rrset, "rrsigs": bundle.content.rrsigs,
        "signing_tags": list(bundle.content.signing_tags),
        "zsks": [{"tag": z.tag, "key": z.key_text, "private": z.private_text}
                 for z in bundle.content.zsks],
        "ksk_key": bundle.content.ksk_keys[0],
    }, sort_keys=True).encode()
    nonce, header = os.urandom(12), bundle.header
    fields = {
        "zone": header.zone, "index": header.index, "period_start": header.period_start,
        "period_end": header.period_end, "inception": header.inception,
        "expiration": header.expiration, "ksk_tag": ksk_tag, "ceremony": header.ceremony,
        "kdf": {"name": "scrypt", "salt": key.kdf.salt.hex(), "n": key.kdf.n, "r": key.kdf.r,
                "p": key.kdf.p},
        "check": key.check.hex(), "nonce": nonce.hex(), "payload_length": len(plaintext) + 16,
        "version": 1, "cipher": "AES-256-GCM", "format": "bindpkcs11-bundle",
    }
    encoded = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    prefix = bundles.MAGIC + struct.pack(">I", len(encoded)) + encoded
    return prefix + AESGCM(key.aes_key).encrypt(nonce, plaintext, prefix)


def test_a_version_1_bundle_still_signs_the_zone(online: Online, tmp_path):
    offline = online.offline
    first = offline.bundles[0].name
    old = tmp_path / "v1"
    shutil.copytree(online.bundle_dir, old)
    bundle = open_bundle(old / first, Unlocker(PASSPHRASE))
    assert bundle.header.version == 2 and bundle.header.ksk_tags == (offline.ksk_tag,)
    key = Unlocker(PASSPHRASE).key_for(bundle.header.kdf)
    bundles.write_bundle(old / first, as_version_1(bundle, key))
    loaded = open_bundle(old / first, Unlocker(PASSPHRASE))
    assert loaded.header.version == 1
    assert (loaded.header.ksk_tags, loaded.header.ds_tags) == ((offline.ksk_tag,),) * 2
    assert loaded.content.ksk_keys == bundle.content.ksk_keys and not loaded.content.sync_rrsets
    result = online.run(offline.at(0), bundles=old)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["published"]
    validate_signed_zone(online.out, offline.at(0), offline.ksk_tag)
    dnssec_verify(online.out)


def no_ds_at_parent(bundle: Bundle):
    return replace(bundle.header, ds_tags=()), bundle.content


def ds_of_a_stranger(bundle: Bundle):
    return replace(bundle.header, ds_tags=(4242,)), bundle.content


def a_second_ksk_not_in_the_rrset(bundle: Bundle):
    return replace(bundle.header, ksk_tags=(*bundle.header.ksk_tags, 4242)), bundle.content


def _with_cds_of(bundle: Bundle, flags: int):
    """The bundle with unsigned CDS/CDNSKEY naming its DNSKEY of `flags` (256 ZSK, 257 KSK)."""
    line = next(line for line in bundle.content.dnskey_rrset.splitlines() if f" {flags} 3 " in line)
    key = dns.rdata.from_text("IN", "DNSKEY", line.split(None, 4)[4])
    ds = dns.dnssec.make_ds(ORIGIN, key, "SHA256")
    text = (f"{ORIGIN} 60 IN CDS {ds.to_text()}\n"
            f"{ORIGIN} 60 IN CDNSKEY {key.to_text()}\n")
    return bundle.header, replace(bundle.content, sync_rrsets=text)


def cds_of_a_zsk(bundle: Bundle):
    """CDS/CDNSKEY naming the ZSK (a parent following them would install a DS for it)."""
    return _with_cds_of(bundle, 256)


def unsigned_cds_of_the_ksk(bundle: Bundle):
    return _with_cds_of(bundle, 257)


CASES = {
    "no-ds-at-parent": (no_ds_at_parent, "names DS at the parent for KSK none"),
    "ds-of-a-stranger": (ds_of_a_stranger, "names DS at the parent for KSK 4242"),
    "second-ksk-missing": (a_second_ksk_not_in_the_rrset, "has no KSK with tag 4242"),
    "cds-of-a-zsk": (cds_of_a_zsk, "names a key that is not one of its KSKs"),
    "unsigned-cds": (unsigned_cds_of_the_ksk, "is not signed by its KSKs"),
}


def test_signer_refuses_bundles_whose_ksks_ds_or_cds_do_not_hold_together(online: Online, tmp_path):
    offline = online.offline
    assert online.publish(offline.at(0))["published"]
    published = online.out.read_bytes()
    first = offline.bundles[0].name
    for name, (craft, expected) in CASES.items():
        crafted = crafted_bundle_dir(online, tmp_path / name, craft)
        online.out.unlink()  # force a re-sign with the crafted bundle
        result = online.run(offline.at(0, 20), bundles=crafted)
        error = one_line_error(result)
        assert first in error and expected in error, (name, error)
        assert result.returncode == 13, (name, result.returncode)
        assert not online.out.exists(), name
        online.out.write_bytes(published)
