"""BIND key files (`K<zone>.+AAA+TTTTT.key` / `.private`) in BIND's own formats.

Token keys get a `.private` holding only what BIND requires for a label key (RSA: Modulus and
PublicExponent) plus `Label:`, base64 of the string with its trailing NUL, exactly as BIND itself
writes them. BIND 9.18 (the patched route) also needs `Engine: pkcs11`; BIND 9.20 has no engines
and refuses a file naming one ("no engine"), so its format (KEY_FORMATS) leaves the line out, as
9.20's dnssec-keyfromlabel does. The PIN is never part of the label: a Label that names a PIN
or a module (token/uri.py parse_key_label) is refused when written and when read, since BIND
copies it into logs and the shim inside named would otherwise honour it.
"""

from __future__ import annotations

import base64
import binascii
import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY

from bindpkcs11.dnssec import algorithms
from bindpkcs11.dnssec.dnskey import int_bytes, key_tag
from bindpkcs11.errors import InvalidTime, InvalidUri, KeyDirUnwritable, KeyFileError
from bindpkcs11.fileio import read_text_limited, write_atomic
from bindpkcs11.timespec import from_bind_timestamp, to_bind_timestamp, to_ctime
from bindpkcs11.token.uri import parse_key_label

TIMING_FIELDS = ("created", "publish", "activate", "revoke", "inactive", "delete")
ENGINE_NAME = "pkcs11"
KEY_FORMATS = ("9.18", "9.20")  # the BIND series whose .private layout is written
# A software RSA-4096 .private is about 3.3 KB: anything far larger is not a key file.
MAX_KEY_FILE_BYTES = 64 * 1024
# Fields BIND matches case-insensitively that bindpkcs11 reads by their canonical name.
_CANONICAL_FIELDS = {"label": "Label", "engine": "Engine"}


@dataclass(frozen=True)
class Timing:
    """Key timing metadata (UNIX times); None means unset."""

    created: int
    publish: int | None = None
    activate: int | None = None
    revoke: int | None = None
    inactive: int | None = None
    delete: int | None = None

    def items(self) -> list[tuple[str, int]]:
        """(BIND tag, time) for every set field, in BIND's order."""
        return [
            (name.capitalize(), getattr(self, name))
            for name in TIMING_FIELDS
            if getattr(self, name) is not None
        ]

    def is_signing(self, now: int) -> bool:
        """True while the key signs: Activate reached, not yet retired (what named does)."""
        return self.activate is not None and self.activate <= now and not self.is_retired(now)

    def is_retired(self, now: int) -> bool:
        """True once Inactive or Delete lies in the past: the key no longer signs."""
        return any(t is not None and t <= now for t in (self.inactive, self.delete))


@dataclass(frozen=True)
class KeyPairFiles:
    """A parsed key pair: where it is, its DNSKEY, timing and (for token keys) its label URI."""

    key_path: Path
    private_path: Path
    zone: dns.name.Name
    dnskey: "dns.rdtypes.ANY.DNSKEY.DNSKEY"
    timing: Timing
    label_uri: str | None = None
    private_fields: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def tag(self) -> int:
        return key_tag(self.dnskey)

    @property
    def role(self) -> str:
        return "ksk" if self.dnskey.flags & 1 else "zsk"


def base_name(zone: dns.name.Name, algorithm_number: int, tag: int) -> str:
    """`K<zone>.+AAA+TTTTT`, BIND's file name stem."""
    return f"K{zone.to_text()}+{algorithm_number:03d}+{tag:05d}"


def check_writable(key_dir: Path) -> None:
    """Fail before any key is generated if key files could not be written."""
    try:
        key_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KeyDirUnwritable(f"cannot create key directory {key_dir}: {error.strerror}") from None
    if not key_dir.is_dir() or not os.access(key_dir, os.W_OK | os.X_OK):
        raise KeyDirUnwritable(
            f"key directory {key_dir} is not writable: fix its permissions or pass --key-dir"
        )


