"""A key's state as its timing metadata says, and changing that metadata in the key files.

The states are the ones an operator reasons with in a rollover (RFC 7583 section 3.1, named's
own reading of the fields): generated (Created only, or Publish still ahead), published (in the
DNSKEY RRset, not signing), active (signing), inactive (no longer signing, still published), and
removed (Delete passed: named has taken it out of the DNSKEY RRset).

Timing is changed by editing the lines of both files in place: every other line (Engine,
Label, the private key itself, BIND's SyncPublish) stays byte for byte as it was, and the files
are replaced atomically (.private first, then .key: BIND reads timing from the .private).
"""

from __future__ import annotations

from dataclasses import dataclass

from bindpkcs11.dnssec.keyfile import MAX_KEY_FILE_BYTES, KeyPairFiles, Timing
from bindpkcs11.errors import InvalidTime, KeyFileError
from bindpkcs11.fileio import read_text_limited, write_atomic
from bindpkcs11.timespec import from_bind_timestamp, to_bind_timestamp, to_ctime

STATES = ("generated", "published", "active", "inactive", "removed")
# The events that move a key from one state to the next, in order.
EVENTS = (("publish", "published"), ("activate", "active"), ("inactive", "inactive"),
          ("delete", "removed"))
# Metadata set_times may change, by keyword, and its name in BIND's key files. SyncPublish and
# SyncDelete say when named publishes (withdraws) CDS/CDNSKEY for a KSK (RFC 7344, 8078);
# DSPublish and DSRemoved (BIND's names) when the parent started (stopped) serving its DS, as the
# operator confirmed it (an offline-KSK roll: `rollover ksk --ksk-dir --ds-published`).
FIELD_NAMES = {"publish": "Publish", "activate": "Activate", "inactive": "Inactive",
               "delete": "Delete", "sync_publish": "SyncPublish", "sync_delete": "SyncDelete",
               "ds_publish": "DSPublish", "ds_removed": "DSRemoved"}


@dataclass(frozen=True)
class NextEvent:
    """The next timing event of a key: what happens (publish, activate, inactive, delete) when."""

    event: str
    time: int


def state_at(timing: Timing, now: int) -> str:
    """The key's state at `now`, from its timing metadata as named reads it."""
    if timing.delete is not None and timing.delete <= now:
        return "removed"
    if timing.inactive is not None and timing.inactive <= now:
        return "inactive"
    published = timing.publish is not None and timing.publish <= now
    active = timing.activate is not None and timing.activate <= now
    if active:
        return "active"  # named publishes an active key even without a Publish time
    return "published" if published else "generated"


def next_event(timing: Timing, now: int) -> NextEvent | None:
    """The earliest timing event after `now`, or None when nothing more is scheduled."""
    future = [(value, name) for name, _ in EVENTS
              if (value := getattr(timing, name)) is not None and value > now]
    if not future:
        return None
    value, name = min(future)
    return NextEvent(name, value)


def set_times(pair: KeyPairFiles, **times: int | None) -> None:
    """Set (or, with None, remove) timing fields such as inactive=T, delete=T, sync_publish=T
    (FIELD_NAMES) in both files.

    Returns once both files hold the new values; a failure before the .key is written leaves
    the .private changed only in timing, which is what BIND reads.
    """
    names = {FIELD_NAMES[name]: value for name, value in times.items()}
    private = read_text_limited(pair.private_path, MAX_KEY_FILE_BYTES, "key file", KeyFileError)
    public = read_text_limited(pair.key_path, MAX_KEY_FILE_BYTES, "key file", KeyFileError)
    write_atomic(pair.private_path, _private_with(private, names), mode=0o600)
    write_atomic(pair.key_path, _public_with(public, names),
                 mode=pair.key_path.stat().st_mode & 0o777)


def private_time(pair: KeyPairFiles, field_name: str) -> int | None:
    """A timing field as the .private holds it (`sync_publish`, ...); None when unset. For the
    fields KeyPairFiles.timing does not carry (SyncPublish, SyncDelete)."""
    name = FIELD_NAMES[field_name]
    text = read_text_limited(pair.private_path, MAX_KEY_FILE_BYTES, "key file", KeyFileError)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            try:
                return from_bind_timestamp(value.strip())
            except InvalidTime:
                raise KeyFileError(f"{pair.private_path}: {name} is not a YYYYMMDDHHMMSS "
                                   "time") from None
    return None


def _private_with(text: str, names: dict[str, int | None]) -> str:
    """`.private` text with the timing lines in `names` replaced, added or dropped."""
    lines = [line for line in text.splitlines()
             if line.partition(":")[0].strip() not in names]
    lines += [f"{name}: {to_bind_timestamp(value)}" for name, value in names.items()
              if value is not None]
    return "\n".join(lines) + "\n"


def _public_with(text: str, names: dict[str, int | None]) -> str:
    """`.key` text with its `; Name: ...` comment lines in `names` replaced, added or dropped
    (comments only; BIND ignores them, operators read them)."""
    lines = text.splitlines()
    kept = [line for line in lines
            if not (line.startswith("; ") and line[2:].partition(":")[0] in names)]
    comments = [f"; {name}: {to_bind_timestamp(value)} ({to_ctime(value)})"
                for name, value in names.items() if value is not None]
    record = next((i for i, line in enumerate(kept) if line and not line.startswith(";")),
                  len(kept))
    return "\n".join(kept[:record] + comments + kept[record:]) + "\n"
