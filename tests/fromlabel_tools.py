"""BIND's own PKCS#11 workflow against the patched BIND (9.18 and 9.20), as its documentation (the
ARM) shows it.

Key pairs are made on a real SoftHSM token by OpenSC's `pkcs11-tool --keypairgen` (the PIN through
`--pin env:VAR`, never argv), key files by the patched `dnssec-keyfromlabel`, zones signed by the
patched `dnssec-signzone` and checked by stock `/usr/bin/dnssec-verify` and dnspython.
"""

from __future__ import annotations

import base64
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from bindpkcs11.dnssec.samplezone import sample_zone_text
from bindtools import tool_env
from conftest import SOFTHSM_MODULE, TOKEN

SERIES = ("9.18", "9.20")  # the patched BIND series; each runs the same tests
ZONE = "example.test"
ORIGIN = dns.name.from_text(ZONE)
PIN_VARIABLE = "BINDPKCS11_TEST_TOKEN_PIN"
# pkcs11-tool --key-type for each DNSSEC algorithm (the ARM's rsa:2048 and EC:prime256v1).
KEY_TYPES = {
    "RSASHA256": "rsa:2048",
    "ECDSAP256SHA256": "EC:prime256v1",
    "ECDSAP384SHA384": "EC:secp384r1",
    "ED25519": "EC:edwards25519",
}


@dataclass(frozen=True)
class PatchedBind:
    """One patched BIND series under test: its prefix and what differs between the series."""

    series: str
    prefix: Path

    @property
    def writes_engine(self) -> bool:
        """9.18's key files name the engine (`Engine: pkcs11`); 9.20's name a token key by its
        Label alone, with or without -E (stock 9.20 refuses an Engine: line)."""
        return self.series == "9.18"

    @property
    def key_format(self) -> str:
        """bindpkcs11 keygen's --key-format for this series' files."""
        return self.series


@pytest.fixture(params=SERIES)
def series_bind(request) -> PatchedBind:
    """Each patched BIND series in turn (built once per machine into .cache)."""
    fixture = "patched_bind" if request.param == "9.18" else "patched_bind_920"
    return PatchedBind(request.param, request.getfixturevalue(fixture))


def pkcs11_tool_keypair(cli, algorithm: str, label: str, key_id: str | None = None) -> None:
    """`pkcs11-tool -l -k --key-type T --label L [--id I]` on `cli`'s token, PIN from the env."""
    command = ["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", TOKEN, "--login",
               "--pin", f"env:{PIN_VARIABLE}", "--keypairgen", "--key-type", KEY_TYPES[algorithm],
               "--label", label]
    if key_id:
        command += ["--id", key_id]
    env = {**cli.env, "SOFTHSM2_CONF": str(cli.softhsm_conf), PIN_VARIABLE: cli.pin()}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def keyfromlabel(prefix: Path, cli, key_dir: Path, algorithm: str, label: str,
                 *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The patched `dnssec-keyfromlabel -K DIR -a ALG -l LABEL [extra] example.test`, with
    `cli`'s token and PIN file (or `env`)."""
    key_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(prefix / "bin" / "dnssec-keyfromlabel"), "-K", str(key_dir), "-a", algorithm,
         "-l", label, *extra, ZONE],
        capture_output=True, text=True, env=env or tool_env(cli, prefix), timeout=120,
    )


def made_key(result: subprocess.CompletedProcess, key_dir: Path) -> Path:
    """The K*.key that a successful dnssec-keyfromlabel printed the name of."""
    assert result.returncode == 0, result.stderr
    stem = result.stdout.strip().splitlines()[-1]
    return key_dir / f"{stem}.key"


def private_fields(key_file: Path) -> dict[str, str]:
    """The `.private` as BIND wrote it: field name -> raw text after ': '."""
    fields = {}
    for line in key_file.with_suffix(".private").read_text().splitlines():
        name, _, value = line.partition(": ")
        fields[name] = value
    return fields


def decoded(value: str) -> bytes:
    return base64.b64decode(value)


def write_zone(directory: Path, hosts: int = 40) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{ZONE}.zone"
    path.write_text(sample_zone_text(ORIGIN, hosts=hosts, delegations=2))
    return path


def signzone(prefix: Path, cli, key_dir: Path, zone: Path, *extra: str) -> subprocess.CompletedProcess:
    """The patched `dnssec-signzone [extra] -S -K DIR -o example.test ZONE` (the ARM's command)."""
    return subprocess.run(
        [str(prefix / "bin" / "dnssec-signzone"), *extra, "-S", "-K", str(key_dir), "-o", ZONE,
         "-f", str(zone.with_suffix(".signed")), str(zone)],
        capture_output=True, text=True, env=tool_env(cli, prefix), cwd=zone.parent, timeout=300,
    )


