"""The signed DNSKEY RRsets in BIND 9.20's Signed Key Response (SKR) text format.

A plain, unencrypted export for operators who run BIND 9.20's own offline-KSK mode
(`rndc skr -import`): per bundle a `;; SignedKeyResponse 1.0 <inception>` header, the DNSKEY RRset
and its RRSIG(s), and a closing `;; SignedKeyResponse 1.0 generated at ...` line, as dnssec-ksr
writes them. It holds public data only.
"""

from __future__ import annotations

from typing import Sequence

import dns.rrset

from bindpkcs11 import __version__
from bindpkcs11.timespec import to_bind_timestamp, to_ctime


def skr_text(bundles: Sequence[tuple[int, dns.rrset.RRset, dns.rrset.RRset]], now: int) -> str:
    """`bundles` holds (period start, DNSKEY RRset, RRSIG RRset) in period order."""
    blocks = []
    for start, rrset, rrsigs in bundles:
        lines = [f";; SignedKeyResponse 1.0 {to_bind_timestamp(start)} ({to_ctime(start)})"]
        lines += rrset.to_text().splitlines() + rrsigs.to_text().splitlines()
        blocks.append("\n".join(lines) + "\n")
    footer = f";; SignedKeyResponse 1.0 generated at {to_ctime(now)} by bindpkcs11 {__version__}\n"
    return "\n".join(blocks) + footer
