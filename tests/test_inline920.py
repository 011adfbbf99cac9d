"""setup-inline --bind-version 9.20 end to end: the patched named 9.20 signs inline with token keys
through the shim (a dnssec-policy adopts them: 9.20 has no auto-dnssec), with no pkcs11-provider
and no LD_PRELOAD. Token loss and bad input: reliability/test_rel_bind920_inline.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dns.dnssec
import dns.exception

from test_inline import ZONE, inline_cli, named_pid, poll, setup, validated  # noqa: F401 (fixture)

UNSIGNED = "$TTL 300\n@ IN SOA ns1 hostmaster 10 3600 600 1209600 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"


def add_record(zone_file: Path, name: str) -> None:
    with zone_file.open("a") as handle:
        handle.write(f"{name} IN A 127.0.0.9\n")


def serve_920(cli, tmp_path: Path, *extra: str):
    zone_file = tmp_path / f"{ZONE}.zone"
    zone_file.write_text(UNSIGNED)
    result = setup(cli, "--zone-file", str(zone_file), "--bind-version", "9.20", "--json", *extra)
    return zone_file, json.loads(result.stdout)


def test_setup_inline_on_patched_920_serves_the_zone_signed_by_the_token_keys(inline_cli,
                                                                               patched_bind_920,
                                                                               tmp_path):
    zone_file, report = serve_920(inline_cli, tmp_path)
    port = inline_cli.ports[0]
    tags = {key["role"]: key["tag"] for key in report["keys"]}
    _, soa_tags = validated(ZONE, "SOA", port)
    _, dnskey_tags = validated(ZONE, "DNSKEY", port)
    assert soa_tags == {tags["zsk"]} and tags["ksk"] in dnskey_tags
    # It is named 9.20 from the 9.20 prefix, with neither the provider nor a preloaded module.
    pid = named_pid(inline_cli)
    assert Path(os.readlink(f"/proc/{pid}/exe")) == patched_bind_920 / "sbin" / "named"
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith((b"LD_PRELOAD=", b"OPENSSL_CONF=", b"OPENSSL_MODULES="))]
    instance = Path(report["instance_dir"])
    zone_conf = (instance / "zone.conf").read_text()
    assert "\tdnssec-policy \"" in zone_conf and "auto-dnssec maintain;" not in zone_conf
    assert json.loads((instance / "instance.json").read_text())["bind_version"] == "9.20"
    # A second run changes nothing; a new record is served signed by the token ZSK.
    assert "nothing changed" in setup(inline_cli, "--zone-file", str(zone_file),
                                      "--bind-version", "9.20").stdout
    assert named_pid(inline_cli) == pid
    add_record(zone_file, "added")
    inline_cli("named", "reload", ZONE)
    rrset, signed_by = poll(lambda: validated_or_none(port, "added"), what="the added record signed")
    assert rrset[0].address == "127.0.0.9" and signed_by == {tags["zsk"]}
    status = inline_cli.json("named", "status", ZONE)
    assert status["running"] and status["problem"] is None
    assert {k["role"] for k in status["signing"]} == {"ksk", "zsk"}
    # named's key manager made no keys of its own: only the two token keys, no private fields.
    privates = list((instance / "keys").glob("*.private"))
    assert len(privates) == 2
    assert not [p for p in privates if "PrivateKey" in p.read_text() or "PrivateExponent" in p.read_text()]


def test_switching_an_instance_from_918_to_920_restarts_it_on_920(inline_cli, patched_bind_920,
                                                                  tmp_path):
    zone_file = tmp_path / f"{ZONE}.zone"
    zone_file.write_text(UNSIGNED)
    setup(inline_cli, "--zone-file", str(zone_file))
    first = named_pid(inline_cli)
    serve_920(inline_cli, tmp_path)
    pid = named_pid(inline_cli)
    assert pid != first
    assert Path(os.readlink(f"/proc/{pid}/exe")) == patched_bind_920 / "sbin" / "named"
    validated(ZONE, "SOA", inline_cli.ports[0])


def validated_or_none(port: int, name: str):
    try:
        return validated(ZONE, "A", port, f"{name}.{ZONE}")
    except (KeyError, dns.dnssec.ValidationFailure, dns.exception.Timeout):
        return None
