"""Offline KSK end to end: a ceremony on a SoftHSM token, the token's files removed, then the online
signer (no token) keeping a zone signed that a stock named serves, with an injected clock.

Periods are five minutes from one minute ago, so every window lies around the real time and stock
dnssec-verify (which reads the real clock) agrees with dnspython validating at the injected time.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from bindpkcs11.dnssec.bundles import Unlocker, open_bundle
from bindpkcs11.dnssec.keyfile import read_key_pair
from bindpkcs11.dnssec.samplezone import sample_zone_text
from conftest import REPO, Cli, clean_env, one_line_error
from namedproc import NamedProcess, free_port

ZONE = "example.test"
ORIGIN = dns.name.from_text(ZONE)
PERIOD = 300
PASSPHRASE = "online signer passphrase"
DEADLINE = 15.0
RUNWAY_LOW = 14


@dataclass
class Offline:
    """What the ceremony produced, and the facts the online side is checked against."""

    bundles: list[Path]
    start: int
    ksk_tag: int
    ksk_key: bytes
    zsk_tags: tuple[int, int]
    passphrase_file: Path
    token_dir: Path

    def at(self, period: int, offset: int = 10) -> int:
        return self.start + period * PERIOD + offset


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Offline:
    """Ceremony for three periods with a ZSK rollover, then the token's files are deleted."""
    base = tmp_path_factory.mktemp("ceremony")
    cli = Cli(base / "state", clean_env())
    cli("token", "init", "--label", "bindpkcs11", "--generate-pins")
    ksk = cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13")
    start = int(time.time()) - 60
    zsk = ["keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software",
           "--key-dir", str(base / "zsks")]
    old = cli.json(*zsk, "--rng-from-token", "--publish", str(start - 3600),
                   "--activate", str(start - 3600), "--inactive", str(start + 2 * PERIOD),
                   "--delete", str(start + 3 * PERIOD))
    new = cli.json(*zsk, "--publish", str(start + PERIOD), "--activate", str(start + 2 * PERIOD))
    passphrase_file = base / "passphrase"
    passphrase_file.write_text(PASSPHRASE)
    passphrase_file.chmod(0o600)
    result = json.loads(cli("ksk", "presign", ZONE, "--ksk", ksk["object_label"], "--zsk-dir",
                            str(base / "zsks"), "--start", str(start), "--periods", "3",
                            "--test-timings", "--passphrase-file", str(passphrase_file), "--out",
                            str(base / "out"), "--yes", "--json").stdout)
    assert result["token_signatures"] == 3
    ksk_key = read_key_pair(cli.key_dir / Path(ksk["key_file"]).name).dnskey.key
    shutil.rmtree(cli.state_dir / "softhsm")
    return Offline([Path(p) for p in result["bundles"]], start, ksk["tag"], ksk_key,
                   (old["tag"], new["tag"]), passphrase_file, cli.state_dir / "softhsm")


@dataclass
class Online:
    """A machine without a token: bundles, the unsigned zone, the signed output, the signer CLI."""

    root: Path
    cli: Cli
    offline: Offline
    scratch: Path

    @property
    def bundle_dir(self) -> Path:
        return self.root / "bundles"

    @property
    def unsigned(self) -> Path:
        return self.root / "example.test.db"

    @property
    def out(self) -> Path:
        return self.root / "example.test.signed"

    def run(self, now: int, *extra: str, bundles: Path | None = None, passphrase: bool = True,
            env: dict | None = None):
        args = ["signer", "run", ZONE, "--unsigned", str(self.unsigned), "--bundles",
                str(bundles or self.bundle_dir), "--out", str(self.out), "--once", "--now", str(now),
                "--test-timings", "--json", *extra]
        if passphrase:
            args += ["--passphrase-file", str(self.offline.passphrase_file)]
        return self.cli(*args, check=False, env={"TMPDIR": str(self.scratch), **(env or {})})

    def publish(self, now: int, *extra: str, runway_low: bool = False) -> dict:
        result = self.run(now, *extra)
        assert result.returncode == (RUNWAY_LOW if runway_low else 0), result.stderr
        assert not list(self.scratch.iterdir()), "the signer left its scratch dir (ZSK keys) behind"
        return json.loads(result.stdout)