def token_private_fields(dnskey: "dns.rdtypes.ANY.DNSKEY.DNSKEY", label_uri: str,
                         modulus: int = 0, exponent: int = 0,
                         key_format: str = "9.18") -> list[tuple[str, bytes]]:
    """The `.private` elements of a token key: public parts BIND needs, Engine (9.18), Label.

    The label is checked first, so no key file is ever written with a PIN or module in it.
    """
    try:
        parse_key_label(label_uri)
    except InvalidUri as error:
        raise KeyFileError(f"refusing to write a key file: {error}") from None
    fields: list[tuple[str, bytes]] = []
    if algorithms.by_number(dnskey.algorithm).is_rsa:
        fields.append(("Modulus", int_bytes(modulus)))
        fields.append(("PublicExponent", int_bytes(exponent)))
    if key_format == "9.18":
        fields.append(("Engine", ENGINE_NAME.encode() + b"\0"))
    elif key_format not in KEY_FORMATS:
        raise KeyFileError(f"unknown key file format '{key_format}': use one of {', '.join(KEY_FORMATS)}")
    fields.append(("Label", label_uri.encode() + b"\0"))
    return fields


def write_key_pair(
    key_dir: Path,
    zone: dns.name.Name,
    dnskey: "dns.rdtypes.ANY.DNSKEY.DNSKEY",
    private_fields: list[tuple[str, bytes]],
    timing: Timing,
    ttl: int | None = None,
) -> tuple[Path, Path]:
    """Write `.private` (0600) then `.key` (0644); neither is left behind if the other fails."""
    algorithm = algorithms.by_number(dnskey.algorithm)
    stem = base_name(zone, algorithm.number, key_tag(dnskey))
    key_path, private_path = key_dir / f"{stem}.key", key_dir / f"{stem}.private"
    if key_path.exists() or private_path.exists():
        raise KeyFileError(f"{key_path} already exists (key tag collision)")
    try:
        write_atomic(private_path, _private_text(algorithm, private_fields, timing), mode=0o600)
        try:
            write_atomic(key_path, _key_text(zone, dnskey, timing, ttl), mode=0o644)
        except BaseException:
            private_path.unlink(missing_ok=True)
            raise
    except PermissionError as error:
        raise KeyDirUnwritable(f"cannot write key files in {key_dir}: {error.strerror}") from None
    return key_path, private_path


def _key_text(zone: dns.name.Name, dnskey, timing: Timing, ttl: int | None) -> str:
    kind = "key-signing" if dnskey.flags & 1 else "zone-signing"
    lines = [f"; This is a {kind} key, keyid {key_tag(dnskey)}, for {zone.to_text()}"]
    for tag, value in timing.items():
        lines.append(f"; {tag}: {to_bind_timestamp(value)} ({to_ctime(value)})")
    key_b64 = base64.b64encode(dnskey.key).decode()
    chunks = " ".join(key_b64[i:i + 56] for i in range(0, len(key_b64), 56))
    ttl_text = f" {ttl}" if ttl is not None else ""
    lines.append(
        f"{zone.to_text()}{ttl_text} IN DNSKEY {dnskey.flags} {dnskey.protocol} "
        f"{dnskey.algorithm} {chunks}"
    )
    return "\n".join(lines) + "\n"


def _private_text(algorithm: algorithms.Algorithm, fields: list[tuple[str, bytes]], timing: Timing) -> str:
    lines = ["Private-key-format: v1.3", f"Algorithm: {algorithm.number} ({algorithm.mnemonic})"]
    lines += [f"{name}: {base64.b64encode(value).decode()}" for name, value in fields]
    lines += [f"{tag}: {to_bind_timestamp(value)}" for tag, value in timing.items()]
    return "\n".join(lines) + "\n"


def read_key_pair(key_path: Path) -> KeyPairFiles:
    """Parse a `.key` and its `.private` (timing comes from the `.private`, as BIND reads it).

    Both are read with a byte limit and must be regular files: a FIFO or /dev/zero named as a
    key file fails with one line instead of blocking or filling memory.
    """
    key_path = Path(key_path)
    private_path = key_path.with_suffix(".private")
    key_text = read_text_limited(key_path, MAX_KEY_FILE_BYTES, "key file", KeyFileError)
    private_text = read_text_limited(private_path, MAX_KEY_FILE_BYTES, "key file", KeyFileError)
    return parse_key_pair(key_path, key_text, private_text)


