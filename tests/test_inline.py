"""setup-inline end to end: a real patched named on loopback high ports signing with token keys."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import pwd
import socket
import stat
import time
from pathlib import Path

import dns.dnssec
from dns.dnssec import key_id as key_tag
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import pytest

from conftest import Cli, clean_env, one_line_error, poll  # noqa: F401 - poll is imported from here by other tests
from namedproc import NamedProcess, free_port, kill_instance_nameds

ZONE = "example.test"
DEADLINE = 30.0


@pytest.fixture
def inline_cli(tmp_path: Path, patched_bind: Path):
    """A CLI on an empty state dir sharing the session's BIND build; stops every named after.

    The state dir lives under /tmp itself: named runs as `bind` when the tests run as root, and
    pytest's own temp root is private to root.
    """
    base = Path(tempfile.mkdtemp(prefix="bindpkcs11-inline-"))
    base.chmod(0o711)
    cli = Cli(base / "state", clean_env() | {"BINDPKCS11_BIND_DIR": str(patched_bind)})
    cli.ports = (free_port(), free_port())
    yield cli
    kill_instance_nameds(cli.state_dir)
    shutil.rmtree(base, ignore_errors=True)


def setup(cli: Cli, *extra: str, check: bool = True, zone: str = ZONE, **kwargs):
    port, rndc_port = cli.ports
    return cli("setup-inline", zone, "--port", str(port), "--rndc-port", str(rndc_port), *extra,
               check=check, **kwargs)


def query(zone: str, rdtype: str, port: int, name: str | None = None):
    request = dns.message.make_query(name or zone, rdtype, want_dnssec=True)
    return dns.query.udp(request, "127.0.0.1", port=port, timeout=2)


def validated(zone: str, rdtype: str, port: int, name: str | None = None) -> tuple[object, set[int]]:
    """The RRset at `name`, validated with dnspython against the served DNSKEY set; its RRSIG tags."""
    origin = dns.name.from_text(zone)
    keys = query(zone, "DNSKEY", port).find_rrset(
        dns.message.ANSWER, origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    owner = dns.name.from_text(name or zone)
    response = query(zone, rdtype, port, name)
    kind = dns.rdatatype.from_text(rdtype)
    rrset = response.find_rrset(dns.message.ANSWER, owner, dns.rdataclass.IN, kind)
    sigs = response.find_rrset(dns.message.ANSWER, owner, dns.rdataclass.IN, dns.rdatatype.RRSIG, kind)
    dns.dnssec.validate(rrset, sigs, {origin: keys})
    return rrset, {sig.key_tag for sig in sigs}


def named_pid(cli: Cli, zone: str = ZONE) -> int | None:
    pid_file = cli.state_dir / "instances" / zone / "named.pid"
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def test_setup_from_empty_state_serves_the_zone_signed_by_the_token_keys(inline_cli):
    started = time.monotonic()
    result = setup(inline_cli, "--json")
    elapsed = time.monotonic() - started
    report = __import__("json").loads(result.stdout)
    port = inline_cli.ports[0]
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    _, soa_tags = validated(ZONE, "SOA", port)
    _, dnskey_tags = validated(ZONE, "DNSKEY", port)
    assert tags["zsk"] in soa_tags and tags["ksk"] in dnskey_tags
    assert report["created_token"] and report["generated_keys"]
    assert report["dig"] == f"dig +dnssec @127.0.0.1 -p {port} {ZONE}. SOA"
    assert report["ds"].startswith(f"{ZONE}. IN DS {tags['ksk']} 13 2 ")
    assert elapsed < 60
    # No software key exists anywhere in the key dir: every .private names a token object.
    key_dir = Path(report["instance_dir"]) / "keys"
    privates = list(key_dir.glob("*.private"))
    assert len(privates) == 2
    for private in privates:
        fields = dict(line.split(": ", 1) for line in private.read_text().splitlines())
        assert "PrivateKey" not in fields and "PrivateExponent" not in fields
        assert base64.b64decode(fields["Label"]).startswith(b"pkcs11:token=bindpkcs11;object=")
    # The tags named signs with are the tags of the keys on the token.
    token = inline_cli.json("token", "show", "--label", "bindpkcs11")
    token_tags = {o["dnssec"]["tag"] for o in token["objects"] if o["dnssec"] and o["dnssec"]["matches_token"]}
    assert token_tags == set(tags.values()) or token_tags == set()  # show matches the state key dir
    # The PIN reaches named only through a 0600 file: not argv, not its environment.
    pid = named_pid(inline_cli)
    pin = inline_cli.pin()
    assert pin.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert pin.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    pin_file = Path(report["instance_dir"]) / "token.pin"
    assert stat.S_IMODE(pin_file.stat().st_mode) == 0o600
    if os.geteuid() == 0:
        owner = pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name
        assert owner == "bind"
        token_dir = inline_cli.state_dir / "softhsm" / "tokens"
        for path in [token_dir, *token_dir.rglob("*")]:
            assert pwd.getpwuid(path.stat().st_uid).pw_name == "bind"
            assert path.stat().st_mode & 0o077 == 0, path
        rndc_key = Path(report["instance_dir"]) / "rndc.key"
        assert stat.S_IMODE(rndc_key.stat().st_mode) == 0o600


def test_second_run_changes_nothing(inline_cli):
    setup(inline_cli)
    instance = inline_cli.state_dir / "instances" / ZONE
    before = {p: p.stat().st_mtime_ns for p in instance.glob("*.conf")}
    pid = named_pid(inline_cli)
    second = setup(inline_cli)
    assert "nothing changed" in second.stdout
    assert named_pid(inline_cli) == pid
    assert {p: p.stat().st_mtime_ns for p in instance.glob("*.conf")} == before
    assert len(list((instance / "keys").glob("*.private"))) == 2


def test_added_record_is_served_signed_with_a_higher_serial_and_rndc_works(inline_cli, tmp_path):
    zone_file = tmp_path / "example.test.zone"
    zone_file.write_text(
        "$TTL 300\n@ IN SOA ns1 hostmaster 10 3600 600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n")
    setup(inline_cli, "--zone-file", str(zone_file))
    port = inline_cli.ports[0]
    serial_before = validated(ZONE, "SOA", port)[0][0].serial
    with zone_file.open("a") as handle:
        handle.write("added IN A 127.0.0.99\n")
    result = inline_cli("named", "reload", ZONE)
    assert "loaded" in result.stdout

    def added():
        try:
            return validated(ZONE, "A", port, f"added.{ZONE}")
        except KeyError:
            return None

    rrset, tags = poll(added, what="the added record signed")
    assert rrset[0].address == "127.0.0.99"
    assert validated(ZONE, "SOA", port)[0][0].serial > serial_before
    zsk_tag = next(k["tag"] for k in inline_cli.json("named", "status", ZONE)["signing"] if k["role"] == "zsk")
    assert tags == {zsk_tag}
    inline_cli("rndc", "sign", ZONE)
    listing = inline_cli.json("rndc", "signing-list", ZONE)
    assert {k["role"] for k in listing["keys"] if k["signing"]} == {"ksk", "zsk"}
    assert "signed serial" in inline_cli("rndc", "zonestatus", ZONE).stdout
    assert "server is up and running" in inline_cli("rndc", "--", "status").stdout
    status = inline_cli.json("named", "status", ZONE)
    assert status["running"] and status["serial"] > serial_before
    custody = {key["role"]: key["copies"] for key in status["custody"]}  # issue 10: custody shown
    assert set(custody) == {"ksk", "zsk"} and "1 copy (token " in custody["ksk"]
    assert f"custody   KSK" in inline_cli("named", "status", ZONE).stdout


def test_stock_named_secondary_receives_and_serves_the_same_rrsigs(inline_cli, tmp_path):
    secondary_port = free_port()
    setup(inline_cli, "--secondary", f"127.0.0.1:{secondary_port}")
    primary_port = inline_cli.ports[0]
    config = (f'zone "{ZONE}" {{ type secondary; primaries port {primary_port} {{ 127.0.0.1; }}; '
              f'file "{tmp_path / "secondary.db"}"; }};\n')
    with NamedProcess(ZONE, None, tmp_path / "secondary", port=secondary_port, extra_config=config):
        primary = query(ZONE, "SOA", primary_port)
        secondary = query(ZONE, "SOA", secondary_port)
        assert primary.answer and sorted(map(str, primary.answer)) == sorted(map(str, secondary.answer))
        validated(ZONE, "DNSKEY", secondary_port)
        validated(ZONE, "SOA", secondary_port)


def test_bad_input_is_one_line_and_leaves_the_running_instance_alone(inline_cli, tmp_path):
    setup(inline_cli)
    instance = inline_cli.state_dir / "instances" / ZONE
    snapshot = {p: p.read_bytes() for p in instance.glob("*.conf")}
    pid = named_pid(inline_cli)
    bad_zone = tmp_path / "bad.zone"
    bad_zone.write_text("$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 1209600\nthis is not a record\n")
    error = one_line_error(setup(inline_cli, "--zone-file", str(bad_zone), check=False))
    assert "does not load" in error
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("wrong-pin\n")
    wrong.chmod(0o600)
    error = one_line_error(setup(inline_cli, "--pin-file", str(wrong), check=False))
    assert "wrong user PIN" in error
    error = one_line_error(setup(inline_cli, "--token", "nosuch", check=False))
    assert "token 'nosuch' not found" in error
    assert {p: p.read_bytes() for p in instance.glob("*.conf")} == snapshot
    assert named_pid(inline_cli) == pid
    validated(ZONE, "SOA", inline_cli.ports[0])


@pytest.mark.parametrize("case", ["invalid-domain", "port-in-use", "token-missing", "wrong-pin"])
def test_bad_input_for_a_new_instance_leaves_no_named(inline_cli, tmp_path, case):
    zone = "fresh.test"
    if case == "token-missing":
        inline_cli("token", "init", "--label", "bindpkcs11", "--generate-pins")
    if case == "wrong-pin":
        inline_cli("token", "init", "--label", "bindpkcs11", "--generate-pins")
        (tmp_path / "wrong.pin").write_text("0000\n")
        (tmp_path / "wrong.pin").chmod(0o600)
    blocker = None
    if case == "port-in-use":
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        blocker.bind(("127.0.0.1", inline_cli.ports[0]))
    try:
        extra = {"invalid-domain": [], "port-in-use": [], "token-missing": ["--token", "other"],
                 "wrong-pin": ["--pin-file", str(tmp_path / "wrong.pin")]}[case]
        name = "bad..name" if case == "invalid-domain" else zone
        error = one_line_error(setup(inline_cli, *extra, zone=name, check=False))
    finally:
        if blocker:
            blocker.close()
    expected = {"invalid-domain": "domain name", "port-in-use": "in use",
                "token-missing": "token 'other' not found", "wrong-pin": "wrong user PIN"}[case]
    assert expected in error
    assert named_pid(inline_cli, zone) is None
    assert not (inline_cli.state_dir / "instances" / zone / "named.conf").exists()


def test_monitor_reports_keys_and_expiry_and_exits_2_when_named_is_down(inline_cli):
    report = __import__("json").loads(setup(inline_cli, "--json").stdout)
    port = str(inline_cli.ports[0])
    monitor = inline_cli("monitor", ZONE, "--port", port, "--once", "--json")
    data = __import__("json").loads(monitor.stdout)
    tags = {key["tag"] for key in report["keys"]}
    assert {key["key_tag"] if "key_tag" in key else key["tag"] for key in data["dnskeys"]} == tags
    assert data["status"] == "ok" and data["earliest_expiration"]
    inline_cli("named", "stop", ZONE)
    down = inline_cli("monitor", ZONE, "--port", port, "--once", "--json", check=False)
    assert down.returncode == 2


def test_test_timings_give_signatures_that_expire_within_minutes(inline_cli):
    setup(inline_cli, "--test-timings")
    rrset, _ = validated(ZONE, "SOA", inline_cli.ports[0])
    response = query(ZONE, "SOA", inline_cli.ports[0])
    sig = response.find_rrset(dns.message.ANSWER, dns.name.from_text(ZONE), dns.rdataclass.IN,
                              dns.rdatatype.RRSIG, dns.rdatatype.SOA)[0]
    assert sig.expiration - time.time() <= 31 * 60
    named_conf = (inline_cli.state_dir / "instances" / ZONE / "zone.conf").read_text()
    assert "signatures-validity PT30M;" in named_conf and "signatures-refresh PT20M;" in named_conf


def test_named_stop_and_start(inline_cli):
    setup(inline_cli)
    assert "stopped" in inline_cli("named", "stop", ZONE).stdout
    assert named_pid(inline_cli) is None
    status = inline_cli("named", "status", ZONE, check=False)
    assert status.returncode == 1 and "stopped" in status.stdout
    started = inline_cli.json("named", "start", ZONE)
    assert started["running"] and named_pid(inline_cli) == started["pid"]
    validated(ZONE, "DNSKEY", inline_cli.ports[0])
    error = one_line_error(inline_cli("named", "start", ZONE, check=False))
    assert "already running" in error


def test_a_new_zsk_with_timing_metadata_is_prepublished_after_reload(inline_cli):
    """auto-dnssec follows key timing metadata: rollovers of token keys are keygen + reload."""
    report = __import__("json").loads(setup(inline_cli, "--json").stdout)
    assert "auto-dnssec maintain;" in (Path(report["instance_dir"]) / "zone.conf").read_text()
    old_zsk = next(k["tag"] for k in report["keys"] if k["role"] == "zsk")
    new = inline_cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "ECDSAP256SHA256",
                          "--key-dir", str(Path(report["instance_dir"]) / "keys"),
                          "--publish", "now", "--activate", "now+2d")
    inline_cli("named", "reload", ZONE)
    port = inline_cli.ports[0]

    def published():
        keys, _ = validated(ZONE, "DNSKEY", port)
        return {key_tag(k) for k in keys} if len(keys) == 3 else None

    tags = poll(published, what="the new ZSK in the DNSKEY set")
    assert new["tag"] in tags
    assert validated(ZONE, "SOA", port)[1] == {old_zsk}
    assert set(inline_cli.json("rndc", "signing-list", ZONE)["keys"][0]) >= {"tag", "role", "signing"}


def test_a_pin_in_our_environment_never_reaches_named(inline_cli):
    setup(inline_cli)
    inline_cli("named", "stop", ZONE)
    pin = inline_cli.pin()
    inline_cli("named", "start", ZONE, env={"PKCS11_LIBRARY_PIN": pin, "BINDPKCS11_PASSPHRASE": "x" * 12})
    environ = Path(f"/proc/{named_pid(inline_cli)}/environ").read_bytes()
    assert pin.encode() not in environ and b"BINDPKCS11_PASSPHRASE" not in environ
    assert b"PKCS11_LIBRARY_PIN_FILE=" in environ