def online_for(offline: Offline, tmp_path: Path) -> Online:
    """The signer's machine under tmp_path: the ceremony's bundles, a 20-host unsigned zone,
    its own state dir (no token) and an empty scratch dir."""
    online = Online(tmp_path / "online", Cli(tmp_path / "online-state", clean_env()), offline,
                    tmp_path / "scratch")
    online.bundle_dir.mkdir(parents=True)
    online.scratch.mkdir()
    for path in offline.bundles:
        shutil.copy(path, online.bundle_dir / path.name)
    online.unsigned.write_text(sample_zone_text(ORIGIN, hosts=20))
    return online


@pytest.fixture
def online(offline: Offline, tmp_path: Path) -> Online:
    return online_for(offline, tmp_path)


class ControlledNamed(NamedProcess):
    """NamedProcess with an rndc control channel, so the signer's --rndc / --reload-named work."""

    def __init__(self, zone_file: Path, workdir: Path) -> None:
        super().__init__(ZONE, zone_file, workdir)
        self.rndc_port = free_port()
        self.key_file = workdir / "rndc.key"
        self.rndc_conf = workdir / "rndc.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.key_file.write_text(f'key "test-rndc" {{ algorithm hmac-sha256; secret "{secret}"; }};\n')
        self.rndc_conf.write_text(f'include "{self.key_file}";\noptions {{ default-key "test-rndc"; '
                                  f'default-server 127.0.0.1; default-port {self.rndc_port}; }};\n')

    def config_text(self) -> str:
        controls = (f'include "{self.key_file}";\ncontrols {{ inet 127.0.0.1 port {self.rndc_port} '
                    'allow { 127.0.0.1; } keys { "test-rndc"; }; };\n')
        return super().config_text().replace("controls { };\n", controls)

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        request = dns.message.make_query(name, rdtype, want_dnssec=True)
        return dns.query.udp(request, "127.0.0.1", port=self.port, timeout=2)

    def serial(self) -> int:
        return self.query(ZONE, "SOA").find_rrset(
            dns.message.ANSWER, ORIGIN, dns.rdataclass.IN, dns.rdatatype.SOA)[0].serial

    def wait_for_serial(self, serial: int) -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if self.serial() == serial:
                return
        raise AssertionError(f"named still serves {self.serial()}, not {serial}: {self.log_tail()}")


def validate_every_rrsig(path: Path, now: int) -> tuple[dns.zone.Zone, set[int]]:
    """Every RRSIG of every RRset of the signed file validates against its DNSKEY set at `now`
    (dnspython), and every RRset is signed; returns the zone and the key tags signing the
    non-DNSKEY data."""
    zone = dns.zone.from_file(str(path), origin=ORIGIN, relativize=False)
    dnskeys = zone.get_rdataset(ORIGIN, "DNSKEY")
    zsk_tags = set()
    for name, node in zone.nodes.items():
        signatures = {rds.covers: rds for rds in node.rdatasets if rds.rdtype == dns.rdatatype.RRSIG}
        for rdataset in node.rdatasets:
            if rdataset.rdtype == dns.rdatatype.RRSIG:
                continue
            assert rdataset.rdtype in signatures, f"{name} {rdataset.rdtype!r} is not signed"
            for rrsig in signatures[rdataset.rdtype]:
                dns.dnssec.validate_rrsig((name, rdataset), rrsig, {ORIGIN: dnskeys}, now=now)
                if rdataset.rdtype != dns.rdatatype.DNSKEY:
                    zsk_tags.add(rrsig.key_tag)
    return zone, zsk_tags


def validate_signed_zone(path: Path, now: int, ksk_tag: int) -> set[int]:
    """validate_every_rrsig, and the DNSKEY RRset signed by the KSK alone; returns the key tags
    signing the non-DNSKEY data."""
    zone, zsk_tags = validate_every_rrsig(path, now)
    assert [s.key_tag for s in zone.get_rdataset(ORIGIN, "RRSIG", "DNSKEY")] == [ksk_tag]
    return zsk_tags


