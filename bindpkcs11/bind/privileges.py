"""Letting named run as an unprivileged user (`bind`) while the token stays private to it.

When bindpkcs11 runs as root, named is started with `-u bind`. The shim inside named then opens the
SoftHSM token as that user, so the token files, the instance directory and the PIN file are handed
to `bind` (mode 0700/0600), the state directory becomes traversable by group `bind` only (0710),
and nobody else can read any of them.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

from bindpkcs11.errors import BindPkcs11Error

DEFAULT_USER = "bind"


def run_as_user() -> str | None:
    """The user named should switch to: `bind` when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(DEFAULT_USER)
    except KeyError:
        raise BindPkcs11Error(
            f"user '{DEFAULT_USER}' does not exist: install the bind9 package (scripts/setup.sh)"
        ) from None
    return DEFAULT_USER


def require_reachable(user: str | None, path: Path) -> None:
    """Fail clearly if `user` cannot traverse every directory above `path` (named would just exit)."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    for directory in reversed(Path(path).resolve().parents):
        info = directory.stat()
        if info.st_uid == entry.pw_uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid in groups:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            raise BindPkcs11Error(
                f"named runs as '{user}', which cannot enter {directory}: use a --state-dir outside it "
                f"(e.g. /var/lib/bindpkcs11, the default for root)"
            )


def hand_over(user: str | None, owned: list[Path], traversed: list[Path], readable: list[Path]) -> None:
    """Give `user` the `owned` trees, group-traverse on `traversed` dirs, group-read on `readable`.

    Run again before every start: files a root command created since (a new key on the token, a
    new key file) would otherwise be unreadable to named.
    """
    if user is None:
        return
    entry = pwd.getpwnam(user)
    group = grp.getgrgid(entry.pw_gid).gr_gid
    for tree in owned:
        _chown_tree(tree, entry.pw_uid, group)
    for directory in traversed:
        os.chown(directory, -1, group)
        os.chmod(directory, 0o710)
    for path in readable:
        os.chown(path, -1, group)
        os.chmod(path, 0o640)


def _chown_tree(tree: Path, uid: int, gid: int) -> None:
    if not tree.exists():
        return
    os.chown(tree, uid, gid)
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
