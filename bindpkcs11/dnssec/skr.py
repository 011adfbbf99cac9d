"""The signed DNSKEY RRsets in BIND 9.20's Signed Key Response (SKR) text format.

A plain, unencrypted export for operators who run BIND 9.20's own offline-KSK mode
(`rndc skr -import`): per bundle a `;; SignedKeyResponse 1.0 <inception>` header, the DNSKEY RRset
and its RRSIG(s), then, in a period that announces a KSK to the parent (a KSK rollover's CDS
switch), the CDNSKEY and CDS RRsets with theirs, and a closing `;; SignedKeyResponse 1.0
generated at ...` line: the order dnssec-ksr writes them in (bin/dnssec/dnssec-ksr.c), and the
record types named's SKR parser accepts (lib/dns/skr.c). named in offline-KSK mode cannot sign
CDS/CDNSKEY itself, so without them in the SKR it would announce nothing. Public data only.
"""

from __future__ import annotations

from typing import Sequence

import dns.rdatatype
import dns.rrset

from bindpkcs11 import __version__
from bindpkcs11.timespec import to_bind_timestamp, to_ctime


SKR_ORDER = (dns.rdatatype.DNSKEY, dns.rdatatype.CDNSKEY, dns.rdatatype.CDS)

SignedRRsets = Sequence[tuple[dns.rrset.RRset, dns.rrset.RRset]]  # (RRset, its RRSIG RRset)


def skr_text(bundles: Sequence[tuple[int, SignedRRsets]], now: int) -> str:
    """`bundles` holds (period start, the period's signed DNSKEY RRset and any CDS and CDNSKEY
    RRsets) in period order; each block lists them in dnssec-ksr's order."""
    blocks = []
    for start, signed in bundles:
        lines = [f";; SignedKeyResponse 1.0 {to_bind_timestamp(start)} ({to_ctime(start)})"]
        for rrset, rrsigs in sorted(signed, key=lambda pair: SKR_ORDER.index(pair[0].rdtype)):
            lines += rrset.to_text().splitlines() + rrsigs.to_text().splitlines()
        blocks.append("\n".join(lines) + "\n")
    footer = f";; SignedKeyResponse 1.0 generated at {to_ctime(now)} by bindpkcs11 {__version__}\n"
    return "\n".join(blocks) + footer
