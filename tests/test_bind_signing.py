"""The patched BIND signs with token keys through the shim; stock BIND verifies the result.

Each test that holds for both patched series runs once per series (the `series_bind` fixture):
9.18 and 9.20 (installed beside it), always with no pkcs11-provider, no OpenSSL config and nothing
preloaded. Stock dnssec-verify and dnspython judge the signed zones."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import dns.name
import dns.rdatatype
import dns.zone
import pytest

from bindpkcs11.bind import patching
from bindpkcs11.dnssec.samplezone import sample_zone_text
from bindpkcs11.errors import ToolFailed
from bindtools import BIND_STATE, ensure_patched_bind, tool_env
from conftest import REPO, SOFTHSM_MODULE, SPY_MODULE, clean_env
from fromlabel_tools import series_bind, validate_zone_file  # noqa: F401 (fixture)

ZONE = "example.test"
HOSTS, DELEGATIONS = 5000, 100


def write_zone(directory: Path) -> Path:
    path = directory / f"{ZONE}.zone"
    path.write_text(sample_zone_text(dns.name.from_text(ZONE), hosts=HOSTS, delegations=DELEGATIONS))
    return path


def sign(prefix: Path, key_dir: Path, zone: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(prefix / "bin" / "dnssec-signzone"), "-S", "-K", str(key_dir), "-o", ZONE,
         "-f", str(zone.with_suffix(".signed")), *extra, str(zone)],
        capture_output=True, text=True, env=env, cwd=zone.parent, timeout=600,
    )


def stock_verify(signed: Path) -> None:
    result = subprocess.run(["/usr/bin/dnssec-verify", "-o", ZONE, str(signed)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Zone fully signed" in result.stdout + result.stderr


def no_provider_env(cli, prefix: Path, pin_file: Path | None = None) -> dict:
    """The shim route's environment: no OpenSSL config, no provider, nothing preloaded."""
    env = tool_env(cli, prefix, pin_file)
    for name in ("OPENSSL_CONF", "OPENSSL_MODULES", "LD_PRELOAD"):
        env.pop(name, None)
    return env


def rrsigs(signed: Path) -> list:
    """Every RRSIG rdata in a signed zone file (parsed by dnspython, whatever the layout)."""
    zone = dns.zone.from_file(str(signed), origin=ZONE, relativize=False, check_origin=False)
    return [rdata for _, _, rdata in zone.iterate_rdatas() if rdata.rdtype == dns.rdatatype.RRSIG]


@pytest.mark.parametrize("algorithm", ["ECDSAP256SHA256", "RSASHA256", "ED25519"])
def test_patched_signzone_signs_with_token_keys(token_cli, series_bind, tmp_path, algorithm):
    """Two signing threads. The KSK's files are 9.18's form (Engine: + Label:), the ZSK's this
    series' own (9.20: Label: alone, as 9.20's dnssec-keyfromlabel writes): both sign on both."""
    prefix = series_bind.prefix
    ksk = token_cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", algorithm,
                         "--key-format", "9.18")
    zsk = token_cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", algorithm,
                         "--key-format", series_bind.key_format)
    zone = write_zone(tmp_path)
    result = sign(prefix, token_cli.key_dir, zone, no_provider_env(token_cli, prefix), "-n", "2")
    assert result.returncode == 0, result.stderr
    signed = zone.with_suffix(".signed")
    signatures = rrsigs(signed)
    assert len(signatures) >= HOSTS
    stock_verify(signed)
    assert {rrsig.key_tag for rrsig in signatures} == {ksk["tag"], zsk["tag"]}
    assert validate_zone_file(signed) == {ksk["tag"], zsk["tag"]}
    # The PIN is in no file that the build or the signing wrote (only in the PIN file itself),
    # nor in what the tool printed.
    pin = token_cli.pin().encode()
    assert pin not in (result.stdout + result.stderr).encode()
    pin_dir = token_cli.state_dir / "pins"
    for root in (token_cli.state_dir, tmp_path, prefix, BIND_STATE):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and pin_dir not in path.parents:
                assert pin not in path.read_bytes(), path


def test_patched_signzone_still_signs_with_software_keys(cli, series_bind, tmp_path):
    for role in ("ksk", "zsk"):
        cli("keygen", ZONE, "--role", role, "--algorithm", "ECDSAP256SHA256", "--software",
            "--key-dir", str(tmp_path))
    zone = write_zone(tmp_path)
    result = sign(series_bind.prefix, tmp_path, zone, dict(cli.env))
    assert result.returncode == 0, result.stderr
    stock_verify(zone.with_suffix(".signed"))


def test_wrong_pin_fails_signing_after_one_login(token_cli, series_bind, tmp_path):
    """pkcs11-spy between the shim and SoftHSM counts C_Login calls, even with two signing threads."""
    token_cli("keygen", ZONE, "--role", "ksk", "--algorithm", "ECDSAP256SHA256")
    token_cli("keygen", ZONE, "--role", "zsk", "--algorithm", "ECDSAP256SHA256")
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin\n")
    spy_log = tmp_path / "spy.log"
    env = no_provider_env(token_cli, series_bind.prefix, wrong)
    env.update({"PKCS11_LIBRARY_PATH": SPY_MODULE, "PKCS11SPY": SOFTHSM_MODULE,
                "PKCS11SPY_OUTPUT": str(spy_log)})
    zone = write_zone(tmp_path)
    result = sign(series_bind.prefix, token_cli.key_dir, zone, env, "-n", "2")
    assert result.returncode != 0
    assert re.search(r"bindpkcs11: .*PIN incorrect", result.stderr), result.stderr
    assert "not-the-pin" not in result.stderr
    assert spy_log.read_text().count("C_Login") == 1
    assert not zone.with_suffix(".signed").exists()


