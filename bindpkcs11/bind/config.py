"""Rendering an instance's configuration from the package's templates, checking it, and swapping it in.

The order is render -> write (old files kept aside) -> named-checkconf -> caller starts or
reloads named -> commit; any failure rolls back to the previous files, so a broken setup never
replaces a working one.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from bindpkcs11.bind import stock
from bindpkcs11 import resources
from bindpkcs11.bind.instance import Instance, InstanceSettings
from bindpkcs11.bind.programs import STOCK, tool_env
from bindpkcs11.dnssec import algorithms
from bindpkcs11.errors import ToolFailed, UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.output import printable
from bindpkcs11.run import tail
from bindpkcs11.token.profiles import profile_traits
from bindpkcs11.token.uri import Pkcs11Uri, format_uri

_BACKUP_SUFFIX = ".previous"

# Default: auto-dnssec with signatures valid 35 days and re-signed 15 days before they expire
# (so each lives 20 days before named replaces it): `monitor --warn-days 7` stays quiet while
# named works, and a zone with the usual 14-day SOA EXPIRE passes dnssec/zonetiming.py's rule
# (a secondary cut off from the primary never serves expired signatures). sig-validity-interval
# counts days.
NORMAL_TIMINGS = {"sig_validity_days": 35, "sig_refresh_days": 15}
# --test-timings (the 2012 demo's TEST=yes): signatures live 30 minutes and are refreshed 20
# minutes before they expire, so a whole re-signing cycle can be watched in about ten minutes.
TEST_TIMINGS = {
    "dnskey_ttl": "PT5M", "dnskey_ttl_seconds": 300, "propagation_delay": "PT1M",
    "publish_safety": "PT5M", "retire_safety": "PT5M", "signatures_validity": "PT30M",
    "signatures_refresh": "PT20M", "signatures_jitter": "PT1M",
}
# --test-timings where named's own key manager times a rollover (stock 9.20, patched 9.20; RFC 7583:
# successor active after DNSKEY TTL + publish-safety + propagation delay), so the policy's TTL and
# delays are seconds and a ZSK roll can be watched in about a minute (signatures as above), and
# the parent's DS TTL too, so a KSK roll completes within minutes after --ds-published.
STOCK_TEST_TIMINGS = TEST_TIMINGS | {
    "dnskey_ttl": "PT15S", "dnskey_ttl_seconds": 15, "propagation_delay": "PT5S",
    "publish_safety": "PT5S", "retire_safety": "PT5S",
    "parent_ds_ttl": "PT15S", "parent_propagation_delay": "PT5S",
}
# BIND 9.20 has no auto-dnssec and no sig-validity-interval: the same dnssec-policy that adopts the
# token keys (lifetime unlimited) carries the default mode's signature timings (35 days, re-signed
# 15 days before they expire), and named's own defaults for the rest.
POLICY_TIMINGS = {
    "dnskey_ttl": "PT1H", "dnskey_ttl_seconds": 3600, "propagation_delay": "PT5M",
    "publish_safety": "PT1H", "retire_safety": "PT1H", "signatures_validity": "P35D",
    "signatures_refresh": "P15D", "signatures_jitter": "PT12H",
}


# named 9.18 signs an inline zone in batches (lib/dns/zone.c zone_sign): at most
# sig-signing-signatures signatures or sig-signing-nodes names, one commit (a new signed serial,
# the SOA re-signed, a journal write), then a 10 ms pause. BIND's defaults (10 / 100) cap it
# below 1,000 signatures/s whatever the token does (a 20k-record zone: 129 s). A batch runs on
# one of named's two worker threads; since named.conf says `reuseport no` the other one answers
# queries meanwhile, so the batch's length no longer sets query latency: only the number of
# batches (commits and pauses) sets the time to fully signed. bench_inline.py --batches,
# 100k names, 200 queries/s, 2 cores shared with other developers (load 1-10: the
# docs/benchmarks.md "inline-big-zones" section has every row), time to fully signed:
#   ECDSA token keys (SoftHSM): 267: 37.0 s; 500: 32.8; 1,000: 31.0; 2,000: 26.9; 4,000: 30.5
#   ECDSA software ZSK:         450: 32.5 s; 500: 34.1; 1,000: 27.5; 2,000: 18.1; 4,000: 22.4
#   RSA-2048 token keys:        169: 223 s; 500: 380 s (next to a test run); dnssec-signzone
#                               in the same run: 330 s with its self-check, 281 s with -P
#   RSA-2048 software ZSK:      340: 175 s; 1,000: 163 s; dnssec-signzone: 93 s / 84 s (-P)
# with p99 8-31 ms in every run and no query lost while named signed. Gains stop between 2,000
# and 4,000 signatures a batch, so a batch is 0.1 s of the ZSK's measured rate: 1,780 on
# SoftHSM P-256, 3,000 for a software ECDSA ZSK, 169 / 340 for RSA-2048 on SoftHSM / in
# software, 33 for a TPM, BIND's 10 for a card (18/s). Against dnssec-signzone in the same run:
# ECDSA token keys at 1,000-2,000 0.5-0.6x (1.0-1.2x against -P), RSA token keys at 169 0.7x
# (0.8x): the 1.5x target is met; a software RSA ZSK stays at 1.8-1.9x whatever the batch.
# The queries bench_inline counted as lost (no address within 1 s) all fell before named's
# first signing batch: SERVFAIL while named loads the zone and, at 100k names, until the signed
# copy of the inline zone is built; at 1M names no answer at all while it builds that copy
# (23 s at load 9). Their count is 200/s times that start-up window (the zone's size and the
# load), not the batch. None was lost, late or unanswered while named signed, at any batch.
SIGNING_SLICE = 0.1
MIN_SIGNING_BATCH = 10  # BIND's default: right for a card at 18 signatures/s
MIN_SIGNING_NODES = 100  # BIND's default; the KSK's pass over the names is limited by nodes only
MAX_SIGNING_BATCH = 5000
# Software keys in the patched dnssec-signzone, -n 1, -P (docs/benchmarks.md, bench_signing).
SOFTWARE_RATES = {"rsa": 3400, "other": 30000}


@dataclass(frozen=True)
class SigningBatch:
    """named's per-batch limits (sig-signing-signatures, sig-signing-nodes) for one instance."""

    signatures: int
    nodes: int

    def batches_for(self, names: int) -> int:
        """Batches (= signed serial increments) for a full signing pass of both keys over a
        zone of `names` names: the ZSK's pass makes about two signatures per name (the RRset
        and its NSEC), the KSK's visits every name and signs almost nothing."""
        per_zsk_batch = max(1, min(self.nodes, self.signatures // 2))
        return -(-names // per_zsk_batch) + -(-names // self.nodes)


def signing_rate(settings: InstanceSettings) -> int | None:
    """The ZSK's measured signatures/s: the software rate, or its token's profile's rate."""
    rsa = algorithms.by_number(settings.algorithm).is_rsa
    if settings.zsk_on == "software":
        return SOFTWARE_RATES["rsa" if rsa else "other"]
    return profile_traits(settings.profile).signing_rate(rsa)


def signing_batch(settings: InstanceSettings) -> SigningBatch:
    """SIGNING_SLICE seconds of signing at the ZSK's rate; BIND's defaults for an unknown rate."""
    rate = signing_rate(settings)
    size = MIN_SIGNING_BATCH if not rate else \
        max(MIN_SIGNING_BATCH, min(MAX_SIGNING_BATCH, int(rate * SIGNING_SLICE)))
    return SigningBatch(size, max(MIN_SIGNING_NODES, size))


class UnsafeConfigValue(UsageError):
    """A value cannot be written into BIND's configuration."""


_UNSAFE_IN_CONFIG = frozenset('"\\') | frozenset(map(chr, range(0x20))) | {"\x7f"}


def config_value(value: object) -> object:
    """Every value rendered into named.conf passes here (jinja2's `finalize`).

    Templates put strings inside double quotes; a quote, a backslash or a control character in a
    value (a token label with a newline, a path) could end the string or the comment it sits in
    and inject statements that named would load. Such values are refused, never escaped: BIND's
    string escapes differ between its parsers, and these characters have no business in labels,
    zone names or paths. Addresses and ports arrive as ipaddress objects and ints.
    """
    if isinstance(value, (str, Path)):
        text = str(value)
        bad = sorted(set(text) & _UNSAFE_IN_CONFIG)
        if bad:
            raise UnsafeConfigValue(
                f"'{printable(text)}' cannot be written into named.conf: it contains "
                f"{', '.join(repr(c) for c in bad)}; use letters, digits and punctuation only")
    return value


def _environment() -> jinja2.Environment:
    return resources.template_environment(config_value)


def rndc_key_name(settings: InstanceSettings) -> str:
    return f"bindpkcs11-{settings.zone.rstrip('.') or 'root'}"


# named keeps each zone's journal under max-journal-size, and 9.18.49 enforces it by compacting
# right after writing: a reload whose diff alone is larger (every record of a small zone changed:
# 200 addresses, a 16 KB diff against a 4.5 KB zone) is dropped from the unsigned zone's journal,
# so inline signing never sees it ("receive_secure_serial: unchanged") and the signed zone stays
# at the old data for good (measured). So the limit is far above any one diff of the zone.
MIN_JOURNAL_BYTES = 64 << 20
JOURNAL_PER_ZONE_BYTE = 32


def journal_limit(zone_bytes: int) -> int:
    """max-journal-size for a zone whose text is `zone_bytes` long (a full replacement diff is
    about 2-3 times the text; room for several)."""
    return max(MIN_JOURNAL_BYTES, JOURNAL_PER_ZONE_BYTE * zone_bytes)


def render(instance: Instance, settings: InstanceSettings, zone_file: Path,
           max_zone_ttl: int, provider: stock.ProviderConfig | None = None,
           bind_version: str = "", zone_bytes: int = 0) -> dict[Path, str]:
    """Every configuration file of the instance, rendered; the rndc secret is reused if present.

    The stock route (settings.bind) gets a dnssec-policy with a key-store on the token
    (zone-policy.conf.j2) and the OpenSSL config loading pkcs11-provider (`provider`); the
    patched route the 9.18 zone statement (zone.conf.j2)."""
    env = _environment()
    algorithm = algorithms.by_number(settings.algorithm)
    listen_v6 = settings.listen if ":" in settings.listen else None
    use_policy = settings.test_timings or settings.bind_version != "9.18"
    # 9.20 (stock or patched): named's key manager times rollovers (stockroll.py), so test
    # timings shrink its TTLs and delays; 9.18's --test-timings policy only shortens signatures.
    keymgr_rolls = settings.named_rolls_keys
    test_timings = STOCK_TEST_TIMINGS if keymgr_rolls else TEST_TIMINGS
    timings = (test_timings if settings.test_timings else POLICY_TIMINGS if use_policy
               else NORMAL_TIMINGS)
    batch = signing_batch(settings)
    context = {
        "zone": settings.zone,
        "token": settings.token,
        "zsk_token": settings.zsk_token,
        "instance_dir": instance.root,
        "pid_file": instance.pid_file,
        "log_file": instance.log_file,
        "port": settings.port,
        "listen_v4": None if listen_v6 else settings.listen,
        "listen_v6": listen_v6,
        "rndc_port": settings.rndc_port,
        "rndc_key_file": instance.rndc_key,
        "rndc_key_name": rndc_key_name(settings),
        "rndc_secret": _existing_secret(instance) or base64.b64encode(secrets.token_bytes(32)).decode(),
        "zone_conf": instance.zone_conf,
        "zone_file": zone_file,
        "key_dir": instance.key_dir,
        "policy_name": f"bindpkcs11-{settings.zone.rstrip('.') or 'root'}",
        "algorithm": algorithm.mnemonic.lower(),
        "bits": settings.bits if algorithm.is_rsa else None,
        # The signed zone holds the DNSKEY RRset too: max-zone-ttl must cover its TTL, or named
        # refuses to load its own .signed file at the next start.
        "max_zone_ttl": max(max_zone_ttl, timings.get("dnskey_ttl_seconds", 0)),
        "test_timings": settings.test_timings,
        "use_policy": use_policy,
        "keymgr_rolls": keymgr_rolls,
        "secondaries": settings.secondaries,
        "signing_signatures": batch.signatures,
        "signing_nodes": batch.nodes,
        "signing_slice_ms": int(SIGNING_SLICE * 1000),
        "max_journal_size": journal_limit(zone_bytes),
        "token_uri": format_uri(Pkcs11Uri(path={"token": settings.token})),
        "zsk_on_token": settings.zsk_on == "token",
        "bind_version": bind_version,
        **timings,
    }
    stock_route = settings.bind == STOCK
    files = {
        instance.named_conf: env.get_template("named.conf.j2").render(context),
        instance.zone_conf: env.get_template(
            "zone-policy.conf.j2" if stock_route else "zone.conf.j2").render(context),
        instance.rndc_conf: env.get_template("rndc.conf.j2").render(context),
        instance.rndc_key: env.get_template("rndc.key.j2").render(context),
    }
    if stock_route:
        if provider is None:
            raise ToolFailed("the stock route needs pkcs11-provider's configuration")
        files[instance.openssl_conf] = stock.render_provider_config(provider)
    return files


def _existing_secret(instance: Instance) -> str | None:
    """Keep the rndc secret across re-runs, so re-rendering an unchanged instance changes nothing."""
    try:
        for line in instance.rndc_key.read_text().splitlines():
            if "secret" in line:
                return line.split('"')[1]
    except (OSError, IndexError):
        return None
    return None


@dataclass
class ConfigSwap:
    """Files written with their previous versions kept aside until `commit` or `rollback`."""

    written: list[Path] = field(default_factory=list)
    created: list[Path] = field(default_factory=list)

    def write(self, files: dict[Path, str], secret_files: set[Path]) -> None:
        for path, text in files.items():
            if path.exists():
                shutil.copy2(path, path.with_name(path.name + _BACKUP_SUFFIX))
                self.written.append(path)
            else:
                self.created.append(path)
            write_atomic(path, text, mode=0o600 if path in secret_files else 0o644)

    def rollback(self) -> None:
        """Put every previous file back (last written first) and remove files that were new."""
        for path in reversed(self.written):
            backup = path.with_name(path.name + _BACKUP_SUFFIX)
            if backup.exists():
                backup.replace(path)
        for path in self.created:
            path.unlink(missing_ok=True)
        self.written, self.created = [], []

    def commit(self) -> None:
        for path in self.written:
            path.with_name(path.name + _BACKUP_SUFFIX).unlink(missing_ok=True)
        self.written, self.created = [], []


def changed_files(files: dict[Path, str]) -> dict[Path, str]:
    """Only the files whose content differs from what is on disk."""
    return {p: t for p, t in files.items() if not p.exists() or p.read_text() != t}


def check_config(prefix: Path, named_conf: Path) -> None:
    """named-checkconf of the patched build (same parser as the named that will load it)."""
    result = subprocess.run([str(prefix / "bin" / "named-checkconf"), str(named_conf)],
                            capture_output=True, text=True, env=tool_env(prefix))
    if result.returncode != 0:
        raise ToolFailed("the rendered configuration does not pass named-checkconf: "
                         f"{_reason(result.stdout + result.stderr, 3)}")


def check_zone(prefix: Path, zone: str, zone_file: Path, shown_as: Path | str | None = None) -> None:
    """named-checkzone with `-i local`: no lookups of out-of-zone NS targets (minutes offline).

    `shown_as` is the operator's own file when `zone_file` is bindpkcs11's copy of it: messages
    name the file the operator can open and fix.
    """
    result = subprocess.run(
        [str(prefix / "bin" / "named-checkzone"), "-i", "local", zone, str(zone_file)],
        capture_output=True, text=True, env=tool_env(prefix))
    if result.returncode != 0:
        shown = str(shown_as or zone_file)
        detail = _reason(result.stdout + result.stderr, 3).replace(str(zone_file), shown)
        raise ToolFailed(f"zone file {shown} does not load as {zone}: {detail}")


def _reason(output: str, count: int) -> str:
    """The last lines of a BIND checker's output, without its deprecation warnings (named 9.18
    warns that auto-dnssec is deprecated on every run: that is never why a check failed)."""
    kept = [line for line in output.splitlines() if "is deprecated" not in line
            and "is obsolete" not in line]
    return tail("\n".join(kept), count)
