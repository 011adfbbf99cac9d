"""Re-running setup-inline with fewer options: what the operator left out keeps the instance's
value. Before, a bare `setup-inline ZONE` (the natural re-run after a PIN change) rendered the
defaults: the sample zone in place of the operator's zone file, port 5353, the default token."""

from __future__ import annotations

import json

from conftest import one_line_error
from test_inline import ZONE, inline_cli, named_pid, setup, validated  # noqa: F401 (fixture)


def test_a_bare_rerun_keeps_zone_file_ports_token_and_algorithm(inline_cli, tmp_path):
    port, rndc_port = inline_cli.ports
    zone_file = tmp_path / "operator.zone"
    zone_file.write_text(
        "$TTL 300\n@ IN SOA ns1 hostmaster 7 3600 600 86400 300\n@ IN NS ns1\n"
        "ns1 IN A 127.0.0.1\noperator-only IN TXT \"from the operator's file\"\n")
    inline_cli("token", "init", "--label", "zonekeys", "--generate-pins")
    setup(inline_cli, "--zone-file", str(zone_file), "--token", "zonekeys",
          "--algorithm", "RSASHA256", "--bits", "2048")
    pid = named_pid(inline_cli)
    settings_file = inline_cli.state_dir / "instances" / ZONE / "instance.json"
    before = settings_file.read_text()

    rerun = inline_cli("setup-inline", ZONE)  # nothing but the zone

    assert "nothing changed" in rerun.stdout, rerun.stdout + rerun.stderr
    assert named_pid(inline_cli) == pid
    assert settings_file.read_text() == before
    rrset, _ = validated(ZONE, "TXT", port, f"operator-only.{ZONE}")
    assert "from the operator's file" in rrset.to_text()
    settings = json.loads(before)
    assert (settings["port"], settings["rndc_port"], settings["token"], settings["algorithm"]) == \
        (port, rndc_port, "zonekeys", 8)


def test_an_option_given_on_the_rerun_replaces_the_instances_value(inline_cli, tmp_path):
    setup(inline_cli)
    zone_file = tmp_path / "changed.zone"
    zone_file.write_text(
        "$TTL 300\n@ IN SOA ns1 hostmaster 9 3600 600 86400 300\n@ IN NS ns1\n"
        "ns1 IN A 127.0.0.1\nadded IN A 127.0.0.9\n")
    inline_cli("setup-inline", ZONE, "--zone-file", str(zone_file))
    rrset, _ = validated(ZONE, "A", inline_cli.ports[0], f"added.{ZONE}")
    assert rrset[0].address == "127.0.0.9"


def test_a_rerun_whose_recorded_zone_file_is_gone_says_so_and_keeps_named(inline_cli, tmp_path):
    zone_file = tmp_path / "operator.zone"
    zone_file.write_text(
        "$TTL 300\n@ IN SOA ns1 hostmaster 7 3600 600 86400 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n")
    setup(inline_cli, "--zone-file", str(zone_file))
    pid = named_pid(inline_cli)
    zone_file.unlink()
    message = one_line_error(inline_cli("setup-inline", ZONE, check=False))
    assert str(zone_file) in message
    assert named_pid(inline_cli) == pid
    validated(ZONE, "SOA", inline_cli.ports[0])
