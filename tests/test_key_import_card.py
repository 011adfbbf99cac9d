"""Issue 10 on the emulated OpenPGP card: `key import` of an offline software RSA KSK into the card
(its fixed key slot, stored by the SO) and into a SoftHSM token as the second copy; `ksk presign`
from the card copy and from the SoftHSM copy gives the same DNSKEY RRset, and each bundle's
signatures validate with the offline key's DNSKEY. The card cannot wrap: `backup wrap` says so in
one line and points to `key import`, and a second import into the full slot is refused; neither
changes what the card holds."""

from __future__ import annotations

import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rrset

from bindpkcs11.dnssec.bundles import Unlocker, bundles_in, open_bundle
from bindpkcs11.dnssec.keyfile import read_key_pair
from card_fixtures import CARD_KEY, CARD_TOKEN, card_cli, card_token, sc  # noqa: F401
from conftest import Cli, one_line_error

ZONE = "example.test"
PASSPHRASE = "bundle passphrase 1"  # noqa: S105


def card_objects(cli: Cli) -> list[tuple[str, str]]:
    shown = sc(cli, "token", "show", "--label", CARD_TOKEN, "--json").stdout
    import json

    return sorted((str(o["object"]["object_class"]), str(o["object"].get("label")))
                  for o in json.loads(shown)["objects"])


def presign(cli: Cli, tmp_path: Path, profile: str, token: str, key_file: str, out: str) -> list:
    zsks = tmp_path / "zsks"
    if not zsks.exists():
        cli("keygen", ZONE, "--role", "zsk", "--algorithm", "8", "--bits", "2048", "--software",
            "--key-dir", str(zsks), "--publish", "now-1h", "--activate", "now-1h")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    cli("--profile", profile, "ksk", "presign", ZONE, "--token", token, "--ksk", key_file,
        "--zsk-dir", str(zsks), "--start", str(int(time.time()) // 60 * 60 - 60), "--periods", "1",
        "--test-timings", "--passphrase-file", str(passphrase), "--out", str(tmp_path / out),
        "--yes", timeout=300)
    return [open_bundle(path, Unlocker(PASSPHRASE)) for path in bundles_in(tmp_path / out)]


def rrset(text: str, rdtype: str) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(f"{ZONE}.", 3600, "IN", rdtype, [
        line.split(rdtype, 1)[1] for line in text.splitlines() if f" {rdtype} " in line])


def test_key_import_into_the_card_and_softhsm_then_presign_from_either(card_token, tmp_path):
    cli = card_token
    offline = tmp_path / "offline"
    cli("keygen", ZONE, "--role", "ksk", "--algorithm", "8", "--bits", "2048", "--software",
        "--key-dir", str(offline))
    private = next(offline.glob("*.private"))
    original = read_key_pair(private.with_suffix(".key")).dnskey

    on_card = cli.json("--profile", "opensc", "key", "import", str(private), "--token", CARD_TOKEN,
                       timeout=300)
    assert on_card["label"] == CARD_KEY  # the card names its slot's key itself
    cli("token", "init", "--label", "soft", "--generate-pins")
    on_soft = cli.json("key", "import", str(private), "--token", "soft", "--key-dir",
                       str(tmp_path / "soft-keys"))
    assert "2 copies" in on_soft["copies"] and "backed up" in on_soft["copies"]
    assert private.exists()  # kept: no --destroy-source

    shown = sc(cli, "token", "show", "--label", CARD_TOKEN).stdout
    assert f"ksk tag {on_card['tag']} alg 8" in shown and "MISMATCH" not in shown
    assert "2 copies (token OpenPGP card (User PIN), token soft), backed up" in shown

    card_key = next(k for k in on_card["key_files"] if k.endswith(".key"))
    soft_key = next(k for k in on_soft["key_files"] if k.endswith(".key"))
    from_card = presign(cli, tmp_path, "opensc", CARD_TOKEN, card_key, "from-card")
    from_soft = presign(cli, tmp_path, "softhsm", "soft", soft_key, "from-soft")
    assert from_card[0].content.dnskey_rrset == from_soft[0].content.dnskey_rrset
    keys = {dns.name.from_text(f"{ZONE}."): dns.rrset.from_rdata(f"{ZONE}.", 3600, original)}
    for bundle in (from_card[0], from_soft[0]):
        dnskeys = rrset(bundle.content.dnskey_rrset, "DNSKEY")
        rrsigs = rrset(bundle.content.rrsigs, "RRSIG")
        assert original in dnskeys and on_card["tag"] in {rd.key_tag for rd in rrsigs}
        dns.dnssec.validate(dnskeys, rrsigs, keys, now=time.time())

    before = card_objects(cli)
    wrap = one_line_error(sc(cli, "backup", "wrap", "--token", CARD_TOKEN, "--object", CARD_KEY,
                             "--out", str(tmp_path / "w"), check=False))
    assert "cannot wrap keys" in wrap and "key import" in wrap, wrap
    again = one_line_error(sc(cli, "key", "import", str(private), "--token", CARD_TOKEN,
                              "--key-dir", str(tmp_path / "again"), check=False, timeout=300))
    assert "already holds its key" in again and "nothing was imported" in again
    assert card_objects(cli) == before and not (tmp_path / "w").exists()
    log = (cli.state_dir / "backup" / "ceremony.log").read_text()
    assert f"PROOF token={CARD_TOKEN}" in log and "PROOF token=soft" in log
