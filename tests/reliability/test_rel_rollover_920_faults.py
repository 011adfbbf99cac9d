"""Faults for `rollover zsk|ksk` on a patched-9.20 instance, where bindpkcs11 makes the successor
on the token before named's key manager is asked to roll (tokensuccessor.py):
- named not running: one line, nothing created on the token or in the key directory;
- the token missing, or a wrong PIN, when the successor is made: one line, named untouched (same
  process, never asked to roll) and still serving the zone signed by the same keys;
- a second `rollover zsk` while one is under way (named retiring the old ZSK, or a successor
  waiting for a roll scheduled with --at): refused in one line, nothing made.

Real SoftHSM token (moved away and back for the missing-token case, a wrong PIN written to the
instance's PIN file for the other), real patched named 9.20 on loopback high ports.
"""

from __future__ import annotations

import json

from conftest import one_line_error
from test_inline import ZONE, inline_cli, named_pid, setup, validated  # noqa: F401 - fixture
from test_rel_health_faults import remove_token_dir


def _instance(cli, *extra: str) -> dict[str, int]:
    report = json.loads(setup(cli, "--bind-version", "9.20", "--json", *extra).stdout)
    return {key["role"]: key["tag"] for key in report["keys"]}


def _key_files(cli) -> dict[str, str]:
    keys = cli.state_dir / "instances" / ZONE / "keys"
    return {p.name: p.read_text() for p in keys.iterdir() if p.is_file()}


def _private_labels(cli) -> set[str]:
    shown = cli.json("token", "show", "--label", "bindpkcs11")
    return {o["object"]["label"] for o in shown["objects"]
            if o["object"]["object_class"] == "private"}


def _log(cli) -> str:
    return (cli.state_dir / "instances" / ZONE / "named.log").read_text()


def test_rollover_920_with_named_stopped_creates_nothing(inline_cli, patched_bind_920):
    _instance(inline_cli)
    inline_cli("named", "stop", ZONE)
    files, labels = _key_files(inline_cli), _private_labels(inline_cli)
    for role in ("zsk", "ksk"):
        error = one_line_error(inline_cli("rollover", role, ZONE, check=False))
        assert "named for example.test. is not running" in error
        assert "'bindpkcs11 named start example.test.'" in error
    assert _key_files(inline_cli) == files
    assert _private_labels(inline_cli) == labels


def test_rollover_920_token_missing_or_wrong_pin_leaves_named_serving(inline_cli,
                                                                      patched_bind_920):
    tags = _instance(inline_cli)
    port = inline_cli.ports[0]
    files, labels, pid = _key_files(inline_cli), _private_labels(inline_cli), named_pid(inline_cli)
    pin_file = inline_cli.state_dir / "instances" / ZONE / "token.pin"
    pin = pin_file.read_text()

    away = remove_token_dir(inline_cli)
    try:
        for role in ("zsk", "ksk"):
            error = one_line_error(inline_cli("rollover", role, ZONE, check=False))
            assert "token 'bindpkcs11' not found" in error, error
            assert validated(ZONE, "SOA", port)[1] == {tags["zsk"]}
    finally:
        away.rename(away.with_name("tokens"))

    pin_file.write_text("99999999\n")
    try:  # one wrong login only: each counts against the token's retry limit
        error = one_line_error(inline_cli("rollover", "zsk", ZONE, check=False))
        assert "wrong user PIN" in error and "will not be retried" in error, error
        assert pin.strip() not in error and "99999999" not in error
    finally:
        pin_file.write_text(pin)

    # named was never asked to roll, runs on, signs with the same keys; nothing was made.
    assert "dnssec -rollover" not in _log(inline_cli)
    assert named_pid(inline_cli) == pid
    assert validated(ZONE, "SOA", port)[1] == {tags["zsk"]}
    assert tags["ksk"] in validated(ZONE, "DNSKEY", port)[1]
    assert _key_files(inline_cli) == files
    assert _private_labels(inline_cli) == labels


def test_second_rollover_920_while_one_is_under_way_is_refused(inline_cli, patched_bind_920):
    tags = _instance(inline_cli, "--test-timings")
    # A roll scheduled for later: the successor waits in the key directory, unused.
    scheduled = inline_cli.json("rollover", "zsk", ZONE, "--at", "now+1h")
    waiting = scheduled["successor"]
    assert scheduled["predecessor"] == tags["zsk"] and waiting not in tags.values()
    assert scheduled["uri"].split("object=")[1] in _private_labels(inline_cli)
    files, labels = _key_files(inline_cli), _private_labels(inline_cli)
    error = one_line_error(inline_cli("rollover", "zsk", ZONE, check=False))
    assert "a ZSK rollover is under way" in error and f"ZSK {waiting} waits in" in error
    assert _key_files(inline_cli) == files and _private_labels(inline_cli) == labels
    assert validated(ZONE, "SOA", inline_cli.ports[0])[1] == {tags["zsk"]}
