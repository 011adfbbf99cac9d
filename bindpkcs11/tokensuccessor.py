"""Patched BIND 9.20: the successor of a rollover named times is made on the token first.

On a patched-9.20 instance named's dnssec-policy key manager owns the keys' timing (as on the
stock route, stockroll.py), but the patched 9.20 has no pkcs11-provider: left to itself, named
would create the successor as a *software* key in the key directory. BIND 9.20's key manager
first looks for a pregenerated key (lib/dns/keymgr.c keymgr_key_rollover, "Check if there is a
key available in pool because keys may have been pregenerated"): a key of the policy's
algorithm, size and role whose files carry no timing but Created (dst_key_is_unused). So
bindpkcs11 makes exactly such a key, where the predecessor lives (same token, same keygen path
as setup-inline, 9.20-format files naming the key by its label URI), before it asks named to
roll; afterwards it checks that named took that key and not one of its own.
"""

from __future__ import annotations

import time

import dns.name

from bindpkcs11 import inline, instancekeys, rollover
from bindpkcs11.access import TokenAccess
from bindpkcs11.bind import privileges
from bindpkcs11.bind.instance import Instance, InstanceSettings
from bindpkcs11.bind.programs import STOCK
from bindpkcs11.dnssec import keystate
from bindpkcs11.dnssec.keyfile import KeyPairFiles, Timing, key_pairs_in
from bindpkcs11.errors import BindPkcs11Error
from bindpkcs11.state import StateDir
from bindpkcs11.token import keys
from bindpkcs11.token.uri import parse_uri

KEY_FORMAT = "9.20"  # keyfile.KEY_FORMATS: Label only, no Engine line, as dnssec-keyfromlabel


class NamedMadeItsOwnKey(BindPkcs11Error):
    """named did not take the successor bindpkcs11 made on the token; the zone still serves."""


class SuccessorNotOnToken(BindPkcs11Error):
    """The successor's key object is not on the token."""


def named_needs_one(settings: InstanceSettings) -> bool:
    """True for a patched-9.20 instance: its named cannot create a key inside the token."""
    return settings.bind != STOCK


def unused_keys(instance: Instance, zone: dns.name.Name, role: str) -> list[KeyPairFiles]:
    """Keys of `role` waiting in the key directory as a successor (dst_key_is_unused: no timing
    but Created, and no record named has put in the zone)."""
    waiting = []
    for pair in key_pairs_in(instance.key_dir, zone):
        timing = pair.timing
        if pair.role != role or any(value is not None for value in (
                timing.publish, timing.activate, timing.inactive, timing.delete)):
            continue
        state = keystate.read_state(pair)
        if state is None or not state.times:
            waiting.append(pair)
    return waiting


def make(state: StateDir, instance: Instance, settings: InstanceSettings,
         predecessor: KeyPairFiles, progress) -> KeyPairFiles:
    """The unused successor of `predecessor`, on its token (a software predecessor gets a
    software successor, as in rollover.py), readable by named's user."""
    zone = dns.name.from_text(settings.zone)
    pending = unused_keys(instance, zone, predecessor.role)
    if pending:
        role = predecessor.role.upper()
        raise rollover.RolloverUnderWay(
            f"a {role} rollover is under way: {role} {pending[0].tag} waits in "
            f"{instance.key_dir} as the successor named will take; wait until it is used "
            "('bindpkcs11 status' shows named's schedule)")
    access = TokenAccess.build(state, settings.profile, rollover.token_of(predecessor, settings),
                               pin_file=instance.pin_file)
    successor = rollover.make_successor(instance, zone, settings, predecessor,
                                        Timing(created=int(time.time())), access, progress,
                                        KEY_FORMAT)
    try:
        inline.hand_over(instance, access, privileges.run_as_user())
    except BaseException:
        instancekeys.set_aside(instance, [successor])
        raise
    return successor


def confirm(state: StateDir, instance: Instance, settings: InstanceSettings,
            made: KeyPairFiles, taken: KeyPairFiles) -> None:
    """named's successor `taken` is the key bindpkcs11 made: same tag, its .private names the
    same label URI, and that key object is on the token."""
    role = made.role.upper()
    if taken.tag != made.tag or taken.label_uri != made.label_uri:
        where = f"on the token ({taken.label_uri})" if taken.label_uri else \
            "in software (its .private has no Label)"
        raise NamedMadeItsOwnKey(
            f"named made its own {role} {taken.tag} {where} instead of taking {role} {made.tag} "
            f"that bindpkcs11 made on the token: the zone still serves with named's keys; see "
            f"{instance.log_file} ('keymgr' lines) and 'bindpkcs11 status {settings.zone}'")
    if made.label_uri is None:
        return
    uri = parse_uri(made.label_uri)
    access = TokenAccess.build(state, settings.profile, uri.token or settings.token,
                               pin_file=instance.pin_file)
    with access.session() as session:
        present = keys.find_objects(session, uri.object or "", "private")
    if not present:
        raise SuccessorNotOnToken(
            f"named signs with {role} {made.tag} but its key object '{uri.object}' is not on "
            f"token '{access.label}': check the token ('bindpkcs11 token show')")