def dnssec_verify(path: Path) -> None:
    result = subprocess.run(["dnssec-verify", "-o", ZONE, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def bundle_content(online: Online, index: int):
    return open_bundle(online.bundle_dir / online.offline.bundles[index].name,
                       Unlocker(PASSPHRASE)).content


def test_signer_switches_bundle_at_each_boundary_and_named_serves_it(online, tmp_path):
    offline = online.offline
    old_zsk, new_zsk = offline.zsk_tags
    assert not offline.token_dir.exists()
    first = online.publish(offline.at(0))
    assert first["published"] and first["zsk_tags"] == [old_zsk]
    assert validate_signed_zone(online.out, offline.at(0), offline.ksk_tag) == {old_zsk}
    dnssec_verify(online.out)
    with ControlledNamed(online.out, tmp_path / "named") as named:
        rndc = ["--rndc", f"-c {named.rndc_conf}"]
        assert named.serial() == first["serial"]
        same = online.publish(offline.at(0, 40), *rndc)
        assert not same["published"] and same["serial"] == first["serial"]
        online.unsigned.write_text(online.unsigned.read_text() + "added IN A 127.0.0.99\n")
        edited = online.publish(offline.at(0, 50), *rndc)
        assert edited["published"] and edited["reason"] == "the unsigned zone changed"
        named.wait_for_serial(edited["serial"])
        assert named.query(f"added.{ZONE}", "A").answer
        serials = [first["serial"], edited["serial"]]
        expected = {1: ({offline.ksk_tag, old_zsk, new_zsk}, {old_zsk}),
                    2: ({offline.ksk_tag, old_zsk, new_zsk}, {new_zsk})}
        for period, (published, signing) in expected.items():
            now = offline.at(period)
            result = online.publish(now, *rndc, runway_low=period == 2)
            assert result["published"] and result["period_index"] == period
            assert result["reason"].startswith("switching to bundle")
            serials.append(result["serial"])
            named.wait_for_serial(result["serial"])
            assert validate_signed_zone(online.out, now, offline.ksk_tag) == signing
            dnssec_verify(online.out)
            answer = named.query(ZONE, "DNSKEY")
            served = answer.find_rrset(dns.message.ANSWER, ORIGIN, dns.rdataclass.IN,
                                       dns.rdatatype.DNSKEY)
            assert {dns.dnssec.key_id(k) for k in served} == published
            served_sigs = answer.find_rrset(dns.message.ANSWER, ORIGIN, dns.rdataclass.IN,
                                            dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY)
            content = bundle_content(online, period)
            presigned = dns.rrset.from_text_list(ORIGIN, 60, "IN", "RRSIG", [
                line.split(None, 4)[4] for line in content.rrsigs.splitlines()])
            assert set(served_sigs) == set(presigned)  # the served DNSKEY RRSIG is the pre-signed one
            a_sigs = named.query(f"www.{ZONE}", "A").find_rrset(
                dns.message.ANSWER, dns.name.from_text(f"www.{ZONE}"), dns.rdataclass.IN,
                dns.rdatatype.RRSIG, dns.rdatatype.A)
            assert {s.key_tag for s in a_sigs} == signing
    assert serials == sorted(set(serials))
    assert "run out" in online.run(offline.at(2, 20)).stderr
    assert_no_ksk_private_material(online.root, offline)


def assert_no_ksk_private_material(root: Path, offline: Offline) -> None:
    """Nothing on the online side names the token or holds the KSK's private half."""
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        assert not (path.suffix == ".private" and f"+{offline.ksk_tag:05d}" in path.name)
        data = path.read_bytes()
        for marker in (b"pkcs11:", b"Engine:", b"Label:", b"Private-key-format"):
            assert marker not in data, f"{marker!r} in {path}"
        if path.suffix != ".bundle":
            continue
        content = open_bundle(path, Unlocker(PASSPHRASE)).content
        for zsk in content.zsks:
            assert zsk.tag != offline.ksk_tag
            assert "pkcs11:" not in zsk.private_text and "Engine" not in zsk.private_text
            scalar = base64.b64decode(zsk.private_text.split("PrivateKey: ")[1].split()[0])
            public = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1()).public_key()
            numbers = public.public_numbers()
            point = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
            assert point != offline.ksk_key


def test_failures_keep_the_last_good_zone_served(online, tmp_path):
    offline = online.offline
    good = online.publish(offline.at(0))
    published, state = online.out.read_bytes(), online.out.with_name(online.out.name + ".signer.json")
    state_before = state.read_bytes()
    with ControlledNamed(online.out, tmp_path / "named") as named:
        def refused(result, *expected: str) -> None:
            error = one_line_error(result)
            assert all(text in error for text in expected), error
            assert online.out.read_bytes() == published and state.read_bytes() == state_before
            assert named.serial() == good["serial"]

        rndc = ["--rndc", f"-c {named.rndc_conf}"]
        unsigned = online.unsigned.read_text()
        online.unsigned.write_text(unsigned + "broken IN A 999.1.1.1\n")
        refused(online.run(offline.at(0, 30), *rndc), "does not load", "bad dotted quad")
        online.unsigned.write_text(unsigned.replace("@ IN SOA", "; no SOA"))
        refused(online.run(offline.at(0, 30), *rndc), "does not load", "SOA")
        online.unsigned.write_text(unsigned)
        refused(online.run(offline.at(1), *rndc, passphrase=False,
                           env={"BINDPKCS11_PASSPHRASE": "not the passphrase"}), "wrong passphrase")
        refused(online.run(offline.at(1), *rndc, passphrase=False),
                "no bundle passphrase")
        bundle_one = offline.bundles[1].name
        for name, damage, expected in [
            ("corrupted", lambda b: b[:-30] + bytes([b[-30] ^ 0x40]) + b[-29:], "modified or is corrupted"),
            ("truncated", lambda b: b[:-100], "truncated"),
            ("header", lambda b: b.replace(b'"index":1', b'"index":7'), "modified or is corrupted"),
        ]:
            damaged = copy_bundles(online, tmp_path / name)
            (damaged / bundle_one).write_bytes(damage((damaged / bundle_one).read_bytes()))
            refused(online.run(offline.at(1), *rndc, bundles=damaged), bundle_one, expected)
        gap = copy_bundles(online, tmp_path / "gap")
        (gap / bundle_one).unlink()
        refused(online.run(offline.at(1, PERIOD - 10), *rndc, bundles=gap), "gap in the bundles")
        refused(online.run(offline.at(3, PERIOD + 1), *rndc), "the bundles ran out")
        refused(online.run(offline.start - 120, *rndc), "no bundle has started yet")
        instance = online.cli.state_dir / "instances" / ZONE
        instance.mkdir(parents=True)
        shutil.copy(named.rndc_conf, instance / "rndc.conf")
        recovered = online.publish(offline.at(1), "--reload-named", ZONE)
        assert recovered["published"] and recovered["serial"] > good["serial"]
        named.wait_for_serial(recovered["serial"])


def copy_bundles(online: Online, target: Path) -> Path:
    shutil.copytree(online.bundle_dir, target)
    return target


def test_a_missing_bundle_is_bridged_by_the_previous_one_while_it_covers(online):
    offline = online.offline
    online.publish(offline.at(0))
    (online.bundle_dir / offline.bundles[1].name).unlink()
    result = online.run(offline.at(1))
    assert result.returncode == RUNWAY_LOW, result.stderr
    report = json.loads(result.stdout)
    assert report["period_index"] == 0 and report["reason"] == "up to date"  # nothing to change
    assert "no bundle for the current period" in result.stderr
    assert "gap in the bundles" in result.stderr
    assert validate_signed_zone(online.out, offline.at(1), offline.ksk_tag) == {offline.zsk_tags[0]}



def test_loop_mode_signs_then_stops_cleanly_on_sigterm(online, tmp_path):
    """Without --once the signer keeps going (a failed round is reported, not fatal) until SIGTERM."""
    offline = online.offline
    command = [sys.executable, "-m", "bindpkcs11", "--state-dir", str(online.cli.state_dir), "signer",
               "run", ZONE, "--unsigned", str(online.unsigned), "--bundles", str(online.bundle_dir),
               "--out", str(online.out), "--passphrase-file", str(offline.passphrase_file),
               "--now", str(offline.at(0)), "--test-timings", "--interval", "0.2"]
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with open(stdout, "w") as out, open(stderr, "w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=online.cli.env, cwd=REPO)
    try:
        poll_until(lambda: online.out.exists() or process.poll() is not None)
        assert online.out.exists(), stderr.read_text()
        state = online.out.with_name(online.out.name + ".signer.json")
        before = state.read_bytes()
        online.unsigned.write_text("this is not a zone\n")
        poll_until(lambda: stderr.read_text().count("signer: error:") >= 2 or process.poll() is not None)
        assert process.poll() is None and state.read_bytes() == before
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr.read_text()
    assert "published serial" in stdout.read_text()
    assert "the unsigned zone" in stderr.read_text() and "does not load" in stderr.read_text()
    validate_signed_zone(online.out, offline.at(0), offline.ksk_tag)


def poll_until(condition, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not met before the deadline"
        time.sleep(0.05)
