"""Issue 14: key files made by BIND 9.18's own engine route load, sign and serve in the patched BIND.

An administrator migrating from an engine build keeps their key files. Here those files are made
by that route for real, not crafted: upstream 9.18.49 built with `-DOPENSSL_API_COMPAT=10100`
(tests/enginebind.py, cached) and Debian's libp11 engine run `dnssec-keyfromlabel -E pkcs11 -l
"pkcs11:token=..;object=.."` on a SoftHSM token whose key pairs `pkcs11-tool` made; the PIN goes
to libp11 through its openssl.cnf, never argv or the label. Then the patched dnssec-signzone and
named use the files as they are, judged by stock dnssec-verify and dnspython.
"""

from __future__ import annotations

import pytest

from bindpkcs11.dnssec.keyfile import read_key_pair
from enginebind import engine_config, engine_keyfromlabel, ensure_engine_bind
from fromlabel_tools import (ZONE, decoded, inline_zone_config, keyfromlabel, made_key,
                             patched_named_wrapper, pkcs11_tool_keypair, private_fields,
                             served_signed, signzone, stock_verify, validate_zone_file, write_zone)
from namedproc import NamedProcess


@pytest.fixture(scope="session")
def engine_bind():
    """The engine-route 9.18.49 prefix (dnssec-* tools only), built once and cached."""
    return ensure_engine_bind()


def engine_key_pair(engine_bind, cli, tmp_path, algorithm: str) -> tuple:
    """pkcs11-tool makes a KSK and a ZSK pair; the engine build's dnssec-keyfromlabel -E pkcs11
    writes their key files (PIN in libp11's config). Returns (key dir, ksk .key, zsk .key)."""
    config = engine_config(tmp_path / "engine", cli.pin())
    keys = tmp_path / "keys"
    made = []
    # Unique CKA_IDs, as the 9.18 ARM gives them: libp11 pairs private and public key by id.
    for role, key_id, flags in (("ksk", "4b534b", ("-f", "KSK")), ("zsk", "5a534b", ())):
        pkcs11_tool_keypair(cli, algorithm, f"{ZONE}-{role}", key_id)
        result = engine_keyfromlabel(engine_bind, cli, config, keys, algorithm,
                                     f"pkcs11:token=bindpkcs11;object={ZONE}-{role}", *flags)
        made.append(made_key(result, keys))
    return keys, *made


@pytest.mark.parametrize("algorithm", ["ECDSAP256SHA256", "RSASHA256"])
def test_engine_route_key_files_sign_and_serve_unchanged(engine_bind, token_cli, patched_bind,
                                                         tmp_path, algorithm):
    keys, ksk, zsk = engine_key_pair(engine_bind, token_cli, tmp_path, algorithm)
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    assert token_cli.pin() not in "".join(p.decode(errors="replace") for p in before.values())
    for key_file, role in ((ksk, "ksk"), (zsk, "zsk")):
        # What the engine route writes (9.18.49 *_tofile): Engine and Label with their NUL,
        # RSA Modulus + PublicExponent only, ECDSA an empty PrivateKey.
        fields = private_fields(key_file)
        assert decoded(fields["Engine"]) == b"pkcs11\0"
        assert decoded(fields["Label"]) == f"pkcs11:token=bindpkcs11;object={ZONE}-{role}\0".encode()
        if algorithm == "RSASHA256":
            assert {"Modulus", "PublicExponent"} <= set(fields)
            assert not {"PrivateExponent", "Prime1", "Prime2"} & set(fields)
        else:
            assert fields["PrivateKey"] == ""
        # The patched dnssec-keyfromlabel reads the same token key to the same DNSKEY and name.
        ours_dir = tmp_path / "patched-keyfromlabel"
        flags = ("-f", "KSK") if role == "ksk" else ()
        ours = made_key(keyfromlabel(patched_bind, token_cli, ours_dir, algorithm,
                                     decoded(fields["Label"])[:-1].decode(), *flags), ours_dir)
        assert ours.name == key_file.name
        assert read_key_pair(ours).dnskey == read_key_pair(key_file).dnskey
    ksk_tag, zsk_tag = read_key_pair(ksk).tag, read_key_pair(zsk).tag

    zone = write_zone(tmp_path / "sign")
    result = signzone(patched_bind, token_cli, keys, zone, "-E", "pkcs11")
    assert result.returncode == 0, result.stderr
    stock_verify(zone.with_suffix(".signed"))
    assert validate_zone_file(zone.with_suffix(".signed")) == {ksk_tag, zsk_tag}

    served = tmp_path / "served"
    unsigned = write_zone(served)
    named = patched_named_wrapper(patched_bind, token_cli, tmp_path)
    with NamedProcess(ZONE, None, served / "named", named=str(named),
                      extra_config=inline_zone_config(unsigned, keys)) as server:
        seen = served_signed(server.port, {ksk_tag, zsk_tag})
    assert seen["DNSKEY"] == {ksk_tag} and seen["SOA"] == seen["A"] == {zsk_tag}
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == before  # used as they are
