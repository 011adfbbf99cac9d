"""The patched BIND 9.20 signs with token keys through the shim, with no pkcs11-provider and no
LD_PRELOAD; stock dnssec-verify and dnspython check the result. It is installed beside 9.18."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.zone
import pytest

from bindpkcs11.bind import patching
from bindtools import BIND_STATE, tool_env
from conftest import REPO, SOFTHSM_MODULE, SPY_MODULE, clean_env
from test_bind_signing import HOSTS, ZONE, rrsigs, sign, stock_verify, write_zone


def no_provider_env(cli, prefix: Path, pin_file: Path | None = None) -> dict:
    """The shim route's environment: no OpenSSL config, no provider, nothing preloaded."""
    env = tool_env(cli, prefix, pin_file)
    for name in ("OPENSSL_CONF", "OPENSSL_MODULES", "LD_PRELOAD"):
        env.pop(name, None)
    return env


def dnspython_validate(signed: Path, tags: set[int]) -> int:
    """Validate every signed RRset of the zone against its DNSKEY set with dnspython; the count."""
    zone = dns.zone.from_file(str(signed), origin=ZONE, relativize=False, check_origin=False)
    origin = dns.name.from_text(ZONE)
    dnskeys = zone.find_rdataset(origin, dns.rdatatype.DNSKEY)
    keys = {origin: dnskeys}
    checked = 0
    for name, node in zone.nodes.items():
        for rrsigset in [r for r in node.rdatasets if r.rdtype == dns.rdatatype.RRSIG]:
            for covered in {sig.type_covered for sig in rrsigset}:
                rrset = node.get_rdataset(dns.rdataclass.IN, covered)
                sigs = [s for s in rrsigset if s.type_covered == covered]
                assert {s.key_tag for s in sigs} <= tags
                dns.dnssec.validate((name, rrset), (name, dns.rdataset.from_rdata_list(
                    rrsigset.ttl, sigs)), keys)
                checked += 1
    return checked


@pytest.mark.parametrize("algorithm", ["ECDSAP256SHA256", "RSASHA256", "ED25519"])
def test_patched_920_signzone_signs_with_token_keys(token_cli, patched_bind_920, tmp_path, algorithm):
    ksk = token_cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", algorithm)
    zsk = token_cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", algorithm)
    zone = write_zone(tmp_path)
    result = sign(patched_bind_920, token_cli.key_dir, zone,
                  no_provider_env(token_cli, patched_bind_920), "-n", "2")
    assert result.returncode == 0, result.stderr
    signed = zone.with_suffix(".signed")
    signatures = rrsigs(signed)
    assert len(signatures) >= HOSTS
    assert {rrsig.key_tag for rrsig in signatures} == {ksk["tag"], zsk["tag"]}
    stock_verify(signed)
    assert dnspython_validate(signed, {ksk["tag"], zsk["tag"]}) >= HOSTS
    pin = token_cli.pin().encode()
    assert pin not in signed.read_bytes() and pin not in result.stderr.encode()


def test_patched_920_takes_label_only_key_files(token_cli, patched_bind_920, tmp_path):
    """9.20's own key-file form (dnssec-keyfromlabel writes `Label:` without `Engine:`) signs too,
    and dnssec-settime writes it back without adding a private field."""
    keys = [token_cli.json("keygen", ZONE, "--role", role, "--algorithm", "ECDSAP256SHA256")
            for role in ("ksk", "zsk")]
    for key in keys:
        private = Path(key["key_file"]).with_suffix(".private")
        private.write_text("".join(line for line in private.read_text().splitlines(keepends=True)
                                   if not line.startswith("Engine:")))
    env = no_provider_env(token_cli, patched_bind_920)
    zone = write_zone(tmp_path)
    result = sign(patched_bind_920, token_cli.key_dir, zone, env)
    assert result.returncode == 0, result.stderr
    stock_verify(zone.with_suffix(".signed"))
    key_file = Path(keys[1]["key_file"])
    subprocess.run([str(patched_bind_920 / "bin" / "dnssec-settime"), "-D", "20370201", str(key_file)],
                   capture_output=True, env=env, check=True)
    private = key_file.with_suffix(".private").read_text()
    assert "Label: " in private and "Engine:" not in private and "PrivateKey" not in private
    assert "Delete: 20370201000000" in private


def test_patched_920_still_signs_with_software_keys(cli, patched_bind_920, tmp_path):
    for role in ("ksk", "zsk"):
        cli("keygen", ZONE, "--role", role, "--algorithm", "ECDSAP256SHA256", "--software",
            "--key-dir", str(tmp_path))
    zone = write_zone(tmp_path)
    result = sign(patched_bind_920, tmp_path, zone, dict(cli.env))
    assert result.returncode == 0, result.stderr
    stock_verify(zone.with_suffix(".signed"))


def test_patched_920_wrong_pin_fails_after_one_login(token_cli, patched_bind_920, tmp_path):
    """pkcs11-spy between the shim and SoftHSM counts C_Login calls, with two signing threads."""
    token_cli("keygen", ZONE, "--role", "ksk", "--algorithm", "ECDSAP256SHA256")
    token_cli("keygen", ZONE, "--role", "zsk", "--algorithm", "ECDSAP256SHA256")
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin\n")
    spy_log = tmp_path / "spy.log"
    env = no_provider_env(token_cli, patched_bind_920, wrong)
    env.update({"PKCS11_LIBRARY_PATH": SPY_MODULE, "PKCS11SPY": SOFTHSM_MODULE,
                "PKCS11SPY_OUTPUT": str(spy_log)})
    zone = write_zone(tmp_path)
    result = sign(patched_bind_920, token_cli.key_dir, zone, env, "-n", "2")
    assert result.returncode != 0
    assert re.search(r"bindpkcs11: .*PIN incorrect", result.stderr), result.stderr
    assert "not-the-pin" not in result.stderr
    assert spy_log.read_text().count("C_Login") == 1
    assert not zone.with_suffix(".signed").exists()


def test_920_installs_beside_918(patched_bind, patched_bind_920):
    """Two prefixes, two manifests; `bind env --version 9.20` puts the 9.20 tools first."""
    assert patched_bind != patched_bind_920
    old = json.loads((patched_bind / "manifest.json").read_text())
    new = json.loads((patched_bind_920 / "manifest.json").read_text())
    assert old["bind_version"].startswith("9.18.") and new["bind_version"].startswith("9.20.")
    assert new["patch_sha256"] == patching.patches_sha256(patching.patch_files("9.20"))
    assert "--disable-linux-caps" not in new["configure_flags"]
    version = subprocess.run([str(patched_bind_920 / "sbin" / "named"), "-v"], capture_output=True,
                             text=True, check=True).stdout
    assert version.startswith("BIND 9.20.")
    linked = subprocess.run(["ldd", str(patched_bind_920 / "bin" / "dnssec-signzone")],
                            capture_output=True, text=True, check=True).stdout
    assert str(patched_bind_920 / "lib" / "libbp11.so") in linked
    env_lines = subprocess.run(
        [sys.executable, "-m", "bindpkcs11", "--state-dir", str(BIND_STATE), "bind", "env",
         "--version", "9.20"], capture_output=True, text=True, check=True, env=clean_env(), cwd=REPO,
    ).stdout
    assert f"export PATH={patched_bind_920 / 'sbin'}:{patched_bind_920 / 'bin'}:" in env_lines
