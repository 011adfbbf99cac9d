"""Key generation into BIND key files, checked with the stock BIND tools and dnspython."""

from __future__ import annotations

import base64
import re
import stat
import subprocess
import textwrap

import pytest

from conftest import SOFTHSM_MODULE, SPY_MODULE, TOKEN, TRUST_MODULE, one_line_error, run_python

ALGORITHMS = ["RSASHA256", "RSASHA512", "ECDSAP256SHA256", "ECDSAP384SHA384", "ED25519"]


def private_fields(path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in path.read_text().splitlines())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_token_key_files_match_the_token_and_bind_reads_them(token_cli, algorithm):
    key = token_cli.json("keygen", "example.test", "--role", "ksk", "--algorithm", algorithm)
    key_file, private_file = token_cli.key_dir / key["key_file"].split("/")[-1], None
    private_file = key_file.with_suffix(".private")
    assert re.fullmatch(rf"Kexample\.test\.\+\d{{3}}\+{key['tag']:05d}\.key", key_file.name)
    assert stat.S_IMODE(private_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o644
    # The tag in the file name is the tag of the DNSKEY built from the public key on the token.
    report = token_cli.json("token", "show", "--label", TOKEN)
    mine = [o for o in report["objects"] if o["object"]["label"] == key["object_label"]]
    assert {o["object"]["object_class"] for o in mine} == {"private", "public"}
    assert all(o["dnssec"]["tag"] == key["tag"] and o["dnssec"]["matches_token"] for o in mine)
    # dnssec-dsfromkey agrees with the DS bindpkcs11 printed.
    ds = subprocess.run(["dnssec-dsfromkey", "-2", str(key_file)], check=True, capture_output=True,
                        text=True).stdout.strip()
    assert ds == key["ds"]
    fields = private_fields(private_file)
    assert base64.b64decode(fields["Engine"]) == b"pkcs11\0"
    label = base64.b64decode(fields["Label"])
    assert label == f"pkcs11:token={TOKEN};object={key['object_label']}".encode() + b"\0"
    assert ("Modulus" in fields) == algorithm.startswith("RSA")
    assert not {"PrivateKey", "PrivateExponent", "Prime1"} & set(fields)
    pin = token_cli.pin()
    for path in (key_file, private_file):
        assert pin not in path.read_text()


def test_timing_metadata_is_written_in_bind_format(token_cli):
    key = token_cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", "13", "--software",
                         "--publish", "20300101", "--activate", "20300102120000",
                         "--inactive", "20300102120000+90d", "--delete", "20300102120000+97d")
    key_file = token_cli.key_dir / key["key_file"].split("/")[-1]
    printed = subprocess.run(["dnssec-settime", "-u", "-p", "all", str(key_file)], check=True,
                             capture_output=True, text=True).stdout
    times = dict(line.split(": ") for line in printed.splitlines())
    assert times["Publish"] == "1893456000"
    assert times["Activate"] == "1893585600"
    assert times["Inactive"] == str(1893585600 + 90 * 86400)
    assert times["Delete"] == str(1893585600 + 97 * 86400)
    comments = key_file.read_text()
    assert "; Publish: 20300101000000 (Tue Jan 01 00:00:00 2030)" in comments
    error = one_line_error(token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13",
                                     "--software", "--activate", "20300101", "--publish", "20300102",
                                     check=False))
    assert "before --publish" in error
    error = one_line_error(token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13",
                                     "--software", "--inactive", "tomorrow", check=False))
    assert "YYYYMMDD" in error


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_software_keys_sign_a_zone_that_dnssec_verify_accepts(cli, tmp_path, algorithm):
    ksk = cli.json("keygen", "example.test", "--role", "ksk", "--algorithm", algorithm, "--software",
                   "--key-dir", str(tmp_path))
    zsk = cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", algorithm, "--software",
                   "--key-dir", str(tmp_path))
    for key in (ksk, zsk):
        key_file = tmp_path / key["key_file"].split("/")[-1]
        assert stat.S_IMODE(key_file.with_suffix(".private").stat().st_mode) == 0o600
        subprocess.run(["dnssec-settime", "-p", "all", str(key_file)], check=True, capture_output=True)
    zone = tmp_path / "example.test.zone"
    zone.write_text(textwrap.dedent("""\
        $TTL 300
        @ IN SOA ns1 hostmaster 1 3600 600 86400 300
          IN NS ns1
        ns1 IN A 127.0.0.1
        www IN A 127.0.0.2
        mail IN AAAA 2001:db8::2
        """))
    subprocess.run(["dnssec-signzone", "-S", "-K", str(tmp_path), "-o", "example.test", "-f",
                    str(tmp_path / "signed"), str(zone)], check=True, capture_output=True, cwd=tmp_path)
    verify = subprocess.run(["dnssec-verify", "-o", "example.test", str(tmp_path / "signed")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    signed = (tmp_path / "signed").read_text()
    assert f" {ksk['tag']} example.test." in signed and f" {zsk['tag']} example.test." in signed


SIGN_DNSKEY_SET = textwrap.dedent("""\
    import sys, time
    import dns.dnssec, dns.name, dns.rrset
    from bindpkcs11.access import TokenAccess
    from bindpkcs11.dnssec.keyfile import read_key_pair
    from bindpkcs11.dnssec.tokensigner import TokenPrivateKey
    from bindpkcs11.state import StateDir
    from bindpkcs11.token import keys
    from bindpkcs11.token.uri import parse_uri

    state, *paths = sys.argv[1:]
    pairs = [read_key_pair(p) for p in paths]
    zone = pairs[0].zone
    rrset = dns.rrset.from_rdata_list(zone, 3600, [p.dnskey for p in pairs])
    uri = parse_uri(pairs[0].label_uri)
    access = TokenAccess.build(StateDir.open(state), "softhsm", uri.token)
    now = int(time.time())
    with access.session() as session:
        signer = TokenPrivateKey.on_token(keys.private_key(session, uri.object), pairs[0].dnskey)
        rrsig = dns.dnssec.sign(rrset, signer, zone, pairs[0].dnskey, inception=now - 60,
                                lifetime=86400)
    sigset = dns.rrset.from_rdata_list(zone, 3600, [rrsig])
    dns.dnssec.validate(rrset, sigset, {zone: rrset}, now=now)
    print(rrsig.key_tag, signer.signatures)
    """)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_token_signature_over_the_dnskey_rrset_validates(token_cli, algorithm):
    ksk = token_cli.json("keygen", "example.test", "--role", "ksk", "--algorithm", algorithm)
    zsk = token_cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", algorithm)
    out = run_python(SIGN_DNSKEY_SET, token_cli.env, str(token_cli.state_dir), ksk["key_file"],
                     zsk["key_file"])
    assert out.split() == [str(ksk["tag"]), "1"]


# --- errors: one clear line, non-zero exit, nothing half-written -------------------------------

def assert_nothing_written(cli, objects_before: int) -> None:
    assert not list(cli.key_dir.glob("K*")) if cli.key_dir.exists() else True
    report = cli.json("token", "show", "--label", TOKEN)
    assert len(report["objects"]) == objects_before


def test_unknown_algorithm(token_cli):
    error = one_line_error(token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "DSA",
                                     check=False))
    assert "unknown algorithm 'DSA'" in error and "ECDSAP256SHA256" in error
    assert_nothing_written(token_cli, 0)


@pytest.mark.parametrize("name", ["exa mple.test", "bad..test", "-lead.test", "a_b$.test", ""])
def test_invalid_domain(token_cli, name):
    error = one_line_error(token_cli("keygen", "--role", "zsk", "--algorithm", "13", "--", name,
                                     check=False))
    assert "domain name" in error
    assert_nothing_written(token_cli, 0)


def test_token_not_found(token_cli):
    error = one_line_error(token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13",
                                     "--token", "nosuch", check=False))
    assert "token 'nosuch' not found" in error and TOKEN in error
    assert_nothing_written(token_cli, 0)


