"""setup-inline on the stock route: BIND 9.20 + pkcs11-provider from bookworm-backports (unpacked
privately into .cache/bind-stock, nothing installed), a real SoftHSM token, a real named on
loopback high ports, validated by dnspython and by delv with the KSK as trust anchor."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Cli, clean_env, one_line_error
from namedproc import free_port
from test_inline import ZONE, named_pid, setup, validated
from test_tpm2_inline import delv, named_environ


def delv_anchor(key_file: Path) -> str:
    """A delv trust-anchors clause for the KSK in `key_file`; named 9.20 rewrites adopted key
    files with a TTL, so the fields are found after the type."""
    fields = [line for line in key_file.read_text().splitlines() if not line.startswith(";")][0].split()
    at = [f.upper() for f in fields].index("DNSKEY")
    flags, protocol, algorithm, key = fields[at + 1], fields[at + 2], fields[at + 3], "".join(fields[at + 4:])
    return f'trust-anchors {{ {fields[0]} static-key {flags} {protocol} {algorithm} "{key}"; }};\n'


@pytest.fixture(scope="session")
def stock_bind() -> Path:
    from bindtools import ensure_stock_bind

    return ensure_stock_bind()


@pytest.fixture
def stock_cli(stock_bind: Path):
    """A CLI on an empty state dir (under /tmp: named runs as `bind`) that finds the private
    BIND 9.20; kills every named it started, also when the test failed."""
    base = Path(tempfile.mkdtemp(prefix="bindpkcs11-stock-"))
    base.chmod(0o711)
    cli = Cli(base / "state", clean_env() | {"BINDPKCS11_STOCK_DIR": str(stock_bind)})
    cli.ports = (free_port(), free_port())
    yield cli
    for pid_file in (cli.state_dir / "instances").glob("*/named.pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    shutil.rmtree(base, ignore_errors=True)


def test_stock_setup_inline_serves_a_zone_that_validates_signed_by_the_token_keys(stock_cli, stock_bind, tmp_path):
    report = json.loads(setup(stock_cli, "--bind", "stock", "--json").stdout)
    assert report["bind"] == "stock" and report["bind_version"].startswith("9.20.")
    port = stock_cli.ports[0]
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    _, soa_tags = validated(ZONE, "SOA", port)
    _, dnskey_tags = validated(ZONE, "DNSKEY", port)
    _, www_tags = validated(ZONE, "A", port, f"www.{ZONE}")
    assert soa_tags == www_tags == {tags["zsk"]} and tags["ksk"] in dnskey_tags
    instance = Path(report["instance_dir"])
    ksk_file = next(instance.glob(f"keys/K{ZONE}.+013+{tags['ksk']:05d}.key"))
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(delv_anchor(ksk_file))
    for name, rdtype in ((ZONE, "SOA"), (ZONE, "DNSKEY"), (f"www.{ZONE}", "A")):
        checked = delv(anchors, port, name, rdtype)
        assert "; fully validated" in checked.stdout, checked.stdout + checked.stderr
    # 9.20 key files: Label only (9.20 refuses an Engine line), no private material, no PIN.
    pin = stock_cli.pin()
    for private in instance.glob("keys/*.private"):
        fields = dict(line.split(": ", 1) for line in private.read_text().splitlines())
        assert "Engine" not in fields and "PrivateKey" not in fields
        label = base64.b64decode(fields["Label"])
        assert label.startswith(b"pkcs11:token=bindpkcs11;object=") and b"pin" not in label
        assert pin not in private.read_text()
    # named itself: the unpacked 9.20, dnssec-policy with the token key-store, the provider's
    # config naming the 0600 PIN file, the module preloaded; the PIN in none of them.
    pid = named_pid(stock_cli)
    assert os.readlink(f"/proc/{pid}/exe").startswith(str(stock_bind))
    zone_conf = (instance / "zone.conf").read_text()
    assert 'key-store "token"' in zone_conf and 'pkcs11-uri "pkcs11:token=bindpkcs11";' in zone_conf
    assert "auto-dnssec" not in zone_conf
    openssl_conf = instance / "openssl.cnf"
    assert f"pkcs11-module-token-pin = file:{instance / 'token.pin'}" in openssl_conf.read_text()
    assert stat.S_IMODE(openssl_conf.stat().st_mode) == 0o600
    assert stat.S_IMODE((instance / "token.pin").stat().st_mode) == 0o600
    environ = named_environ(pid)
    assert environ["LD_PRELOAD"] == "/usr/lib/softhsm/libsofthsm2.so"
    assert environ["OPENSSL_CONF"] == str(openssl_conf)
    for text in (openssl_conf.read_text(), zone_conf, Path(f"/proc/{pid}/environ").read_text(),
                 Path(f"/proc/{pid}/cmdline").read_text()):
        assert pin not in text
    # named adopted the keys bindpkcs11 made: it made none of its own.
    assert len(list(instance.glob("keys/*.private"))) == 2
    log = (instance / "named.log").read_text()
    assert "retire DNSKEY" not in log and "created for policy" not in log
    # The token holds exactly those keys, and token show matches them to the key files.
    token = stock_cli.json("token", "show", "--label", "bindpkcs11", "--key-dir", str(instance / "keys"))
    matched = {o["dnssec"]["tag"] for o in token["objects"] if o.get("dnssec") and o["dnssec"].get("matches_token")}
    assert matched == set(tags.values())
    # monitor, named status and bind status agree; named stop stops it.
    monitor = stock_cli.json("monitor", ZONE, "--port", str(port), "--once")
    assert monitor["status"] == "ok"
    status = stock_cli("named", "status", ZONE)
    assert f"{tags['zsk']}" in status.stdout and "problem" not in status.stdout
    routes = stock_cli.json("bind", "status")
    assert routes["default"] == "stock" and routes["instances"][ZONE].startswith("stock")
    assert "stopped" in stock_cli("named", "stop", ZONE).stdout
    assert named_pid(stock_cli) is None


def test_stock_second_run_changes_nothing_and_named_restarts(stock_cli):
    setup(stock_cli, "--bind", "stock")
    pid = named_pid(stock_cli)
    # no --bind: the instance keeps its route
    second = setup(stock_cli)
    assert "nothing changed" in second.stdout and "stock route" in second.stdout
    assert named_pid(stock_cli) == pid
    stock_cli("named", "stop", ZONE)
    started = stock_cli.json("named", "start", ZONE)
    assert started["running"] and named_pid(stock_cli) == started["pid"]
    validated(ZONE, "SOA", stock_cli.ports[0])


def test_default_route_is_stock_when_found_and_an_instance_keeps_its_route(stock_cli):
    assert stock_cli.json("bind", "status")["default"] == "stock"
    report = json.loads(setup(stock_cli, "--json").stdout)
    assert report["bind"] == "stock"
    pid = named_pid(stock_cli)
    error = one_line_error(setup(stock_cli, "--bind", "patched", check=False))
    assert "runs the stock BIND" in error and "--bind patched" in error
    assert named_pid(stock_cli) == pid
    validated(ZONE, "SOA", stock_cli.ports[0])


def _private_fields(path: Path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line)


def test_keygen_writes_920_key_files_that_stock_tools_sign_with_as_keyfromlabel_would(stock_bind, tmp_path):
    """keygen --key-format 9.20 (the default once the stock route is found): the same .private
    as 9.20's own dnssec-keyfromlabel writes for the token object, dnssec-signzone signs with
    it through `bind env`'s exports, dnssec-verify accepts the zone, token show matches."""
    cli = Cli(tmp_path / "state", clean_env() | {"BINDPKCS11_STOCK_DIR": str(stock_bind)})
    cli("token", "init", "--label", "bindpkcs11", "--generate-pins")
    keys = tmp_path / "keys"
    made = {}
    for role, algorithm, extra in (("ksk", "ECDSAP256SHA256", ["--no-backup"]),
                                   ("zsk", "ECDSAP256SHA256", ["--key-format", "9.20"]),
                                   ("zsk", "RSASHA256", ["--key-format", "9.20"])):
        made[(role, algorithm)] = cli.json("keygen", ZONE, "--role", role, "--algorithm", algorithm,
                                           "--key-dir", str(keys), *extra)
    exports = cli.json("bind", "env", "--bind", "stock")
    assert exports["bind"] == "stock" and exports["version"].startswith("9.20.")
    env = clean_env() | exports["variables"]
    assert cli.pin() not in str(exports)
    # What 9.20's dnssec-keyfromlabel writes for the same token objects.
    reference = tmp_path / "reference"
    reference.mkdir()
    for (role, algorithm), key in made.items():
        flags = ["-f", "KSK"] if role == "ksk" else []
        done = subprocess.run(["dnssec-keyfromlabel", "-K", str(reference), "-a", algorithm, *flags,
                               "-l", key["uri"], ZONE], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        ours = _private_fields(Path(key["private_file"]))
        theirs = _private_fields(reference / Path(key["private_file"]).name)
        timing = {"Created", "Publish", "Activate"}
        assert {k: v for k, v in ours.items() if k not in timing} == \
               {k: v for k, v in theirs.items() if k not in timing}
        assert "Engine" not in ours
    # Sign and verify with the stock tools (the RSA key stays out: one algorithm per zone here).
    rsa = made[("zsk", "RSASHA256")]
    Path(rsa["key_file"]).rename(reference / "rsa.key")
    Path(rsa["private_file"]).rename(reference / "rsa.private")
    zone = tmp_path / "zone.db"
    zone.write_text("$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n"
                    "ns1 A 127.0.0.1\nwww A 127.0.0.2\n")
    signed = subprocess.run(["dnssec-signzone", "-K", str(keys), "-S", "-o", ZONE, "-f",
                             str(tmp_path / "zone.signed"), str(zone)],
                            env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    tags = {made[("ksk", "ECDSAP256SHA256")]["tag"], made[("zsk", "ECDSAP256SHA256")]["tag"]}
    text = (tmp_path / "zone.signed").read_text()
    assert all(f" {tag} {ZONE}." in text for tag in tags)
    verified = subprocess.run(["dnssec-verify", "-o", ZONE, str(tmp_path / "zone.signed")],
                              env=env, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stderr
    shown = cli.json("token", "show", "--label", "bindpkcs11", "--key-dir", str(keys))
    matched = {o["dnssec"]["tag"] for o in shown["objects"]
               if o.get("dnssec") and o["dnssec"].get("matches_token")}
    assert tags <= matched


def test_stock_software_zsk_and_token_ksk_stay_adopted_across_a_reload(stock_cli):
    """A software ZSK beside a token KSK (RSA): named 9.20 keeps both (it retired both when the
    policy named the key-directory for one role and the key-store for the other)."""
    report = json.loads(setup(stock_cli, "--bind", "stock", "--zsk-on", "software",
                              "--algorithm", "RSASHA256", "--json").stdout)
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    assert not report["keys"][1]["uri"]  # the ZSK is a file
    port = stock_cli.ports[0]
    assert validated(ZONE, "SOA", port)[1] == {tags["zsk"]}
    stock_cli("named", "reload", ZONE)
    assert validated(ZONE, "SOA", port)[1] == {tags["zsk"]}
    assert tags["ksk"] in validated(ZONE, "DNSKEY", port)[1]
    log = (Path(report["instance_dir"]) / "named.log").read_text()
    assert "retire DNSKEY" not in log and "created for policy" not in log


def test_stock_added_record_is_served_signed_and_the_rndc_wrapper_works(stock_cli, tmp_path):
    """The patched route's reload/rndc suite (test_inline.py) on the stock route."""
    zone_file = tmp_path / "example.test.zone"
    zone_file.write_text(
        "$TTL 300\n@ IN SOA ns1 hostmaster 10 3600 600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n")
    setup(stock_cli, "--bind", "stock", "--zone-file", str(zone_file))
    port = stock_cli.ports[0]
    serial_before = validated(ZONE, "SOA", port)[0][0].serial
    with zone_file.open("a") as handle:
        handle.write("added IN A 127.0.0.99\n")
    assert "loaded" in stock_cli("named", "reload", ZONE).stdout  # returns once served signed
    rrset, tags = validated(ZONE, "A", port, f"added.{ZONE}")
    assert rrset[0].address == "127.0.0.99"
    assert validated(ZONE, "SOA", port)[0][0].serial > serial_before
    status = stock_cli.json("named", "status", ZONE)
    assert tags == {k["tag"] for k in status["signing"] if k["role"] == "zsk"}
    assert status["running"] and status["problem"] is None
    stock_cli("rndc", "sign", ZONE)
    listing = stock_cli.json("rndc", "signing-list", ZONE)
    assert {k["role"] for k in listing["keys"] if k["signing"]} == {"ksk", "zsk"}
    assert "signed serial" in stock_cli("rndc", "zonestatus", ZONE).stdout
    assert "version: BIND 9.20." in stock_cli("rndc", "--", "status").stdout
