"""Unpacking BIND's source on a Python without tarfile's "data" filter (Debian 12's 3.11.2).

Found by the Docker image build: `extractall(filter=...)` raised TypeError there. The fallback
must take a real source tarball whole and refuse members that would land outside the tree.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from bindpkcs11.bind.build import _plain_members
from bindpkcs11.errors import ToolFailed


def archive(*members: tarfile.TarInfo) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as out:
        for member in members:
            out.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


def test_plain_tree_with_an_inner_symlink_is_taken_whole():
    tar = archive(member("bind-9/"[:-1], tarfile.DIRTYPE), member("bind-9/a/f", size=3),
                  member("bind-9/a/l", tarfile.SYMTYPE, "../b"))
    assert [m.name for m in _plain_members(tar)] == ["bind-9", "bind-9/a/f", "bind-9/a/l"]


@pytest.mark.parametrize("bad", [
    member("/etc/passwd", size=1),
    member("bind-9/../../x", size=1),
    member("bind-9/l", tarfile.SYMTYPE, "../../etc"),
    member("bind-9/l", tarfile.SYMTYPE, "/etc/shadow"),
    member("bind-9/dev", tarfile.CHRTYPE),
], ids=["absolute", "dotdot", "symlink-out", "symlink-absolute", "device"])
def test_member_outside_the_tree_is_refused(bad):
    with pytest.raises(ToolFailed, match="refusing to unpack the BIND source"):
        _plain_members(archive(member("bind-9/f", size=1), bad))
