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

# BIND 9.20's defaults that bound how long an SKR bundle's signatures must outlive its period.
# named re-signs an RRset whose RRSIG expires within signatures-refresh; in offline-KSK mode it
# cannot re-sign the DNSKEY RRset and loops (measured on 9.20.23: 106,638 log lines and a 47 MB
# journal in a minute). And it takes the next bundle only at its next key event (zone.c
# zone_rekey sets the next bundle's inception, then keymgr.c dns_keymgr_offline resets it): at
# the latest dnssec-loadkeys-interval later, or up to max-zone-ttl + propagation delay +
# retire-safety (25 h 5 min) after it adopted a new ZSK.
BIND_SIGNATURES_REFRESH = 5 * 86400
BIND_LATE_BUNDLE = 86400 + 300 + 3600

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


def overlap_warning(overlap: int) -> str | None:
    """What a stock named 9.20 will do wrong with bundles that outlive their period by only
    `overlap` seconds (its default policy), or None when the overlap is long enough."""
    needed = BIND_SIGNATURES_REFRESH + BIND_LATE_BUNDLE
    if overlap >= needed:
        return None
    return (f"the SKR's signatures outlive their period by {overlap} s, less than BIND 9.20's "
            f"signatures-refresh (5 days) + the time named may take to move to the next bundle "
            f"(25 h 5 min): named would re-sign the DNSKEY RRset in a loop near a period's end; "
            f"give --overlap 6d2h or more, or lower signatures-refresh in the dnssec-policy and "
            f"run 'rndc loadkeys ZONE' after each period start (docs/offline-ksk.md)")
