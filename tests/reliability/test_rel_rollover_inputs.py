"""Bad input and faults for `status` and `rollover zsk` (issue 12): one line, nothing created,
the running zone untouched; a token object gone or a key file lost shows in `status`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from conftest import one_line_error
from namedproc import free_port
from test_inline import ZONE, inline_cli, named_pid, poll, setup, validated  # noqa: F401 - fixture


def _key_files(cli) -> set[str]:
    return {p.name for p in (cli.state_dir / "instances" / ZONE / "keys").iterdir()}


def test_input_errors_are_one_line_before_anything_is_touched(inline_cli):
    assert "setup-inline" in one_line_error(inline_cli("status", ZONE, check=False))
    assert "setup-inline" in one_line_error(inline_cli("rollover", "zsk", ZONE, check=False))
    error = one_line_error(inline_cli("rollover", "zsk", ZONE, "--at", "yesterday", check=False))
    assert "invalid time 'yesterday'" in error
    error = one_line_error(inline_cli("rollover", "zsk", ZONE, "--test-timings",
                                      "--propagation-delay", "1h", check=False))
    assert "exclude each other" in error
    error = one_line_error(inline_cli("rollover", "zsk", "bad..zone", check=False))
    assert "domain name" in error
    assert not (inline_cli.state_dir / "instances").exists()


def test_bad_timings_are_refused_with_the_rule_named_and_a_second_rollover_waits(inline_cli):
    setup(inline_cli)
    files, pid = _key_files(inline_cli), named_pid(inline_cli)
    error = one_line_error(inline_cli("rollover", "zsk", ZONE, "--at", "now-1h", check=False))
    assert "RFC 7583 pre-publication rule" in error and "in the past" in error
    error = one_line_error(inline_cli("rollover", "zsk", ZONE, "--activate", "now+10", check=False))
    assert "pre-publication rule Activate >= Publish + DNSKEY TTL (300 s)" in error
    error = one_line_error(inline_cli("rollover", "zsk", ZONE, "--delete", "now+1d", check=False))
    assert "retire rule Delete >= Inactive" in error and "re-sign interval (1728000 s)" in error
    assert _key_files(inline_cli) == files and named_pid(inline_cli) == pid
    rolled = inline_cli.json("rollover", "zsk", ZONE)
    assert rolled["timings"]["resign_interval"] == 20 * 86400
    assert rolled["schedule"]["activate"] - rolled["schedule"]["publish"] == 300 + 300
    error = one_line_error(inline_cli("rollover", "zsk", ZONE, check=False))
    assert "rollover is under way" in error and str(rolled["successor"]) in error
    assert len(_key_files(inline_cli)) == len(files) + 2
    validated(ZONE, "SOA", inline_cli.ports[0])


def test_rollover_refused_when_named_is_stopped_or_the_instance_uses_a_policy(inline_cli):
    setup(inline_cli)
    inline_cli("named", "stop", ZONE)
    files = _key_files(inline_cli)
    error = one_line_error(inline_cli("rollover", "zsk", ZONE, check=False))
    assert "not running" in error and "named start" in error
    assert _key_files(inline_cli) == files
    setup(inline_cli, "--test-timings")
    error = one_line_error(inline_cli("rollover", "zsk", ZONE, "--test-timings", check=False))
    assert "--test-timings (a dnssec-policy" in error
    assert _key_files(inline_cli) - files <= {p for p in _key_files(inline_cli) if p.endswith(".state")}


def test_status_shows_a_lost_token_object_and_a_token_object_without_key_file(inline_cli, tmp_path):
    report = json.loads(setup(inline_cli, "--json").stdout)
    key_dir = Path(report["instance_dir"]) / "keys"
    # A key made by hand into the instance (never published), then its token object destroyed.
    spare = inline_cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "ECDSAP256SHA256",
                            "--key-dir", str(key_dir), "--publish", "none", "--activate", "none")
    inline_cli("token", "delete", "--label", "bindpkcs11", "--object", spare["object_label"],
               "--type", "private", "--force", "--force")
    # A key whose files went elsewhere: its token object remains, named cannot use it.
    elsewhere = inline_cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "ECDSAP256SHA256",
                                "--key-dir", str(tmp_path / "elsewhere"))
    result = inline_cli("status", ZONE, "--json", check=False)
    status = json.loads(result.stdout)
    rows = {k["tag"]: k for k in status["keys"]}
    assert rows[spare["tag"]]["token_object"] == "missing"
    assert rows[spare["tag"]]["state"] == "generated"
    assert rows[elsewhere["tag"]]["state"] == "no key file"
    assert rows[elsewhere["tag"]]["role"] == "zsk"
    live = {k["tag"] for k in report["keys"]}
    assert all(rows[t]["token_object"] == "present" and rows[t]["state"] == "active" for t in live)
    assert status["ds"] == [report["ds"]]
    text = inline_cli("status", ZONE).stdout
    assert f"ZSK   ECDSAP256SHA256  {spare['tag']}" in text and "missing" in text
    shutil.rmtree(tmp_path / "elsewhere")


def test_ksk_steps_out_of_order_and_an_unreachable_parent_are_one_line(inline_cli):
    report = json.loads(setup(inline_cli, "--json").stdout)
    error = one_line_error(inline_cli("rollover", "ksk", ZONE, "--ds-published", check=False))
    assert "no KSK rollover is waiting for its DS" in error
    error = one_line_error(inline_cli("rollover", "ksk", ZONE, "--parent-server", "127.0.0.1:53",
                                      check=False))
    assert "add --ds-published" in error
    step1 = inline_cli.json("rollover", "ksk", ZONE, "--test-timings")
    error = one_line_error(inline_cli("rollover", "ksk", ZONE, "--test-timings", check=False))
    assert "KSK rollover is under way" in error and "--ds-published" in error
    files = _key_files(inline_cli)
    poll(lambda: inline_cli.json("status", ZONE)["ds"] == [step1["new_ds"]], 60,
         "the CDS switch")
    private = next((inline_cli.state_dir / "instances" / ZONE / "keys").glob(
        f"*+{step1['predecessor']:05d}.private"))
    before = private.read_text()
    error = one_line_error(inline_cli("rollover", "ksk", ZONE, "--test-timings", "--ds-published",
                                      "--parent-server", f"127.0.0.1:{free_port()}",
                                      check=False))
    assert "cannot ask the parent" in error and "nothing was changed" in error
    assert private.read_text() == before and _key_files(inline_cli) == files
    assert report["ds"] != step1["new_ds"]


def test_a_failed_loadkeys_undoes_the_rollover_and_the_next_one_works(inline_cli):
    """Fault: named's control channel cannot be reached when the keys are handed over. The new
    key's files go to abandoned-keys/, the old ZSK's timing is restored byte for byte, the zone
    is served as before; once rndc works again a rollover succeeds."""
    report = json.loads(setup(inline_cli, "--json").stdout)
    instance = Path(report["instance_dir"])
    old = next(k for k in report["keys"] if k["role"] == "zsk")
    old_private = Path(old["key_file"]).with_suffix(".private")
    before, files = old_private.read_text(), _key_files(inline_cli)
    rndc_conf = instance / "rndc.conf"
    good = rndc_conf.read_text()
    rndc_conf.write_text(re.sub(r"default-port \d+;", f"default-port {free_port()};", good))
    error = one_line_error(inline_cli("rollover", "zsk", ZONE, "--test-timings", check=False))
    assert "rndc loadkeys" in error
    assert old_private.read_text() == before and _key_files(inline_cli) == files
    assert len(list((instance / "abandoned-keys").glob("*.private"))) == 1
    assert validated(ZONE, "SOA", inline_cli.ports[0])[1] == {old["tag"]}
    rndc_conf.write_text(good)
    rolled = inline_cli.json("rollover", "zsk", ZONE, "--test-timings")
    assert rolled["predecessor"] == old["tag"] and rolled["published_now"]
