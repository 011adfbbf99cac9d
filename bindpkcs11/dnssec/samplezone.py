"""A deterministic sample zone: what setup-inline serves when no zone file is given, and the zone
tests and benchmarks sign (N hosts, M delegations with glue, like a small real zone)."""

from __future__ import annotations

import dns.name


def sample_zone_text(zone: dns.name.Name, hosts: int = 3, delegations: int = 0, serial: int = 1,
                     ttl: int = 300, ns_address: str = "127.0.0.1") -> str:
    """Zone file text: SOA, one NS whose glue is `ns_address` (where the zone is really served),
    `hosts` A records, `delegations` NS+glue child zones.

    Every address is on loopback: a resolver or DNSViz that follows the NS records of a demo or
    test zone must never send traffic off this machine.
    """
    origin = zone.to_text()
    glue = "AAAA" if ":" in ns_address else "A"
    lines = [
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ IN SOA ns1 hostmaster {serial} 3600 600 1209600 {ttl}",
        "@ IN NS ns1",
        f"ns1 IN {glue} {ns_address}",
        "www IN A 127.0.0.80",
        "www IN AAAA ::1",
        "@ IN MX 10 mail",
        "mail IN A 127.0.0.25",
        '@ IN TXT "served by BIND with keys in a PKCS#11 token (bindpkcs11)"',
    ]
    for index in range(hosts):
        lines.append(f"host{index} IN A 127.1.{(index >> 8) & 0xFF}.{index & 0xFF}")
    for index in range(delegations):
        lines.append(f"child{index} IN NS ns.child{index}")
        lines.append(f"ns.child{index} IN A 127.2.{(index >> 8) & 0xFF}.{index & 0xFF}")
    return "\n".join(lines) + "\n"
