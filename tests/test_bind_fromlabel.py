"""Issues 14 and 11: BIND's own PKCS#11 workflow works on the patched 9.18 and the patched 9.20.

The commands of BIND's PKCS#11 chapter (ARM), run as written except for the PIN (which comes
from PKCS11_LIBRARY_PIN_FILE, never the label): `pkcs11-tool -l -k` makes the key pairs,
`dnssec-keyfromlabel [-E pkcs11] -l "token=..;object=.."` the key files, `dnssec-signzone -E pkcs11`
signs, `named -E pkcs11` serves, and bindpkcs11's keygen writes the same files dnssec-keyfromlabel
does (`--key-format 9.20` for 9.20, whose files have no Engine: line). Every test runs once per
series (the `series_bind` fixture). (Key files made by a real engine build of 9.18:
test_bind_engine_keyfiles.py.) Real SoftHSM tokens, real patched BIND, stock dnssec-verify and
dnspython as judges; nothing is mocked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bindpkcs11.dnssec.keyfile import read_key_pair
from fromlabel_tools import (ZONE, decoded, inline_zone_config, keyfromlabel, made_key,
                             patched_named_wrapper, pkcs11_tool_keypair, private_fields,
                             series_bind, served_signed, signzone, stock_verify,
                             validate_zone_file, write_zone)  # noqa: F401 (series_bind: fixture)
from namedproc import NamedProcess

# (algorithm, KSK label as the operator types it, ZSK label): the ARM's short form without
# "pkcs11:" (dnssec-keyfromlabel adds it) and the full RFC 7512 URI.
CASES = {
    "ECDSAP256SHA256": ("token=bindpkcs11;object=example.test-ksk",
                        "pkcs11:token=bindpkcs11;object=example.test-zsk"),
    "RSASHA256": ("pkcs11:token=bindpkcs11;object=example.test-ksk",
                  "token=bindpkcs11;object=example.test-zsk"),
    "ED25519": ("pkcs11:token=bindpkcs11;object=example.test-ksk",
                "pkcs11:token=bindpkcs11;object=example.test-zsk"),
}


def full_uri(label: str) -> str:
    return label if label.startswith("pkcs11:") else f"pkcs11:{label}"


@pytest.mark.parametrize("algorithm", list(CASES))
def test_arm_workflow_pkcs11_tool_keyfromlabel_signzone_named(token_cli, series_bind, tmp_path,
                                                              algorithm):
    """pkcs11-tool key pairs -> dnssec-keyfromlabel (KSK with -E pkcs11, ZSK without) ->
    dnssec-signzone -E pkcs11 -> stock dnssec-verify + dnspython -> named -E pkcs11 serving it."""
    ksk_label, zsk_label = CASES[algorithm]
    # The ARM gives ECDSA keys a unique --id (libp11 matched on it); RSA keys get none there.
    ids = (None, None) if algorithm == "RSASHA256" else ("4b534b", "5a534b")
    pkcs11_tool_keypair(token_cli, algorithm, "example.test-ksk", ids[0])
    pkcs11_tool_keypair(token_cli, algorithm, "example.test-zsk", ids[1])
    keys = tmp_path / "keys"
    patched_bind = series_bind.prefix
    ksk = made_key(keyfromlabel(patched_bind, token_cli, keys, algorithm, ksk_label,
                                "-E", "pkcs11", "-f", "KSK"), keys)
    zsk = made_key(keyfromlabel(patched_bind, token_cli, keys, algorithm, zsk_label), keys)

    tags = set()
    for key_file, label, flags in ((ksk, ksk_label, 257), (zsk, zsk_label, 256)):
        fields = private_fields(key_file)
        if series_bind.writes_engine:
            assert decoded(fields["Engine"]) == b"pkcs11\0"
        else:  # 9.20's form: the Label alone, also after -E pkcs11 (the KSK)
            assert "Engine" not in fields
        assert decoded(fields["Label"]) == full_uri(label).encode() + b"\0"
        assert "PrivateKey" not in fields  # the private key stays in the token
        assert ("Modulus" in fields) == (algorithm == "RSASHA256")
        pair = read_key_pair(key_file)  # bindpkcs11 reads BIND's file as one of its own
        assert pair.dnskey.flags == flags and pair.label_uri == full_uri(label)
        tags.add(pair.tag)
    assert token_cli.pin() not in "".join(p.read_text() for p in keys.iterdir())

    zone = write_zone(tmp_path / "sign")
    result = signzone(patched_bind, token_cli, keys, zone, "-E", "pkcs11")
    assert result.returncode == 0, result.stderr
    signed = zone.with_suffix(".signed")
    stock_verify(signed)
    assert validate_zone_file(signed) == tags

    served = tmp_path / "served"
    unsigned = write_zone(served)
    named = patched_named_wrapper(patched_bind, token_cli, tmp_path)
    with NamedProcess(ZONE, None, served / "named", named=str(named),
                      extra_config=inline_zone_config(unsigned, keys, series_bind.series,
                                                      algorithm)) as server:
        seen = served_signed(server.port, tags)
    assert seen["DNSKEY"] == {read_key_pair(ksk).tag}
    assert seen["SOA"] == seen["A"] == {read_key_pair(zsk).tag}


def _normalised(text: str) -> str:
    """A key file with its times blanked: the two tools ran a few seconds apart."""
    text = re.sub(r"\b\d{14}\b", "YYYYMMDDHHMMSS", text)
    return re.sub(r"\(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\)", "(ctime)", text)


@pytest.mark.parametrize("algorithm, role", [("ECDSAP256SHA256", "ksk"), ("RSASHA256", "zsk"),
                                             ("ED25519", "ksk"), ("ECDSAP384SHA384", "zsk")])
def test_keyfromlabel_writes_what_bindpkcs11_keygen_writes(token_cli, series_bind, tmp_path,
                                                           algorithm, role):
    """One format, one truth: for the same token key, BIND's dnssec-keyfromlabel and
    bindpkcs11's keygen write the same file names and the same .key and .private, field for
    field (only the creation times differ), so either tool's files serve the other."""
    made = token_cli.json("keygen", ZONE, "--role", role, "--algorithm", algorithm,
                          "--key-format", series_bind.key_format)
    ours = Path(made["key_file"])
    theirs_dir = tmp_path / "bind"
    flags = ("-f", "KSK") if role == "ksk" else ()
    theirs = made_key(keyfromlabel(series_bind.prefix, token_cli, theirs_dir, algorithm,
                                   read_key_pair(ours).label_uri, *flags), theirs_dir)
    assert theirs.name == ours.name  # same DNSKEY, hence the same tag and file name
    assert read_key_pair(theirs).dnskey == read_key_pair(ours).dnskey
    assert _normalised(theirs.with_suffix(".private").read_text()) == \
        _normalised(ours.with_suffix(".private").read_text())
    assert _normalised(theirs.read_text()) == _normalised(ours.read_text())
    # -E pkcs11 writes the same files: 9.18 had Engine: already, 9.20 keeps the Label alone.
    again_dir = tmp_path / "bind-E"
    again = made_key(keyfromlabel(series_bind.prefix, token_cli, again_dir, algorithm,
                                  read_key_pair(ours).label_uri, "-E", "pkcs11", *flags), again_dir)
    assert _normalised(again.with_suffix(".private").read_text()) == \
        _normalised(ours.with_suffix(".private").read_text())


def test_engine_option_is_accepted_and_optional_other_engines_refused(token_cli, series_bind,
                                                                       tmp_path):
    """-E pkcs11 (the ARM's flag) and no -E both sign; -E with any other engine is refused."""
    patched_bind = series_bind.prefix
    for role in ("ksk", "zsk"):
        token_cli("keygen", ZONE, "--role", role, "--algorithm", "ECDSAP256SHA256",
                  "--key-format", series_bind.key_format)
    zone = write_zone(tmp_path)
    for extra in ((), ("-E", "pkcs11")):
        result = signzone(patched_bind, token_cli, token_cli.key_dir, zone, *extra)
        assert result.returncode == 0, (extra, result.stderr)
    result = signzone(patched_bind, token_cli, token_cli.key_dir, zone, "-E", "gost")
    assert result.returncode != 0 and "no engine" in result.stderr, result.stderr