def parse_key_pair(key_path: Path, key_text: str, private_text: str) -> KeyPairFiles:
    """A key pair from the texts of its `.key` and `.private`; errors name `key_path`'s files."""
    key_path = Path(key_path)
    private_path = key_path.with_suffix(".private")
    zone, dnskey = parse_dnskey_line(key_path, key_text.splitlines())
    fields: dict[str, bytes] = {}
    times: dict[str, int] = {}
    for line in private_text.splitlines():
        name, _, value = line.partition(":")
        name, value = _CANONICAL_FIELDS.get(name.strip().lower(), name.strip()), value.strip()
        if name in fields or name.lower() in times:
            raise KeyFileError(f"{private_path}: field '{name}' appears twice")
        if name.lower() in TIMING_FIELDS:
            times[name.lower()] = _timestamp(private_path, name, value)
        elif name in _CANONICAL_FIELDS.values():
            fields[name] = _strict_base64(private_path, name, value)
        elif name not in ("Private-key-format", "Algorithm") and value:
            try:
                fields[name] = base64.b64decode(value)
            except ValueError:
                continue  # BIND's other metadata (SyncPublish: ...) is not base64
    timing = Timing(**{"created": 0, **times})
    return KeyPairFiles(
        key_path=key_path,
        private_path=private_path,
        zone=zone,
        dnskey=dnskey,
        timing=timing,
        label_uri=_label(private_path, fields.get("Label")),
        private_fields=fields,
    )


def _timestamp(private_path: Path, name: str, value: str) -> int:
    try:
        return from_bind_timestamp(value)
    except InvalidTime:
        raise KeyFileError(f"{private_path}: {name} is not a YYYYMMDDHHMMSS time") from None


def _strict_base64(private_path: Path, name: str, value: str) -> bytes:
    """Label and Engine decode exactly or the file is refused (never silently a software key)."""
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except binascii.Error:
        raise KeyFileError(f"{private_path}: {name} is not base64") from None


def _label(private_path: Path, raw: bytes | None) -> str | None:
    """The Label as BIND and the shim see it (a C string: up to the first NUL), checked.

    The message names the file and the offending attribute, never the Label's query part.
    """
    if raw is None:
        return None
    try:
        text = raw.partition(b"\0")[0].decode("utf-8")
        parse_key_label(text)
    except UnicodeDecodeError:
        raise KeyFileError(f"{private_path}: Label is not UTF-8 text") from None
    except InvalidUri as error:
        raise KeyFileError(f"{private_path}: refusing this key file: {error}") from None
    return text


def parse_dnskey_line(key_path: Path | str, lines: list[str]):
    """The owner and DNSKEY of the first record line.

    Only whole lines starting with ';' are comments: a zone name may hold an escaped ';'
    (`\\;`), and the owner may itself be called `dnskey`. The owner is the first field (names
    are written with escapes, so without blanks); the type is looked for after it; the rdata
    parser skips a trailing comment.
    """
    for line in lines:
        text = line.strip()
        if not text or text.startswith(";"):
            continue
        parts = text.split()
        try:
            index = 1 + [p.upper() for p in parts[1:]].index("DNSKEY")
            zone = dns.name.from_text(parts[0])
            rdata = dns.rdata.from_text(
                dns.rdataclass.IN, dns.rdatatype.DNSKEY, " ".join(parts[index + 1:])
            )
        except (ValueError, dns.exception.DNSException) as error:
            raise KeyFileError(f"{key_path}: not a DNSKEY line: {error}") from None
        return zone, rdata
    raise KeyFileError(f"{key_path}: no DNSKEY record found")


def key_pairs_in(key_dir: Path, zone: dns.name.Name | None = None) -> list[KeyPairFiles]:
    """Every readable key pair in `key_dir` (optionally only those of `zone`).

    A pair that cannot be used (a Label naming a PIN, a FIFO, garbage) is left out with a
    warning that says why, so an operator learns why a key seems to be missing.
    """
    pattern = glob.escape(f"K{zone.to_text()}+") + "*.key" if zone else "K*.key"
    pairs = []
    for key_path in sorted(Path(key_dir).glob(pattern)):
        if key_path.with_suffix(".private").exists():
            try:
                pairs.append(read_key_pair(key_path))
            except KeyFileError as error:
                logging.getLogger(__name__).warning("warning: skipping a key pair: %s", error)
    return pairs
