"""Issue 8 bad-input bullet: times and TTLs BIND cannot read are refused before any key is made.

BIND 9.18 keeps key timing as 32-bit unsigned seconds (dst_parse.c: dns_time32_fromtext) and
writes it back relative to the current time, and treats TTLs above 2^31-1 as 0 (RFC 2181).
keygen used to write `--ttl 99999999999`, `--activate 9999999999+9999999y` or `--publish=-99999y`
into key files that BIND then refused or misread.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from bindpkcs11.timespec import KEY_TIME_MAX, KEY_TIME_WINDOW, TTL_MAX, to_bind_timestamp
from conftest import TOKEN, one_line_error

BAD = [
    ["--ttl", "99999999999"],
    ["--ttl", "2147483648"],
    ["--activate", "9999999999+9999999y"],
    ["--publish=-99999y"],
    ["--activate", "9999999999"],
    ["--delete", "19691231"],
    ["--inactive", "now+70y"],
]


@pytest.mark.parametrize("software", [False, True], ids=["token", "software"])
def test_times_and_ttls_bind_cannot_read_are_refused_and_nothing_is_created(token_cli, software):
    extra = ["--software"] if software else []
    for bad in BAD:
        result = token_cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13", *extra,
                           *bad, check=False)
        error = one_line_error(result)
        assert result.returncode == 2, result.stderr
        assert bad[0].split("=")[0] in error, error
        assert ("TTL" in error) if bad[0] == "--ttl" else ("between" in error), error
    assert not token_cli.key_dir.exists() or not list(token_cli.key_dir.iterdir())
    assert token_cli.json("token", "show", "--label", TOKEN)["objects"] == []


def test_the_limits_themselves_are_written_and_bind_reads_them_back(token_cli):
    """The largest TTL and the latest key time accepted round-trip through dnssec-settime.

    A software key, since stock dnssec-settime cannot load engine keys; the checks are the same.
    """
    latest = min(KEY_TIME_MAX, int(time.time()) + KEY_TIME_WINDOW) - 3600
    key = token_cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", "13",
                         "--software", "--ttl", str(TTL_MAX), "--publish", "19700101000000",
                         "--delete", to_bind_timestamp(latest))
    key_file = token_cli.key_dir / key["key_file"].split("/")[-1]
    # BIND parses the files, then writes them back itself (-P forces a rewrite): the times
    # must survive its 32-bit, relative-to-now arithmetic unchanged.
    subprocess.run(["dnssec-settime", "-P", "19700101000001", str(key_file)], check=True,
                   capture_output=True, text=True)
    private = key_file.with_suffix(".private").read_text()
    assert f"Delete: {to_bind_timestamp(latest)}" in private
    assert "Publish: 19700101000001" in private
    assert f"example.test. {TTL_MAX} IN DNSKEY" in key_file.read_text()
