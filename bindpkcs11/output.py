"""Printing results: JSON for scripts (`--json`) or aligned tables for people."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from pathlib import Path
from typing import Any, Sequence


def printable(text: str) -> str:
    """`text` with control characters escaped (`\\n`, `\\x1b`), for one-line messages.

    Messages quote what the operator typed (domain names, labels, file names); a newline or an
    escape sequence in them must not break the line or drive the terminal.
    """
    if not any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in text):
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0
                   else c for c in text)


def to_plain(value: Any) -> Any:
    """Dataclasses, paths, bytes and enums as JSON-friendly values (bytes as hex)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.name
    return value


def print_json(value: Any) -> None:
    json.dump(to_plain(value), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; empty cells shown as '-'."""
    cells = [[str(h) for h in headers]] + [["-" if c in (None, "") else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