def test_patched_settime_reads_and_keeps_token_key_metadata(token_cli, series_bind):
    """dnssec-settime reads a token key's times and writes the file back in this series' form:
    Label (9.18 also Engine), never a private field."""
    key = token_cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "ECDSAP256SHA256",
                         "--inactive", "20370101", "--key-format", series_bind.key_format)
    key_file = Path(key["key_file"])
    env = no_provider_env(token_cli, series_bind.prefix)
    settime = str(series_bind.prefix / "bin" / "dnssec-settime")
    printed = subprocess.run([settime, "-u", "-p", "all", str(key_file)], capture_output=True,
                             text=True, env=env, check=True).stdout
    assert "Inactive: 2114380800" in printed
    subprocess.run([settime, "-D", "20370201", str(key_file)], capture_output=True, env=env, check=True)
    private = key_file.with_suffix(".private").read_text()
    assert "Label:" in private and "PrivateKey" not in private
    assert ("Engine:" in private) == series_bind.writes_engine
    assert "Delete: 20370201000000" in private


def test_build_is_idempotent_and_records_a_manifest(series_bind, request):
    """Each series in its own prefix (9.20 beside 9.18) with its manifest and its patches, linked
    to libbp11; `bind build` again finds it up to date; `bind env [--version]` puts its tools first."""
    prefix, series = series_bind.prefix, series_bind.series
    other = request.getfixturevalue("patched_bind_920" if series == "9.18" else "patched_bind")
    assert prefix != other and (other / "manifest.json").is_file()
    manifest = json.loads((prefix / "manifest.json").read_text())
    assert manifest["bind_version"].startswith(f"{series}.")
    assert manifest["patch_sha256"] == patching.patches_sha256(patching.patch_files(series))
    assert ("--disable-linux-caps" in manifest["configure_flags"]) == (series == "9.18")
    assert ensure_patched_bind(series) == prefix
    version = subprocess.run([str(prefix / "sbin" / "named"), "-v"], capture_output=True,
                             text=True, check=True).stdout
    assert version.startswith(f"BIND {series}.")
    linked = subprocess.run(["ldd", str(prefix / "bin" / "dnssec-signzone")],
                            capture_output=True, text=True, check=True).stdout
    # This series' own libbp11 (the path's tail: a .cache copied from another checkout keeps
    # the run path it was built with).
    assert re.search(rf"libbp11\.so => \S*/{re.escape(prefix.name)}/lib/libbp11\.so ", linked), linked
    version_args = ("--version", series) if series != "9.18" else ()
    env_lines = subprocess.run(
        [sys.executable, "-m", "bindpkcs11", "--state-dir", str(BIND_STATE), "bind", "env",
         *version_args], capture_output=True, text=True, check=True, env=clean_env(), cwd=REPO,
    ).stdout
    assert f"export PATH={prefix / 'sbin'}:{prefix / 'bin'}:" in env_lines
    assert "PKCS11_LIBRARY_PATH=" in env_lines and "SOFTHSM2_CONF=" in env_lines
    assert "PIN" not in env_lines.replace("PKCS11_LIBRARY_PIN_FILE", "")


def test_a_patch_that_does_not_apply_names_the_hunk(patched_bind, tmp_path):
    """Real `patch` on a tree whose ECDSA source drifted: the error names file and hunk."""
    tarball = next((BIND_STATE / "cache").glob("bind9_9.18.*.orig.tar.*[!6]"))
    wanted = {"lib/dns/dst_openssl.h", "lib/dns/openssl_link.c", "lib/dns/opensslrsa_link.c",
              "lib/dns/opensslecdsa_link.c", "lib/dns/openssleddsa_link.c"}
    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.name.split("/", 1)[-1] in wanted]
        archive.extractall(tmp_path, members=members, filter="data")
    tree = next(tmp_path.iterdir())
    target = tree / "lib/dns/opensslecdsa_link.c"
    # A line the first ECDSA hunk removes has changed upstream.
    target.write_text(target.read_text().replace("\tif (dctx->use == DO_SIGN) {",
                                                 "\tif (dctx->use == DO_SIGN) { /* drift */", 1))
    before = {p: p.read_text() for p in tree.rglob("*.[ch]")}
    with pytest.raises(ToolFailed, match=r"lib/dns/opensslecdsa_link\.c hunk #1 at line \d+"):
        patching.apply_patches(tree, patching.patch_files())
    assert {p: p.read_text() for p in tree.rglob("*.[ch]")} == before


def test_source_tarball_must_be_bind_9_18(cli, tmp_path):
    fake_dir = tmp_path / "bind-9.20.1"
    fake_dir.mkdir()
    (fake_dir / "README").write_text("not 9.18\n")
    tarball = tmp_path / "bind-9.20.1.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(fake_dir, arcname="bind-9.20.1")
    result = cli("bind", "build", "--source", str(tarball), check=False)
    assert result.returncode == 2
    assert "not BIND 9.18" in result.stderr and "Traceback" not in result.stderr
