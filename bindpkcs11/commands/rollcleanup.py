"""`bindpkcs11 rollover cleanup DOMAIN [--confirm TAG ...]` (see rollcleanup.py).

Without --confirm the operator types "destroy TAG" for each key offered; with no terminal to ask
on, the command refuses rather than guess. Nothing is destroyed unless every key is confirmed.
"""

from __future__ import annotations

import sys

from bindpkcs11 import rollcleanup
from bindpkcs11.commands.common import state
from bindpkcs11.dnssec.dnskey import parse_zone_name
from bindpkcs11.errors import UsageError
from bindpkcs11.monitor import iso_time
from bindpkcs11.output import print_json, printable


def run(args) -> int:
    zone = parse_zone_name(args.domain)
    tags, how = list(args.confirm), "--confirm"
    if not tags:
        offered = rollcleanup.candidates(state(args), zone)
        if not offered:
            if args.json:
                print_json(rollcleanup.CleanupResult(zone.to_text(), [], [], True, ""))
            else:
                print(f"nothing to clean up in {zone.to_text()}: no key past Delete, gone from "
                      "the served zone, with its token object left")
            return 0
        if not sys.stdin.isatty():
            listed = ", ".join(f"{key.role.upper()} {key.tag}" for key in offered)
            raise UsageError(f"no terminal to confirm on (offered: {listed}): add --confirm TAG "
                             "for each key to destroy; nothing destroyed")
        tags, how = [_ask(key) for key in offered], "typed"
    result = rollcleanup.cleanup(state(args), zone, tags, how)
    if args.json:
        print_json(result)
        return 0
    for key in result.destroyed:
        print(f"destroyed the token object {key.uri} of {key.role.upper()} {key.tag}; its key "
              f"files moved to {', '.join(key.moved_to)}")
    print(f"{result.zone} still validates as served (DNSKEY {result.served_dnskeys}); audit log "
          f"{result.audit_log}")
    return 0


def _ask(key: rollcleanup.Candidate) -> int:
    """The operator types "destroy TAG" for this key, or nothing is destroyed at all."""
    expected = f"destroy {key.tag}"
    print(f"{key.role.upper()} {key.tag} left the zone at {iso_time(key.delete)} and named no "
          f"longer serves it; its token object {key.uri} can be destroyed (it cannot be "
          f"recovered). Type '{expected}' to destroy it: ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip()
    if answer != expected:
        raise rollcleanup.NotConfirmed(f"typed '{printable(answer)}', not '{expected}': nothing "
                                       "destroyed")
    return key.tag
