"""Issue 8, items 4-7: setup-inline under races, failed re-runs, port clashes and injected config.

Real patched named on loopback high ports, real SoftHSM tokens; each test would fail on the code
before these guarantees existed (noted per test).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from conftest import REPO, one_line_error
from namedproc import instance_nameds, free_port
from test_inline import ZONE, inline_cli, named_pid, poll, setup, validated  # noqa: F401

OTHER = "other.test"


def named_processes(cli, zone: str = ZONE) -> list[int]:
    """Every named (not named-checkconf) serving this instance."""
    return instance_nameds(cli.state_dir, zone)


def setup_process(cli, *extra: str, zone: str = ZONE) -> subprocess.Popen:
    port, rndc_port = cli.ports
    command = [sys.executable, "-m", "bindpkcs11", "--state-dir", str(cli.state_dir), "setup-inline",
               zone, "--port", str(port), "--rndc-port", str(rndc_port), *extra]
    return subprocess.Popen(command, env=cli.env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def ds_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("DS for the parent"))


def test_two_concurrent_setups_start_one_named_and_print_one_ds(inline_cli, patched_bind):
    """Before: two named for one zone, two different DS records, a corrupted journal."""
    runs = [setup_process(inline_cli), setup_process(inline_cli)]
    outputs = [run.communicate(timeout=180) for run in runs]
    codes = [run.returncode for run in runs]
    assert 0 in codes, outputs
    for code, (out, err) in zip(codes, outputs):
        if code != 0:
            assert "is busy: bindpkcs11 process" in err and "Traceback" not in err, err
    succeeded = [out for code, (out, _) in zip(codes, outputs) if code == 0]
    assert len({ds_line(out) for out in succeeded}) == 1
    assert len(named_processes(inline_cli)) == 1
    keys = inline_cli.state_dir / "instances" / ZONE / "keys"
    assert len(list(keys.glob("*.private"))) == 2
    validated(ZONE, "SOA", inline_cli.ports[0])


def test_rerun_with_a_damaged_key_file_keeps_the_zone_served(inline_cli):
    """Before: the damaged key was skipped, new keys were generated and named was stopped for
    good when its restart failed: a zone outage."""
    setup(inline_cli)
    pid = named_pid(inline_cli)
    keys = inline_cli.state_dir / "instances" / ZONE / "keys"
    private = sorted(keys.glob("*.private"))[0]
    private.write_text("Private-key-format: v1.3\nAlgorithm: garbage\n")
    error = one_line_error(setup(inline_cli, check=False))
    assert private.name.removesuffix(".private") in error and "damaged" in error
    assert named_pid(inline_cli) == pid
    assert len(list(keys.glob("*.private"))) == 2
    validated(ZONE, "SOA", inline_cli.ports[0])


def test_a_new_named_that_dies_is_replaced_by_the_previous_configuration(inline_cli):
    """Before: the old named was stopped, the new one failed, nothing served the zone.

    The fault is real: the new named is killed (SIGKILL) as soon as it appears."""
    setup(inline_cli)
    old_pid = named_pid(inline_cli)
    instance = inline_cli.state_dir / "instances" / ZONE
    zone_conf = (instance / "zone.conf").read_text()
    run = setup_process(inline_cli, "--secondary", f"127.0.0.1:{free_port()}")
    new_pid = poll(lambda: [p for p in named_processes(inline_cli) if p != old_pid], deadline=60,
                   what="the new named")[0]
    os.kill(new_pid, signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0 and "Traceback" not in err, err
    assert (instance / "zone.conf").read_text() == zone_conf
    restarted = poll(lambda: named_pid(inline_cli), what="the previous named restarted")
    assert restarted != old_pid
    validated(ZONE, "SOA", inline_cli.ports[0])
    assert "also-notify" not in (instance / "zone.conf").read_text()


def test_a_running_instance_cannot_take_another_instances_port(inline_cli):
    """Before: the port check was skipped for a running instance; two named shared the port
    (SO_REUSEPORT) and half the answers of both zones were REFUSED."""
    port_a, rndc_a = inline_cli.ports
    setup(inline_cli)
    other_ports = (free_port(), free_port())
    inline_cli("setup-inline", OTHER, "--port", str(other_ports[0]), "--rndc-port", str(other_ports[1]))
    result = inline_cli("setup-inline", OTHER, "--port", str(port_a), "--rndc-port",
                        str(other_ports[1]), check=False)
    error = one_line_error(result)
    assert f"--port {port_a}" in error and ZONE in error
    result = inline_cli("setup-inline", OTHER, "--port", str(other_ports[0]), "--rndc-port",
                        str(rndc_a), check=False)
    assert f"--rndc-port {rndc_a}" in one_line_error(result)
    for _ in range(20):  # every answer on A's port is A's zone, none REFUSED
        response = dns.query.udp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port_a,
                                 timeout=2)
        assert response.rcode() == dns.rcode.NOERROR and response.answer
    validated(OTHER, "SOA", other_ports[0])


def test_a_stopped_instance_keeps_its_ports_reserved(inline_cli):
    """A second instance may not take a stopped instance's port: it would fail at its start."""
    port_a, _ = inline_cli.ports
    setup(inline_cli)
    inline_cli("named", "stop", ZONE)
    result = inline_cli("setup-inline", OTHER, "--port", str(port_a), "--rndc-port",
                        str(free_port()), check=False)
    assert ZONE in one_line_error(result)


