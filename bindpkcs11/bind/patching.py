"""Applying bindpkcs11's patches to a BIND tree, with an error that names the hunk that failed."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from bindpkcs11 import resources
from bindpkcs11.errors import ToolFailed
from bindpkcs11.run import child_env, run_tool, tail

_PATCHING = re.compile(r"^(patching|checking) file (?P<file>\S+)")
_FAILED = re.compile(r"^Hunk #(?P<hunk>\d+) FAILED at (?P<line>\d+)")


def patch_files(series: str = "9.18") -> list[Path]:
    """The patches for a BIND series, in name order."""
    patch_dir = resources.patches_dir()
    files = sorted(patch_dir.glob(f"bind-{series}-*.patch"))
    if not files:
        raise ToolFailed(f"no patches for BIND {series} in {patch_dir}")
    return files


def patches_sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def apply_patches(tree: Path, files: list[Path]) -> None:
    """Dry-run every patch first; apply only if all hunks fit, so a tree is never half-patched."""
    for path in files:
        dry = subprocess.run(["patch", "-p1", "--dry-run", "--batch", "--forward", "-i", str(path)],
                             cwd=tree, capture_output=True, text=True, env=child_env())
        if dry.returncode != 0:
            output = dry.stdout + dry.stderr
            raise ToolFailed(f"{path.name} does not apply to {tree.name}: "
                             f"{failed_hunks(output) or tail(output)}")
    for path in files:
        run_tool(["patch", "-p1", "--batch", "--forward", "-i", str(path)], cwd=tree,
                 what=f"patch {path.name}")


def failed_hunks(output: str) -> str:
    """'lib/dns/x.c hunk #2 at line 120, ...' from patch's output."""
    current, failures = "", []
    for line in output.splitlines():
        line = line.strip()
        if match := _PATCHING.match(line):
            current = match.group("file")
        elif match := _FAILED.match(line):
            failures.append(f"{current} hunk #{match.group('hunk')} at line {match.group('line')}")
    return ", ".join(failures)
