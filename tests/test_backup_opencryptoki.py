"""Issue 10 on opencryptoki's soft token (two sandboxes, two real tokens): it has no
CKM_AES_KEY_WRAP_PAD, only CKM_AES_CBC_PAD (checked: the 3.8 soft token lists AES_CBC_PAD with
CKF_WRAP|CKF_UNWRAP), so `backup wrap` uses that and the wrap file says so. KEK shares into both
tokens, an RSA KSK made with --backup on one, wrapped, unwrapped onto the other, and the copy
proven by bundles `ksk presign` signs with it that validate with the original DNSKEY and DS.
A SoftHSM token (no CKM_AES_CBC_PAD unwrap) refuses that wrap file in one line, nothing left."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rrset

from bindpkcs11.dnssec.keyfile import read_key_pair
from bindpkcs11.dnssec.bundles import Unlocker, bundles_in, open_bundle
from conftest import Cli, one_line_error
from occ_fixtures import OPENCRYPTOKI, OCC_TOKEN, needs_opencryptoki, oc, occ_cli, occ_token  # noqa: F401
from test_backup_ceremony import import_share, make_shares

pytestmark = needs_opencryptoki
ZONE = "example.test"
PASSPHRASE = "bundle passphrase 1"  # noqa: S105


@contextlib.contextmanager
def second_sandbox():
    """Another state dir with its own opencryptoki sandbox and token 'other'; always stopped."""
    with OPENCRYPTOKI.state_dir("bp11-occ2-") as cli:
        oc(cli, "token", "init", "--label", "other", "--generate-pins")
        yield cli


def objects(cli: Cli, token: str, profile: str = "opencryptoki") -> list[tuple[str, str]]:
    shown = cli.json("--profile", profile, "token", "show", "--label", token)
    return sorted((o["object"]["object_class"], o["object"]["label"]) for o in shown["objects"])


def presign(cli: Cli, tmp_path: Path, token: str, key_file: str) -> list:
    zsks = tmp_path / "zsks"
    cli("keygen", ZONE, "--role", "zsk", "--algorithm", "8", "--bits", "2048", "--software",
        "--key-dir", str(zsks), "--publish", "now-1h", "--activate", "now-1h")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    oc(cli, "ksk", "presign", ZONE, "--token", token, "--ksk", key_file, "--zsk-dir", str(zsks),
       "--start", str(int(time.time()) // 60 * 60 - 60), "--periods", "1", "--test-timings",
       "--passphrase-file", str(passphrase), "--out", str(tmp_path / "bundles"), "--yes")
    return [open_bundle(path, Unlocker(PASSPHRASE)) for path in bundles_in(tmp_path / "bundles")]


def test_opencryptoki_wraps_with_aes_cbc_pad_and_the_copy_signs_on_another_token(occ_token,
                                                                                  tmp_path):
    shares, pws, kcv = make_shares(occ_token, tmp_path)
    for index in (0, 1):
        oc(occ_token, "backup", "import-share", str(shares[index]), "--token", OCC_TOKEN,
           "--password-file", str(pws[index]))
    ksk = occ_token.json("--profile", "opencryptoki", "keygen", ZONE, "--role", "ksk",
                         "--algorithm", "8", "--bits", "2048", "--token", OCC_TOKEN, "--backup")
    wrap = tmp_path / "ksk.wrap"
    oc(occ_token, "backup", "wrap", "--token", OCC_TOKEN, "--object", ksk["object_label"],
       "--out", str(wrap))
    record = occ_token.json("backup", "verify", str(wrap))
    assert record["mechanism"] == "CKM_AES_CBC_PAD" and record["kek_kcv"] == kcv

    # the SoftHSM token of the same state dir holds the same KEK but cannot unwrap AES-CBC-PAD
    occ_token("token", "init", "--label", "soft", "--generate-pins")
    for index in (0, 2):
        import_share(occ_token, shares[index], pws[index], "soft")
    before = objects(occ_token, "soft", "softhsm")
    error = one_line_error(occ_token("backup", "unwrap", str(wrap), "--token", "soft",
                                     check=False))
    assert "cannot unwrap CKM_AES_CBC_PAD" in error and "key import" in error, error
    assert objects(occ_token, "soft", "softhsm") == before

    with second_sandbox() as other:
        for index in (1, 2):
            oc(other, "backup", "import-share", str(shares[index]), "--token", "other",
               "--password-file", str(pws[index]))
        copy = other.json("--profile", "opencryptoki", "backup", "unwrap", str(wrap),
                          "--token", "other")
        assert copy["tag"] == ksk["tag"]
        shown = other.json("--profile", "opencryptoki", "token", "show", "--label", "other")
        private = next(o for o in shown["objects"] if o["object"]["object_class"] == "private")
        # opencryptoki 3.8 ignores CKA_SENSITIVE/CKA_EXTRACTABLE in the unwrap template: set after
        assert private["object"]["sensitive"] and not private["object"]["extractable"]
        bundles = presign(other, tmp_path, "other", copy["key_file"])

    original = dns.rrset.from_rdata(f"{ZONE}.", 3600, read_key_pair(Path(ksk["key_file"])).dnskey)
    dnskeys = dns.rrset.from_text_list(f"{ZONE}.", 3600, "IN", "DNSKEY", [
        line.split("DNSKEY", 1)[1] for line in bundles[0].content.dnskey_rrset.splitlines()
        if "DNSKEY" in line])
    assert original[0] in dnskeys
    rrsigs = dns.rrset.from_text_list(f"{ZONE}.", 3600, "IN", "RRSIG", [
        line.split("RRSIG", 1)[1] for line in bundles[0].content.rrsigs.splitlines()
        if "RRSIG" in line])
    assert ksk["tag"] in {rd.key_tag for rd in rrsigs}
    dns.dnssec.validate(dnskeys, rrsigs, {dns.name.from_text(f"{ZONE}."): original},
                        now=time.time())
    ds = dns.dnssec.make_ds(f"{ZONE}.", original[0], "SHA256")
    assert ksk["ds"].endswith(ds.digest.hex().upper())