def test_a_listen_address_with_an_ipv6_scope_is_refused(inline_cli):
    """Python's ipaddress takes any text after '%': it would reach named.conf unquoted."""
    error = one_line_error(setup(inline_cli, "--listen", "fe80::1%1; }; allow-query { any; }; #",
                                 check=False))
    assert "invalid --listen" in error
    assert not (inline_cli.state_dir / "instances").exists()


def test_an_address_not_on_this_machine_is_not_reported_as_port_in_use(inline_cli):
    result = setup(inline_cli, "--listen", "203.0.113.7", check=False)
    error = one_line_error(result)
    assert "not an address of this machine" in error and "in use" not in error
    assert not (inline_cli.state_dir / "instances" / ZONE / "keys").exists()


def test_config_injection_through_a_token_label_is_refused_before_anything_is_made(inline_cli):
    """Before: a newline in --token ended the comment in zone.conf and named loaded an injected
    `acl` statement."""
    label = 'evil\n acl "injected" { any; };\n//'
    error = one_line_error(setup(inline_cli, "--token", label, check=False))
    assert "control characters" in error and "\n" not in error
    assert not (inline_cli.state_dir / "instances").exists()
    assert not (inline_cli.state_dir / "softhsm" / "tokens").exists() or \
        not any((inline_cli.state_dir / "softhsm" / "tokens").iterdir())


def test_secondary_values_are_addresses_only(inline_cli):
    """Before: --secondary '1.2.3.4; }; acl x { any; }; #:53' went into named.conf as is."""
    for bad in ["1.2.3.4; }; acl x { any; }; also-notify { 1.2.3.4:53", "ns.example:53",
                '127.0.0.1"}:53',
                "[fe80::1%1; }; allow-query { any; }; also-notify { 127.0.0.1]:53"]:
        error = one_line_error(setup(inline_cli, "--secondary", bad, check=False))
        assert "invalid --secondary" in error
    assert not (inline_cli.state_dir / "instances").exists()


def test_rendered_config_refuses_values_that_could_end_a_string(tmp_path):
    """The renderer's own guard: even a caller that skipped validation cannot inject."""
    import pytest

    from bindpkcs11.bind import config
    from bindpkcs11.bind.instance import Instance, InstanceSettings

    instance = Instance(tmp_path / "i")
    for token in ['a"; }; acl x { any; }; #', "a\nacl x { any; };", "back\\slash"]:
        settings = InstanceSettings(zone="example.test.", token=token, profile="softhsm",
                                    algorithm=13, bits=None, listen="127.0.0.1", port=5353,
                                    rndc_port=9530)
        with pytest.raises(config.UnsafeConfigValue):
            config.render(instance, settings, tmp_path / "z.db", 300)


def test_zone_names_differing_in_case_are_one_instance(inline_cli):
    """Before: `Example.TEST` got its own instance directory and lock: a second named for the
    same zone (DNS names compare without case)."""
    setup(inline_cli)
    pid = named_pid(inline_cli)
    result = setup(inline_cli, zone="Example.TEST")
    assert "nothing changed" in result.stdout
    assert named_pid(inline_cli) == pid
    assert sorted(p.name for p in (inline_cli.state_dir / "instances").iterdir()) == [ZONE]


def test_named_commands_take_the_instance_lock(inline_cli):
    """Before: `named stop` or `reload` could run in the middle of a setup-inline swap."""
    from bindpkcs11 import locks

    setup(inline_cli)
    pid = named_pid(inline_cli)
    lock = inline_cli.state_dir / "locks" / f"instance-{ZONE}.lock"
    with locks.held(lock, "test"):
        result = inline_cli("named", "stop", ZONE, check=False)
    error = one_line_error(result)
    assert f"process {os.getpid()}" in error and result.returncode == 75
    assert named_pid(inline_cli) == pid


def test_reload_reads_the_zone_like_setup_inline(inline_cli, tmp_path):
    """Before: reload ran named-checkzone as root on the operator's file, following its
    $INCLUDEs, and copied the file with a relative $INCLUDE that named could not resolve."""
    zone_dir = tmp_path / "zones"
    zone_dir.mkdir()
    zone = zone_dir / "example.test.zone"
    head = "$TTL 300\n@ IN SOA ns1 h {serial} 3600 600 1209600 300\n@ NS ns1\nns1 A 127.0.0.1\n"
    zone.write_text(head.format(serial=1))
    setup(inline_cli, "--zone-file", str(zone))
    (zone_dir / "more.inc").write_text("more IN A 127.0.0.12\n")
    zone.write_text(head.format(serial=2) + "$INCLUDE more.inc\n")
    inline_cli("named", "reload", ZONE)
    assert validated(ZONE, "A", inline_cli.ports[0], f"more.{ZONE}")[0][0].address == "127.0.0.12"
    zone.write_text(head.format(serial=3) + "$INCLUDE /etc/passwd\n")
    error = one_line_error(inline_cli("named", "reload", ZONE, check=False))
    assert "outside the zone file's directory" in error
    validated(ZONE, "A", inline_cli.ports[0], f"more.{ZONE}")
