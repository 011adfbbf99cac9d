"""setup-inline end to end on the opencryptoki soft token: named, started by the CLI inside the
sandbox's namespace, signs through the shim as `bind` (a pkcs11 member in the sandbox's view of
/etc/group only); the served zone validated by delv with the KSK as trust anchor and by
`bindpkcs11 monitor`, and re-signed by `rndc sign`. Everything started is stopped."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

from conftest import one_line_error, poll
from occ_fixtures import (  # noqa: F401 - fixture
    OCC_TOKEN,
    needs_opencryptoki,
    oc,
    occ_cli,
    sandbox_pid,
)
from test_tpm2_inline import delv, delv_anchor

ZONE = "example.test"

pytestmark = needs_opencryptoki


def test_setup_inline_on_the_soft_token_validates_and_resigns(occ_cli, patched_bind, tmp_path):
    cli = occ_cli
    host_group = Path("/etc/group").read_text()
    oc(cli, "token", "init", "--label", OCC_TOKEN, "--generate-pins")
    port, rndc_port = cli.ports
    report = json.loads(oc(cli, "setup-inline", ZONE, "--token", OCC_TOKEN, "--algorithm", "8",
                           "--port", str(port), "--rndc-port", str(rndc_port), "--json",
                           timeout=300).stdout)
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    key_dir = Path(report["instance_dir"]) / "keys"
    assert not any("PrivateKey:" in p.read_text() for p in key_dir.glob("*.private"))
    ksk_file = next(p for p in key_dir.glob("*.key") if f"+{tags['ksk']:05d}" in p.name)
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(delv_anchor(ksk_file))
    for name, rdtype in ((ZONE, "SOA"), (ZONE, "DNSKEY"), (f"www.{ZONE}", "A")):
        checked = delv(anchors, port, name, rdtype)
        assert checked.returncode == 0 and "; fully validated" in checked.stdout, checked
    assert f" {tags['zsk']} {ZONE}." in delv(anchors, port, ZONE, "SOA").stdout
    # named runs as bind inside the sandbox's mount namespace; the host's /etc/group is unchanged.
    pid = int((Path(report["instance_dir"]) / "named.pid").read_text())
    slotd = sandbox_pid(cli)
    assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(f"/proc/{slotd}/ns/mnt")
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    if os.geteuid() == 0:
        assert pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name == "bind"
    assert Path("/etc/group").read_text() == host_group
    pin = cli.pin(OCC_TOKEN)
    for process in (pid, slotd):  # no PIN in named's or pkcsslotd's argv or environment
        for what in ("cmdline", "environ"):
            assert pin.encode() not in Path(f"/proc/{process}/{what}").read_bytes()
    monitor = json.loads(oc(cli, "monitor", ZONE, "--port", str(port), "--once", "--json").stdout)
    assert monitor["status"] == "ok"
    serial = monitor["serial"]
    oc(cli, "rndc", "sign", ZONE)

    def resigned():
        now = json.loads(oc(cli, "monitor", ZONE, "--port", str(port), "--once", "--json",
                            check=False).stdout or "{}")
        return now.get("status") == "ok" and now.get("serial", 0) > serial

    poll(resigned, 60, "named re-signing the zone through opencryptoki")
    assert "; fully validated" in delv(anchors, port, ZONE, "SOA").stdout
    # The sandbox is not stopped under a named that signs through it.
    refused = cli("opencryptoki", "sandbox", "stop", check=False)
    assert f"named (pid {pid})" in one_line_error(refused) and "named stop" in refused.stderr
    assert os.readlink(f"/proc/{slotd}/ns/mnt")  # pkcsslotd still runs
    # A later command (a new process) starts named inside the sandbox again, signing.
    oc(cli, "named", "stop", ZONE)
    oc(cli, "named", "start", ZONE, timeout=300)
    again = int((Path(report["instance_dir"]) / "named.pid").read_text())
    assert again != pid
    assert os.readlink(f"/proc/{again}/ns/mnt") == os.readlink(f"/proc/{slotd}/ns/mnt")
    assert "; fully validated" in delv(anchors, port, ZONE, "SOA").stdout
