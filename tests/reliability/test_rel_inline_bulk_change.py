"""An edit that changes every record of the zone is served signed after `named reload`.

named keeps each zone's journal under max-journal-size and, in 9.18.49, compacts right after
writing: a reload whose diff is larger than that limit (every address of a 300-host zone changed)
was dropped from the unsigned zone's journal, inline signing logged "receive_secure_serial:
unchanged", and the old data stayed served, signed, for good while `named reload` timed out.
setup-inline now renders a journal limit far above any one diff of the zone.
"""

from __future__ import annotations

from test_inline import ZONE, inline_cli, setup, validated  # noqa: F401 - inline_cli is a fixture

HOSTS = 300


def zone_text(serial: int, second_octet: int) -> str:
    lines = ["$TTL 300", f"@ IN SOA ns1 hostmaster {serial} 3600 600 1209600 300", "@ IN NS ns1",
             "ns1 IN A 127.0.0.1"]
    lines += [f"h{i} IN A 127.{second_octet}.{i >> 8}.{i & 0xFF}" for i in range(HOSTS)]
    return "\n".join(lines) + "\n"


def test_every_record_changed_is_served_signed_after_reload(inline_cli, tmp_path):
    zone_file = tmp_path / "bulk.zone"
    zone_file.write_text(zone_text(10, 0))
    setup(inline_cli, "--zone-file", str(zone_file))
    port = inline_cli.ports[0]
    assert validated(ZONE, "A", port, f"h7.{ZONE}")[0][0].address == "127.0.0.7"
    zone_file.write_text(zone_text(11, 64))
    result = inline_cli("named", "reload", ZONE, "--timeout", "60")
    assert "loaded and signed" in result.stdout
    for host in (0, 7, 150, HOSTS - 1):
        rrset, _ = validated(ZONE, "A", port, f"h{host}.{ZONE}")
        assert rrset[0].address == f"127.64.{host >> 8}.{host & 0xFF}"
    assert validated(ZONE, "SOA", port)[0][0].serial >= 11
