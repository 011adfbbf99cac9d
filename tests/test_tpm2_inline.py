"""setup-inline end to end on a TPM token: swtpm + tpm2-abrmd (started by `tpm2 simulator`),
named signing through the shim inside it, the served zone validated by delv with the KSK as its
trust anchor and by `bindpkcs11 monitor`. Everything started is stopped, pass or fail."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

from conftest import poll
from tpm2_fixtures import TPM_TOKEN, record, tp, tpm2_cli  # noqa: F401 - fixture

ZONE = "example.test"


def delv_anchor(key_file: Path) -> str:
    """A delv trust-anchors clause for the KSK in `key_file` (its DNSKEY record)."""
    fields = [line for line in key_file.read_text().splitlines() if not line.startswith(";")][0].split()
    owner, flags, protocol, algorithm, key = fields[0], fields[3], fields[4], fields[5], "".join(fields[6:])
    return f'trust-anchors {{ {owner} static-key {flags} {protocol} {algorithm} "{key}"; }};\n'


def delv(anchors: Path, port: int, name: str, rdtype: str) -> subprocess.CompletedProcess:
    return subprocess.run(["delv", "-a", str(anchors), f"+root={ZONE}", "@127.0.0.1", "-p", str(port),
                           name, rdtype], capture_output=True, text=True, timeout=30)


def named_environ(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_setup_inline_on_a_tpm_token_validates_with_delv_and_monitor(tpm2_cli, patched_bind, tmp_path):
    cli = tpm2_cli
    tp(cli, "token", "init", "--label", TPM_TOKEN, "--generate-pins")
    port, rndc_port = cli.ports
    result = tp(cli, "setup-inline", ZONE, "--token", TPM_TOKEN, "--port", str(port),
                "--rndc-port", str(rndc_port), "--json", timeout=300)
    report = json.loads(result.stdout)
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    assert all(key["uri"].startswith(f"pkcs11:token={TPM_TOKEN};object=") for key in report["keys"])
    # The keys are in the TPM token: no private material in the key files.
    key_dir = Path(report["instance_dir"]) / "keys"
    for private in key_dir.glob("*.private"):
        assert "PrivateKey:" not in private.read_text()
    ksk_file = next(p for p in key_dir.glob("*.key") if f"+{tags['ksk']:05d}" in p.name)
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(delv_anchor(ksk_file))
    for name, rdtype in ((ZONE, "SOA"), (ZONE, "DNSKEY"), (f"www.{ZONE}", "A")):
        checked = delv(anchors, port, name, rdtype)
        assert checked.returncode == 0 and "; fully validated" in checked.stdout, checked
    soa = delv(anchors, port, ZONE, "SOA").stdout
    assert f" {tags['zsk']} {ZONE}." in soa  # signed by the TPM ZSK
    monitor = json.loads(tp(cli, "monitor", ZONE, "--port", str(port), "--once", "--json").stdout)
    assert monitor["status"] == "ok"
    # named reaches the TPM through the shim, with the environment the profile gave it.
    pid = int((Path(report["instance_dir"]) / "named.pid").read_text())
    env = named_environ(pid)
    rec = record(cli)
    assert env["TPM2_PKCS11_TCTI"] == "tabrmd:bus_type=session"
    assert env["DBUS_SESSION_BUS_ADDRESS"] == f"unix:path={rec['bus']}"
    assert env["TPM2_PKCS11_STORE"] == str(cli.state_dir / "tpm2" / "store")
    assert cli.pin(TPM_TOKEN) not in "".join(env.values())
    if os.geteuid() == 0:
        assert pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name == "bind"
        store = cli.state_dir / "tpm2" / "store"
        assert pwd.getpwuid(store.stat().st_uid).pw_name == "bind"
        assert store.stat().st_mode & 0o077 == 0
    # A re-sign after start, from named's worker threads as `bind`: `rndc sign` bumps the serial
    # and the new SOA still validates.
    serial = monitor["serial"]
    tp(cli, "rndc", "sign", ZONE)
    def resigned():
        report = json.loads(tp(cli, "monitor", ZONE, "--port", str(port), "--once", "--json",
                               check=False).stdout or "{}")
        return report.get("status") == "ok" and report.get("serial", 0) > serial

    poll(resigned, 60, "named re-signing the zone through the TPM")
    assert "; fully validated" in delv(anchors, port, ZONE, "SOA").stdout
