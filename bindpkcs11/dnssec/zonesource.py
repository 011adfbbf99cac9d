"""Reading an operator's zone file: size-limited, regular files only, `$INCLUDE` resolved safely.

setup-inline serves a private copy of the operator's zone, so every `$INCLUDE` is expanded into
that copy: named and named-checkzone then read only files bindpkcs11 wrote, never the operator's
files with root's rights. An `$INCLUDE` may name files inside the zone file's own directory (or
below it); anything else (an absolute path elsewhere, `..`, a symlink leading out) is refused,
so a zone file cannot make a root process publish /etc/shadow.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import dns.exception
import dns.name

from bindpkcs11.errors import InputFileError
from bindpkcs11.fileio import read_text_limited

MAX_ZONE_BYTES = 512 << 20
MAX_INCLUDE_DEPTH = 8


class ZoneIncludeRefused(InputFileError):
    """The zone file includes a file outside its own directory."""


def read_zone_source(path: Path, zone: dns.name.Name, limit: int = MAX_ZONE_BYTES) -> str:
    """The text of zone file `path` with every `$INCLUDE` expanded in place (`limit` bytes in
    all)."""
    path = Path(path)
    root = path.resolve().parent
    budget = [limit]
    return _expand(path, zone, root, budget, depth=0)


def _expand(path: Path, origin: dns.name.Name, root: Path, budget: list[int], depth: int) -> str:
    text = read_text_limited(path, budget[0], "zone file")
    budget[0] -= len(text)
    if "$INCLUDE" not in text.upper():
        return text
    lines = []
    current = origin
    for number, line in enumerate(text.splitlines(), 1):
        word = line.split(None, 1)[0].upper() if line.strip() else ""
        if word == "$ORIGIN" and len(line.split()) > 1:
            current = _name(line.split()[1], current, path, number)
        if word != "$INCLUDE":
            lines.append(line)
            continue
        target, include_origin = _include_args(line, path, number)
        resolved = _inside(root, path.parent, target, path, number)
        if depth + 1 > MAX_INCLUDE_DEPTH:
            raise ZoneIncludeRefused(f"{path} line {number}: $INCLUDE nested more than "
                                     f"{MAX_INCLUDE_DEPTH} deep")
        start = _name(include_origin, current, path, number) if include_origin else current
        lines.append(f"$ORIGIN {start.to_text()}")
        lines.append(_expand(resolved, start, root, budget, depth + 1).rstrip("\n"))
        lines.append(f"$ORIGIN {current.to_text()}")
    return "\n".join(lines) + "\n"


def _include_args(line: str, path: Path, number: int) -> tuple[str, str | None]:
    """`$INCLUDE file [origin] [; comment]`: the file name (maybe quoted) and the origin."""
    body = line.strip()[len("$INCLUDE"):].split(";", 1)[0]
    try:
        words = shlex.split(body)
    except ValueError:
        raise InputFileError(f"{path} line {number}: unbalanced quotes in $INCLUDE") from None
    if not words or len(words) > 2:
        raise InputFileError(f"{path} line {number}: use $INCLUDE FILE [ORIGIN]")
    return words[0], (words[1] if len(words) > 1 else None)


def _inside(root: Path, base: Path, target: str, path: Path, number: int) -> Path:
    candidate = Path(target) if Path(target).is_absolute() else base / target
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise ZoneIncludeRefused(
            f"{path} line {number}: $INCLUDE {target} is outside the zone file's directory "
            f"{root}: copy the file there (only files beside the zone file may be included)")
    return resolved


def _name(text: str, origin: dns.name.Name, path: Path, number: int) -> dns.name.Name:
    try:
        return dns.name.from_text(text, origin)
    except dns.exception.DNSException as error:
        raise InputFileError(f"{path} line {number}: bad origin '{text}': {error}") from None
