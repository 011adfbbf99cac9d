"""The systemd units started for real: systemd as PID 1 in a container, the instance's named run by it.

The test machine has no systemd as init, so the units run in a container of the project's image
(shared with test_docker_image.py: tests/dockerenv.py) with systemd installed and booted as its
PID 1 (docker/systemd.Dockerfile, started as docker/README.md says). Inside it the operator's
steps from docs/services.md: setup-inline, `systemd install`, `named stop`, `systemctl enable
--now`. Then what systemd made of the units is checked on the running processes (named as bind,
only CAP_NET_BIND_SERVICE, no new privileges, its own read-only mount namespace, the PIN only as a
credential file) and on what is served: the zone validates from the host through a published
loopback port, an added record is signed by the token ZSK under the unit, the monitor's exit
status lands in the journal (0, then 2 with named stopped), named is gone after `systemctl stop`,
and the same keys sign after a restart and after the container reboots.
"""

from __future__ import annotations

import ipaddress
import json
import time

import dns.exception
import pytest

from conftest import REPO
from dockerenv import IMAGE, Dockerd
from namedproc import free_port
from test_inline import validated

pytestmark = pytest.mark.docker

ZONE = "example.test"
SYSTEMD_IMAGE = "localhost/bindpkcs11-systemd-test"
CONTAINER = "bp11-systemd"
NETWORK = "bp11-systemd"
NAMED_UNIT = f"bindpkcs11-named@{ZONE}.service"
MONITOR_UNIT = f"bindpkcs11-monitor@{ZONE}.service"
MONITOR_TIMER = f"bindpkcs11-monitor@{ZONE}.timer"
ZONE_FILE = f"/var/lib/bindpkcs11/{ZONE}.zone"
ZONE_TEXT = ("$TTL 300\n@ IN SOA ns1 hostmaster 10 3600 600 1209600 300\n@ IN NS ns1\n"
             "ns1 IN A 127.0.0.1\nwww IN A 127.0.0.2\n")
CAP_NET_BIND_SERVICE = 1 << 10
# What systemd needs to be PID 1 in a docker container (docker/README.md): mounts and namespaces
# for the units' sandboxing (CAP_SYS_ADMIN, no seccomp filter), the cgroup tree writable, /run a tmpfs.
SYSTEMD_RUN_OPTIONS = ("--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
                       "--security-opt", "apparmor=unconfined", "--cgroupns", "host",
                       "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock")


class Machine:
    """The systemd container: commands run in it with `docker exec` as root."""

    def __init__(self, dockerd: Dockerd, address: str, port: int, timings: dict[str, float]) -> None:
        self.dockerd = dockerd
        self.address = address  # where named listens in the container
        self.port = port  # its port 53, published on the host's loopback
        self.timings = timings

    def sh(self, script: str, check: bool = True, stdin: str | None = None, timeout: float = 300):
        args = ["exec", *(["-i"] if stdin is not None else []), CONTAINER, "sh", "-c", script]
        return self.dockerd.run(*args, check=check, input=stdin, timeout=timeout)

    def out(self, script: str) -> str:
        return self.sh(script).stdout.strip()

    def booted(self, timeout: float = 120) -> None:
        """Poll until systemd finished booting; every unit started (no failed one)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running --wait", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)
        assert state == "running", (state, self.sh("systemctl --failed --no-pager; journalctl -b "
                                                   "--no-pager | tail -40", check=False).stdout)

    def unit(self, name: str, prop: str) -> str:
        return self.out(f"systemctl show -p {prop} --value {name}")

    def journal(self, name: str) -> str:
        return self.out(f"journalctl -b -u {name} --no-pager -o cat")


def served_tags(port: int, timeout: float = 120) -> tuple[set[int], set[int]]:
    """Poll until the SOA and the DNSKEY RRset validate from the host; their RRSIG tags."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return validated(ZONE, "SOA", port)[1], validated(ZONE, "DNSKEY", port)[1]
        except (dns.exception.DNSException, KeyError, OSError) as error:  # not (yet) served signed
            last = error
        time.sleep(0.5)
    raise AssertionError(f"{ZONE} not served validated on port {port} in {timeout} s: {last!r}")


