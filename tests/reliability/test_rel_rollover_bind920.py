"""`rollover zsk|ksk` on an instance served by the patched BIND 9.20 (issue 11): refused in one
line before anything changes, because 9.20 has no auto-dnssec and its dnssec-policy key manager
owns the keys' timing; `status` still reports the keys as DNS shows them.

Why refused (measured with this same setup before the refusal existed): after `rollover zsk
--test-timings` by key files, named 9.20 rewrote the old ZSK's Delete from the schedule's +35 s
to +20 days (its own signature-validity rule), went on signing the SOA with both ZSKs, and served
the policy's DNSKEY TTL (3600 s) where the schedule assumed 15 s. Real SoftHSM token, real
patched named 9.20, answers validated with dnspython; nothing is mocked.
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


def test_rollovers_on_patched_920_are_refused_and_status_matches_dns(inline_cli, patched_bind_920):
    report = json.loads(setup(inline_cli, "--bind-version", "9.20", "--json").stdout)
    port = inline_cli.ports[0]
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    assert validated(ZONE, "SOA", port)[1] == {tags["zsk"]}
    files, objects, pid = _key_files(inline_cli), _token_objects(inline_cli), named_pid(inline_cli)

    for command in (("zsk", "--test-timings"), ("zsk",), ("ksk", "--test-timings")):
        error = one_line_error(inline_cli("rollover", *command, ZONE, check=False))
        assert "runs the patched BIND 9.20" in error and "key manager owns the keys' timing" in error
        assert "setup-inline --bind-version 9.18" in error

    # Nothing changed: no key file, no token object, the same named signing with the same keys.
    assert _key_files(inline_cli) == files
    assert _token_objects(inline_cli) == objects
    assert named_pid(inline_cli) == pid
    assert validated(ZONE, "SOA", port)[1] == {tags["zsk"]}
    served, dnskey_tags = validated(ZONE, "DNSKEY", port)
    assert tags["ksk"] in dnskey_tags and len(served) == 2

    # status reads the 9.20 instance's key files: both keys active, on the token, as DNS shows.
    status = inline_cli.json("status", ZONE)
    by_tag = {k["tag"]: k for k in status["keys"]}
    assert set(by_tag) == {tags["ksk"], tags["zsk"]}
    assert {k["role"] for k in by_tag.values()} == {"ksk", "zsk"}
    assert all(k["state"] == "active" and k["token_object"] == "present" for k in by_tag.values())
    assert status["cleanup"] == []
