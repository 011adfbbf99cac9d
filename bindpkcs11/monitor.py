"""Checking a served, signed zone the way a validating resolver would see it (no printing here).

`check_zone` asks one server (UDP with the DO bit, TCP when truncated) for the apex SOA, DNSKEY and
NS, any extra NAME/TYPE, and a name that does not exist; validates every RRSIG with dnspython
against the zone's DNSKEY RRset at `now`; and returns a ZoneReport whose status follows the rules:

  critical  the server gives no usable answer (silent, REFUSED, SERVFAIL, not authoritative),
            there is no DNSKEY RRset, an RRset is unsigned or does not validate, a signature is
            expired or not yet valid, or a nonexistent name comes without a signed NSEC/NSEC3 proof;
  warning   the earliest expiration is within `warn_days` days;
  (and, added by the caller through `with_problem`, the serial-lag check of serial_lag.py)
  ok        otherwise.

A server that does not answer is a critical report, not an exception: monitoring needs the status.
Times are UNIX seconds (UTC).
"""

from __future__ import annotations

import base64
import socket
import time
from dataclasses import dataclass, replace
from typing import Literal, Sequence

import dns.dnssec
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from bindpkcs11.errors import InvalidCheck, InvalidServer

Status = Literal["ok", "warning", "critical"]
Lookup = tuple[dns.name.Name, dns.rdatatype.RdataType]

DEFAULT_PORT = 53
DEFAULT_TIMEOUT = 2.0
DEFAULT_WARN_DAYS = 7
APEX_TYPES = (dns.rdatatype.SOA, dns.rdatatype.DNSKEY, dns.rdatatype.NS)
NONEXISTENT_LABEL = b"bindpkcs11-monitor-nonexistent"
_ATTEMPTS = 2
_SEP = 0x0001
_DENIAL_TYPES = (dns.rdatatype.NSEC, dns.rdatatype.NSEC3)
_TIMING = ("expired", "not valid before")
_FAILURE_TEXT = {
    "verify failure": "signature does not verify",
    "unknown key": "key tag not in the DNSKEY set",
}


@dataclass(frozen=True)
class SignatureInfo:
    """One RRSIG and whether it validates at the report's time (`problem` says why not)."""

    key_tag: int
    algorithm: int
    inception: int
    expiration: int
    valid: bool
    problem: str | None = None


@dataclass(frozen=True)
class RRsetStatus:
    """One RRset as served: it validates if one of its signatures does."""

    name: str
    rdtype: str
    ttl: int
    signatures: tuple[SignatureInfo, ...]
    validated: bool
    problem: str | None

    @property
    def label(self) -> str:
        return f"{self.name}/{self.rdtype}"

    @property
    def runs_out(self) -> int | None:
        """When the RRset's last signature expires (None when unsigned)."""
        return max((s.expiration for s in self.signatures), default=None)


@dataclass(frozen=True, order=True)
class KeyInfo:
    """A DNSKEY in the served set; role from the SEP flag."""

    key_tag: int
    algorithm: int
    flags: int
    role: str


@dataclass(frozen=True)
class ZoneReport:
    """One check. `earliest_expiration`: when the first RRset's last signature expires."""

    zone: str
    server: str
    port: int
    serial: int | None
    dnskeys: tuple[KeyInfo, ...]
    rrsets: tuple[RRsetStatus, ...]
    earliest_expiration: int | None
    status: Status
    problems: tuple[str, ...]
    checked_at: int
    warn_days: int
    serial_lag: object | None = None  # serial_lag.SerialLag when the check compared serials


_RANK = {"ok": 0, "warning": 1, "critical": 2}


def with_problem(report: ZoneReport, status: Status, problem: str | None, **changes) -> ZoneReport:
    """`report` with one more problem, its status raised to `status` if that is worse."""
    worse = status if _RANK[status] > _RANK[report.status] else report.status
    problems = report.problems + ((problem,) if problem else ())
    return replace(report, status=worse, problems=problems, **changes)


class _NoAnswer(Exception):
    """The server gave no usable answer (the message says how); becomes a critical problem."""