def stock_verify(signed: Path) -> None:
    """Debian's own dnssec-verify (no patch, no token) accepts the signed zone."""
    result = subprocess.run(["/usr/bin/dnssec-verify", "-o", ZONE, str(signed)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Zone fully signed" in result.stdout + result.stderr


def validate_zone_file(signed: Path) -> set[int]:
    """dnspython validates every signed RRset against the zone's DNSKEY set; returns the tags."""
    zone = dns.zone.from_file(str(signed), origin=ZONE, relativize=False, check_origin=False)
    keys = zone.find_rrset(ORIGIN, dns.rdatatype.DNSKEY)
    tags, checked = set(), 0
    for name, node in zone.nodes.items():
        for rdataset in node.rdatasets:
            if rdataset.rdtype != dns.rdatatype.RRSIG:
                continue
            sigs = dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))
            for covered in {sig.type_covered for sig in rdataset}:
                data = node.get_rdataset(dns.rdataclass.IN, covered)
                rrset = dns.rrset.from_rdata_list(name, data.ttl, list(data))
                covering = dns.rrset.from_rdata_list(
                    name, rdataset.ttl, [s for s in sigs if s.type_covered == covered])
                dns.dnssec.validate(rrset, covering, {ORIGIN: keys})
                tags.update(s.key_tag for s in covering)
                checked += 1
    assert checked > 40, checked
    return tags


def patched_named_wrapper(prefix: Path, cli, directory: Path) -> Path:
    """A script that runs the patched named as the ARM shows it (`named -E pkcs11`) with the
    token's module, SoftHSM config and PIN *file* in its environment (never the PIN itself)."""
    env = tool_env(cli, prefix)
    exports = "".join(f"export {name}='{env[name]}'\n" for name in
                      ("PKCS11_LIBRARY_PATH", "SOFTHSM2_CONF", "PKCS11_LIBRARY_PIN_FILE"))
    script = directory / "named-E-pkcs11"
    script.write_text(f"#!/bin/sh\n{exports}exec {prefix / 'sbin' / 'named'} -E pkcs11 \"$@\"\n")
    script.chmod(0o755)
    return script


def inline_zone_config(zone_file: Path, key_dir: Path, series: str = "9.18",
                       algorithm: str = "ECDSAP256SHA256") -> str:
    """The zone as the ARM serves it: 9.18 `auto-dnssec maintain`; 9.20 (which has no
    auto-dnssec) a dnssec-policy that adopts the key files (lifetime unlimited: never new keys)."""
    if series == "9.18":
        return (f'zone "{ZONE}" {{ type primary; file "{zone_file}"; key-directory "{key_dir}"; '
                "inline-signing yes; auto-dnssec maintain; };\n")
    policy = algorithm.lower()
    return (f'dnssec-policy "adopt" {{ keys {{ ksk key-directory lifetime unlimited algorithm {policy}; '
            f'zsk key-directory lifetime unlimited algorithm {policy}; }}; }};\n'
            f'zone "{ZONE}" {{ type primary; file "{zone_file}"; key-directory "{key_dir}"; '
            'inline-signing yes; dnssec-policy "adopt"; };\n')


def served_signed(port: int, tags: set[int], timeout: float = 60.0) -> dict:
    """Poll named until its SOA and DNSKEY answers are signed by exactly `tags` and validate;
    returns {type: tags seen}. Fails with what was served when the deadline passes."""
    deadline, seen = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        answers = {t: _query(port, t) for t in (dns.rdatatype.DNSKEY, dns.rdatatype.SOA,
                                                  dns.rdatatype.A)}
        keys = answers[dns.rdatatype.DNSKEY][0]
        seen = {dns.rdatatype.to_text(t): {s.key_tag for s in sig} if sig else set()
                for t, (_, sig) in answers.items()}
        if keys is not None and all(sig and {s.key_tag for s in sig} <= tags
                                    for _, sig in answers.values()) \
                and set().union(*seen.values()) == tags:
            for rrset, sig in answers.values():
                dns.dnssec.validate(rrset, sig, {ORIGIN: keys})
            return seen
        time.sleep(0.2)
    raise AssertionError(f"named did not serve {ZONE} signed by {sorted(tags)}: {seen}")


def _query(port: int, rdtype) -> tuple:
    name = ORIGIN if rdtype != dns.rdatatype.A else dns.name.from_text("www", ORIGIN)
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    try:
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=1.0)
    except (dns.exception.DNSException, OSError):
        return None, None
    rrset = response.get_rrset(response.answer, name, dns.rdataclass.IN, rdtype)
    sig = response.get_rrset(response.answer, name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype)
    return rrset, sig
