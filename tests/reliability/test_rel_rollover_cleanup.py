"""Refusals of `rollover cleanup` (issue 12): each is one line naming the rule, and nothing is
destroyed or moved.

The full path (a ZSK rolled with --test-timings, then cleaned up) is in tests/test_rollover.py.
Here a cheaper removed key stands in: a ZSK generated on the instance's token into its key
directory with Publish..Delete already in the past, so named never serves it (its Delete has
passed and its object is on the token: exactly what `rollover cleanup` may destroy). The typed
confirmation runs on a real pseudo-terminal (pexpect).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pexpect

from conftest import REPO, one_line_error, run_python
from test_inline import ZONE, inline_cli, setup, validated  # noqa: F401 - inline_cli is a fixture

TOKEN = "bindpkcs11"


def _instance(cli) -> Path:
    return cli.state_dir / "instances" / ZONE


def _key_files(cli) -> set[str]:
    return {p.name for p in (_instance(cli) / "keys").iterdir()}


def _objects(cli) -> set[tuple[str, str]]:
    """(class, label) of every object on the instance's token."""
    shown = cli.json("token", "show", "--label", TOKEN)
    return {(item["object"]["object_class"], item["object"]["label"]) for item in shown["objects"]}


def _removed_zsk(cli) -> int:
    """A ZSK on the instance's token whose whole life (Publish..Delete) is in the past."""
    algorithm = str(json.loads((_instance(cli) / "instance.json").read_text())["algorithm"])
    made = cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", algorithm, "--token", TOKEN,
                    "--key-dir", str(_instance(cli) / "keys"),
                    "--pin-file", str(_instance(cli) / "token.pin"),
                    "--publish", "now-3h", "--activate", "now-3h", "--inactive", "now-2h",
                    "--delete", "now-1h")
    return made["tag"]


def _on_pty(cli, *args: str) -> pexpect.spawn:
    command = ["-m", "bindpkcs11", "--state-dir", str(cli.state_dir), *args]
    return pexpect.spawn(sys.executable, command, env=cli.env, cwd=str(REPO), encoding="utf-8",
                         timeout=60)


def _finished(child: pexpect.spawn) -> tuple[int, str]:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before


def test_refusals_name_the_rule_and_destroy_nothing(inline_cli):
    report = json.loads(setup(inline_cli, "--json").stdout)
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    old = _removed_zsk(inline_cli)
    offers = inline_cli.json("status", ZONE)["cleanup"]
    assert len(offers) == 1 and offers[0].startswith(f"ZSK {old} ")
    assert offers[0].endswith(f": bindpkcs11 rollover cleanup {ZONE}")
    files, objects = _key_files(inline_cli), _objects(inline_cli)
    assert ("private", f"{ZONE}-zsk-{old}") in objects

    def nothing_changed():
        assert _key_files(inline_cli) == files and _objects(inline_cli) == objects
        assert not (_instance(inline_cli) / "retired-keys").exists()

    # Unknown tag: no key file of the zone has it.
    unknown = next(t for t in range(1, 65536) if t not in (old, *tags.values()))
    error = one_line_error(inline_cli("rollover", "cleanup", ZONE, "--confirm", str(unknown),
                                      check=False))
    assert f"no key file of {ZONE}. has tag {unknown}" in error and "nothing destroyed" in error
    # Before Delete: the signing keys, even alongside a key that qualifies.
    for role in ("zsk", "ksk"):
        error = one_line_error(inline_cli("rollover", "cleanup", ZONE, "--confirm", str(old),
                                          "--confirm", str(tags[role]), check=False))
        assert f"{role.upper()} {tags[role]} is active (no Delete time)" in error
        assert "only a key whose Delete has passed is destroyed" in error
    nothing_changed()
    # No terminal and no --confirm: refused, the offer named.
    result = inline_cli("rollover", "cleanup", ZONE, check=False, stdin="destroy %d\n" % old)
    error = one_line_error(result)
    assert "no terminal to confirm on" in error and f"ZSK {old}" in error
    assert "--confirm TAG" in error
    # A wrong typed confirmation on a terminal.
    for typed in (f"destroy {old + 1}", "yes", f"DESTROY {old}"):
        child = _on_pty(inline_cli, "rollover", "cleanup", ZONE)
        child.expect(f"Type 'destroy {old}' to destroy it: ")
        child.sendline(typed)
        status, output = _finished(child)
        assert status == 2 and "Traceback" not in output, output
        assert f"bindpkcs11: error: typed '{typed}', not 'destroy {old}': nothing destroyed" \
            in output
    nothing_changed()
    # Custody: a copy of the key's files in another managed key directory (<state>/keys) with no
    # Inactive/Delete makes the object an active key's private key: never destroyed.
    copy_dir = inline_cli.state_dir / "keys"
    copy_dir.mkdir(mode=0o700, exist_ok=True)
    for name in files:
        if f"+{old:05d}." in name:
            (copy_dir / name).write_bytes((_instance(inline_cli) / "keys" / name).read_bytes())
    copy = next(copy_dir.glob(f"K{ZONE}.+*+{old:05d}.key"))
    run_python("import sys\nfrom pathlib import Path\nfrom bindpkcs11.dnssec import keytiming\n"
               "from bindpkcs11.dnssec.keyfile import read_key_pair\n"
               "keytiming.set_times(read_key_pair(Path(sys.argv[1])), inactive=None, "
               "delete=None)\n", inline_cli.env, str(copy))
    error = one_line_error(inline_cli("rollover", "cleanup", ZONE, "--confirm", str(old),
                                      check=False))
    assert f"ZSK {old} not destroyed: '{ZONE}-zsk-{old}' is the private key of active key" in error
    assert "rule: never an active key's private key" in error and "--force" not in error
    nothing_changed()
    validated(ZONE, "SOA", inline_cli.ports[0])
    # named stopped: what it serves cannot be checked, so nothing is destroyed.
    inline_cli("named", "stop", ZONE)
    error = one_line_error(inline_cli("rollover", "cleanup", ZONE, "--confirm", str(old),
                                      check=False))
    assert "cannot tell whether named still serves the keys" in error and "named start" in error
    nothing_changed()


