"""The keys of one setup-inline instance: found strictly, checked by BIND, made when missing.

An instance keeps its key files in `<state>/instances/<zone>/keys`: the KSK always on the token,
the ZSK on the token or in software (seeded by the token's randomness). A damaged file there is
refused, never skipped: skipping it would generate a new key and a new DS for a zone whose real
key is only unreadable.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable

import dns.name

from bindpkcs11.access import TokenAccess
from bindpkcs11.backup import custody
from bindpkcs11.bind.instance import Instance
from bindpkcs11.dnssec import keygen, keystate, keytiming, software
from bindpkcs11.dnssec.algorithms import Algorithm
from bindpkcs11.dnssec.keyfile import KeyPairFiles, Timing, key_pairs_in, read_key_pair
from bindpkcs11.errors import KeyFileError
from bindpkcs11.bind.programs import tool_env
from bindpkcs11.run import tail
from bindpkcs11.token.uri import parse_uri

Progress = Callable[[str], None]


def existing_keys(instance: Instance, zone: dns.name.Name) -> list[KeyPairFiles]:
    """Every key pair of `zone` in the instance's key dir; a damaged or half pair is refused.

    Skipping a damaged file would make setup-inline generate a new key (and a new DS) for a zone
    whose real key is only unreadable: refuse and let the operator restore it.
    """
    pairs = []
    stems = {path.parent / path.stem for pattern in ("*.key", "*.private")
             for path in instance.key_dir.glob(f"K{zone.to_text()}+{pattern}")}
    for stem in sorted(stems):
        key_path, private_path = Path(f"{stem}.key"), Path(f"{stem}.private")
        if not (key_path.is_file() and private_path.is_file()):
            missing = private_path if key_path.is_file() else key_path
            raise KeyFileError(f"{missing} is missing (its other half is there): restore it from "
                               "a backup, or move the pair out of the key directory")
        try:
            pairs.append(read_key_pair(key_path))
        except KeyFileError as error:
            raise KeyFileError(f"{error}: the key file is damaged; restore it from a backup, or "
                               f"move the pair out of {instance.key_dir} (nothing was changed)") from None
    return pairs


def check_keys_load(prefix: Path, pairs: list[KeyPairFiles], env: dict[str, str] | None = None) -> None:
    """BIND's own parser reads every key pair (`dnssec-settime -p all`, which signs nothing): a
    file bindpkcs11 can read but named cannot would otherwise surface as a signing outage.
    `env`: the program environment when BIND reaches token keys through pkcs11-provider."""
    env = env or tool_env(prefix)
    for pair in pairs:
        stem = str(pair.key_path)[:-len(".key")]
        result = subprocess.run([str(prefix / "bin" / "dnssec-settime"), "-p", "all", stem],
                                capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise KeyFileError(f"{pair.private_path} is damaged ({tail(result.stderr, 1)}): restore "
                               "it from a backup, or move the pair out of the key directory "
                               "(nothing was changed)")


def zone_keys(instance: Instance, zone: dns.name.Name, algorithm: Algorithm, zsk_on: str,
              access: TokenAccess, existing: list[KeyPairFiles],
              progress: Progress, key_format: str = "9.18",
              zsk_access: TokenAccess | None = None, under_policy: bool = False,
              ) -> tuple[KeyPairFiles, KeyPairFiles, list[KeyPairFiles]]:
    """The zone's active KSK (on the token) and ZSK (on the token, on its own `zsk_access` token
    when given, or in software) in the instance key dir, generated when missing (token keys in
    `key_format`, keyfile.KEY_FORMATS); returns them and the pairs this run generated."""
    on_token = {"ksk": True, "zsk": zsk_on == "token"}
    accesses = {"ksk": access, "zsk": zsk_access or access}
    found = {role: _active(existing, algorithm.number, accesses[role].label, role, on_token[role],
                           under_policy)
             for role in ("ksk", "zsk")}
    generated = []
    for role in ("ksk", "zsk"):
        if found[role] is None:
            now = int(time.time())
            keygen_request = keygen.KeygenRequest(
                zone=zone, role=role, algorithm=algorithm, key_dir=instance.key_dir,
                timing=Timing(created=now, publish=now, activate=now), software=not on_token[role],
                key_format=key_format)
            key = generate(keygen_request, accesses[role], progress)
            found[role] = read_key_pair(key.key_file)
            generated.append(found[role])
    return found["ksk"], found["zsk"], generated


def generate(request: keygen.KeygenRequest, access: TokenAccess,
             progress: Progress) -> keygen.GeneratedKey:
    """One key for the instance: on the token (custody recorded), or in software seeded by the
    token's randomness where the algorithm takes it (setup-inline and rollover both use this)."""
    what = f"the {request.role.upper()} ({request.algorithm.mnemonic})"
    if not request.software:
        progress(f"generating {what} on token '{access.label}' ...")
        key = keygen.generate_on_token(request, access)
        custody.record_generated(access.state, key.key_file, access.label, backup_capable=False)
        return key
    if software.supports_extra_entropy(request.algorithm):
        progress(f"generating {what} in software, seeded from token '{access.label}' ...")
        return keygen.generate_software_with_token_rng(request, access)
    progress(f"generating {what} in software (RSA key generation takes no token randomness) ...")
    return keygen.generate_software(request)


