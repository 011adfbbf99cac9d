"""Bad input for `rollover zsk|ksk` on an instance served by the patched BIND 9.20 (issue 11): its
dnssec-policy key manager times rollovers (the successor is made on the token first,
tokensuccessor.py), so options that would set timings bindpkcs11 no longer computes, a key that
is not the zone's, a time in the past, a step 2 with no step 1 and `rollover cleanup` are each
refused in one line before anything is made: no key file, no token object, the same named signing with the same
keys. `status` reports the keys as DNS shows them.

Real SoftHSM token, real patched named 9.20, answers validated with dnspython; nothing is mocked.
"""

from __future__ import annotations

import json

from conftest import one_line_error
from test_inline import ZONE, inline_cli, named_pid, setup, validated  # noqa: F401 - fixture


def _key_files(cli) -> dict[str, str]:
    keys = cli.state_dir / "instances" / ZONE / "keys"
    return {p.name: p.read_text() for p in keys.iterdir() if p.is_file()}


def _token_objects(cli) -> set[str]:
    shown = cli.json("token", "show", "--label", "bindpkcs11")
    return {json.dumps(o, sort_keys=True) for o in shown["objects"]}


def test_bad_rollover_input_on_patched_920_is_one_line_and_changes_nothing(inline_cli,
                                                                        patched_bind_920):
    report = json.loads(setup(inline_cli, "--bind-version", "9.20", "--json").stdout)
    port = inline_cli.ports[0]
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    assert validated(ZONE, "SOA", port)[1] == {tags["zsk"]}
    files, objects, pid = _key_files(inline_cli), _token_objects(inline_cli), named_pid(inline_cli)

    cases = [
        # test timings are the instance's policy (setup-inline --test-timings), not a roll's
        (("zsk", "--test-timings"), "setup-inline --bind-version 9.20 --test-timings"),
        (("ksk", "--test-timings"), "setup-inline --bind-version 9.20 --test-timings"),
        # timings named's policy owns
        (("zsk", "--delete", "now+1d"), "--delete does not apply to a stock-route or patched-9.20"),
        (("zsk", "--propagation-delay", "1h"), "--propagation-delay does not apply"),
        (("ksk", "--parent-ds-ttl", "1h"), "--parent-ds-ttl does not apply"),
        # a key that is not a ZSK of the zone; a time in the past
        (("zsk", "--key", str(tags["ksk"])),
         f"key {tags['ksk']} is not a ZSK of example.test. (its ZSKs: {tags['zsk']})"),
        (("zsk", "--at", "20200101000000"), "--at is in the past"),
        # step 2 of a KSK roll that never started
        (("ksk", "--ds-published"), "no KSK rollover is waiting for its DS"),
    ]
    for args, expected in cases:
        error = one_line_error(inline_cli("rollover", args[0], ZONE, *args[1:], check=False))
        assert expected in error, (args, error)
    # rollover cleanup: named 9.20 keeps removed keys until purge-keys and stops rolling keys
    # if their files go before (rollcleanup.py), so it is refused and never offered
    for extra in ((), ("--confirm", str(tags["zsk"]))):
        error = one_line_error(inline_cli("rollover", "cleanup", ZONE, *extra, check=False))
        assert "is signed under a dnssec-policy" in error and "nothing destroyed" in error, error
    assert inline_cli.json("status", ZONE)["cleanup"] == []

    # Nothing changed: no key file, no token object, the same named signing with the same keys.
    assert _key_files(inline_cli) == files
    assert _token_objects(inline_cli) == objects
    assert named_pid(inline_cli) == pid
    assert validated(ZONE, "SOA", port)[1] == {tags["zsk"]}
    served, dnskey_tags = validated(ZONE, "DNSKEY", port)
    assert tags["ksk"] in dnskey_tags and len(served) == 2
    assert "dnssec -rollover" not in (inline_cli.state_dir / "instances" / ZONE /
                                      "named.log").read_text()

    # status reads the 9.20 instance's key files and named's .state files: both keys active,
    # on the token, as DNS shows.
    status = inline_cli.json("status", ZONE)
    by_tag = {k["tag"]: k for k in status["keys"]}
    assert set(by_tag) == {tags["ksk"], tags["zsk"]}
    assert {k["role"] for k in by_tag.values()} == {"ksk", "zsk"}
    assert all(k["state"] == "active" and k["token_object"] == "present" for k in by_tag.values())
    assert all(k["named"]["goal"] == "omnipresent" for k in by_tag.values())
    assert status["cleanup"] == []
