"""setup-inline refuses a zone whose SOA EXPIRE would let a secondary serve expired signatures:
one line naming the numbers and what to change; the zone file untouched, nothing created."""

from __future__ import annotations

from conftest import one_line_error
from test_inline import inline_cli, setup  # noqa: F401 - fixture


def test_expire_beyond_the_resign_margin_is_refused_and_the_zone_file_kept(inline_cli, tmp_path):
    zone_file = tmp_path / "long-expire.zone"
    text = ("$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 2419200 300\n@ IN NS ns1\n"
            "ns1 IN A 127.0.0.1\n")
    zone_file.write_text(text)
    error = one_line_error(setup(inline_cli, "--zone-file", str(zone_file), check=False))
    assert "SOA EXPIRE 2419200 s (28 days) + max TTL 300 s" in error
    assert "1296000 s (15 days)" in error and "sig-validity-interval 35 15" in error
    assert "lower the SOA EXPIRE in the zone file to at most 1295699 s" in error
    assert zone_file.read_text() == text
    assert not (inline_cli.state_dir / "instances").exists()
    assert not (inline_cli.state_dir / "softhsm").exists() or not any(
        (inline_cli.state_dir / "softhsm").rglob("*.object"))


def test_a_large_ttl_counts_too_and_the_limit_itself_passes(inline_cli, tmp_path):
    zone_file = tmp_path / "ttl.zone"
    zone_file.write_text("$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 1209600 300\n"
                         "@ IN NS ns1\nns1 86400 IN A 127.0.0.1\n")
    error = one_line_error(setup(inline_cli, "--zone-file", str(zone_file), check=False))
    assert "+ max TTL 86400 s" in error
    zone_file.write_text("$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 1209600 300\n"
                         "@ IN NS ns1\nns1 86399 IN A 127.0.0.1\n")
    setup(inline_cli, "--zone-file", str(zone_file))
