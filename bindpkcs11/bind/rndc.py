"""rndc with an instance's own rndc.conf; `signing -list` parsed for --json."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bindpkcs11.bind.instance import Instance
from bindpkcs11.bind.programs import tool_env
from bindpkcs11.run import run_tool

RNDC_TIMEOUT = 30.0
_SIGNING_LINE = re.compile(
    r"^(?P<state>Done signing|Signing) with key (?P<tag>\d+)/(?P<alg>\S+)$"
)
_STATUS_KEY = re.compile(r"^key: (?P<tag>\d+) \((?P<alg>[^)]+)\), (?P<role>KSK|ZSK|CSK)")
_STATUS_SIGNING = re.compile(r"^(zone|key) signing:\s+(?P<yes>yes|no)")
POLICY_REFUSAL = "zone uses dnssec-policy"


@dataclass(frozen=True)
class SigningKey:
    """A key signing the zone: from `rndc signing -list`, or `rndc dnssec -status` under a policy."""

    tag: int
    algorithm: str
    signing: bool
    role: str | None = None


def rndc(instance: Instance, prefix: Path, *args: str) -> str:
    """Run `rndc -c <instance>/rndc.conf ARGS` and return its output."""
    result = run_tool([str(prefix / "sbin" / "rndc"), "-c", str(instance.rndc_conf), *args],
                      env=tool_env(prefix), timeout=RNDC_TIMEOUT, what=f"rndc {' '.join(args[:2])}")
    return result.stdout


def signing_list(instance: Instance, prefix: Path, zone: str,
                 policy: bool = False) -> tuple[str, list[SigningKey]]:
    """`rndc signing -list ZONE`; named 9.18 refuses it for dnssec-policy zones, so then the same
    facts come from `rndc dnssec -status ZONE`, and so they do at once for a zone under a
    `policy` (InstanceSettings.under_policy): named 9.20 answers signing -list, but with the
    keys that finished a signing pass ("Done signing with key"), so after a ZSK roll it listed
    the retired ZSK and not its successor, which signed. Returns (text, keys)."""
    if not policy:
        output = rndc(instance, prefix, "signing", "-list", zone)
        if POLICY_REFUSAL not in output:
            return output, parse_signing_list(output)
    output = rndc(instance, prefix, "dnssec", "-status", zone)
    return output, parse_dnssec_status(output)


def parse_signing_list(output: str) -> list[SigningKey]:
    keys = []
    for line in output.splitlines():
        match = _SIGNING_LINE.match(line.strip())
        if match:
            keys.append(SigningKey(int(match.group("tag")), match.group("alg"), True))
    return keys


def parse_dnssec_status(output: str) -> list[SigningKey]:
    keys: list[SigningKey] = []
    current: dict | None = None
    for line in output.splitlines():
        text = line.strip()
        if match := _STATUS_KEY.match(text):
            current = {"tag": int(match.group("tag")), "algorithm": match.group("alg"),
                       "role": match.group("role").lower(), "signing": False}
            keys.append(current)  # type: ignore[arg-type]
        elif current is not None and (match := _STATUS_SIGNING.match(text)):
            current["signing"] = current["signing"] or match.group("yes") == "yes"
    return [SigningKey(k["tag"], k["algorithm"], k["signing"], k["role"]) for k in keys]  # type: ignore[index]
