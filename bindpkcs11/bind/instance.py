"""One named instance per zone: where its files live and the settings it was set up with.

`<state>/instances/<zone>/` holds named.conf, the zone statement, rndc.conf and key, the unsigned
zone, the key directory (K*.key/.private whose private halves are on the token), the PIN file
handed to the shim, named's pid and log, and `instance.json` with the settings below.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dns.name

from bindpkcs11.bind.programs import STOCK
from bindpkcs11.dnssec.dnskey import zone_label_text
from bindpkcs11.errors import UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.output import printable
from bindpkcs11.state import StateDir


@dataclass(frozen=True)
class Secondary:
    host: str
    port: int = 53


@dataclass(frozen=True)
class InstanceSettings:
    """What `setup-inline` was asked for; re-running with the same settings changes nothing."""

    zone: str
    token: str
    profile: str
    algorithm: int
    bits: int | None
    listen: str
    port: int
    rndc_port: int
    secondaries: list[Secondary] = field(default_factory=list)
    test_timings: bool = False
    zone_source: str | None = None
    zsk_on: str = "token"
    bind: str = "patched"  # the route (bind/route.py); instances made before routes were patched
    bind_prefix: str | None = None  # the stock BIND it was set up with (found again by later commands)
    zsk_token: str | None = None  # the ZSK's own token (same profile), when not `token`
    bind_version: str = "9.18"  # which patched BIND serves it (bind/build.py SERIES)

    def token_of(self, role: str) -> str:
        """The token holding the private key of `role` ("ksk"/"zsk") when it is on a token."""
        return self.zsk_token if role == "zsk" and self.zsk_token else self.token

    @property
    def named_rolls_keys(self) -> bool:
        """BIND 9.20, stock or patched: it has no auto-dnssec, so named's dnssec-policy key
        manager times every rollover (stockroll.py); the patched 9.18 follows the key timing
        metadata bindpkcs11 writes (rollover.py)."""
        return self.bind == STOCK or self.bind_version != "9.18"

    @property
    def under_policy(self) -> bool:
        """named signs the zone under a dnssec-policy (BIND 9.20, or 9.18 with --test-timings):
        its key manager keeps a .state file per key, which then says what each key does. Other
        9.18 instances use auto-dnssec: a .state file left from an earlier policy run is stale."""
        return self.test_timings or self.named_rolls_keys


@dataclass(frozen=True)
class Instance:
    """Paths of one instance; nothing here touches the files."""

    root: Path

    @classmethod
    def for_zone(cls, state: StateDir, zone: dns.name.Name) -> "Instance":
        return cls(state.root / "instances" / zone_label_text(zone))

    named_conf = property(lambda self: self.root / "named.conf")
    zone_conf = property(lambda self: self.root / "zone.conf")
    rndc_conf = property(lambda self: self.root / "rndc.conf")
    rndc_key = property(lambda self: self.root / "rndc.key")
    pid_file = property(lambda self: self.root / "named.pid")
    log_file = property(lambda self: self.root / "named.log")
    stdio_log = property(lambda self: self.root / "named.stdio.log")
    pin_file = property(lambda self: self.root / "token.pin")
    openssl_conf = property(lambda self: self.root / "openssl.cnf")  # stock route: the provider
    key_dir = property(lambda self: self.root / "keys")
    zone_dir = property(lambda self: self.root / "zones")
    settings_file = property(lambda self: self.root / "instance.json")

    def zone_file(self, zone: dns.name.Name) -> Path:
        return self.zone_dir / f"{zone_label_text(zone)}.db"

    def exists(self) -> bool:
        return self.settings_file.exists()

    def load_settings(self) -> InstanceSettings:
        try:
            data = json.loads(self.settings_file.read_text())
        except FileNotFoundError:
            raise UsageError(
                f"no instance in {self.root}: run 'bindpkcs11 setup-inline ZONE' first"
            ) from None
        data["secondaries"] = [Secondary(**s) for s in data.get("secondaries", [])]
        return InstanceSettings(**data)

    def save_settings(self, settings: InstanceSettings) -> None:
        write_atomic(self.settings_file, settings_text(settings), mode=0o644)


def settings_text(settings: InstanceSettings) -> str:
    """instance.json's content."""
    return json.dumps(asdict(settings), indent=2) + "\n"


def parse_secondary(text: str) -> Secondary:
    """`ADDRESS:PORT`, `ADDRESS` (port 53) or `[V6]:PORT` for --secondary.

    Only IP addresses without an IPv6 scope: named's also-notify and allow-transfer take
    addresses, and whatever is accepted here is written into named.conf unquoted.
    """
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (rest or "53")
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host) if "%" not in host else None
    except ValueError:
        address = None
    if address is None or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid --secondary '{printable(text)}': use ADDRESS:PORT with an IP "
                         "address, e.g. 127.0.0.1:5354 or [::1]:5354")
    return Secondary(str(address), int(port))


def parse_listen(text: str) -> str:
    """--listen: one IP address of this machine (checked when its port is probed). No IPv6 scope
    (`fe80::1%eth0`): Python accepts any text after the `%`, and the address goes into named.conf."""
    try:
        if "%" in text:
            raise ValueError(text)
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise UsageError(f"invalid --listen '{printable(text)}': give an IP address such as "
                         "127.0.0.1 or ::1") from None