def test_a_key_named_still_serves_is_refused_and_a_typed_destroy_retires_the_other(inline_cli):
    report = json.loads(setup(inline_cli, "--json").stdout)
    zsk = next(k for k in report["keys"] if k["role"] == "zsk")
    old = _removed_zsk(inline_cli)
    # The signing ZSK's files now say Delete has passed, but named has not been told: it still
    # serves the key, and what named serves decides.
    run_python("import sys\nfrom pathlib import Path\nfrom bindpkcs11.dnssec import keytiming\n"
               "from bindpkcs11.dnssec.keyfile import read_key_pair\n"
               "import time\nnow = int(time.time())\n"
               "keytiming.set_times(read_key_pair(Path(sys.argv[1])), inactive=now - 7200, "
               "delete=now - 3600)\n", inline_cli.env, zsk["key_file"])
    rows = {k["tag"]: k for k in inline_cli.json("status", ZONE)["keys"]}
    assert rows[zsk["tag"]]["state"] == "removed"
    files, objects = _key_files(inline_cli), _objects(inline_cli)
    error = one_line_error(inline_cli("rollover", "cleanup", ZONE, "--confirm", str(zsk["tag"]),
                                      check=False))
    assert f"ZSK {zsk['tag']} is past Delete but named still serves it" in error
    assert f"127.0.0.1#{inline_cli.ports[0]}" in error and "nothing destroyed" in error
    assert _key_files(inline_cli) == files and _objects(inline_cli) == objects
    # The interactive offer skips the served key and asks only for the other one.
    child = _on_pty(inline_cli, "rollover", "cleanup", ZONE)
    child.expect(f"ZSK {old} left the zone at .*Type 'destroy {old}' to destroy it: ")
    child.sendline(f"destroy {old}")
    status, output = _finished(child)
    assert status == 0, output
    assert f"destroyed the token object pkcs11:token={TOKEN};object={ZONE}-zsk-{old}" in output
    assert f"ZSK {zsk['tag']}" not in output
    objects_after = _objects(inline_cli)
    assert {label for _, label in objects - objects_after} == {f"{ZONE}-zsk-{old}"}
    assert not objects_after - objects and ("private", f"{ZONE}-zsk-{zsk['tag']}") in objects_after
    moved = {name for name in files - _key_files(inline_cli)}
    assert len(moved) == 2 and all(f"+{old:05d}." in name for name in moved)
    retired = _instance(inline_cli) / "retired-keys"
    assert {p.name for p in retired.iterdir()} == moved | {"cleanup.log"}
    log = (retired / "cleanup.log").read_text()
    assert f"ZSK {old} " in log and "(typed)" in log and "DESTROYED private key" in log
    assert validated(ZONE, "SOA", inline_cli.ports[0])[1] == {zsk["tag"]}


def test_without_an_instance_or_with_a_bad_tag_it_is_one_line(cli):
    error = one_line_error(cli("rollover", "cleanup", ZONE, "--confirm", "1", check=False))
    assert "setup-inline" in error
    error = one_line_error(cli("rollover", "cleanup", ZONE, "--confirm", "65536", check=False))
    assert "a key tag is a number 0-65535, not '65536'" in error
    assert not (cli.state_dir / "instances").exists()