def publish_cds(ksk: KeyPairFiles) -> bool:
    """Give the active KSK a SyncPublish time (now) unless it has one, so named publishes CDS
    and CDNSKEY for it (RFC 7344/8078: parents that scan for them pick up the DS). True when the
    key file changed (named must load the keys again)."""
    if keytiming.private_time(ksk, "sync_publish") is not None:
        return False
    keytiming.set_times(ksk, sync_publish=int(time.time()))
    return True


def set_aside(instance: Instance, generated: list[KeyPairFiles]) -> None:
    """Key files this failed run generated move to `abandoned-keys/`, so that the previous
    named, which signs with every key in the key directory, does not pick them up."""
    if not generated:
        return
    aside = instance.root / "abandoned-keys"
    aside.mkdir(mode=0o700, exist_ok=True)
    for pair in generated:
        for path in (pair.key_path, pair.private_path):
            if path.exists():
                path.replace(aside / path.name)


def active_key(instance: Instance, zone: dns.name.Name, algorithm: int, token: str,
               role: str, on_token: bool = True, under_policy: bool = False) -> KeyPairFiles | None:
    """The zone's key for `role` in the instance key dir (on `token`, or a software key) that is
    not yet retired (InstanceSettings.under_policy: by named's .state files)."""
    return _active(key_pairs_in(instance.key_dir, zone), algorithm, token, role, on_token,
                   under_policy)


def _active(pairs: list[KeyPairFiles], algorithm: int, token: str, role: str,
            on_token: bool, under_policy: bool = False) -> KeyPairFiles | None:
    """The key that signs now; else one that is not retired (a successor published ahead of its
    Activate is never mistaken for the signing key, and no new key is made beside it). Under a
    dnssec-policy named's .state file decides, not the key file's timing: named 9.20 writes a
    Retired time when a roll is due, yet keeps signing with the key until a successor takes
    over (a token away at that time: the KSK's Inactive passed while named still signed with
    it, and `named start` wrongly found no KSK, so setup-inline made a new one and printed its
    DS, a key named deleted 25 s later). Without a policy (9.18 auto-dnssec) a .state file is
    a stale leftover and the timing decides."""
    now = int(time.time())
    states = {pair.key_path: keystate.read_state(pair) if under_policy else None for pair in pairs}
    candidates = [pair for pair in pairs
                  if pair.role == role and pair.dnskey.algorithm == algorithm
                  and (pair.label_uri is not None and parse_uri(pair.label_uri).token == token
                       if on_token else pair.label_uri is None)
                  and not _retired(pair, states[pair.key_path], now)]
    # two sign during a roll: the one named keeps (goal omnipresent) before the one it retires
    signing = sorted((pair for pair in candidates if _signing(pair, states[pair.key_path], now)),
                     key=lambda pair: _retiring(states[pair.key_path]))
    return (signing or candidates or [None])[0]


def _retired(pair: KeyPairFiles, state: keystate.KeyState | None, now: int) -> bool:
    return state.retired(pair.role) if state is not None else pair.timing.is_retired(now)


def _retiring(state: keystate.KeyState | None) -> bool:
    return state is not None and state.retiring


def _signing(pair: KeyPairFiles, state: keystate.KeyState | None, now: int) -> bool:
    return state.signing(pair.role) if state is not None else pair.timing.is_signing(now)