def parse_check(text: str, zone: dns.name.Name) -> Lookup:
    """`www/A`, `@/MX`, `www.example.test/AAAA` or `www.example.test./TXT` as (name, type).

    A name is taken as absolute when it already ends in the zone, else as relative to it.
    """
    owner, slash, type_text = text.rpartition("/")
    if not slash or not owner.strip() or not type_text.strip():
        raise InvalidCheck(f"invalid --check '{text}': use NAME/TYPE such as www/A or @/MX")
    try:
        rdtype = dns.rdatatype.from_text(type_text.strip())
        if owner.strip() == "@":
            return zone, rdtype
        absolute = dns.name.from_text(owner.strip())
        name = absolute if absolute.is_subdomain(zone) else dns.name.from_text(owner.strip(), zone)
    except dns.exception.DNSException as error:
        raise InvalidCheck(f"invalid --check '{text}': {error}") from None
    if not name.is_subdomain(zone):
        raise InvalidCheck(f"invalid --check '{text}': {name} is not in zone {zone}")
    return name, rdtype


def resolve_server(text: str) -> str:
    """The server's IP address: `text` itself, or the first address a host name resolves to."""
    if dns.inet.is_address(text):
        return text
    try:
        return socket.getaddrinfo(text, None, type=socket.SOCK_DGRAM)[0][4][0]
    except (socket.gaierror, UnicodeError) as error:
        raise InvalidServer(f"cannot resolve server '{text}': {error}") from None


def check_zone(zone: dns.name.Name, server: str, port: int = DEFAULT_PORT,
               warn_days: int = DEFAULT_WARN_DAYS, now: int | None = None,
               names: Sequence[Lookup] = (), timeout: float = DEFAULT_TIMEOUT) -> ZoneReport:
    """Query `server`#`port` for `zone` and validate what it serves at `now` (default: the clock)."""
    now = int(time.time()) if now is None else now
    ask = _Asker(server, port, timeout)
    report = _ReportBuilder(zone, server, port, now, warn_days)
    try:
        _check_apex(zone, ask, report)
        if report.keys_rrset is not None:
            for lookup in _dedupe(names, zone):
                _check_lookup(lookup, ask, report)
            _check_denial(zone, ask, report)
    except _NoAnswer as failure:
        report.problems.append(str(failure))
    return report.build()