def test_module_missing(token_cli):
    error = one_line_error(token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13",
                                     "--module", "/nonexistent/libpkcs11.so", check=False))
    assert "/nonexistent/libpkcs11.so" in error and "--module" in error


def test_duplicate_label(token_cli):
    token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13", "--label", "mykey")
    error = one_line_error(token_cli("keygen", "example.test", "--role", "ksk", "--algorithm", "13",
                                     "--label", "mykey", check=False))
    assert "'mykey' already exists" in error
    assert len(list(token_cli.key_dir.glob("K*.key"))) == 1
    assert len(token_cli.json("token", "show", "--label", TOKEN)["objects"]) == 2


def test_unwritable_key_dir(token_cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    error = one_line_error(token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13",
                                     "--key-dir", str(blocker / "keys"), check=False))
    assert "key directory" in error
    assert_nothing_written(token_cli, 0)


def test_wrong_pin_is_tried_exactly_once(token_cli, tmp_path):
    """pkcs11-spy (OpenSC) sits between bindpkcs11 and SoftHSM and logs every call it forwards."""
    log = tmp_path / "spy.log"
    env = {"PKCS11_LIBRARY_PIN": "wrong-pin", "PKCS11SPY": SOFTHSM_MODULE, "PKCS11SPY_OUTPUT": str(log)}
    error = one_line_error(token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13",
                                     "--module", SPY_MODULE, check=False, env=env))
    assert "wrong user PIN" in error and "will not be retried" in error
    assert log.read_text().count("C_Login") == 1
    assert "wrong-pin" not in error
    assert_nothing_written(token_cli, 0)


def test_wrong_pin_reports_the_tokens_pin_flags(token_cli):
    """SoftHSM raises CKF_USER_PIN_COUNT_LOW after a failure; the next error must say so."""
    env = {"PKCS11_LIBRARY_PIN": "wrong-pin"}
    one_line_error(token_cli("token", "show", "--label", TOKEN, check=False, env=env))
    error = one_line_error(token_cli("token", "show", "--label", TOKEN, check=False, env=env))
    flags = token_cli.json("token", "list")
    ours = next(t for t in flags if t["label"] == TOKEN)["flags"]
    if ours["user_pin_count_low"] or ours["user_pin_final_try"] or ours["user_pin_locked"]:
        assert "token reports" in error
    else:
        assert "token reports" not in error


def test_algorithm_the_token_lacks(token_cli):
    """p11-kit's trust module is a real PKCS#11 token ("System Trust") that cannot generate keys."""
    error = one_line_error(token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "ED25519",
                                     "--module", TRUST_MODULE, "--token", "System Trust", check=False))
    assert "cannot generate ed25519 keys" in error and "--algorithm" in error
    assert not token_cli.key_dir.exists() or not list(token_cli.key_dir.glob("K*"))