def named_process(machine: Machine) -> dict[str, str]:
    """The unit's main process: /proc/PID/status fields, plus its environment, mounts and namespace."""
    pid = machine.unit(NAMED_UNIT, "MainPID")
    assert pid not in ("", "0"), machine.journal(NAMED_UNIT)
    status = dict(line.split(":\t", 1) for line in machine.out(f"cat /proc/{pid}/status").splitlines()
                  if ":\t" in line)
    status["environ"] = machine.out(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    status["mounts"] = machine.out(f"cat /proc/{pid}/mountinfo")
    return status


def mount_point(mountinfo: str, where: str) -> tuple[str, str]:
    """(the mounted directory's root, the mount options) of the topmost mount at `where`
    (proc(5) mountinfo: a later line is mounted over an earlier one)."""
    fields = [line.split() for line in mountinfo.splitlines() if line.split()[4] == where][-1]
    return fields[3], fields[5]


def no_answer(port: int) -> bool:
    try:
        validated(ZONE, "SOA", port)
    except (dns.exception.DNSException, OSError):
        return True
    return False


@pytest.fixture
def machine(dockerd, project_image):
    """The systemd image (built on the project's), booted on a network with a fixed address so
    the listen address setup-inline wrote survives a reboot; removed afterwards, pass or fail."""
    started = time.monotonic()
    dockerd.run("build", "--build-arg", f"IMAGE={IMAGE}", "-f", str(REPO / "docker" / "systemd.Dockerfile"),
                "-t", SYSTEMD_IMAGE, str(REPO / "docker"), timeout=1200)
    timings = {"systemd layer": time.monotonic() - started}
    try:
        # A fixed address needs a subnet given by hand: the one docker picks (clear of the host's
        # routes), given back to it.
        dockerd.run("network", "create", NETWORK)
        subnet = json.loads(dockerd.run("network", "inspect", NETWORK).stdout)[0]["IPAM"]["Config"][0]["Subnet"]
        dockerd.run("network", "rm", NETWORK)
        dockerd.run("network", "create", "--subnet", subnet, NETWORK)
        address = str(ipaddress.ip_network(subnet)[10])
        port = free_port()
        dockerd.run("run", "-d", "--name", CONTAINER, "--hostname", "ns1", "--network", NETWORK,
                    "--ip", address, "-p", f"127.0.0.1:{port}:53/udp", "-p", f"127.0.0.1:{port}:53/tcp",
                    *SYSTEMD_RUN_OPTIONS, SYSTEMD_IMAGE)
        yield Machine(dockerd, address, port, timings)
    finally:
        dockerd.run("rm", "-f", "-v", CONTAINER, check=False)
        dockerd.run("network", "rm", NETWORK, check=False)


def test_units_run_named_hardened_under_systemd_and_keys_survive_a_reboot(machine):
    started = time.monotonic()
    machine.booted()
    assert machine.out("cat /proc/1/comm") == "systemd"
    # The operator's steps (docs/services.md), the zone served on the container's port 53.
    machine.sh(f"cat > {ZONE_FILE}", stdin=ZONE_TEXT)
    report = json.loads(machine.out(
        f"bindpkcs11 setup-inline {ZONE} --zone-file {ZONE_FILE} --listen {machine.address} "
        "--port 53 --rndc-port 953 --json"))
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    pin = machine.out(f"cat {report['instance_dir']}/token.pin")
    machine.sh(f"bindpkcs11 systemd install {ZONE} && bindpkcs11 named stop {ZONE} && systemctl daemon-reload")
    machine.sh(f"systemctl enable --now {NAMED_UNIT} {MONITOR_TIMER}")
    assert machine.unit(NAMED_UNIT, "ActiveState") == "active"
    soa_tags, dnskey_tags = served_tags(machine.port)
    assert soa_tags == {tags["zsk"]} and tags["ksk"] in dnskey_tags
    machine.timings["boot to served"] = time.monotonic() - started

    # What systemd made of the unit, on the running named.
    named = named_process(machine)
    assert named["Name"] == "named"
    assert named["Uid"].split()[0] == machine.out("id -u bind") != "0"
    assert int(named["CapEff"], 16) == CAP_NET_BIND_SERVICE, named["CapEff"]
    assert int(named["CapBnd"], 16) == CAP_NET_BIND_SERVICE, named["CapBnd"]
    assert named["NoNewPrivs"].strip() == "1"
    assert mount_point(named["mounts"], "/")[1].split(",")[0] == "ro"  # ProtectSystem=strict
    assert "/systemd-private-" in mount_point(named["mounts"], "/tmp")[0]  # PrivateTmp=yes
    assert f"PKCS11_LIBRARY_PIN_FILE=/run/credentials/{NAMED_UNIT}/token.pin" in named["environ"].splitlines()
    assert pin not in named["environ"]
    assert machine.unit(NAMED_UNIT, "LimitCORE") == "0"

    # named under the unit signs with the token: an added record is served signed by the ZSK.
    pid = machine.unit(NAMED_UNIT, "MainPID")
    machine.sh(f"echo 'added IN A 127.0.0.99' >> {ZONE_FILE} && bindpkcs11 named reload {ZONE}")
    rrset, added_tags = validated(ZONE, "A", machine.port, f"added.{ZONE}")
    assert rrset[0].address == "127.0.0.99" and added_tags == {tags["zsk"]}
    assert machine.unit(NAMED_UNIT, "MainPID") == pid  # reloaded by rndc, not restarted

    # The monitor, once through its service (what the timer starts): exit status 0 in the journal.
    assert machine.unit(MONITOR_TIMER, "ActiveState") == "active"
    machine.sh(f"systemctl start {MONITOR_UNIT}")
    assert machine.unit(MONITOR_UNIT, "ExecMainStatus") == "0"
    journal = machine.journal(MONITOR_UNIT)
    assert "status    ok" in journal and f"{MONITOR_UNIT}: Deactivated successfully." in journal, journal

    # Stopped: no named left in the container, nothing answers, and the monitor's 2 is journalled.
    machine.sh(f"systemctl stop {NAMED_UNIT}")
    assert "named" not in machine.sh("cat /proc/[0-9]*/comm", check=False).stdout.split()
    assert no_answer(machine.port)
    failed = machine.sh(f"systemctl start {MONITOR_UNIT}", check=False)
    assert failed.returncode != 0
    assert machine.unit(MONITOR_UNIT, "ExecMainStatus") == "2"
    assert "status=2/INVALIDARGUMENT" in machine.journal(MONITOR_UNIT)

    # Started again, then the whole container rebooted: the enabled unit comes back by itself and
    # signs with the same token keys; the added record is still there.
    machine.sh(f"systemctl start {NAMED_UNIT}")
    assert served_tags(machine.port) == (soa_tags, dnskey_tags)
    rebooting = time.monotonic()
    machine.dockerd.run("restart", "-t", "60", CONTAINER, timeout=180)
    machine.booted()
    assert served_tags(machine.port) == (soa_tags, dnskey_tags)
    machine.timings["reboot to served"] = time.monotonic() - rebooting
    assert machine.unit(NAMED_UNIT, "ActiveState") == "active"
    assert validated(ZONE, "A", machine.port, f"added.{ZONE}")[1] == {tags["zsk"]}
    machine.timings["test"] = time.monotonic() - started
    print("systemd container timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in machine.timings.items()))
