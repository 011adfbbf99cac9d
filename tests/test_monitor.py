"""`bindpkcs11 monitor` against stock named on loopback serving zones signed by stock dnssec-signzone."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.rdatatype
import dns.zone
import pytest

from bindpkcs11.dnssec.samplezone import sample_zone_text
from conftest import REPO, default_sigint, one_line_error
from namedproc import NamedProcess, free_port

ZONE = "example.test"
SERIAL = 2026112701
DAY = 86400


@dataclass(frozen=True)
class Keys:
    directory: Path
    ksk: int
    zsk: int


@pytest.fixture
def keys(cli, tmp_path) -> Keys:
    directory = tmp_path / "keys"
    tags = {role: cli.json("keygen", ZONE, "--role", role, "--algorithm", "13", "--software",
                           "--key-dir", str(directory))["tag"] for role in ("ksk", "zsk")}
    return Keys(directory, tags["ksk"], tags["zsk"])


def zone_file(directory: Path) -> Path:
    path = directory / f"{ZONE}.zone"
    path.write_text(sample_zone_text(dns.name.from_text(ZONE), serial=SERIAL))
    return path


def sign(directory: Path, keys: Keys, *extra: str) -> Path:
    """Stock dnssec-signzone with the software keys; returns the signed file."""
    unsigned = zone_file(directory)
    signed = directory / f"{ZONE}.signed"
    result = subprocess.run(
        ["/usr/bin/dnssec-signzone", "-S", "-K", str(keys.directory), "-d", str(directory),
         "-o", ZONE, "-f", str(signed), *extra, str(unsigned)],
        capture_output=True, text=True, cwd=directory, timeout=120)
    assert result.returncode == 0, result.stderr
    return signed


def rrsig_times(signed: Path) -> dict:
    """(owner, covered type) -> {(key tag, inception, expiration)} from the signed zone file."""
    zone = dns.zone.from_file(str(signed), origin=ZONE, relativize=False)
    times: dict = {}
    for name, _, rdata in zone.iterate_rdatas():
        if rdata.rdtype != dns.rdatatype.RRSIG:
            continue
        key = (name.to_text(), dns.rdatatype.to_text(rdata.type_covered))
        times.setdefault(key, set()).add((rdata.key_tag, rdata.inception, rdata.expiration))
    return times


def monitor(cli, port: int, *args: str) -> subprocess.CompletedProcess:
    return cli("monitor", ZONE, "--server", "127.0.0.1", "--port", str(port), *args, check=False)


def monitor_json(cli, port: int, *args: str, code: int) -> dict:
    result = monitor(cli, port, "--once", "--json", *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def by_rrset(report: dict) -> dict:
    return {(rrset["name"], rrset["rdtype"]): rrset for rrset in report["rrsets"]}


@pytest.mark.parametrize("denial", ["nsec", "nsec3"])
def test_once_reports_serial_key_tags_and_expiry(cli, keys, tmp_path, denial):
    signed = sign(tmp_path, keys, *(["-3", "-"] if denial == "nsec3" else []))
    expected = rrsig_times(signed)
    with NamedProcess(ZONE, signed, tmp_path / "named") as named:
        report = monitor_json(cli, named.port, "--check", "www/A", code=0)
        table = monitor(cli, named.port, "--once", "--check", "www/A")
    assert report["status"] == "ok" and report["problems"] == []
    assert report["serial"] == SERIAL
    assert {(k["key_tag"], k["role"]) for k in report["dnskeys"]} == {(keys.ksk, "ksk"), (keys.zsk, "zsk")}
    rrsets = by_rrset(report)
    for wanted in [(f"{ZONE}.", "SOA"), (f"{ZONE}.", "DNSKEY"), (f"{ZONE}.", "NS"), (f"www.{ZONE}.", "A")]:
        assert wanted in rrsets, rrsets.keys()
    denial_rrsets = [key for key in rrsets if key[1] == denial.upper()]
    assert denial_rrsets, rrsets.keys()
    for key, rrset in rrsets.items():
        assert rrset["validated"] and rrset["problem"] is None, rrset
        served = {(s["key_tag"], s["inception"], s["expiration"]) for s in rrset["signatures"]}
        assert served == expected[key], key
        assert all(s["valid"] and s["algorithm"] == 13 for s in rrset["signatures"])
    assert {s["key_tag"] for s in rrsets[(f"{ZONE}.", "SOA")]["signatures"]} == {keys.zsk}
    assert keys.ksk in {s["key_tag"] for s in rrsets[(f"{ZONE}.", "DNSKEY")]["signatures"]}
    assert report["earliest_expiration"] == min(max(e for _, _, e in expected[key]) for key in rrsets)
    assert abs(report["earliest_expiration"] - report["checked_at"] - 30 * DAY) < 2 * 3600
    assert table.returncode == 0, table.stderr
    assert str(SERIAL) in table.stdout and str(keys.ksk) in table.stdout
    assert "status    ok" in table.stdout and f"www.{ZONE}." in table.stdout


def test_signatures_expiring_soon_are_a_warning(cli, keys, tmp_path):
    signed = sign(tmp_path, keys, "-e", "now+2d")
    with NamedProcess(ZONE, signed, tmp_path / "named") as named:
        report = monitor_json(cli, named.port, "--warn-days", "7", code=1)
        relaxed = monitor_json(cli, named.port, "--warn-days", "1", code=0)
    assert report["status"] == "warning"
    assert len(report["problems"]) == 1 and "expire in 2.0 days" in report["problems"][0]
    assert 2 * DAY - 3600 < report["earliest_expiration"] - report["checked_at"] <= 2 * DAY
    assert relaxed["status"] == "ok" and relaxed["problems"] == []


def test_now_option_checks_another_time(cli, keys, tmp_path):
    signed = sign(tmp_path, keys)
    with NamedProcess(ZONE, signed, tmp_path / "named") as named:
        later = monitor_json(cli, named.port, "--now", "now+31d", code=2)
        earlier = monitor_json(cli, named.port, "--now", "now-2h", code=2)
        soon = monitor_json(cli, named.port, "--now", "now+25d", code=1)
    assert later["status"] == "critical"
    assert any(p.startswith(f"{ZONE}./SOA: does not validate: RRSIG {keys.zsk} (expired at ")
               for p in later["problems"]), later["problems"]
    assert all(not rrset["validated"] for rrset in later["rrsets"])
    assert any("not valid before" in p for p in earlier["problems"]), earlier["problems"]
    assert soon["status"] == "warning"


def test_modified_record_is_critical_and_named(cli, keys, tmp_path):
    signed = sign(tmp_path, keys)
    text = signed.read_text()
    assert text.count("127.0.0.80") == 1
    signed.write_text(text.replace("127.0.0.80", "127.0.0.99"))  # the RRSIG stays as it was
    with NamedProcess(ZONE, signed, tmp_path / "named") as named:
        report = monitor_json(cli, named.port, "--check", "www/A", code=2)
        table = monitor(cli, named.port, "--once", "--check", "www/A")
        apex_only = monitor_json(cli, named.port, code=0)
    assert report["status"] == "critical"
    assert report["problems"] == [
        f"www.{ZONE}./A: does not validate: RRSIG {keys.zsk} (signature does not verify)"]
    rrsets = by_rrset(report)
    assert not rrsets[(f"www.{ZONE}.", "A")]["validated"]
    assert rrsets[(f"{ZONE}.", "SOA")]["validated"]
    assert table.returncode == 2 and f"www.{ZONE}./A: does not validate" in table.stdout
    assert apex_only["status"] == "ok"


def test_unsigned_refused_and_stopped_servers_are_critical(cli, tmp_path):
    with NamedProcess(ZONE, zone_file(tmp_path), tmp_path / "named") as named:
        unsigned = monitor_json(cli, named.port, code=2)
        refused = cli("monitor", "other.test", "--port", str(named.port), "--once", "--json",
                      check=False)
    assert unsigned["serial"] == SERIAL
    assert unsigned["problems"] == [f"{ZONE}.: no DNSKEY RRset: the zone is not signed"]
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["problems"] == [
        f"127.0.0.1#{named.port} answered REFUSED for other.test./SOA: is the zone loaded there?"]

    started = time.monotonic()
    stopped = monitor(cli, named.port, "--once", "--timeout", "0.5")
    assert time.monotonic() - started < 10
    assert stopped.returncode == 2, stopped.stderr
    assert "Traceback" not in stopped.stderr and stopped.stderr == ""
    assert "status    critical" in stopped.stdout
    assert f"no answer from 127.0.0.1#{named.port}" in stopped.stdout
    report = monitor_json(cli, named.port, "--timeout", "0.5", code=2)
    assert report["serial"] is None and report["rrsets"] == []
    assert len(report["problems"]) == 1
    assert report["problems"][0].startswith(f"no answer from 127.0.0.1#{named.port}")


def test_loop_prints_one_line_per_check_until_interrupted(cli, keys, tmp_path):
    signed = sign(tmp_path, keys)
    with NamedProcess(ZONE, signed, tmp_path / "named") as named:
        command = [sys.executable, "-m", "bindpkcs11", "monitor", ZONE, "--port", str(named.port),
                   "--interval", "1"]
        env = {k: v for k, v in cli.env.items() if k != "PYTHONUNBUFFERED"}  # as under cron
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env, cwd=REPO, preexec_fn=default_sigint)
        try:
            lines = read_lines(process, count=2, timeout=30)
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        stderr = process.stderr.read()
        process.stdout.close()
        process.stderr.close()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 2
    for line in lines:
        assert f" {ZONE}. status=ok serial={SERIAL} earliest-expiry=20" in line, line
        assert line.endswith("problems=-"), line
    assert lines[0].split()[0] < lines[1].split()[0]  # two checks, at least a second apart


def read_lines(process: subprocess.Popen, count: int, timeout: float) -> list[str]:
    """The first `count` stdout lines of `process`, or AssertionError after `timeout` seconds."""
    lines: queue.Queue = queue.Queue()

    def reader() -> None:
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while len(seen) < count:
        remaining = deadline - time.monotonic()
        try:
            seen.append(lines.get(timeout=max(remaining, 0.01)))
        except queue.Empty:
            raise AssertionError(f"only {seen} after {timeout} s") from None
    return seen


@pytest.mark.parametrize("args, message", [
    (["exa mple.test"], "invalid domain name"),
    (["example.test", "--check", "www"], "invalid --check 'www'"),
    (["example.test", "--check", "www/NOTATYPE"], "invalid --check 'www/NOTATYPE'"),
    (["example.test", "--check", "www.other.test./A"], "is not in zone example.test."),
    (["example.test", "--port", "0"], "invalid --port 0"),
    (["example.test", "--interval", "0"], "invalid --interval '0'"),
    (["example.test", "--now", "someday"], "invalid time 'someday'"),
])
def test_invalid_input_is_one_line_exit_2(cli, args, message):
    result = cli("monitor", "--port", str(free_port()), "--once", *args, check=False)
    assert result.returncode == 2
    assert message in one_line_error(result)
