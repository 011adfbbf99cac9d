"""A deterministic sample zone: what setup-inline serves when no zone file is given, and the zone
tests and benchmarks sign (N hosts, M delegations with glue, like a small real zone)."""

from __future__ import annotations

import dns.name


def sample_zone_text(zone: dns.name.Name, hosts: int = 3, delegations: int = 0, serial: int = 1,
                     ttl: int = 300) -> str:
    """Zone file text: SOA, two NS with glue, `hosts` A records, `delegations` NS+glue child zones.

    Addresses come from the documentation ranges (RFC 5737, RFC 3849) so nothing real is named.
    """
    origin = zone.to_text()
    lines = [
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ IN SOA ns1 hostmaster {serial} 3600 600 1209600 {ttl}",
        "@ IN NS ns1",
        "@ IN NS ns2",
        "ns1 IN A 192.0.2.1",
        "ns2 IN A 192.0.2.2",
        "www IN A 192.0.2.80",
        "www IN AAAA 2001:db8::80",
        "@ IN MX 10 mail",
        "mail IN A 192.0.2.25",
        '@ IN TXT "served by BIND with keys in a PKCS#11 token (bindpkcs11)"',
    ]
    for index in range(hosts):
        lines.append(f"host{index} IN A 198.51.{(index >> 8) & 0xFF}.{index & 0xFF}")
    for index in range(delegations):
        lines.append(f"child{index} IN NS ns.child{index}")
        lines.append(f"ns.child{index} IN A 203.0.{(index >> 8) & 0xFF}.{index & 0xFF}")
    return "\n".join(lines) + "\n"