class _Asker:
    """One query: no RD, DO bit, UDP with TCP fallback, retried once on timeout."""

    def __init__(self, server: str, port: int, timeout: float) -> None:
        self.server, self.port, self.timeout = server, port, timeout
        self.where = f"{server}#{port}"

    def __call__(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        query.flags &= ~dns.flags.RD
        for _ in range(_ATTEMPTS):
            try:
                return dns.query.udp_with_fallback(query, self.server, timeout=self.timeout,
                                                   port=self.port)[0]
            except dns.exception.Timeout:
                continue
            except OSError as error:
                raise _NoAnswer(f"no answer from {self.where}: {error.strerror or error}") from None
            except dns.exception.DNSException as error:
                raise _NoAnswer(f"bad answer from {self.where} for {name}/"
                                f"{dns.rdatatype.to_text(rdtype)}: {error}") from None
        raise _NoAnswer(f"no answer from {self.where} (timed out {_ATTEMPTS} x {self.timeout:g} s)")


class _ReportBuilder:
    """What one check has found so far; `build` applies the status rules."""

    def __init__(self, zone: dns.name.Name, server: str, port: int, now: int, warn_days: int) -> None:
        self.zone, self.server, self.port, self.now, self.warn_days = zone, server, port, now, warn_days
        self.serial: int | None = None
        self.keys_rrset: dns.rrset.RRset | None = None
        self.rrsets: list[RRsetStatus] = []
        self.problems: list[str] = []

    def add(self, status: RRsetStatus) -> None:
        self.rrsets.append(status)
        if status.problem:
            self.problems.append(f"{status.label}: {status.problem}")

    def build(self) -> ZoneReport:
        signed = [rrset for rrset in self.rrsets if rrset.runs_out is not None]
        first = min(signed, key=lambda rrset: rrset.runs_out or 0, default=None)
        earliest = first.runs_out if first else None
        problems = list(self.problems)
        status: Status = "critical" if problems else "ok"
        if status == "ok" and first and earliest is not None \
                and earliest - self.now <= self.warn_days * 86400:
            status = "warning"
            problems.append(f"{first.label}: signatures expire in "
                            f"{(earliest - self.now) / 86400:.1f} days (warning within "
                            f"{self.warn_days} days)")
        keys = self.keys_rrset or ()
        return ZoneReport(
            zone=self.zone.to_text(), server=self.server, port=self.port, serial=self.serial,
            dnskeys=tuple(sorted(KeyInfo(dns.dnssec.key_id(key), int(key.algorithm), int(key.flags),
                                         "ksk" if key.flags & _SEP else "zsk") for key in keys)),
            rrsets=tuple(self.rrsets), earliest_expiration=earliest, status=status,
            problems=tuple(problems), checked_at=self.now, warn_days=self.warn_days,
        )


def _check_apex(zone: dns.name.Name, ask: _Asker, report: _ReportBuilder) -> None:
    """SOA (which must come authoritatively), then DNSKEY (validated by itself), then NS."""
    soa_response = ask(zone, dns.rdatatype.SOA)
    _require_authoritative(soa_response, zone, ask.where)
    responses = {rdtype: soa_response if rdtype == dns.rdatatype.SOA else ask(zone, rdtype)
                 for rdtype in APEX_TYPES}
    answers = {rdtype: _answer(response, zone, rdtype, ask.where)
               for rdtype, response in responses.items()}
    soa, _ = answers[dns.rdatatype.SOA]
    report.serial = soa[0].serial if soa else None
    keys, _ = answers[dns.rdatatype.DNSKEY]
    if keys is None:
        report.problems.append(f"{zone}: no DNSKEY RRset: the zone is not signed")
        return
    report.keys_rrset = keys
    key_map = {zone: keys}
    for rdtype in APEX_TYPES:
        rrset, sigs = answers[rdtype]
        if rrset is None:
            report.problems.append(f"{zone}/{dns.rdatatype.to_text(rdtype)}: no such RRset")
        else:
            report.add(_check_rrset(rrset, sigs, key_map, report.now))


def _check_lookup(lookup: Lookup, ask: _Asker, report: _ReportBuilder) -> None:
    name, rdtype = lookup
    label = f"{name}/{dns.rdatatype.to_text(rdtype)}"
    response = ask(name, rdtype)
    if response.rcode() != dns.rcode.NOERROR:
        report.problems.append(f"{label}: {dns.rcode.to_text(response.rcode())}")
        return
    rrsets = [rrset for rrset in response.answer
              if rrset.rdtype != dns.rdatatype.RRSIG and rrset.name.is_subdomain(report.zone)]
    if not rrsets:
        report.problems.append(f"{label}: no such RRset (NODATA)")
    for rrset in rrsets:
        sigs = response.get_rrset(response.answer, rrset.name, rrset.rdclass, dns.rdatatype.RRSIG,
                                  rrset.rdtype)
        report.add(_check_rrset(rrset, sigs, {report.zone: report.keys_rrset}, report.now))


def _check_denial(zone: dns.name.Name, ask: _Asker, report: _ReportBuilder) -> None:
    """A name that does not exist: NXDOMAIN with signed NSEC/NSEC3 records covering it."""
    try:
        qname = dns.name.Name((NONEXISTENT_LABEL,)).concatenate(zone)
    except dns.name.NameTooLong:
        return
    response = ask(qname, dns.rdatatype.A)
    if response.rcode() != dns.rcode.NXDOMAIN:
        return  # the name exists after all (a wildcard, say): nothing to prove
    proofs = [rrset for rrset in response.authority if rrset.rdtype in _DENIAL_TYPES]
    if not proofs:
        report.problems.append(f"{qname}: NXDOMAIN without NSEC/NSEC3 records")
        return
    for rrset in proofs:
        sigs = response.get_rrset(response.authority, rrset.name, rrset.rdclass,
                                  dns.rdatatype.RRSIG, rrset.rdtype)
        report.add(_check_rrset(rrset, sigs, {zone: report.keys_rrset}, report.now))
    if not any(_covers(rrset, qname, zone) for rrset in proofs):
        report.problems.append(f"{qname}: NXDOMAIN but no NSEC/NSEC3 record covers the name")


def _covers(rrset: dns.rrset.RRset, qname: dns.name.Name, zone: dns.name.Name) -> bool:
    """Whether an NSEC (canonical order) or NSEC3 (hash order) record covers `qname`."""
    for rdata in rrset:
        if rrset.rdtype == dns.rdatatype.NSEC:
            low, high, point = rrset.name, rdata.next, qname
        else:
            try:
                point = dns.dnssec.nsec3_hash(qname, rdata.salt, rdata.iterations, rdata.algorithm)
            except ValueError:
                continue
            low = rrset.name.labels[0].decode("ascii").upper()
            high = base64.b32hexencode(rdata.next).decode("ascii")
        if low < point < high or (high <= low and (point > low or point < high)):
            return True
    return False


def _check_rrset(rrset: dns.rrset.RRset, sigs: dns.rrset.RRset | None, keys: dict,
                 now: int) -> RRsetStatus:
    """Each RRSIG validated by dnspython; the RRset validates if one of them does."""
    signatures = tuple(_check_signature(rrset, rrsig, keys, now) for rrsig in (sigs or ()))
    validated = any(signature.valid for signature in signatures)
    return RRsetStatus(name=rrset.name.to_text(), rdtype=dns.rdatatype.to_text(rrset.rdtype),
                       ttl=rrset.ttl, signatures=signatures, validated=validated,
                       problem=_rrset_problem(signatures, validated))


def _check_signature(rrset: dns.rrset.RRset, rrsig, keys: dict, now: int) -> SignatureInfo:
    problem = None
    try:
        dns.dnssec.validate_rrsig(rrset, rrsig, keys, None, now)
    except (dns.dnssec.ValidationFailure, dns.dnssec.UnsupportedAlgorithm) as failure:
        if rrsig.expiration < now:
            problem = f"expired at {iso_time(rrsig.expiration)}"
        elif rrsig.inception > now:
            problem = f"not valid before {iso_time(rrsig.inception)}"
        else:
            problem = _FAILURE_TEXT.get(str(failure), str(failure))
    return SignatureInfo(key_tag=rrsig.key_tag, algorithm=int(rrsig.algorithm),
                         inception=rrsig.inception, expiration=rrsig.expiration,
                         valid=problem is None, problem=problem)


def _rrset_problem(signatures: tuple[SignatureInfo, ...], validated: bool) -> str | None:
    """Unsigned or not validating; when it validates, still any signature expired or not yet valid."""
    if not signatures:
        return "unsigned (no RRSIG)"
    failed = [s for s in signatures if s.problem and (not validated or s.problem.startswith(_TIMING))]
    text = "; ".join(f"RRSIG {s.key_tag} ({s.problem})" for s in failed)
    return (text or None) if validated else f"does not validate: {text}"


def _answer(response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType,
            where: str) -> tuple[dns.rrset.RRset | None, dns.rrset.RRset | None]:
    """The answer RRset and its RRSIGs; _NoAnswer when the server failed (REFUSED, SERVFAIL...)."""
    if response.rcode() != dns.rcode.NOERROR:
        raise _NoAnswer(f"{where} answered {dns.rcode.to_text(response.rcode())} for "
                        f"{name}/{dns.rdatatype.to_text(rdtype)}")
    rrset = response.get_rrset(response.answer, name, dns.rdataclass.IN, rdtype)
    sigs = response.get_rrset(response.answer, name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype)
    return rrset, sigs


def _require_authoritative(response: dns.message.Message, zone: dns.name.Name, where: str) -> None:
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        raise _NoAnswer(f"{where} answered {dns.rcode.to_text(rcode)} for {zone}/SOA: "
                        "is the zone loaded there?")
    if not response.flags & dns.flags.AA or not response.answer:
        raise _NoAnswer(f"{where} is not authoritative for {zone}")


def _dedupe(names: Sequence[Lookup], zone: dns.name.Name) -> list[Lookup]:
    seen = {(zone, rdtype) for rdtype in APEX_TYPES}
    unique = []
    for lookup in names:
        if lookup not in seen:
            seen.add(lookup)
            unique.append(lookup)
    return unique


def last_signed(report: ZoneReport) -> int | None:
    """When the served zone was last signed: every signing run re-signs the apex SOA, and BIND
    dates an RRSIG's inception one hour back (9.18 zone.c: `inception = now - 3600`)."""
    inceptions = [sig.inception for rrset in report.rrsets
                  if rrset.rdtype == "SOA" and rrset.name == report.zone
                  for sig in rrset.signatures if sig.valid]
    return max(inceptions) + 3600 if inceptions else None


def iso_time(unix_time: int | None) -> str:
    """`2026-11-27T08:00:00Z`; '-' for None."""
    return "-" if unix_time is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_time))
